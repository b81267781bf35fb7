"""helpers.models: shapes, the masked loss, metrics, a short training run, saving."""
from __future__ import annotations

import keras
import numpy as np
import pytest

from helpers import config, models
from helpers.preprocess import Faces, normalise_keypoints
from helpers.schemes import SCHEME_15, SCHEME_68

from .support import face_68, randomise_bn


@pytest.mark.parametrize("scheme, k", [(SCHEME_68, 68), (SCHEME_15, 15)])
def test_lenet_shapes_per_scheme(scheme, k):
    model = models.lenet(scheme)
    assert model.input_shape == (None, 96, 96, 1)
    assert model.output_shape == (None, 2 * k)
    out = model.predict_on_batch(np.zeros((2, 96, 96, 1), np.float32))
    assert out.shape == (2, 2 * k)
    assert isinstance(model, keras.Sequential)


@pytest.mark.parametrize("scheme, k", [("68", 68), ("15", 15)])
def test_resnet50_is_the_real_resnet50(scheme, k):
    model = models.resnet50(scheme)
    assert model.output_shape == (None, 2 * k)
    trunk = model.get_layer("resnet50")
    convs = [layer for layer in trunk.layers if isinstance(layer, keras.layers.Conv2D)]
    # 1 stem + 16 bottlenecks × 3 + 4 projection shortcuts = 53 convolutions
    assert len(convs) == 53
    assert trunk.output_shape == (None, 3, 3, 2048)
    assert 23_000_000 < models.count_params(model)["total"] < 24_500_000


def test_unknown_model_name_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown model"):
        models.build_model("vgg16")
    with pytest.raises(ValueError, match="kind"):
        models.MaskedLoss("huber")


def test_masked_loss_ignores_nan_targets():
    y_pred = np.array([[0.1, 0.2, 0.3, 0.4]], np.float32)
    y_true = np.array([[0.0, np.nan, 0.5, np.nan]], np.float32)
    mse = float(models.MaskedLoss("mse")(y_true, y_pred))
    assert mse == pytest.approx((0.1 ** 2 + 0.2 ** 2) / 2, rel=1e-5)
    mae = float(models.MaskedLoss("mae")(y_true, y_pred))
    assert mae == pytest.approx((0.1 + 0.2) / 2, rel=1e-5)
    # a sample with no target at all contributes zero, not NaN
    all_nan = np.full((1, 4), np.nan, np.float32)
    assert float(models.MaskedLoss("mse")(all_nan, y_pred)) == 0.0


def test_wing_loss_by_hand():
    """Wing (w = 10 px, ε = 2 px on the 96² crop = 48 px per normalised unit): log inside w, linear beyond."""
    w, eps = 10 / 48, 2 / 48
    y_true = np.array([[0.0, 0.0, np.nan, 0.0]], np.float32)
    y_pred = np.array([[1 / 48, 0.5, 3.0, 0.0]], np.float32)     # 1 px (log part), 24 px (linear), masked, 0
    expected = (w * np.log1p((1 / 48) / eps) + (0.5 - (w - w * np.log1p(w / eps))) + 0.0) / 3
    assert float(models.MaskedLoss("wing")(y_true, y_pred)) == pytest.approx(expected, rel=1e-5)
    # the two pieces join at |x| = w, and other widths are honoured
    at_w = np.array([[w]], np.float32)
    assert float(models.MaskedLoss("wing")(np.zeros((1, 1), np.float32), at_w)) == pytest.approx(
        w * np.log1p(w / eps), rel=1e-5)
    wide = models.MaskedLoss("wing", wing_px=(20, 4))
    assert float(wide(np.zeros((1, 1), np.float32), np.array([[1 / 48]], np.float32))) == pytest.approx(
        (20 / 48) * np.log1p(1 / 4), rel=1e-5)
    with pytest.raises(ValueError, match="positive"):
        models.MaskedLoss("wing", wing_px=(10, 0))
    # a saved model's loss keeps its kind and widths (registered object, safe-mode deserialisation)
    back = keras.losses.deserialize(keras.losses.serialize(models.MaskedLoss("wing", wing_px=(8, 1))))
    assert (back.kind, tuple(back.wing_px)) == ("wing", (8.0, 1.0))


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="gradient test uses tf.GradientTape")
@pytest.mark.parametrize("kind", ["mse", "mae", "wing"])
def test_masked_loss_gradient_is_zero_on_masked_coordinates(kind):
    import tensorflow as tf

    y_true = tf.constant([[0.0, np.nan, 0.5, np.nan], [np.nan, 0.1, 0.2, 0.3]], tf.float32)
    y_pred = tf.Variable([[0.1, 0.2, 0.3, 0.4], [0.5, 0.6, 0.7, 0.8]], dtype=tf.float32)
    with tf.GradientTape() as tape:
        loss = models.MaskedLoss(kind)(y_true, y_pred)
    grad = tape.gradient(loss, y_pred).numpy()
    mask = np.isnan(y_true.numpy())
    assert np.all(np.isfinite(grad))
    assert np.all(grad[mask] == 0.0)
    assert np.all(grad[~mask] != 0.0)


