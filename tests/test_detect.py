"""helpers.detect: Haar detection with boxes mapped back, the calibration, `facekp calibrate`; reading any
photograph (helpers.data.as_rgb / read_image, which detection and prediction rely on)."""
from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from helpers import cli, data, detect, preprocess


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    skimage_data = pytest.importorskip("skimage.data")
    return skimage_data.astronaut()            # 512×512 RGB, one face (Eileen Collins, NASA, public domain)


# ---------------------------------------------------------------------------------------------------------------
# as_rgb / read_image
# ---------------------------------------------------------------------------------------------------------------
def test_as_rgb_normalises_every_layout():
    g = np.arange(12, dtype=np.uint8).reshape(3, 4)
    assert data.as_rgb(g).shape == (3, 4, 3) and np.array_equal(data.as_rgb(g)[..., 1], g)
    assert np.array_equal(data.as_rgb(g[..., None]), data.as_rgb(g))
    g16 = g.astype(np.uint16) * 257
    assert np.array_equal(data.as_rgb(g16), data.as_rgb(g))
    assert np.array_equal(data.as_rgb(g.astype(np.float32) / 255), data.as_rgb(g))
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[0, 0] = (10, 20, 30, 255)                       # opaque: kept
    rgba[1, 1] = (10, 20, 30, 0)                         # transparent: white
    out = data.as_rgb(rgba)
    assert out.shape == (2, 2, 3) and tuple(out[0, 0]) == (10, 20, 30) and tuple(out[1, 1]) == (255, 255, 255)
    with pytest.raises(ValueError, match="shape"):
        data.as_rgb(np.zeros((2, 2, 5), np.uint8))
    with pytest.raises(ValueError, match="empty"):
        data.as_rgb(np.zeros((0, 4), np.uint8))


