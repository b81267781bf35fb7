"""helpers.export: the ONNX translation matches Keras, int8 quantization, stale exports, runtimes, `facekp export`.

The networks are small versions of the project's two architectures with *non-trivial* batch-norm statistics,
so folding batch norm into the convolutions is checked, not just a pass-through.
"""
from __future__ import annotations

import keras
import numpy as np
import onnx
import pytest
from keras import layers

from helpers import cli, evaluate, export, models, predict

from .support import randomise_bn

RNG = np.random.default_rng(7)


def small_lenet():
    return randomise_bn(models.lenet("68", filters=(4, 8, 8, 16), units=32))


def small_resnet():
    """A functional trunk (padding, strided valid conv, BN, max-pool, a residual Add) nested in a model with
    the project's head — the layer types of keras.applications.ResNet50."""
    inp = keras.Input((96, 96, 1))
    x = layers.ZeroPadding2D(3)(inp)
    x = layers.Conv2D(8, 7, strides=2)(x)
    x = layers.BatchNormalization(epsilon=1.001e-5)(x)
    x = layers.Activation("relu")(x)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.MaxPooling2D(3, strides=2)(x)
    y = layers.Conv2D(8, 3, padding="same")(x)
    y = layers.BatchNormalization()(y)
    y = layers.ReLU()(y)
    y = layers.Conv2D(8, 1, strides=1)(y)
    x = layers.Activation("relu")(layers.Add()([x, y]))
    x = layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(x)
    trunk = keras.Model(inp, x, name="trunk")
    outer_in = keras.Input((96, 96, 1), name="image")
    h = layers.GlobalAveragePooling2D()(trunk(outer_in))
    h = layers.Dropout(0.3)(h)
    return randomise_bn(keras.Model(outer_in, layers.Dense(136)(h), name="tiny_resnet"))


def faces(n=6):
    return RNG.random((n, 96, 96, 1), dtype=np.float32)


def check_export(model, x, forward=None) -> float:
    """Largest absolute difference between Keras' and the exported network's outputs on ``x``."""
    forward = forward or export.OnnxForward(model)
    return float(np.max(np.abs(forward(x) - np.asarray(model(np.asarray(x, "float32"), training=False)))))


@pytest.mark.parametrize("build", [small_lenet, small_resnet], ids=["sequential", "functional-nested"])
def test_onnx_export_matches_keras(build):
    model = build()
    x = faces(5)
    proto = export.to_onnx(model)
    ops_used = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops_used and "Mul" not in ops_used      # every BN folded into its conv
    forward = export.OnnxForward(proto)
    assert check_export(model, x, forward) < 1e-4
    assert forward(x[:1]).shape == (1, 136)


def test_average_pooling_counts_real_pixels_only():
    model = keras.Sequential([keras.Input((96, 96, 1)), layers.AveragePooling2D(5, strides=3, padding="same"),
                              layers.AveragePooling2D(2), layers.Flatten(), layers.Dense(136)])
    assert check_export(model, faces(2)) < 1e-4


def test_export_refuses_unsupported_layers():
    model = keras.Sequential([keras.Input((96, 96, 1)), layers.Conv2DTranspose(2, 3), layers.Flatten(),
                              layers.Dense(136)])
    with pytest.raises(NotImplementedError, match="Conv2DTranspose"):
        export.to_onnx(model)
    tanh = keras.Sequential([keras.Input((96, 96, 1)), layers.Conv2D(2, 3, activation="tanh"), layers.Flatten(),
                             layers.Dense(136)])
    with pytest.raises(NotImplementedError, match="tanh"):
        export.to_onnx(tanh)


def test_onnx_forward_checks_its_input():
    forward = export.OnnxForward(small_lenet())
    with pytest.raises(ValueError, match=r"\(N, H, W, 1\)"):
        forward(np.zeros((2, 96, 96, 3), np.float32))


def test_int8_quantization_is_close_and_keeps_a_float_output():
    model = small_lenet()
    calibration = (RNG.random((32, 96, 96)) * 255).astype(np.uint8)
    proto = export.quantize(model, calibration, method="minmax")
    op_types = [n.op_type for n in proto.graph.node]
    assert "QuantizeLinear" in op_types and "DequantizeLinear" in op_types
    producers = {o: n for n in proto.graph.node for o in n.output}
    last = producers[producers["keypoints"].input[0]]           # Identity ← the output layer
    assert last.op_type == "Gemm" and all(producers[i].op_type != "DequantizeLinear"
                                          for i in last.input[1:] if i in producers), "output weights stay float"
    x = calibration[:8].astype(np.float32)[..., None] / 255.0
    ref = np.asarray(model(x, training=False))
    err = np.abs(export.OnnxForward(proto)(x) - ref)
    assert err.mean() < 0.05 * np.abs(ref).mean() + 1e-3
    with pytest.raises(ValueError, match="calibration method"):
        export.quantize(model, calibration, method="median")
    with pytest.raises(ValueError, match="calibration images"):
        export.quantize(model, np.zeros((0, 96, 96), np.uint8))