def _flat(kps):
    return normalise_keypoints(kps).reshape(len(kps), -1)


def test_nme_and_rmse_metrics_hand_computed():
    gt = face_68(96, 96, seed=0)[None]
    d = np.linalg.norm(gt[0, 36] - gt[0, 45])
    pred = gt + np.array([3.0, 4.0], np.float32)            # every point 5 px off
    gt_missing = gt.copy()
    gt_missing[0, 0] = np.nan                                 # a missing point is skipped
    nme = models.NME("68")
    nme.update_state(_flat(gt_missing), _flat(pred))
    assert float(nme.result()) == pytest.approx(5.0 / d, rel=1e-4)
    rmse = models.RMSEPixels()
    rmse.update_state(_flat(gt_missing), _flat(pred))
    assert float(rmse.result()) == pytest.approx(np.sqrt((9 + 16) / 2), rel=1e-4)


def test_nme_metric_15_points_uses_eye_centres():
    gt = np.full((1, 15, 2), 40.0, np.float32)
    gt[0, 0], gt[0, 1] = (60.0, 40.0), (30.0, 40.0)            # eye centres 30 px apart
    pred = gt + np.array([0.0, 3.0], np.float32)
    nme = models.NME("15")
    nme.update_state(_flat(gt), _flat(pred))
    assert float(nme.result()) == pytest.approx(0.1, rel=1e-4)


def _tiny_faces(n=16, seed=0):
    rng = np.random.default_rng(seed)
    kps = np.stack([face_68(96, 96, jitter=2.0, seed=seed + i) for i in range(n)]).astype(np.float32)
    images = rng.integers(0, 255, (n, 96, 96), dtype=np.uint8)
    for img, kp in zip(images, kps):                          # draw the points so they can be learnt
        for x, y in kp.astype(int):
            img[max(y - 1, 0):y + 2, max(x - 1, 0):x + 2] = 255
    kps[0, 5] = np.nan                                        # an incomplete row still trains
    return Faces(images, kps, np.array([f"f{i}" for i in range(n)]), np.array([f"p{i}" for i in range(n)]),
                 np.zeros((n, 3), np.int64), SCHEME_68, "tiny")


def test_a_short_training_run_lowers_the_loss_on_a_fixed_batch():
    keras.utils.set_random_seed(0)
    faces = _tiny_faces(16)
    x = faces.images[..., None].astype(np.float32) / 255
    y = _flat(faces.keypoints)
    model = models.compile_model(models.lenet("68", dropout=0.0), "68", learning_rate=1e-3)
    # training-mode loss (batch statistics): inference mode would lag behind the moving BN averages
    losses = [float(model.train_on_batch(x, y, return_dict=True)["loss"]) for _ in range(20)]
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-3:]) < 0.6 * losses[0]


def test_save_and_load_round_trip_in_safe_mode(tmp_path):
    faces = _tiny_faces(4)
    model = models.compile_model(models.lenet("68"), "68")
    x = faces.images[..., None].astype(np.float32) / 255
    model.set_weights([w * 1.01 for w in model.get_weights()])  # not the initial weights (no optimizer state)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)      # no custom_objects: registered classes
    np.testing.assert_allclose(loaded.predict_on_batch(x), model.predict_on_batch(x), atol=1e-6)
    assert isinstance(loaded.loss, models.MaskedLoss)
    # half-precision storage: smaller file, float32 computation, nearly the same outputs
    half = models.save_model(model, tmp_path / "half.keras", half_precision=True)
    assert half.stat().st_size < 0.7 * path.stat().st_size
    h = models.load_model(half)
    assert h.weights[0].dtype == "float32"
    np.testing.assert_allclose(h.predict_on_batch(x), model.predict_on_batch(x), rtol=1e-2, atol=5e-3)


def test_load_model_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "MODELS_DIR", tmp_path)
    monkeypatch.setattr(config, "RUNS_DIR", tmp_path / "runs")
    with pytest.raises(FileNotFoundError, match="facekp train recipes/lenet.toml"):
        models.load_model("lenet")
    with pytest.raises(FileNotFoundError):
        models.load_model(tmp_path / "nothing.keras")
    with pytest.raises(ValueError, match="model name"):
        models.load_model(tmp_path / "vgg16.h5")
