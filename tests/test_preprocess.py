import cv2
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from helpers import preprocess as pp
from helpers.data import Dataset
from helpers.schemes import SCHEME_68

from .support import face_68


@settings(max_examples=150, deadline=None)
@given(w=st.integers(40, 700), h=st.integers(40, 700), fx=st.floats(0.05, 0.95), fy=st.floats(0.05, 0.95),
       bw=st.floats(0.1, 1.5), bh=st.floats(0.1, 1.5), scale=st.floats(1.0, 2.0), dx=st.floats(-0.3, 0.3),
       dy=st.floats(-0.3, 0.3))
def test_dot_lands_on_transformed_keypoint(w, h, fx, fy, bw, bh, scale, dx, dy):
    """Draw a dot at a keypoint, crop and resize: the brightest pixel lies within 1 px of the moved keypoint."""
    x, y = int(fx * (w - 1)), int(fy * (h - 1))      # the dot sits on a pixel centre
    # a box around the keypoint, possibly reaching beyond the image
    box = [x - bw * w / 2 + dx * w, y - bh * h / 2 + dy * h, x + bw * w / 2 + dx * w, y + bh * h / 2 + dy * h]
    crop = pp.box_to_crop(box, scale=scale)
    # the dot: a small Gaussian at the keypoint, about one output pixel wide so that it survives
    # a large downscale
    sigma = max(0.7, 0.5 * crop[2] / 96)
    yy, xx = np.mgrid[:h, :w]
    img = (255 * np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2))).round().astype(np.uint8)
    kp = pp.to_crop_coords(np.array([[x, y]], np.float32), crop)[0]
    x0, y0, side = crop
    if not (1 <= x - x0 <= side - 2 and 1 <= y - y0 <= side - 2):
        return     # outside the crop, or on its outermost pixels where an upscale makes a plateau: no single peak
    out = pp.crop_face(img, crop, border=cv2.BORDER_CONSTANT)
    assert out.max() > 0
    by, bx = np.unravel_index(np.argmax(out), out.shape)
    assert abs(bx - kp[0]) <= 1.0 and abs(by - kp[1]) <= 1.0


def test_crop_and_resize_have_no_subpixel_bias():
    """A blob at a sub-pixel position, cropped and resized (down and up): its centroid lands on the mapped
    keypoint to a few hundredths of a pixel, in x and in y alike — the geometry adds no offset of its own."""
    rng = np.random.default_rng(0)
    errors = []
    for _ in range(40):
        h, w = rng.integers(120, 400, 2)
        px, py = rng.uniform(50, w - 50), rng.uniform(50, h - 50)
        yy, xx = np.mgrid[:h, :w]
        img = (255 * np.exp(-((xx - px) ** 2 + (yy - py) ** 2) / (2 * rng.uniform(3, 6) ** 2))).round().astype(np.uint8)
        crop = pp.box_to_crop([px - rng.uniform(15, 45), py - 30, px + 30, py + rng.uniform(15, 45)])
        out = pp.crop_face(img, crop).astype(np.float64)
        kp = pp.to_crop_coords(np.array([[px, py]], np.float32), crop)[0]
        gy, gx = np.mgrid[:96, :96]
        errors.append(((out * gx).sum() / out.sum() - kp[0], (out * gy).sum() / out.sum() - kp[1]))
    errors = np.array(errors)
    assert np.abs(errors).max() < 0.05
    assert np.abs(errors.mean(axis=0)).max() < 0.01


@settings(max_examples=50, deadline=None)
@given(x0=st.integers(-50, 500), y0=st.integers(-50, 500), side=st.integers(10, 900))
def test_coordinate_round_trip(x0, y0, side):
    kp = np.random.default_rng(side).uniform(-10, 600, (5, 2)).astype(np.float32)
    kp[2] = np.nan
    crop = np.array([x0, y0, side])
    back = pp.to_image_coords(pp.to_crop_coords(kp, crop), crop)
    np.testing.assert_allclose(back, kp, atol=1e-3 * max(1, side / 96) + 1e-3)
    assert np.isnan(back[2]).all()


