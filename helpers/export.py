"""Keras → ONNX, int8 quantization and ONNX Runtime, the fast forward passes of ``facekp predict``: :func:`to_onnx`
folds batch norm into the convolutions; :func:`export_int8` writes ``<model>.int8.onnx``, found by :func:`int8_for`
while it matches its ``.keras`` file; :class:`OnnxForward` runs a graph (N, 1, H, W) → (N, 2K)."""
import contextlib
import io
import logging
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, checker, helper, numpy_helper
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantType, quantize_static

from . import config, models, splits

MAX_INT8_GAP = 0.01      # mean |int8 − float| output, normalised units: 0.01 = 0.48 px at 96²


class _Graph:
    """An ONNX graph under construction: its nodes, its weights and the convolutions batch norm may fold into."""

    def __init__(self):
        self.nodes, self.weights, self.conv = [], {}, {}           # conv: output → (weight, bias)

    def const(self, value, dtype: str = "float32") -> str:
        self.weights[f"w{len(self.weights)}"] = np.asarray(value, dtype)
        return f"w{len(self.weights) - 1}"

    def node(self, op: str, inputs: list[str], **attrs) -> str:
        out = f"{op.lower()}{len(self.nodes)}"
        self.conv = {k: v for k, v in self.conv.items() if k not in inputs}    # a used output cannot fold
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def activation(self, x: str, layer) -> str:
        name = getattr(layer.activation, "__name__", str(layer.activation))
        if name not in ("linear", "relu"):
            raise NotImplementedError(f"activation {name!r} of {layer.name} is not supported by the ONNX export")
        return self.node("Relu", [x]) if name == "relu" else x


def _window(layer, kernel) -> dict:
    """Kernel, strides and padding of a convolution or pooling (TensorFlow's ``same`` pads more at the end)."""
    return {"kernel_shape": list(kernel), "strides": list(layer.strides),
            "auto_pad": "SAME_UPPER" if layer.padding == "same" else "VALID"}


def _emit(g: _Graph, layer, x: list[str], tensors: list) -> str:
    """ONNX nodes for one Keras layer applied to ``x`` (its Keras input ``tensors``); returns the output's name."""
    kind = type(layer).__name__
    if kind in ("InputLayer", "Dropout"):
        return x[0]
    if kind in ("Functional", "Sequential"):
        return _convert(g, layer, x)
    if kind == "Conv2D" and (layer.data_format, *layer.dilation_rate, layer.groups) == ("channels_last", 1, 1, 1):
        kernel = np.asarray(layer.kernel)
        bias = np.asarray(layer.bias) if layer.use_bias else np.zeros(kernel.shape[3])
        w, b = g.const(kernel.transpose(3, 2, 0, 1)), g.const(bias)
        out = g.node("Conv", [x[0], w, b], **_window(layer, kernel.shape[:2]))
        g.conv[out] = (w, b)
        return g.activation(out, layer)
    if kind == "BatchNormalization" and list(np.atleast_1d(layer.axis)) in ([-1], [3]):
        var, mean = np.asarray(layer.moving_variance, "float64"), np.asarray(layer.moving_mean, "float64")
        scale = (np.asarray(layer.gamma, "float64") if layer.scale else 1.0) / np.sqrt(var + layer.epsilon)
        shift = (np.asarray(layer.beta, "float64") if layer.center else 0.0) - mean * scale
        if x[0] in g.conv:                                   # fold: W' = W·γ/σ, b' = (b − μ)·γ/σ + β
            w, b = g.conv.pop(x[0])
            g.weights[w] = (g.weights[w] * scale[:, None, None, None]).astype("float32")
            g.weights[b] = (g.weights[b] * scale + shift).astype("float32")
            return x[0]
        scaled = g.node("Mul", [x[0], g.const(scale.reshape(1, -1, 1, 1))])
        return g.node("Add", [scaled, g.const(shift.reshape(1, -1, 1, 1))])
    if kind == "Activation":
        return g.activation(x[0], layer)
    if kind == "ReLU" and layer.max_value is None and not float(layer.negative_slope) and not float(layer.threshold):
        return g.node("Relu", x)
    if kind == "MaxPooling2D":
        return g.node("MaxPool", x, **_window(layer, layer.pool_size))
    if kind == "AveragePooling2D":              # count_include_pad=0: TensorFlow averages real pixels only
        return g.node("AveragePool", x, count_include_pad=0, **_window(layer, layer.pool_size))
    if kind == "ZeroPadding2D":
        (t, b), (left, r) = layer.padding
        return g.node("Pad", [x[0], g.const([0, 0, t, left, 0, 0, b, r], "int64")])
    if kind == "Add" and len(x) == 2:
        return g.node("Add", x)
    if kind == "GlobalAveragePooling2D" and not layer.keepdims:
        return g.node("Flatten", [g.node("GlobalAveragePool", x)], axis=1)
    if kind == "Flatten":                       # Keras flattens (H, W, C): back to channels last first
        nhwc = g.node("Transpose", x, perm=[0, 2, 3, 1]) if len(tensors[0].shape) == 4 else x[0]
        return g.node("Flatten", [nhwc], axis=1)
    if kind == "Dense":
        bias = np.asarray(layer.bias) if layer.use_bias else np.zeros(layer.units)
        return g.activation(g.node("Gemm", [x[0], g.const(layer.kernel), g.const(bias)]), layer)
    raise NotImplementedError(f"layer {layer.name!r} ({kind}) with these settings is not supported by the export")