def test_read_image_bad_files_give_clear_errors(tmp_path, astronaut):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(data.ImageReadError, match="empty file"):
        data.read_image(empty)
    text = tmp_path / "notes.jpg"
    text.write_text("this is not a photograph\n" * 20)
    with pytest.raises(data.ImageReadError, match="not an image"):
        data.read_image(text)
    ok, buf = cv2.imencode(".jpg", astronaut[..., ::-1])
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(buf.tobytes()[: len(buf) // 2])
    with pytest.raises(data.ImageReadError, match="truncated"):
        data.read_image(truncated)
    with pytest.raises(data.ImageReadError, match="no such file"):
        data.read_image(tmp_path / "missing.png")
    with pytest.raises(data.ImageReadError, match="folder"):
        data.read_image(tmp_path)
    good = tmp_path / "good.jpg"
    good.write_bytes(buf.tobytes())
    with pytest.raises(data.ImageReadError, match="pixel limit"):
        data.read_image(good, max_pixels=1000)


def test_read_image_png_variants(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)
    # 16-bit RGB: values v * 257 must come back as exactly v
    cv2.imwrite(str(tmp_path / "rgb16.png"), (rgb.astype(np.uint16) * 257)[..., ::-1])
    assert np.array_equal(data.read_image(tmp_path / "rgb16.png"), rgb)
    # 16-bit gray
    cv2.imwrite(str(tmp_path / "g16.png"), rgb[..., 0].astype(np.uint16) * 257)
    out = data.read_image(tmp_path / "g16.png")
    assert out.shape == (20, 30, 3) and np.array_equal(out[..., 2], rgb[..., 0])
    # 8-bit gray
    Image.fromarray(rgb[..., 1]).save(tmp_path / "g8.png")
    assert np.array_equal(data.read_image(tmp_path / "g8.png")[..., 0], rgb[..., 1])
    # RGBA: transparent pixels become white, opaque ones keep their colour
    rgba = np.dstack([rgb, np.full((20, 30), 255, np.uint8)])
    rgba[:5, :5, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    out = data.read_image(tmp_path / "alpha.png")
    assert out.shape == (20, 30, 3)
    assert np.all(out[:5, :5] == 255) and np.array_equal(out[10:, 10:], rgb[10:, 10:])
    # palette image
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    assert data.read_image(tmp_path / "palette.png").shape == (20, 30, 3)


def test_read_image_honours_exif_orientation(tmp_path):
    img = np.zeros((40, 60, 3), np.uint8)
    img[:10, :10] = 255                              # a white square in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6                                 # "rotate 90° clockwise to display"
    Image.fromarray(img).save(tmp_path / "rotated.jpg", exif=exif, quality=95)
    out = data.read_image(tmp_path / "rotated.jpg")
    assert out.shape == (60, 40, 3)                  # displayed upright: portrait
    assert out[:10, -10:].mean() > 200 and out[-10:, :10].mean() < 50   # the corner moved to the top right


# ---------------------------------------------------------------------------------------------------------------
# detection
# ---------------------------------------------------------------------------------------------------------------
def test_detects_the_astronaut_and_maps_boxes_back(astronaut):
    boxes = detect.detect_faces(astronaut, max_side=None)
    assert boxes.shape == (1, 4) and boxes.dtype == np.float32
    x0, y0, x1, y1 = boxes[0]
    assert 150 < (x0 + x1) / 2 < 260 and 50 < (y0 + y1) / 2 < 150 and 60 < x1 - x0 < 160   # her face
    # the same photograph at twice the size, detected on a copy downscaled to 512: the box doubles
    big = cv2.resize(astronaut, (1024, 1024), interpolation=cv2.INTER_LINEAR)
    big_boxes = detect.detect_faces(big, max_side=512)
    assert big_boxes.shape == (1, 4)
    np.testing.assert_allclose(big_boxes[0], (boxes[0] + 0.5) * 2 - 0.5, atol=6)


def test_detect_accepts_every_input_kind(astronaut):
    gray = preprocess.to_gray(astronaut)
    ref = detect.detect_faces(astronaut)
    for variant in (gray, np.dstack([astronaut, np.full(gray.shape, 255, np.uint8)]),
                    astronaut.astype(np.uint16) * 257, astronaut.astype(np.float32) / 255, gray[..., None]):
        np.testing.assert_allclose(detect.detect_faces(variant), ref, atol=1)


def test_no_face_and_tiny_images_give_no_boxes():
    rng = np.random.default_rng(1)
    assert detect.detect_faces(np.full((300, 400, 3), 128, np.uint8)).shape == (0, 4)
    assert detect.detect_faces(rng.integers(0, 256, (240, 320), dtype=np.uint8)).shape == (0, 4)
    assert detect.detect_faces(np.zeros((5, 7), np.uint8)).shape == (0, 4)


def test_detector_parameters_are_used(astronaut):
    assert len(detect.detect_faces(astronaut, min_size=0.9)) == 0        # no face covers 90 % of the image
    with pytest.raises(FileNotFoundError, match="cascade"):
        detect.detect_faces(astronaut, cascade="no_such_cascade.xml")


def test_smallest_face_is_the_one_the_cascade_looks_for(astronaut):
    assert detect.smallest_face((800, 1000)) == pytest.approx(120)      # 400×320 copy: 0.15 × 320 = 48 px, × 2.5
    assert detect.smallest_face((100, 100)) == 24                        # the 24-px window is the floor
    big = detect.smallest_face(astronaut.shape, detect.DetectorParams(min_size=0.9))
    assert big > 400 and len(detect.detect_faces(astronaut, min_size=0.9)) == 0     # nothing smaller is sought


def test_iou_and_matching():
    a = np.array([[0, 0, 10, 10]])
    np.testing.assert_allclose(detect.iou(a, [[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]]),
                               [[1.0, 50 / 150, 0.0]])
    assert detect.match_box(np.array([[20, 20, 30, 30], [1, 1, 11, 11]]), [0, 0, 10, 10]) == 1
    assert detect.match_box(np.array([[20, 20, 30, 30]]), [0, 0, 10, 10]) == -1
    assert detect.match_box(np.zeros((0, 4)), [0, 0, 10, 10]) == -1


# ---------------------------------------------------------------------------------------------------------------
# calibration
# ---------------------------------------------------------------------------------------------------------------
def test_solve_calibration_recovers_a_known_mapping():
    rng = np.random.default_rng(2)
    lmk = np.c_[rng.uniform(0, 200, (50, 2)), rng.uniform(60, 120, (50, 1))]
    lmk = np.c_[lmk[:, :2], lmk[:, :2] + lmk[:, 2:3]]                  # square landmark boxes
    scale, shift = 1.8, (0.02, 0.07)
    # detector boxes such that box_to_crop(det, 1.8, shift) is the landmark crop
    side = preprocess.CROP_SCALE * (lmk[:, 2] - lmk[:, 0])
    det_size = side / scale
    c = (lmk[:, :2] + lmk[:, 2:]) / 2 - np.array(shift) * side[:, None]
    det = np.c_[c - det_size[:, None] / 2, c + det_size[:, None] / 2]
    got_scale, got_shift = detect.solve_calibration(det, lmk)
    assert got_scale == pytest.approx(scale, rel=1e-9)
    np.testing.assert_allclose(got_shift, shift, atol=1e-9)
    agreement = detect.crop_agreement(det, lmk, detect.Calibration(got_scale, got_shift))
    assert agreement["iou_median"] > 0.97
    assert detect.crop_agreement(det, lmk, detect.UNCALIBRATED)["iou_median"] < 0.5
    with pytest.raises(ValueError, match="at least 3"):
        detect.solve_calibration(det[:2], lmk[:2])


def test_committed_calibration_is_sane_and_goes_through_box_to_crop():
    raw = json.loads(detect.CALIBRATION_PATH.read_text())
    cal = detect.load_calibration()
    assert cal.scale == raw["scale"] and 1.0 < cal.scale < 2.5 and all(abs(s) < 0.2 for s in cal.shift)
    stats = cal.stats
    assert stats["train_faces_matched"] > 1000
    assert stats["val"]["calibrated"]["iou_median"] > stats["val"]["uncalibrated"]["iou_median"]
    boxes = np.array([[10.5, 20.0, 90.5, 100.0], [200, 50, 260, 110]], np.float32)
    crops = detect.face_crops(boxes, cal)
    for b, c in zip(boxes, crops):
        assert np.array_equal(c, preprocess.box_to_crop(b, cal.scale, cal.shift))
    assert detect.face_crops(np.zeros((0, 4)), cal).shape == (0, 3)


def test_missing_calibration_file_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="--fit"):
        detect.load_calibration(tmp_path / "nope.json")
    path = detect.save_calibration(detect.Calibration(1.7, (0.0, 0.05), {"n": 3}), tmp_path / "c.json")
    assert detect.load_calibration(path) == detect.Calibration(1.7, (0.0, 0.05))


def test_facekp_calibrate_shows_the_calibration(tmp_path, capsys):
    assert cli.main(["calibrate"]) == 0
    assert "scale" in capsys.readouterr().out
    assert cli.main(["calibrate", "--out", str(tmp_path / "nope.json")]) == 1
    assert "--fit" in capsys.readouterr().err
