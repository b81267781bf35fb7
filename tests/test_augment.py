"""Tests of helpers.augment: geometry and labels, NaN handling, determinism, expansion, sequences."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from .support import face_68, needs_real_data
from helpers import config
from helpers.augment import (AugmentParams, Augmenter, KeypointSequence, adjust_brightness_contrast,
                             affine_matrix, blur, cutout, expand, gamma, hflip, noise, to_model_inputs,
                             transform_keypoints, warp)
from helpers.preprocess import Faces, denormalise_keypoints
from helpers.schemes import SCHEME_15, SCHEME_68, to_15

S = config.IMAGE_SIZE
SCHEMES = [SCHEME_68, SCHEME_15]
FAST = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
NO_PHOTOMETRIC = dict(brightness_p=0, gamma_p=0, blur_p=0, noise_p=0, cutout_p=0)
NO_GEOMETRY = dict(flip_p=0, affine_p=0)


def random_batch(n, scheme, seed=0, dtype=np.uint8, lo=10.0, hi=85.0, nan_frac=0.0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, S, S), dtype=np.uint8)
    if dtype == np.float32:
        images = images.astype(np.float32) / 255
    kps = rng.uniform(lo, hi, (n, scheme.num_keypoints, 2)).astype(np.float32)
    if nan_frac:
        kps[rng.random((n, scheme.num_keypoints)) < nan_frac] = np.nan
    return images, kps


def frontal(scheme, n=4, seed=0):
    """Frontal faces in crop pixels (the subject's left on the image's right, as in the data)."""
    rng = np.random.default_rng(seed)
    base = face_68(S, S)
    faces = np.stack([base + rng.normal(0, 1.0, base.shape) for _ in range(n)]).astype(np.float32)
    return faces if scheme is SCHEME_68 else to_15(faces)


def blob_images(points, sigma=1.5):
    """One image per point (N, 2): a Gaussian dot centred on the point (float32, peak 1)."""
    yy, xx = np.mgrid[0:S, 0:S].astype(np.float32)
    p = np.asarray(points, dtype=np.float32)
    d2 = (xx[None] - p[:, 0, None, None]) ** 2 + (yy[None] - p[:, 1, None, None]) ** 2
    return np.exp(-d2 / (2 * sigma**2)).astype(np.float32)


def centroids(images):
    yy, xx = np.mgrid[0:S, 0:S]
    w = images.astype(np.float64)
    total = w.sum(axis=(1, 2))
    return np.stack([(w * xx).sum(axis=(1, 2)) / total, (w * yy).sum(axis=(1, 2)) / total], axis=1)


# ------------------------------------------------------------------------------------------------ flip
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
@FAST
@given(seed=st.integers(0, 2**32 - 1), nan_frac=st.sampled_from([0.0, 0.3]))
def test_flip_twice_is_identity(scheme, dtype, seed, nan_frac):
    images, kps = random_batch(3, scheme, seed, dtype, lo=-5, hi=100, nan_frac=nan_frac)
    im2, kp2 = hflip(*hflip(images, kps, scheme), scheme)
    assert im2.dtype == images.dtype
    np.testing.assert_array_equal(im2, images)
    np.testing.assert_allclose(kp2, kps, rtol=0, atol=1e-4)      # float32 rounding of W-1-x; NaN where NaN


def test_flip_pixel_convention():
    """A pixel at column c moves to column W-1-c, and so does a keypoint placed on it."""
    images = np.zeros((1, S, S), np.uint8)
    images[0, 40, 7] = 255
    kps = np.full((1, 15, 2), np.nan, np.float32)
    kps[0, 10] = (7, 40)                              # nose tip: on the midline, keeps its index
    im, kp = hflip(images, kps, SCHEME_15)
    assert im[0, 40, S - 1 - 7] == 255 and im.sum() == 255
    np.testing.assert_allclose(kp[0, 10], (S - 1 - 7, 40))


def test_flip_swaps_pair_labels():
    kps = np.full((1, 15, 2), np.nan, np.float32)
    kps[0, 0] = (70, 40)                              # left_eye_center at image right
    _, kp = hflip(np.zeros((1, S, S), np.uint8), kps, SCHEME_15)
    assert np.isnan(kp[0, 0]).all()
    np.testing.assert_allclose(kp[0, 1], (S - 1 - 70, 40))   # now the right eye's label


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
def test_flipped_left_points_stay_on_the_left_side_synthetic(scheme):
    """After a flip (with or without a small rotation), subject-left labels still sit on the image's right."""
    kps = frontal(scheme, n=16)
    sides = scheme.sides
    images = np.zeros((16, S, S), np.uint8)
    centre = (S - 1) / 2
    assert (kps[:, sides == 1, 0] > centre).all() and (kps[:, sides == -1, 0] < centre).all()
    params = AugmentParams(flip_p=1.0, rotation_deg=10, shift=0.02, **NO_PHOTOMETRIC)
    _, out = Augmenter(scheme, params)(images, kps, np.random.default_rng(0))
    left_x = out[:, sides == 1, 0].mean(axis=1)
    right_x = out[:, sides == -1, 0].mean(axis=1)
    assert (left_x > right_x).all()
    # Without the relabelling the sides would be reversed: the raw mirror of x proves the test can fail.
    mirrored = (S - 1) - kps[..., 0]
    assert (mirrored[:, sides == 1].mean(axis=1) < mirrored[:, sides == -1].mean(axis=1)).all()