def test_int8_export_is_found_only_while_it_matches_the_keras_file(tmp_path):
    path = tmp_path / "tiny.keras"
    model = models.compile_model(small_lenet(), "68")
    model.save(path)
    assert export.int8_for(path) is None
    calibration = (RNG.random((16, 96, 96)) * 255).astype(np.uint8)
    written = export.export_int8(path, calibration_images=calibration)
    assert written == tmp_path / "tiny.int8.onnx" and export.int8_for(path) == written

    # the export timed both graphs; `auto` runs the one that was faster
    meta = {p.key: p.value for p in onnx.load(str(written)).metadata_props}
    assert float(meta["float_ms"]) > 0 and float(meta["int8_ms"]) > 0
    faster = "onnx" if float(meta["float_ms"]) < float(meta["int8_ms"]) else "int8"
    assert export.preferred_runtime(written) == faster
    auto = predict.load_keypoint_model(path, runtime="auto", warm_up=False)
    assert auto.runtime == faster
    keras_km = predict.load_keypoint_model(path, runtime="keras", warm_up=False)
    x = calibration[:4]
    np.testing.assert_allclose(auto.predict_faces(x), keras_km.predict_faces(x), atol=2.0)   # pixels of 96²
    for float_ms, int8_ms, expected in (("0.9", "0.3", "int8"), ("0.3", "0.9", "onnx"), (None, None, "int8")):
        proto = onnx.load(str(written))
        kept = {k: v for k, v in meta.items() if k not in ("float_ms", "int8_ms")}
        onnx.helper.set_model_props(proto, kept if float_ms is None else {**kept, "float_ms": float_ms,
                                                                          "int8_ms": int8_ms})
        onnx.save(proto, str(tmp_path / "timed.onnx"))
        assert export.preferred_runtime(tmp_path / "timed.onnx") == expected    # None: an older export

    # retrained (different weights, same name): the export is stale and never used
    model.layers[-1].bias.assign(np.ones(136, "float32"))
    model.save(path)
    assert export.int8_for(path) is None
    assert predict.load_keypoint_model(path, runtime="auto", warm_up=False).runtime == "keras"
    with pytest.raises(FileNotFoundError, match="facekp export"):
        predict.load_keypoint_model(path, runtime="int8")


def test_keypoint_model_runtimes_agree():
    model = small_resnet()
    x = (RNG.random((3, 96, 96)) * 255).astype(np.uint8)
    k = predict.KeypointModel(model, runtime="keras")
    o = predict.KeypointModel(model, runtime="onnx")
    assert o.runtime == "onnx" and "onnx" in repr(o)
    np.testing.assert_allclose(o.predict_faces(x), k.predict_faces(x), atol=1e-3)
    with pytest.raises(ValueError, match="needs the quantized file"):
        predict.KeypointModel(model, runtime="int8")
    with pytest.raises(ValueError, match="runtime"):
        predict.load_keypoint_model(model, runtime="tflite")


def test_evaluate_reports_its_runtime():
    model = small_lenet()
    from helpers.preprocess import Faces
    from helpers.schemes import get_scheme

    imgs = (RNG.random((4, 96, 96)) * 255).astype(np.uint8)
    kps = RNG.uniform(20, 76, (4, 68, 2)).astype(np.float32)
    f = Faces(imgs, kps, np.array([f"f{i}" for i in range(4)]), np.array(["p"] * 4), np.zeros((4, 3), np.int64),
              get_scheme("68"), "synthetic")
    a = evaluate.evaluate_model(model, f, timing=False)
    b = evaluate.evaluate_model(model, f, timing=True, repeats=2, runtime="onnx")
    assert a["runtime"] == "keras" and b["runtime"] == "onnx" and b["ms_per_face"] > 0
    assert a["nme"] == pytest.approx(b["nme"], rel=1e-4)


def test_facekp_export_reports_a_missing_model(capsys):
    assert cli.main(["export", "nowhere.keras"]) == 1
    assert "nowhere.keras" in capsys.readouterr().err


def test_typical_faces_leave_out_a_face_that_stretches_the_ranges():
    model = models.lenet("68", filters=(4, 8, 8, 16), units=32)       # fresh batch norm: activations ∝ input
    faces_ = np.full((12, 96, 96), 2, np.uint8) + (RNG.random((12, 96, 96)) * 3).astype(np.uint8)
    faces_[5] = 255                                              # one face ~100× brighter than the others
    keep = export.typical_faces(model, faces_)
    assert 5 not in keep and len(keep) == 11


def test_an_int8_export_that_drifts_from_the_float_model_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "tiny.keras"
    models.compile_model(small_lenet(), "68").save(path)
    monkeypatch.setattr(export, "MAX_INT8_GAP", -1.0)            # any difference is too much
    with pytest.raises(RuntimeError, match="not written"):
        export.export_int8(path, calibration_images=(RNG.random((8, 96, 96)) * 255).astype(np.uint8))
    assert not (tmp_path / "tiny.int8.onnx").exists()
