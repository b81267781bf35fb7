"""Video: smoothing filters on synthetic signals, the shape model, reading and writing, tracking a face moved along a
known path, and bad video inputs."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from helpers import cli, models, predict, preprocess, shape, video
from .support import face_68


# ---------------------------------------------------------------------------------------------------------------
# smoothing
# ---------------------------------------------------------------------------------------------------------------
def run_filter(f, signal, fps=25.0, size=100.0):
    return np.array([f(x, i / fps, size) for i, x in enumerate(signal)])


@pytest.mark.parametrize("predict", [True, False])
def test_one_euro_settles_on_a_noisy_constant_and_follows_a_ramp(predict):
    rng = np.random.default_rng(0)
    still = 50.0 + rng.normal(0, 1.0, (200, 3, 2))
    out = run_filter(video.OneEuro(predict=predict), still)
    assert np.abs(out[50:] - 50.0).std() < 0.6 * still[50:].std()          # noise cut by about half
    assert np.abs(out[50:].mean() - 50.0) < 0.2
    ramp = np.arange(200)[:, None, None] * np.ones((1, 3, 2)) * 2.0          # 2 px per frame, a fast face
    lag = (ramp[100:] - run_filter(video.OneEuro(predict=predict), ramp)[100:]) / 2.0     # in frames
    if predict:                                                              # the trend catches up with the ramp
        assert np.abs(lag).max() < 0.01
    else:
        assert 0.1 < lag.min() and lag.max() < 2.0


def test_one_euro_does_not_depend_on_resolution():
    rng = np.random.default_rng(1)
    signal = np.cumsum(rng.normal(0, 1, (100, 2, 2)), axis=0)
    small = run_filter(video.OneEuro(), signal, size=100.0)
    large = run_filter(video.OneEuro(), 4 * signal, size=400.0)
    np.testing.assert_allclose(large, 4 * small, rtol=1e-5, atol=1e-4)


def test_moving_average_lags_half_its_window():
    ramp = np.arange(50, dtype=np.float32)[:, None, None] * np.ones((1, 1, 2))
    out = run_filter(video.MovingAverage(5), ramp)
    np.testing.assert_allclose(ramp[10:] - out[10:], 2.0)
    np.testing.assert_array_equal(run_filter(video.NoSmoothing(), ramp), ramp)


def test_lag_is_measured_both_ways_and_noise_alone_has_none():
    t = np.arange(120)[:, None, None]
    truth = np.concatenate([20 * np.sin(t / 9.0), 10 * np.cos(t / 13.0)], axis=-1) * np.ones((1, 4, 2))
    later = np.concatenate([truth[:3], truth[:-3]])          # each frame shows the truth of 3 before
    earlier = np.concatenate([truth[1:], truth[-1:]])                     # the truth of the next frame
    noisy = truth + np.random.default_rng(0).normal(0, 0.5, truth.shape)
    assert video.lag_frames(later, truth) == 3.0
    assert video.lag_frames(earlier, truth) == -1.0
    assert abs(video.lag_frames(noisy, truth)) <= 0.25


# ---------------------------------------------------------------------------------------------------------------
# the shape model
# ---------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes() -> np.ndarray:
    rng = np.random.default_rng(0)
    out = []
    for i in range(300):
        a, s = rng.uniform(-0.3, 0.3), rng.uniform(0.5, 2.0)
        rot = s * np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
        out.append(face_68(seed=i, jitter=1.5) @ rot.T + rng.uniform(-50, 50, 2))
    return np.asarray(out)


def test_shape_model_round_trip_and_outliers(shapes, tmp_path):
    model = shape.fit(shapes)
    size = np.linalg.norm(shapes[3].max(0) - shapes[3].min(0))
    assert np.abs(model.project(shapes[3]) - shapes[3]).max() < 0.01 * size * 3       # a training face: itself
    assert 0.8 < np.median([model.distance(s) for s in shapes]) < 1.2
    bad = shapes[3].copy()
    bad[8] += [0.0, 0.5 * size]                                      # the chin half a face below
    assert model.distance(bad) > 3 and model.distance(bad) > 3 * model.distance(shapes[3])
    assert np.linalg.norm(model.project(bad)[8] - shapes[3][8]) < 0.75 * np.linalg.norm(bad[8] - shapes[3][8])
    loaded = shape.ShapeModel.load(model.save(tmp_path / "s.json"))
    assert loaded.distance(bad) == pytest.approx(model.distance(bad), rel=1e-6)
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="bad.json.*shape --fit"):
        shape.ShapeModel.load(tmp_path / "bad.json")


def test_similarity_recovers_a_known_transform(shapes):
    a = 1.7 * np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    got_a, got_t = shape.similarity(shapes[0], shapes[0] @ a.T + [3.0, -8.0])
    np.testing.assert_allclose(got_a, a, atol=1e-9)
    np.testing.assert_allclose(got_t, [3.0, -8.0], atol=1e-7)


# ---------------------------------------------------------------------------------------------------------------
# reading, writing, tracking
# ---------------------------------------------------------------------------------------------------------------
def write_clip(path, frames, fps=25.0):
    w = video.VideoWriter(path, fps, (frames[0].shape[1], frames[0].shape[0]))
    for f in frames:
        w.write(f)
    return w.close()


def test_video_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    frames = [cv2.GaussianBlur(rng.integers(0, 255, (64, 80, 3), dtype=np.uint8), (9, 9), 3) for _ in range(12)]
    path = write_clip(tmp_path / "clip.mp4", frames)
    assert not list(tmp_path.glob(".*part*"))
    reader = video.VideoReader(path)
    back = [f for _, _, f in reader]
    assert len(back) == 12 and back[0].shape == (64, 80, 3) and reader.fps == pytest.approx(25.0)
    assert np.mean([np.abs(a.astype(int) - b).mean() for a, b in zip(frames, back)]) < 12
    assert reader.problem == ""


def test_a_webcam_frame_is_timed_by_the_clock_not_by_its_nominal_rate(monkeypatch):
    class Camera:                                           # reports 30 fps, delivers frames 0.1 s apart
        def __init__(self, index): self.left = 3
        def isOpened(self): return True
        def get(self, prop): return 30.0 if prop == cv2.CAP_PROP_FPS else 0
        def release(self): pass
        def read(self):
            self.left -= 1
            return self.left >= 0, np.zeros((8, 8, 3), np.uint8)

    clock = iter([100.0, 100.1, 100.2])
    monkeypatch.setattr(video.cv2, "VideoCapture", Camera)
    monkeypatch.setattr(video.time, "monotonic", lambda: next(clock))
    assert [round(t, 6) for _, t, _ in video.VideoReader(0)] == [0.0, 0.1, 0.2]


@pytest.fixture(scope="module")
def astronaut():
    return pytest.importorskip("skimage.data").astronaut()


@pytest.fixture(scope="module")
def lenet():
    if not models.model_path("lenet").exists():
        pytest.skip("models/lenet is not trained")
    return predict.Predictor("lenet", runtime="keras")


def test_tracking_follows_a_known_path_with_one_detection(astronaut, lenet):
    steps = [(2 * i, i) for i in range(30)]                         # 2 px right and 1 down per frame
    frames = [cv2.warpAffine(astronaut, np.float32([[1, 0, dx], [0, 1, dy]]), (512, 512),
                             borderMode=cv2.BORDER_REFLECT) for dx, dy in steps]
    tracker = video.Tracker(lenet, video.NoSmoothing(), redetect_every=1000)
    results = [tracker(f, i, i / 25.0) for i, f in enumerate(frames)]
    assert tracker.detector_runs == 1 and all(r.keypoints is not None for r in results)
    moved = np.array([r.raw.mean(0) - results[0].raw.mean(0) for r in results])
    assert np.abs(moved - np.array(steps)).max() < 3.0              # the face's centre moves with the frames


def test_a_detection_that_agrees_leaves_the_followed_crop_in_place(astronaut, lenet):
    for keep_iou in (0.5, 2.0):                                     # 2.0: every detection reframes the face
        tracker = video.Tracker(lenet, video.NoSmoothing(), redetect_every=1, keep_iou=keep_iou)
        results = [tracker(astronaut, i, i / 25.0) for i in range(4)]
        assert tracker.detector_runs == 4
        followed = [preprocess.box_to_crop(preprocess.keypoint_box(r.raw)) for r in results[:-1]]
        if keep_iou > 1:
            assert all(np.array_equal(r.crop, results[0].crop) for r in results)
        else:
            assert all(np.array_equal(r.crop, c) for r, c in zip(results[1:], followed))
            assert not np.array_equal(results[1].crop, results[0].crop)


def test_collapsed_keypoints_lose_the_face_instead_of_failing(astronaut, lenet, monkeypatch):
    monkeypatch.setattr(lenet.model, "predict_crops", lambda gray, crops: np.full((len(crops), 68, 2), 40.0))
    tracker = video.Tracker(lenet, video.NoSmoothing(), redetect_every=1000)
    first = tracker(astronaut, 0, 0.0)
    assert first.raw is not None and tracker.crop is None           # no crop around a point: look again
    tracker(astronaut, 1, 0.04)
    assert tracker.detector_runs == 2


def test_frames_without_a_face_are_reported_not_dropped(tmp_path, astronaut, lenet, capsys):
    blank = np.full_like(astronaut, 128)
    path = write_clip(tmp_path / "clip.mp4", [astronaut] * 3 + [blank] * 3 + [astronaut] * 2)
    r = video.track(path, lenet, "one-euro", out=tmp_path / "out.mp4", json_out=tmp_path / "out.jsonl",
                    progress=False, redetect_every=1)
    assert r["frames_read"] == 8 and r["problem"] == ""
    lines = [json.loads(line) for line in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert [line["face"] for line in lines] == [True] * 3 + [False] * 3 + [True] * 2
    assert r["frames_without_face"] == [3, 4, 5] and len(lines[0]["keypoints"]) == 68
    assert sum(1 for _ in video.VideoReader(tmp_path / "out.mp4")) == 8
    assert cli.frame_ranges([3, 4, 5, 9]) == "3-5, 9"


# ---------------------------------------------------------------------------------------------------------------
# bad video input: one clear line each
# ---------------------------------------------------------------------------------------------------------------
def test_bad_video_inputs(tmp_path, astronaut, capsys):
    (tmp_path / "text.mp4").write_text("not a video")
    with pytest.raises(video.VideoError, match="text.mp4: not a video"):
        video.VideoReader(tmp_path / "text.mp4")
    with pytest.raises(video.VideoError, match="missing.mp4: no such file"):
        video.VideoReader(tmp_path / "missing.mp4")
    with pytest.raises(video.VideoError, match="camera 97 cannot be opened"):
        video.VideoReader(97)
    with pytest.raises(video.VideoError, match="write a .mp4 or .avi"):
        video.VideoWriter(tmp_path / "x.gif", 25, (10, 10))
    rng = np.random.default_rng(0)
    full = write_clip(tmp_path / "full.avi", [rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(40)])
    blob = full.read_bytes()
    (tmp_path / "cut.avi").write_bytes(blob[: len(blob) // 2])
    reader = video.VideoReader(tmp_path / "cut.avi")
    assert 0 < sum(1 for _ in reader) < 40 and "truncated" in reader.problem and "cut.avi" in reader.problem
    assert cli.main(["video", str(tmp_path / "text.mp4"), "--model", "lenet", "--no-shape-check"]) == 1
    err = capsys.readouterr().err
    assert "text.mp4" in err and "Traceback" not in err
