"""helpers.predict and `facekp predict`: coordinates, several faces, bad inputs, drawing, exit codes.

The models here are tiny and built by the tests: a constant model (its output is a bias we choose) and a
"centroid" model that puts every keypoint on the intensity centroid of its crop, so real pixels decide the
answer and a wrong crop or a wrong mapping back shows as a wrong position.
"""
from __future__ import annotations

import json

import cv2
import keras
import numpy as np
import pytest
from keras import ops
from PIL import Image

from helpers import cli, config, data, detect, evaluate, plots, predict, preprocess
from helpers.schemes import SCHEME_68

S = config.IMAGE_SIZE


class Centroid(keras.layers.Layer):
    """All 68 keypoints at the intensity centroid of the input, normalised like the training targets."""

    def call(self, x):
        w = x[..., 0]
        g = ops.arange(S, dtype="float32")
        total = ops.sum(w, axis=(1, 2)) + 1e-6
        cx = ops.sum(w * g[None, None, :], axis=(1, 2)) / total
        cy = ops.sum(w * g[None, :, None], axis=(1, 2)) / total
        pts = (ops.stack([cx, cy], axis=-1) + 0.5) / S * 2.0 - 1.0
        return ops.tile(pts, (1, 68))

    def compute_output_shape(self, input_shape):
        return (input_shape[0], 136)


def centroid_model() -> keras.Model:
    inp = keras.Input((S, S, 1))
    return keras.Model(inp, Centroid()(inp), name="centroid")


def constant_model(normalised: np.ndarray) -> keras.Model:
    """Outputs ``normalised`` (136,) for every input."""
    model = keras.Sequential([keras.Input((S, S, 1)), keras.layers.AveragePooling2D(S),
                              keras.layers.Flatten(), keras.layers.Dense(136)], name="constant")
    model.layers[-1].set_weights([np.zeros((1, 136), np.float32), np.asarray(normalised, np.float32).ravel()])
    return model


@pytest.fixture(scope="module")
def face_kps() -> np.ndarray:
    from .support import face_68
    return face_68(w=120, h=100) + np.array([140.0, 60.0], np.float32)   # a face in a 400×300 image


@pytest.fixture(scope="module")
def const_model(face_kps) -> keras.Model:
    crop = preprocess.box_to_crop(preprocess.keypoint_box(face_kps))
    return constant_model(preprocess.normalise_keypoints(preprocess.to_crop_coords(face_kps, crop)))