@needs_real_data
@pytest.mark.parametrize("scheme_name", ["68", "15"])
def test_flipped_left_points_stay_on_the_data_side_real(scheme_name):
    from helpers.splits import load_faces

    faces = load_faces("youtube-faces-68", "train", max_faces=120, progress=False)
    kps = faces.keypoints if scheme_name == "68" else to_15(faces.keypoints)
    scheme = SCHEME_68 if scheme_name == "68" else SCHEME_15
    sides = scheme.sides

    def left_minus_right(k):
        return np.nanmean(k[:, sides == 1, 0], axis=1) - np.nanmean(k[:, sides == -1, 0], axis=1)

    data_sign = np.sign(np.median(left_minus_right(kps)))
    assert data_sign != 0
    _, flipped = hflip(faces.images, kps, scheme)
    agree = np.sign(left_minus_right(flipped)) == data_sign
    assert agree.mean() > 0.95


# ------------------------------------------------------------------------------------------------ affine
@FAST
@given(angle=st.floats(-30, 30), scale=st.floats(0.8, 1.2), tx=st.floats(-8, 8), ty=st.floats(-8, 8),
       flip=st.booleans(), seed=st.integers(0, 2**32 - 1))
def test_dot_lands_on_transformed_keypoint(angle, scale, tx, ty, flip, seed):
    """A dot drawn at a keypoint, warped with the matrix, is centred within 1 px of the moved keypoint."""
    pts = np.random.default_rng(seed).uniform(28, 67, (6, 2)).astype(np.float32)
    m = affine_matrix(angle, scale, (tx, ty), flip)
    warped = warp(blob_images(pts), m, border="constant")
    moved = transform_keypoints(pts[:, None, :], m)[:, 0]
    err = np.linalg.norm(centroids(warped) - moved, axis=1)
    assert err.max() < 1.0, err


def test_affine_matrix_matches_opencv_rotation():
    import cv2

    ours = affine_matrix(12.5, 1.07, (0, 0))
    ref = cv2.getRotationMatrix2D(((S - 1) / 2, (S - 1) / 2), 12.5, 1.07)
    np.testing.assert_allclose(ours, ref, atol=1e-9)
    np.testing.assert_allclose(affine_matrix([0, 12.5], [1, 1.07], [(0, 0), (0, 0)])[1], ref, atol=1e-9)


def test_warp_with_flip_matrix_equals_hflip():
    images, kps = random_batch(4, SCHEME_68, 3)
    im, _ = hflip(images, kps, SCHEME_68)
    np.testing.assert_array_equal(warp(images, affine_matrix(0, 1, (0, 0), True)), im)