def _convert(g: _Graph, model, inputs: list[str]) -> str:
    """Inline a functional (or Sequential) Keras model; returns the name of its (single) output."""
    model = getattr(model, "_functional", None) or model      # a Sequential's graph is a functional model
    names = {id(t): n for t, n in zip(model.inputs, inputs)}
    for depth in sorted(model._nodes_by_depth, reverse=True):          # inputs first, as Keras runs it
        for node in model._nodes_by_depth[depth]:
            if node.operation is not None and not node.is_input:
                ins, (out,) = node.input_tensors, node.output_tensors
                names[id(out)] = _emit(g, node.operation, [names[id(t)] for t in ins], ins)
    return names[id(model.outputs[0])]


def to_onnx(model):
    """The ONNX ``ModelProto`` of a keypoint network: input ``image`` (N, 1, H, W), output ``keypoints``."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise NotImplementedError("only single-input, single-output models are exported")
    _, h, w, c = (int(v or 0) for v in model.inputs[0].shape)
    g = _Graph()
    g.nodes.append(helper.make_node("Identity", [_convert(g, model, ["image"])], ["keypoints"], name="out"))
    graph = helper.make_graph(
        g.nodes, model.name, [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, h, w])],
        [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["N", int(model.outputs[0].shape[-1])])],
        initializer=[numpy_helper.from_array(np.ascontiguousarray(v), name=n) for n, v in g.weights.items()])
    proto = helper.make_model(graph, producer_name="facekp", opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    checker.check_model(proto)
    return proto


class OnnxForward:
    """A ``.onnx`` file, ``ModelProto`` or Keras model (exported) run by ONNX Runtime: ``f(x) -> numpy``, x NHWC."""

    def __init__(self, source):
        if not isinstance(source, (str, Path)):
            source = (source if hasattr(source, "SerializeToString") else to_onnx(source)).SerializeToString()
        options = ort.SessionOptions()
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        options.intra_op_num_threads, options.inter_op_num_threads, options.log_severity_level = cpus or 1, 1, 3
        self.session = ort.InferenceSession(str(source) if isinstance(source, Path) else source, options,
                                            providers=["CPUExecutionProvider"])

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[-1] != 1:
            raise ValueError(f"expected images of shape (N, H, W, 1), got {x.shape}")
        return self.session.run(None, {"image": np.ascontiguousarray(x.transpose(0, 3, 1, 2))})[0]


def _as_nchw(images) -> np.ndarray:
    """uint8 faces (N, H, W) → float32 (N, 1, H, W) in [0, 1]."""
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 3 or len(x) == 0:
        raise ValueError(f"calibration images must be uint8 (N, H, W) with N > 0, got {x.dtype} {x.shape}")
    return x[:, None].astype(np.float32) / 255.0


def quantize(model, calibration_images, method: str = "percentile"):
    """The int8 ``ModelProto`` of a Keras model or float ``ModelProto``: static QDQ quantization, weights int8 per
    channel in a 7-bit range (x86 CPUs without VNNI saturate otherwise), activations uint8 in ranges from uint8
    ``calibration_images`` (``method``: ``percentile`` or ``minmax``); the first conv and the output stay float."""
    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")
    x, proto = _as_nchw(calibration_images), model if hasattr(model, "SerializeToString") else to_onnx(model)
    step = 16 if method == "minmax" else 1             # the histogram collectors take one face at a time
    batches = iter([{"image": x[i:i + step]} for i in range(0, len(x), step)])
    reader = type("Reader", (CalibrationDataReader,), {"get_next": lambda self: next(batches, None)})()
    keep_float = [next(n.input[0] for n in proto.graph.node if n.output[0] == "keypoints"),   # the output layer
                  *[n.name for n in proto.graph.node if n.op_type == "Conv"][:1]]     # (node name = output name)
    # quiet: its calibration progress (stdout) and its advice to pre-process (the graph is already BN-folded)
    with tempfile.TemporaryDirectory(prefix="facekp-quant-") as tmp, contextlib.redirect_stdout(io.StringIO()):
        onnx.save(proto, f"{tmp}/float.onnx")
        logging.disable(logging.WARNING)
        try:
            quantize_static(f"{tmp}/float.onnx", f"{tmp}/int8.onnx", reader, per_channel=True, reduce_range=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                            calibrate_method=methods[method], nodes_to_exclude=keep_float)
        finally:
            logging.disable(logging.NOTSET)
        return onnx.load(f"{tmp}/int8.onnx")


def typical_faces(model, images, limit: float = 20.0) -> np.ndarray:
    """Indices of the uint8 ``images`` whose activations are typical: a face whose peak in some layer exceeds
    ``limit`` × that layer's median per-face peak is left out, as it would stretch the layer's int8 range."""
    proto = model if hasattr(model, "SerializeToString") else to_onnx(model)
    probe = onnx.load_from_string(proto.SerializeToString())             # a copy: every tensor an output
    del probe.graph.output[:]
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None)
                              for n in probe.graph.node)
    session, x = OnnxForward(probe).session, _as_nchw(images)
    peaks = np.concatenate([np.stack([np.abs(o).reshape(len(o), -1).max(axis=1)
                                      for o in session.run(None, {"image": x[i:i + 16]})], axis=1)
                            for i in range(0, len(x), 16)])                  # (faces, tensors)
    return np.flatnonzero(np.all(peaks <= limit * np.maximum(np.median(peaks, axis=0), 1e-6), axis=1))


def one_face_ms(forwards, x, repeats: int = 200) -> list[float]:
    """Median ms of a call of each of ``forwards`` on ``x`` (after a first call), alternated: fair under any load."""
    times = np.zeros((repeats + 1, len(forwards)))
    for r, j in np.ndindex(times.shape):                 # row by row: every forward once per round
        start = time.perf_counter()
        forwards[j](x)
        times[r, j] = time.perf_counter() - start
    return [1000 * float(t) for t in np.median(times[1:], axis=0)]


def export_int8(name_or_path, calibration_images=None, max_faces: int = 256, path=None) -> Path:
    """Write a model quantized on the typical ``calibration_images`` (default: ``max_faces`` YouTube-Faces training
    faces) to ``path`` (:func:`int8_path`) with the ``.keras`` file's sha256 and both graphs' one-face times; refused
    (``RuntimeError``) if it is more than :data:`MAX_INT8_GAP` off the float model."""
    keras_path = models.resolve_model_path(name_or_path)
    if calibration_images is None:
        calibration_images = splits.load_faces("youtube-faces-68", "train", max_faces=max_faces).images
    float_proto = to_onnx(models.load_model(keras_path, compile=False))
    keep = typical_faces(float_proto, calibration_images)
    faces = np.asarray(calibration_images)[keep]
    proto, x = quantize(float_proto, faces), faces[..., None].astype(np.float32) / 255.0
    float_f, int8_f = OnnxForward(float_proto), OnnxForward(proto)
    gap = float(np.mean(np.abs(int8_f(x) - float_f(x))))
    if gap > MAX_INT8_GAP:
        raise RuntimeError(f"the int8 export of {keras_path.name} differs from the float model by {gap:.4f} on "
                           f"average (normalised units, limit {MAX_INT8_GAP}); not written")
    float_ms, int8_ms = one_face_ms([float_f, int8_f], x[:1])
    onnx.helper.set_model_props(proto, {"source": keras_path.name, "source_sha256": config.sha256sum(keras_path),
                                        "calibration_faces": f"{len(keep)} typical of {len(calibration_images)}",
                                        "mean_abs_difference": f"{gap:.5f}", "float_ms": f"{float_ms:.4f}",
                                        "int8_ms": f"{int8_ms:.4f}"})
    return config.write_atomic(Path(path) if path else int8_path(keras_path), proto.SerializeToString())


def int8_path(name_or_path) -> Path:
    """``<stem>.int8.onnx`` beside the ``.keras`` file of a model name or path (``models/lenet/model.int8.onnx``)."""
    return models.resolve_model_path(name_or_path).with_suffix(".int8.onnx")


def _metadata(path) -> dict:
    return {p.key: p.value for p in onnx.load(str(path), load_external_data=False).metadata_props}


def int8_for(name_or_path) -> Path | None:
    """The int8 export of a model if it exists and was made from the current ``.keras`` file, else ``None``."""
    keras_path = models.resolve_model_path(name_or_path)
    path = int8_path(keras_path)
    if not path.exists():
        return None
    try:
        source = _metadata(path).get("source_sha256")
    except Exception as e:                   # noqa: BLE001 - protobuf's DecodeError and friends: a corrupt file
        warnings.warn(f"ignoring {path}: not a readable ONNX file ({type(e).__name__}); re-export it with "
                      f"`facekp export`")
        return None
    return path if source == config.sha256sum(keras_path) else None


def preferred_runtime(int8_file) -> str:
    """``"onnx"`` if the float graph ran one face faster than the int8 one at export (LeNet can), else ``"int8"``."""
    meta = _metadata(int8_file)
    return "onnx" if float(meta.get("float_ms", "inf")) < float(meta.get("int8_ms", "inf")) else "int8"
