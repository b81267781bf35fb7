"""helpers.evaluate on hand-computed cases, and `facekp evaluate --json`."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from helpers import cli, config, evaluate, models
from helpers.schemes import SCHEME_15, get_scheme

from .support import face_68


def _pair():
    gt = face_68(96, 96, seed=1)[None].repeat(2, axis=0)
    gt[:, 36], gt[:, 45] = (20.0, 40.0), (60.0, 40.0)         # outer eye corners 40 px apart
    pred = gt.copy()
    pred[0] += np.array([3.0, 4.0], np.float32)               # face 0: every point 5 px off
    pred[1, :34] += np.array([0.0, 8.0], np.float32)          # face 1: half the points 8 px off
    return pred, gt


def test_nme_per_face_hand_computed():
    pred, gt = _pair()
    nme = evaluate.nme_per_face(pred, gt, "68")
    np.testing.assert_allclose(nme, [5 / 40, (34 * 8 / 68) / 40], rtol=1e-6)


def test_missing_points_are_skipped_and_undefined_faces_are_nan():
    pred, gt = _pair()
    gt[0, 10] = np.nan
    pred[0, 10] += 100                                        # a huge error on a missing point is ignored
    assert evaluate.nme_per_face(pred, gt, "68")[0] == pytest.approx(5 / 40)
    gt[1, 36] = np.nan                                        # no normalising distance → NaN, not a number
    assert np.isnan(evaluate.nme_per_face(pred, gt, "68")[1])


def test_nme_15_points_normalises_by_eye_centres():
    gt = np.full((1, 15, 2), 50.0)
    gt[0, 0], gt[0, 1] = (70.0, 40.0), (30.0, 40.0)
    pred = gt + [6.0, 8.0]
    assert evaluate.nme_per_face(pred, gt, SCHEME_15)[0] == pytest.approx(10 / 40)


def test_rmse_and_per_keypoint_error():
    pred, gt = _pair()
    # face 0: squared coordinate errors 9 and 16 on 68 points; face 1: 0 and 64 on 34 points, 0 elsewhere
    expected = np.sqrt((68 * (9 + 16) + 34 * 64) / (2 * 68 * 2))
    assert evaluate.rmse_px(pred, gt) == pytest.approx(expected)
    per_kp = evaluate.per_keypoint_error(pred, gt, "68")
    assert per_kp.shape == (68,)
    assert per_kp[0] == pytest.approx((5 / 40 + 8 / 40) / 2)
    assert per_kp[67] == pytest.approx((5 / 40 + 0) / 2)


def test_ced_auc_and_failure_rate_hand_computed():
    nme = np.array([0.0, 0.04, 0.08, 0.2, np.nan])            # NaN faces are left out
    np.testing.assert_allclose(evaluate.ced(nme, [0.0, 0.04, 0.079, 0.08, 1.0]), [0.25, 0.5, 0.5, 0.75, 1.0])
    # AUC of the step CED on [0, 0.08] / 0.08 = mean(max(0, 0.08 - nme)) / 0.08
    assert evaluate.auc(nme, 0.08) == pytest.approx((0.08 + 0.04 + 0 + 0) / 4 / 0.08)
    assert evaluate.failure_rate(nme, 0.08) == pytest.approx(0.25)     # exactly 0.08 is not a failure
    assert evaluate.failure_rate(nme, 0.10) == pytest.approx(0.25)
    assert evaluate.failure_rate(nme, 0.03) == pytest.approx(0.75)
    assert evaluate.auc([0.0, 0.0], 0.08) == 1.0 and evaluate.auc([0.5], 0.08) == 0.0


def test_metrics_reject_bad_input():
    with pytest.raises(ValueError, match="N, K, 2"):
        evaluate.nme_per_face(np.zeros((2, 68, 2)), np.zeros((2, 67, 2)), "68")
    with pytest.raises(ValueError, match="no face"):
        evaluate.auc([np.nan])
    with pytest.raises(ValueError):
        evaluate.predict_keypoints(models.lenet("68"), np.zeros((2, 64, 64), np.uint8))


def test_keras_metric_and_evaluate_agree():
    pred, gt = _pair()
    from helpers.preprocess import normalise_keypoints

    m = models.NME("68")
    m.update_state(normalise_keypoints(gt).reshape(2, -1), normalise_keypoints(pred).reshape(2, -1))
    assert float(m.result()) == pytest.approx(evaluate.nme_per_face(pred, gt, "68").mean(), rel=1e-4)


def test_facekp_evaluate_json_on_a_tiny_300w_folder(tiny_300w, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "cache")
    model_file = tmp_path / "tiny.keras"
    models.compile_model(models.lenet("68"), "68").save(model_file)
    code = cli.main(["evaluate", "--model", str(model_file), "--data", f"300w:{tiny_300w}", "--json"])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["faces"] == 4
    for key in ("nme", "rmse_px96", "auc08", "fail08", "fail10", "ms_per_face"):
        assert isinstance(out[key], float) and np.isfinite(out[key]), key
    assert 0 <= out["auc08"] <= 100 and 0 <= out["fail08"] <= 100 and out["fail10"] <= out["fail08"]
    assert out["nme"] > 0 and out["ms_per_face"] > 0
    # an untrained network must not look good: its NME is far above 8 %
    assert out["fail08"] == 100.0


def test_facekp_evaluate_reports_a_missing_model(tiny_300w, capsys):
    assert cli.main(["evaluate", "--model", "nowhere.keras", "--data", f"300w:{tiny_300w}"]) == 1
    assert "not found" in capsys.readouterr().err


def test_mirror_gap_of_a_network_that_always_predicts_the_same_shifted_face():
    """A constant prediction: a mirror-symmetric face moved by (d, e) px. Mapped back from a mirror image it is
    the same face moved by (−d, e): the gap is 2d in x at every point and 0 in y."""
    import keras

    from helpers.augment import hflip
    from helpers.preprocess import Faces, normalise_keypoints

    raw = face_68(96, 96)[None].astype(np.float32)
    _, mirrored = hflip(np.zeros((1, 96, 96), np.uint8), raw, "68")
    sym = (raw + mirrored) / 2                                             # exactly mirror-symmetric
    d, e = 0.8, -0.3
    inputs = keras.Input((96, 96, 1))
    out = keras.layers.Dense(136, kernel_initializer="zeros",
                             bias_initializer=keras.initializers.Constant(
                                 normalise_keypoints(sym + np.float32([d, e])).ravel()))(keras.layers.Flatten()(inputs))
    constant = keras.Model(inputs, out)
    n = 3
    rng = np.random.default_rng(0)
    faces = Faces(rng.integers(0, 255, (n, 96, 96), dtype=np.uint8), np.repeat(sym, n, axis=0),
                  np.array(["a", "b", "c"]), np.array(["p", "q", "r"]), np.zeros((n, 3), np.int64),
                  get_scheme("68"), "synthetic")
    gap = evaluate.mirror_gap(constant, faces)
    assert gap.shape == (n, 68, 2)
    np.testing.assert_allclose(gap[..., 0], 2 * d, atol=1e-3)
    np.testing.assert_allclose(gap[..., 1], 0, atol=1e-3)


def test_activation_peaks_per_face_and_layer_including_a_nested_trunk():
    import keras

    rng = np.random.default_rng(1)
    images = rng.integers(0, 255, (5, 96, 96), dtype=np.uint8)
    trunk = keras.Sequential([keras.Input((96, 96, 1)), keras.layers.Conv2D(4, 3, name="c1"),
                              keras.layers.ReLU(name="r1")], name="trunk")
    inputs = keras.Input((96, 96, 1))
    model = keras.Model(inputs, keras.layers.Dense(2, name="head")(keras.layers.Flatten()(trunk(inputs))))
    peaks = evaluate.activation_peaks(model, images, ["r1", "head"])
    assert list(peaks.columns) == ["r1", "head"] and len(peaks) == 5
    x = images[..., None].astype(np.float32) / 255
    expected = np.abs(keras.ops.convert_to_numpy(trunk(x))).reshape(5, -1).max(axis=1)
    np.testing.assert_allclose(peaks["r1"], expected, rtol=1e-5)
    np.testing.assert_allclose(peaks["head"], np.abs(model.predict_on_batch(x)).max(axis=1), rtol=1e-5)
    with pytest.raises(KeyError, match="no layer"):
        evaluate.activation_peaks(model, images, ["conv9"])


def test_paired_bootstrap_draws_whole_groups_and_pairs_the_keys():
    rng = np.random.default_rng(1)
    groups = np.repeat(np.arange(40), 5)                         # 40 people, 5 faces each
    a = np.repeat(rng.normal(5, 1, 40), 5) + rng.normal(0, 0.1, 200)
    b = a + 0.5
    b[3] = np.nan                                                # left out under both keys
    m = evaluate.paired_bootstrap({"a": a, "b": b}, groups, samples=500, seed=0)
    assert m["a"].shape == (500,) and np.allclose(m["b"] - m["a"], 0.5)          # the same draws for both keys
    assert abs(m["a"].mean() - np.nanmean(np.where(np.isfinite(b), a, np.nan))) < 0.05
    by_face = evaluate.paired_bootstrap({"a": a}, np.arange(200), samples=500, seed=0)["a"]
    assert m["a"].std() > 1.5 * by_face.std()                   # faces of one person are not independent evidence
    assert evaluate.paired_bootstrap({"a": a}, groups, samples=50, size=400, seed=0)["a"].std() < m["a"].std()


def test_comparison_table_averages_nme_over_found_faces_and_fails_the_missed():
    faces = pd.DataFrame({"data": "d", "method": "m", "setting": "end to end",
                          "detected": [True, True, False, True], "nme5": [0.02, 0.04, np.nan, 0.12]})
    row = evaluate.comparison_table(faces).loc[("d", "m", "end to end")]
    assert row["faces"] == 4 and row["detected %"] == pytest.approx(75.0)
    assert row["mean NME % (found faces)"] == pytest.approx(6.0)
    assert row["failures >0.08, % (all faces)"] == pytest.approx(50.0)          # the missed face and the 0.12