@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_augmenter_dots_follow_their_labels(scheme, seed):
    """Full pipeline (flip + affine): the dot of keypoint j ends on the output keypoint carrying j's label."""
    kps = frontal(scheme, n=6, seed=seed % 1000)
    aug = Augmenter(scheme, AugmentParams(rotation_deg=20, border="constant", **NO_PHOTOMETRIC))
    perm = scheme.flip_permutation
    for j in range(0, scheme.num_keypoints, 7):
        images = blob_images(kps[:, j])
        out_im, out_kps = aug(images, kps, np.random.default_rng(seed))
        flipped = aug.sample_geometry(kps, np.random.default_rng(seed)).flip
        label = np.where(flipped, perm[j], j)
        target = out_kps[np.arange(6), label]
        assert np.linalg.norm(centroids(out_im) - target, axis=1).max() < 1.0


# ------------------------------------------------------------------------------------------------ out of frame
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_keypoints_stay_in_frame(seed):
    """Strong rotation, zoom and shift, points near the border: every present point stays inside."""
    params = AugmentParams(rotation_deg=40, scale=(0.8, 1.4), shift=0.2, **NO_PHOTOMETRIC)
    images, kps = random_batch(16, SCHEME_15, seed, lo=0, hi=S - 1, nan_frac=0.2)
    _, out = Augmenter(SCHEME_15, params)(images, kps, np.random.default_rng(seed))
    present = ~np.isnan(out[..., 0])
    assert (out[present] >= 0).all() and (out[present] <= S - 1).all()


def test_points_outside_before_stay_within_their_extent():
    kps = frontal(SCHEME_68, n=8)
    kps[:, 0, 0] = -4.0                                # a jaw point already outside the crop
    params = AugmentParams(rotation_deg=15, shift=0.1, flip_p=0.0, **NO_PHOTOMETRIC)
    _, out = Augmenter(SCHEME_68, params)(np.zeros((8, S, S), np.uint8), kps, np.random.default_rng(1))
    assert np.nanmin(out[..., 0]) >= -4.0 - 1e-4
    assert np.nanmax(out) <= S - 1 and np.nanmin(out[..., 1]) >= 0


def test_infeasible_draws_fall_back_to_identity():
    """Points in all four corners with a forced zoom-in: no shift can keep them, so the sample is not warped."""
    kps = np.tile(np.array([[0, 0], [S - 1, 0], [0, S - 1], [S - 1, S - 1]] + [[48, 48]] * 11, np.float32),
                  (3, 1, 1))
    params = AugmentParams(scale=(1.2, 1.3), flip_p=0.0, max_tries=4, **NO_PHOTOMETRIC)
    aug = Augmenter(SCHEME_15, params)
    draw = aug.sample_geometry(kps, np.random.default_rng(0))
    assert (draw.tries == params.max_tries + 1).all()
    np.testing.assert_allclose(draw.matrices, np.broadcast_to(affine_matrix(0, 1, (0, 0)), (3, 2, 3)))
    images = np.random.default_rng(0).integers(0, 256, (3, S, S), dtype=np.uint8)
    out_im, out_kps = aug(images, kps, np.random.default_rng(0))
    np.testing.assert_array_equal(out_im, images)
    np.testing.assert_allclose(out_kps, kps, atol=1e-4)


def test_keep_in_frame_off_lets_points_leave():
    params = AugmentParams(scale=(1.3, 1.3), rotation_deg=0, shift=0, flip_p=0, keep_in_frame=False, **NO_PHOTOMETRIC)
    kps = np.array([[[2.0, 2.0]] * 15], np.float32)
    _, out = Augmenter(SCHEME_15, params)(np.zeros((1, S, S), np.uint8), kps, np.random.default_rng(0))
    assert (out < 0).all()


# ------------------------------------------------------------------------------------------------ NaN, determinism
@pytest.mark.parametrize("scheme", SCHEMES, ids=lambda s: s.name)
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_nan_preserved_through_everything(scheme, seed):
    params = AugmentParams(flip_p=0.5, brightness_p=1, gamma_p=1, blur_p=1, noise_p=1, cutout_p=1)
    images, kps = random_batch(8, scheme, seed, nan_frac=0.3)
    kps[0] = np.nan                                     # a face with no keypoint at all
    aug = Augmenter(scheme, params)
    draw = aug.sample_geometry(kps, np.random.default_rng(seed))
    _, out = aug(images, kps, np.random.default_rng(seed))
    expected_nan = np.isnan(kps[..., 0])
    expected_nan[draw.flip] = expected_nan[draw.flip][:, scheme.flip_permutation]
    np.testing.assert_array_equal(np.isnan(out[..., 0]), expected_nan)
    np.testing.assert_array_equal(np.isnan(out[..., 1]), expected_nan)