def test_crop_geometry_is_centred_and_square():
    crop = pp.box_to_crop([10, 20, 50, 100], scale=1.5)
    assert crop[2] == 120
    # the crop's centre (x0 + (side-1)/2) matches the box centre within half a pixel
    assert abs(crop[0] + (crop[2] - 1) / 2 - 30) <= 0.5 and abs(crop[1] + (crop[2] - 1) / 2 - 60) <= 0.5
    shifted = pp.box_to_crop([10, 20, 50, 100], scale=1.5, shift=(0.1, -0.1))
    assert shifted[0] - crop[0] == 12 and shifted[1] - crop[1] == -12
    with pytest.raises(ValueError, match="degenerate"):
        pp.box_to_crop([10, 10, 10, 30])


def test_crop_outside_image_pads():
    img = np.full((50, 60), 200, np.uint8)
    out = pp.crop_face(img, (-30, -30, 100), size=96, border=cv2.BORDER_CONSTANT)
    assert out.shape == (96, 96) and out[0, 0] == 0 and out[50, 50] == 200 and out[90, 90] == 0
    with pytest.raises(ValueError, match="does not overlap"):
        pp.crop_face(img, (100, 100, 20))


@pytest.mark.parametrize("image", [
    np.full((8, 8, 3), 100, np.uint8), np.full((8, 8), 100, np.uint8), np.full((8, 8, 4), 100, np.uint8),
    np.full((8, 8, 1), 100, np.uint8), np.full((8, 8, 3), 100 * 257, np.uint16), np.full((8, 8), 100 / 255.0),
])
def test_to_gray_accepts_common_layouts(image):
    g = pp.to_gray(image)
    assert g.shape == (8, 8) and g.dtype == np.uint8 and abs(int(g[0, 0]) - 100) <= 1


def test_to_gray_rejects_odd_shapes():
    with pytest.raises(ValueError):
        pp.to_gray(np.zeros((4, 4, 2), np.uint8))


def test_normalise_round_trip_and_range():
    kp = np.array([[-0.5, -0.5], [95.5, 95.5], [47.5, 47.5], [np.nan, 3]], np.float32)
    n = pp.normalise_keypoints(kp)
    np.testing.assert_allclose(n[:3], [[-1, -1], [1, 1], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(pp.denormalise_keypoints(n), kp, atol=1e-5)
    assert np.isnan(n[3, 0])


def test_prepare_and_cache_round_trip(tmp_path):
    kps = np.stack([face_68(200, 160, seed=i) for i in range(3)])
    kps[1, 5] = np.nan
    images = [np.random.default_rng(i).integers(0, 255, (160, 200, 3), dtype=np.uint8) for i in range(3)]
    ds = Dataset("toy", images, kps, np.array(["a", "b", "c"]), np.array(["p", "p", "q"]), SCHEME_68, "mem")
    faces = pp.prepare(ds, progress=False)
    assert faces.images.shape == (3, 96, 96) and faces.images.dtype == np.uint8
    assert np.isnan(faces.keypoints[1, 5]).all()
    inside = faces.keypoints[~np.isnan(faces.keypoints)]
    assert inside.min() > 0 and inside.max() < 95           # the margin keeps landmarks inside the crop
    np.testing.assert_allclose(pp.to_image_coords(faces.keypoints, faces.crops), kps, atol=1e-3)
    faces.save(tmp_path / "f.npz")
    back = pp.Faces.load(tmp_path / "f.npz")
    np.testing.assert_array_equal(back.images, faces.images)
    np.testing.assert_array_equal(back.keypoints, faces.keypoints)
    assert back.scheme is SCHEME_68 and list(back.names) == ["a", "b", "c"]
    assert len(faces.subset([0, 2])) == 2


def test_cache_key_changes_with_parameters():
    assert pp.cache_key(a=1) == pp.cache_key(a=1) != pp.cache_key(a=2)