@pytest.fixture(scope="module")
def const_model_file(const_model, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "tiny.keras"
    const_model.save(path)
    return path


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return pytest.importorskip("skimage.data").astronaut()


# ---------------------------------------------------------------------------------------------------------------
# coordinates
# ---------------------------------------------------------------------------------------------------------------
def test_round_trip_box_crop_keypoints_image(const_model, face_kps):
    """Landmark box → crop → the model's normalised keypoints → back in the photograph: the same points."""
    image = np.zeros((300, 400, 3), np.uint8)
    pred = predict.Predictor(const_model, calibration=detect.Calibration(preprocess.CROP_SCALE, (0.0, 0.0)))(
        image, boxes=[preprocess.keypoint_box(face_kps)])
    assert len(pred) == 1 and pred.keypoints.shape == (1, 68, 2)
    np.testing.assert_allclose(pred.keypoints[0], face_kps, atol=1e-3)
    assert np.array_equal(pred.crops[0], preprocess.box_to_crop(preprocess.keypoint_box(face_kps)))


@pytest.mark.parametrize("calibration", [detect.UNCALIBRATED, detect.Calibration(1.3, (0.05, 0.12))])
def test_several_faces_follow_their_pixels(calibration):
    """Two bright blobs, one box each, one batched call: each prediction lands on its own blob."""
    image = np.zeros((300, 420), np.uint8)
    centres = np.array([[100.0, 90.0], [310.0, 200.0]])
    for cx, cy in centres:
        image[int(cy) - 4:int(cy) + 5, int(cx) - 4:int(cx) + 5] = 255        # 9×9 blob centred on (cx, cy)
    boxes = np.array([[cx - 35, cy - 40, cx + 35, cy + 30] for cx, cy in centres])
    model = predict.KeypointModel(centroid_model())
    calls = []
    forward = model.forward
    model.forward = lambda x: calls.append(len(x)) or forward(x)
    pred = predict.Predictor(model, calibration=calibration)(image, boxes=boxes)
    assert calls == [2]                                                       # one call for both faces
    assert pred.keypoints.shape == (2, 68, 2)
    np.testing.assert_allclose(pred.keypoints[:, 0], centres, atol=0.75)
    assert np.all(pred.keypoints == pred.keypoints[:, :1])


def test_predict_crops_matches_manual_pipeline(astronaut):
    model = predict.KeypointModel(centroid_model())
    gray = preprocess.to_gray(astronaut)
    crops = np.array([[150, 30, 130], [-20, 400, 150]])                      # the second leaves the image
    got = model.predict_crops(gray, crops)
    faces = np.stack([preprocess.crop_face(gray, c) for c in crops])
    out = model.model(faces[..., None].astype("float32") / 255, training=False)
    want = preprocess.to_image_coords(
        preprocess.denormalise_keypoints(ops.convert_to_numpy(out).reshape(2, 68, 2)), crops)
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert model.predict_crops(gray, np.zeros((0, 3))).shape == (0, 68, 2)


def test_padded_batches_give_each_face_its_own_answer():
    model = predict.KeypointModel(centroid_model())
    rng = np.random.default_rng(3)
    faces = rng.integers(0, 256, (70, S, S), dtype=np.uint8)            # 64 + 6: two chunks, the last padded
    together = model.predict_faces(faces)
    assert together.shape == (70, 68, 2)
    alone = np.stack([model.predict_faces(f[None])[0] for f in faces[[0, 5, 63, 64, 69]]])
    np.testing.assert_allclose(together[[0, 5, 63, 64, 69]], alone, atol=1e-4)


def test_wrong_model_contract_is_a_clear_error():
    bad = keras.Sequential([keras.Input((S, S, 1)), keras.layers.Flatten(), keras.layers.Dense(7)])
    with pytest.raises(ValueError, match="136"):
        predict.KeypointModel(bad)
    rgb = keras.Sequential([keras.Input((S, S, 3)), keras.layers.Flatten(), keras.layers.Dense(136)])
    with pytest.raises(ValueError, match="gray"):
        predict.KeypointModel(rgb)
    with pytest.raises(FileNotFoundError):
        predict.load_keypoint_model("/nonexistent/model.keras")


# ---------------------------------------------------------------------------------------------------------------
# photographs and bad inputs
# ---------------------------------------------------------------------------------------------------------------
def test_portrait_end_to_end(const_model, astronaut):
    pred = predict.Predictor(const_model)(astronaut)
    assert len(pred) == 1 and pred.width == 512 and pred.height == 512
    x0, y0, side = pred.crops[0]
    assert np.array_equal(pred.crops[0], detect.load_calibration().crop(pred.boxes[0]))
    kp = pred.keypoints[0]
    assert np.all((kp[:, 0] >= x0 - 1) & (kp[:, 0] <= x0 + side) & (kp[:, 1] >= y0 - 1) & (kp[:, 1] <= y0 + side))
    d = pred.to_dict()
    assert d["num_faces"] == 1 and list(d["faces"][0]["keypoints"]) == list(SCHEME_68.names)
    assert set(d["timings_ms"]) == {"read", "detect", "keypoints", "total"}
    json.dumps(d)


def test_two_faces_in_one_photograph(const_model):
    path = config.data_root() / "portraits" / "two_people.jpg"
    if not path.exists():
        pytest.skip("portraits not found: set FKP_DATA_DIR")
    pred = predict.Predictor(const_model)(path)
    assert len(pred) == 2 and pred.keypoints.shape == (2, 68, 2)
    assert abs(pred.boxes[0, 0] - pred.boxes[1, 0]) > 200                    # side by side, not one face twice


def test_every_kind_of_file(tmp_path, const_model, astronaut):
    """Good files of every layout give results; bad ones a clear ImageReadError; none crashes."""
    p = predict.Predictor(const_model)
    Image.fromarray(astronaut).save(tmp_path / "rgb.jpg", quality=90)
    Image.fromarray(preprocess.to_gray(astronaut)).save(tmp_path / "gray.png")
    Image.fromarray(np.dstack([astronaut, np.full((512, 512), 255, np.uint8)]), "RGBA").save(tmp_path / "alpha.png")
    cv2.imwrite(str(tmp_path / "deep.png"), astronaut[..., ::-1].astype(np.uint16) * 257)
    exif = Image.Exif()
    exif[0x0112] = 8                                                           # stored rotated: displayed upright
    Image.fromarray(np.rot90(astronaut, -1).copy()).save(tmp_path / "exif.jpg", exif=exif, quality=90)
    Image.fromarray(np.full((200, 300, 3), 90, np.uint8)).save(tmp_path / "noface.png")
    ref = p(tmp_path / "rgb.jpg")
    for name in ("gray.png", "alpha.png", "deep.png", "exif.jpg"):
        pred = p(tmp_path / name)
        assert len(pred) == 1, name
        np.testing.assert_allclose(pred.boxes, ref.boxes, atol=8, err_msg=name)
    empty = p(tmp_path / "noface.png")
    assert len(empty) == 0 and empty.keypoints.shape == (0, 68, 2) and empty.to_dict()["faces"] == []

    (tmp_path / "zero.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("hello\n")
    jpeg = (tmp_path / "rgb.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    for name, why in (("zero.jpg", "empty"), ("text.jpg", "not an image"), ("cut.jpg", "truncated")):
        with pytest.raises(data.ImageReadError, match=why):
            p(tmp_path / name)


def test_huge_image(tmp_path, const_model):
    """10000 × 10000 pixels: read, detected on a small copy, no crash, sizes reported in full."""
    big = np.full((10000, 10000), 200, np.uint8)
    Image.fromarray(big).save(tmp_path / "huge.png", compress_level=1)
    del big
    pred = predict.Predictor(const_model, keep_image=False)(tmp_path / "huge.png")
    assert (pred.width, pred.height) == (10000, 10000) and len(pred) == 0
    assert pred.timings["detect"] < 5000


# ---------------------------------------------------------------------------------------------------------------
# drawing
# ---------------------------------------------------------------------------------------------------------------
def test_draw_keypoints_cv(face_kps):
    image = np.zeros((300, 400, 3), np.uint8)
    box = np.array([[130.0, 50.0, 270.0, 170.0]])
    out = plots.draw_keypoints_cv(image, face_kps[None], SCHEME_68, boxes=box)
    assert out.shape == image.shape and out.dtype == np.uint8 and image.max() == 0       # input untouched
    colour = lambda side: np.array(plots._hex_to_rgb(plots.SIDE_COLOURS[side]))
    for i in (36, 45, 30):                   # subject's right eye corner, left eye corner, nose tip
        x, y = np.round(face_kps[i]).astype(int)
        assert np.abs(out[y, x].astype(int) - colour(SCHEME_68.sides[i])).max() < 60, i
    assert tuple(out[50, 200]) == plots._hex_to_rgb(plots.BOX_COLOUR)                  # the box's top edge
    gray = plots.draw_keypoints_cv(np.zeros((50, 60), np.uint8), np.full((68, 2), np.nan), SCHEME_68)
    assert gray.shape == (50, 60, 3) and gray.max() == 0                                # NaN points skipped
    # marker sizes scale with the image: one point on a 2000-px image covers many more pixels than on 400 px
    small = plots.draw_keypoints_cv(np.zeros((300, 400, 3), np.uint8), [[100.0, 100.0]])
    big = plots.draw_keypoints_cv(np.zeros((1500, 2000, 3), np.uint8), [[1000.0, 700.0]])
    assert big.any(axis=2).sum() > 8 * small.any(axis=2).sum() > 0


# ---------------------------------------------------------------------------------------------------------------
# the command line
# ---------------------------------------------------------------------------------------------------------------
def test_cli_predict(tmp_path, const_model_file, astronaut, capsys):
    good = tmp_path / "in"
    good.mkdir()
    Image.fromarray(astronaut).save(good / "astronaut.jpg")
    Image.fromarray(preprocess.to_gray(astronaut)).save(good / "gray.png")
    Image.fromarray(np.full((100, 120, 3), 50, np.uint8)).save(good / "noface.png")
    out = tmp_path / "out"
    rc = cli.main(["predict", str(good), "--model", str(const_model_file), "--out", str(out), "--json", "--quiet"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["skipped"] == [] and [r["num_faces"] for r in report["images"]] == [1, 1, 0]
    face = report["images"][0]["faces"][0]
    assert len(face["box"]) == 4 and len(face["keypoints"]) == 68 and "chin" in face["keypoints"]
    for stem in ("astronaut", "gray", "noface"):
        assert (out / f"{stem}_keypoints.png").exists() and (out / f"{stem}.json").exists()
    annotated = data.read_image(out / "astronaut_keypoints.png")
    assert annotated.shape == astronaut.shape and not np.array_equal(annotated, astronaut)

    # the same faces through the ONNX export: same keypoints, and the report says which runtime ran
    rc = cli.main(["predict", str(good / "astronaut.jpg"), "--model", str(const_model_file), "--runtime", "onnx",
                   "--out", str(tmp_path / "out_onnx"), "--json", "--quiet"])
    assert rc == 0
    onnx_report = json.loads(capsys.readouterr().out)
    assert report["runtime"] == "keras" and onnx_report["runtime"] == "onnx"
    np.testing.assert_allclose(list(onnx_report["images"][0]["faces"][0]["keypoints"].values()),
                               list(face["keypoints"].values()), atol=0.05)

    # bad files are reported and skipped, the run continues, the exit code says something failed
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "zero.jpg").write_bytes(b"")
    (bad / "text.jpg").write_text("not an image")
    jpeg = (good / "astronaut.jpg").read_bytes()
    (bad / "cut.jpg").write_bytes(jpeg[: len(jpeg) // 2])
    rc = cli.main(["predict", str(bad / "zero.jpg"), str(good / "astronaut.jpg"), str(bad / "text.jpg"),
                   str(bad / "cut.jpg"), str(tmp_path / "missing.jpg"), "--model", str(const_model_file),
                   "--out", str(tmp_path / "out2"), "--json", "--quiet"])
    captured = capsys.readouterr()
    assert rc == 1
    report = json.loads(captured.out)
    assert len(report["images"]) == 1 and report["images"][0]["num_faces"] == 1
    assert [f["path"].split("/")[-1] for f in report["skipped"]] == ["zero.jpg", "text.jpg", "cut.jpg", "missing.jpg"]
    assert "empty file" in captured.err and "truncated" in captured.err and "not an image" in captured.err

    assert cli.main(["predict", str(good), "--model", str(tmp_path / "nope.keras"), "--out", str(out)]) == 1
    err = capsys.readouterr().err
    assert "nope.keras" in err and "not found" in err
    assert cli.main(["predict", str(tmp_path / "empty_dir_missing"), "--model", str(const_model_file),
                     "--out", str(out), "--quiet"]) == 1
    with pytest.raises(SystemExit) as e:
        cli.main(["predict"])
    assert e.value.code == 2


# ---------------------------------------------------------------------------------------------------------------
# a whole data set, end to end
# ---------------------------------------------------------------------------------------------------------------
def test_run_dataset_counts_undetected_faces_as_failures(const_model, face_kps):
    from helpers.data import Dataset

    n = 4
    images = [np.zeros((300, 400, 3), np.uint8) for _ in range(n)]
    gt = np.stack([face_kps + [5.0 * i, 0.0] for i in range(n)]).astype(np.float32)
    ds = Dataset("synthetic", images, gt, np.array([f"f{i}" for i in range(n)]), np.array([f"p{i}" for i in range(n)]),
                 SCHEME_68, "tests")
    boxes = np.array([preprocess.keypoint_box(k) for k in gt], dtype=np.float64)
    boxes[3] = np.nan                                                       # the detector missed face 3
    pred = predict.Predictor(const_model, calibration=detect.Calibration(preprocess.CROP_SCALE, (0.0, 0.0)))
    res = predict.run_dataset(ds, pred, boxes=boxes, batch_size=2, progress=False)
    assert res["detected"].tolist() == [True, True, True, False]
    np.testing.assert_allclose(res["keypoints"][:3], gt[:3], atol=1e-3)   # the constant model is exact here
    assert np.all(np.isnan(res["keypoints"][3])) and res["crops"][3].tolist() == [-1, -1, -1]
    m = evaluate.end_to_end_metrics(res, gt, SCHEME_68)
    assert m["detection_rate"] == 0.75 and m["nme_detected"] < 1e-4
    assert m["failure_rate_0.08"] == 0.25 and m["failure_rate_0.1"] == 0.25     # only the undetected face fails
    assert m["auc_0.08"] == pytest.approx(0.75, abs=1e-3)


def test_model_files_load_once(const_model_file, tmp_path):
    a = predict.load_keypoint_model(const_model_file)
    assert predict.load_keypoint_model(str(const_model_file)) is a and a.scheme is SCHEME_68
    (tmp_path / "weights.h5").write_bytes(b"not a keras archive")
    with pytest.raises(ValueError, match=".keras"):
        predict.load_keypoint_model(tmp_path / "weights.h5")