@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_same_seed_same_batch(dtype):
    images, kps = random_batch(32, SCHEME_68, 5, dtype, nan_frac=0.1)
    aug = Augmenter(SCHEME_68)
    a = aug(images, kps, np.random.default_rng(123))
    b = aug(images, kps, np.random.default_rng(123))
    c = aug(images, kps, np.random.default_rng(124))
    assert a[0].dtype == dtype and a[0].shape == images.shape
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])
    assert not np.array_equal(a[0], images)
    assert np.isfinite(a[0]).all() and a[0].min() >= 0 and a[0].max() <= (255 if dtype == np.uint8 else 1)


def test_inputs_are_not_modified():
    images, kps = random_batch(8, SCHEME_68, 9)
    im0, kp0 = images.copy(), kps.copy()
    Augmenter(SCHEME_68, AugmentParams(brightness_p=1, noise_p=1, cutout_p=1))(images, kps, np.random.default_rng(0))
    np.testing.assert_array_equal(images, im0)
    np.testing.assert_array_equal(kps, kp0)


def test_no_augmentation_params_are_identity():
    images, kps = random_batch(8, SCHEME_68, 2)
    params = AugmentParams(**NO_GEOMETRY, **NO_PHOTOMETRIC)
    out_im, out_kps = Augmenter(SCHEME_68, params)(images, kps, np.random.default_rng(0))
    np.testing.assert_array_equal(out_im, images)
    np.testing.assert_array_equal(out_kps, kps)


# ------------------------------------------------------------------------------------------------ photometric
def test_photometric_only_keeps_keypoints_and_changes_pixels():
    params = AugmentParams(brightness_p=1, gamma_p=1, blur_p=1, noise_p=1, cutout_p=1, **NO_GEOMETRY)
    images, kps = random_batch(8, SCHEME_68, 4, nan_frac=0.2)
    out_im, out_kps = Augmenter(SCHEME_68, params)(images, kps, np.random.default_rng(0))
    np.testing.assert_array_equal(out_kps, kps)
    assert (np.abs(out_im.astype(int) - images).mean(axis=(1, 2)) > 1).all()


def test_brightness_contrast_formula():
    x = np.linspace(0.2, 0.6, S * S, dtype=np.float32).reshape(1, S, S)
    out = adjust_brightness_contrast(x, brightness=0.1, contrast=1.5)
    np.testing.assert_allclose(out, (x - x.mean()) * 1.5 + x.mean() + 0.1, atol=1e-5)
    assert adjust_brightness_contrast((x * 255).astype(np.uint8), 1.0, 1.0).max() == 255   # clipped, uint8


def test_gamma_blur_noise_cutout():
    x = np.full((2, S, S), 0.25, np.float32)
    np.testing.assert_allclose(gamma(x, 0.5), 0.5, atol=1e-6)
    step = np.zeros((1, S, S), np.float32)
    step[:, :, S // 2:] = 1
    b = blur(step, 2.0)
    assert 0 < b[0, 10, S // 2 - 1] < 1 and abs(b.mean() - step.mean()) < 1e-3
    n = noise(np.full((1, S, S), 0.5, np.float32), 0.05, np.random.default_rng(0))
    assert abs(n.std() - 0.05) < 0.005
    c = cutout(np.ones((1, S, S), np.float32), (10, 20, 30, 25), fill=0.0)
    assert c.sum() == S * S - 20 * 5 and (c[0, 20:25, 10:30] == 0).all()
    with pytest.raises(ValueError):
        gamma(x, 0.0)
    with pytest.raises(ValueError):
        blur(x, [1.0, 2.0, 3.0])


# ------------------------------------------------------------------------------------------------ bad input
def test_bad_inputs_raise_clear_errors():
    images, kps = random_batch(2, SCHEME_68, 0)
    aug = Augmenter(SCHEME_68)
    rng = np.random.default_rng(0)
    with pytest.raises(ValueError, match="K=15"):
        aug(images, kps[:, :15], rng)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        aug(images[0], kps, rng)
    with pytest.raises(ValueError, match="keypoint sets"):
        aug(images, kps[:1], rng)
    with pytest.raises(TypeError, match="uint8"):
        aug(images.astype(np.int16), kps, rng)
    with pytest.raises(TypeError, match="Generator"):
        aug(images, kps, 0)
    with pytest.raises(ValueError, match="0-1 scale"):              # float 0-255 would be clipped to white
        aug(images.astype(np.float32), kps, rng)
    with pytest.raises(ValueError, match="0-1 scale"):
        to_model_inputs(images.astype(np.float32), kps)
    with pytest.raises(ValueError, match="probability"):
        AugmentParams(flip_p=1.5)
    with pytest.raises(ValueError, match="low <= high"):
        AugmentParams(scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="border"):
        AugmentParams(border="wrap")
    with pytest.raises(ValueError, match="cutout_size"):
        AugmentParams(cutout_size=(0.1, 1.5))
    with pytest.raises(TypeError, match="rotation"):               # a misspelt field of a recipe
        AugmentParams(**{"rotation": 5.0})
    with pytest.raises(ValueError):
        expand(images, kps, SCHEME_68, k=0, cache=False)


# ------------------------------------------------------------------------------------------------ expansion
def test_expand_shape_originals_reproducible_and_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    images, kps = random_batch(10, SCHEME_68, 1, nan_frac=0.05)
    out_im, out_kps = expand(images, kps, SCHEME_68, k=3, seed=7)
    assert out_im.shape == (30, S, S) and out_kps.shape == (30, 68, 2) and out_im.dtype == np.uint8
    np.testing.assert_array_equal(out_im[:10], images)
    np.testing.assert_array_equal(out_kps[:10], kps)
    assert not np.array_equal(out_im[10:20], images) and not np.array_equal(out_im[10:20], out_im[20:30])
    files = list((tmp_path / "augment").glob("expand_*.npz"))
    assert len(files) == 1
    again = expand(images, kps, SCHEME_68, k=3, seed=7)           # from the cache
    np.testing.assert_array_equal(again[0], out_im)
    np.testing.assert_array_equal(again[1], out_kps)
    fresh = expand(images, kps, SCHEME_68, k=3, seed=7, cache=False)   # recomputed: same result
    np.testing.assert_array_equal(fresh[0], out_im)
    expand(images, kps, SCHEME_68, k=3, seed=8)
    expand(images, kps, SCHEME_68, k=3, seed=7, params=AugmentParams(flip_p=0.0))
    assert len(list((tmp_path / "augment").glob("expand_*.npz"))) == 3
    k2 = expand(images, kps, SCHEME_68, k=2, seed=7, cache=False)    # copy c does not depend on k
    np.testing.assert_array_equal(k2[0], out_im[:20])


# ------------------------------------------------------------------------------------------ model inputs, sequences
def test_to_model_inputs_layout():
    images, kps = random_batch(3, SCHEME_15, 0, nan_frac=0.2)
    x, y = to_model_inputs(images, kps)
    assert x.shape == (3, S, S, 1) and x.dtype == np.float32 and 0 <= x.min() and x.max() <= 1
    np.testing.assert_allclose(x[..., 0] * 255, images, atol=1e-3)
    assert y.shape == (3, 30) and y.dtype == np.float32
    np.testing.assert_allclose(y[:, 0::2], (kps[..., 0] + 0.5) / S * 2 - 1, atol=1e-6)   # x0, y0, x1, y1, ...
    np.testing.assert_allclose(denormalise_keypoints(y.reshape(3, 15, 2)), kps, atol=1e-4)
    with pytest.raises(ValueError):
        to_model_inputs(images[:, :50], kps)


def make_faces(n, seed, scheme=SCHEME_68):
    images, kps = random_batch(n, scheme, seed, nan_frac=0.05)
    names = np.array([f"f{i}" for i in range(n)])
    return Faces(images, kps, names, names.copy(), np.zeros((n, 3), np.int64), scheme, "synthetic")


def training_sequence(faces, batch_size, seed, **pydataset_kwargs):
    return KeypointSequence(faces.images, faces.keypoints, faces.scheme, batch_size, augmenter=Augmenter(faces.scheme),
                            shuffle=True, seed=seed, **pydataset_kwargs)


def test_validation_and_test_sequences_never_augment():
    train, val = make_faces(40, 0), make_faces(21, 1)
    train_seq = training_sequence(train, batch_size=8, seed=3)
    val_seq = KeypointSequence(val.images, val.keypoints, val.scheme, batch_size=8, seed=3)
    assert val_seq.augmenter is None and not val_seq.shuffle
    assert train_seq.augmenter is not None and train_seq.shuffle
    for epoch in range(2):
        xs, ys = zip(*(val_seq[i] for i in range(len(val_seq))))
        x_ref, y_ref = to_model_inputs(val.images, val.keypoints)
        np.testing.assert_array_equal(np.concatenate(xs), x_ref)
        np.testing.assert_array_equal(np.concatenate(ys), y_ref)
        val_seq.on_epoch_end()
    test_seq = KeypointSequence(val.images, val.keypoints, "68", batch_size=8)
    np.testing.assert_array_equal(test_seq[2][0], x_ref[16:])
    # The training sequence does change pixels (so the check above could fail).
    x0, _ = train_seq[0]
    raw, _ = to_model_inputs(train.images[train_seq.order()[:8]], train.keypoints[train_seq.order()[:8]])
    assert not np.array_equal(x0, raw)


def test_sequence_is_deterministic_and_reshuffles():
    faces = make_faces(50, 2)
    seq = lambda: training_sequence(faces, batch_size=16, seed=11)
    a, b = seq(), seq()
    assert len(a) == 4 and a[3][0].shape == (2, S, S, 1)
    late_first = b[3], b[0]                                      # access order does not matter
    np.testing.assert_array_equal(a[0][0], late_first[1][0])
    np.testing.assert_array_equal(a[3][1], late_first[0][1])
    np.testing.assert_array_equal(a[1][0], a[1][0])              # repeated access: same batch
    order0 = a.order().copy()
    assert sorted(order0) == list(range(50))
    a.on_epoch_end()
    assert not np.array_equal(a.order(), order0)
    assert not np.array_equal(a[0][0], b[0][0])
    b.epoch = 1                                                  # an epoch's batches depend on (seed, epoch) only
    np.testing.assert_array_equal(a.order(), b.order())
    np.testing.assert_array_equal(a[2][0], b[2][0])
    with pytest.raises(IndexError):
        a[4]


def test_sequence_feeds_keras_fit_with_workers():
    import keras

    faces = make_faces(32, 3, SCHEME_15)
    faces.keypoints[:] = np.nan_to_num(faces.keypoints, nan=48.0)
    train_seq = training_sequence(faces, batch_size=16, seed=0, workers=2)
    val_seq = KeypointSequence(faces.images, faces.keypoints, faces.scheme, batch_size=16, workers=2)
    model = keras.Sequential([keras.Input((S, S, 1)), keras.layers.AveragePooling2D(8),
                              keras.layers.Flatten(), keras.layers.Dense(30)])
    model.compile("sgd", "mse")
    history = model.fit(train_seq, validation_data=val_seq, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["val_loss"]).all()
    assert train_seq.epoch >= 2 and val_seq.augmenter is None


def test_sequence_rejects_mismatched_input():
    images, kps = random_batch(4, SCHEME_68, 0)
    with pytest.raises(ValueError, match="scheme"):
        KeypointSequence(images, kps, "15")
    with pytest.raises(ValueError):
        KeypointSequence(images, kps, "68", batch_size=0)
    with pytest.raises(ValueError, match="does not match"):
        KeypointSequence(images, kps, "68", augmenter=Augmenter("15"))
