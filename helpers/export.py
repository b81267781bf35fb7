"""Export a trained keypoint network to ONNX, quantize it to int8, and run it with ONNX Runtime.

Why: a Keras call costs about half a millisecond of framework overhead before any arithmetic, more than half of
issue 6's one-millisecond budget for LeNet, and ResNet-50's 1.4 GFLOP per face need about 24 ms in float32 on
two CPU cores — the arithmetic alone would need ~140 GFLOP/s for the 10 ms target. Integer arithmetic
(8-bit weights and activations, 32-bit accumulation) does several multiply-adds per instruction where float32
does one, and ONNX Runtime calls cost microseconds.

* :func:`to_onnx` translates the project's networks into an ONNX graph directly — no converter package and no
  TensorFlow needed to run the result. Batch normalisation is **folded into the preceding convolution**
  (``W' = W·γ/σ``, ``b' = (b − μ)·γ/σ + β``), so inference does one operation where training did two. The
  exported float32 graph matches Keras to about 1e-6 (tested).
* :func:`quantize` makes the int8 graph: static quantization (ONNX Runtime's ``quantize_static``, QDQ format,
  per-channel weights) calibrated on real training crops, so activation ranges are those of faces.
* :func:`export_int8` writes ``models/<name>.int8.onnx`` next to the ``.keras`` file, recording that file's
  sha256, the calibration faces and the one-face time of the float and the int8 graph in the ONNX metadata;
  :func:`int8_for` finds it only while it still matches (a retrained model never runs with a stale export), and
  :func:`preferred_runtime` says which of the two graphs was faster.
* :class:`OnnxForward` runs a graph: ``f(x)`` with ``x`` (N, 96, 96, 1) like the Keras model.

Supported layers: ``InputLayer``, ``Conv2D`` (any strides, ``same``/``valid``), ``BatchNormalization``,
``Activation``/``ReLU`` (relu, linear), ``MaxPooling2D``, ``AveragePooling2D``, ``ZeroPadding2D``, ``Add``,
``GlobalAveragePooling2D``, ``Flatten``, ``Dropout``, ``Dense``, nested functional models (the ResNet-50 trunk)
and ``Sequential``. Anything else raises :class:`NotImplementedError` naming the layer, never a silent
approximation.

The ONNX graph takes ``image`` (N, 1, 96, 96) float32 (channels first, ONNX's convention; for one gray channel
a reshape of Keras' (N, 96, 96, 1)) and returns ``keypoints`` (N, 2K), the normalised keypoints.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import tempfile
from pathlib import Path

import numpy as np

__all__ = ["to_onnx", "save_onnx", "quantize", "typical_faces", "export_int8", "int8_path", "int8_for", "OnnxForward",
           "one_face_ms", "preferred_runtime", "check_export", "SUPPORTED_LAYERS"]

SUPPORTED_LAYERS = ("InputLayer", "Conv2D", "BatchNormalization", "Activation", "ReLU", "MaxPooling2D",
                    "AveragePooling2D",
                    "ZeroPadding2D", "Add", "GlobalAveragePooling2D", "Flatten", "Dropout", "Dense",
                    "Functional", "Sequential")
OPSET = 13


def _same_pads(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow's ``same`` padding (before, after) along one axis."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _Graph:
    """An ONNX graph under construction; tensors are named by ``id`` of their Keras tensor."""

    def __init__(self):
        from onnx import helper

        self.helper = helper
        self.nodes, self.weights = [], {}
        self.conv = {}           # output name → (node, weight name, bias name) of a convolution open for folding
        self.consumers = {}      # output name → times used as an input
        self.counter = 0

    def fresh(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}_{self.counter}"

    def const(self, prefix: str, value) -> str:
        name = self.fresh(prefix)
        self.weights[name] = np.asarray(value)
        return name

    def node(self, op: str, inputs: list[str], prefix: str, **attrs) -> str:
        out = self.fresh(prefix)
        for i in inputs:
            self.consumers[i] = self.consumers.get(i, 0) + 1
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def activation(self, x: str, activation, where: str) -> str:
        name = getattr(activation, "__name__", str(activation))
        if name in ("linear", "None"):
            return x
        if name == "relu":
            return self.node("Relu", [x], "relu")
        raise NotImplementedError(f"activation {name!r} of {where} is not supported by the ONNX export")


def _array(variable, dtype: str = "float32") -> np.ndarray:
    """A Keras variable's values as a NumPy array (any backend)."""
    from keras import ops

    return np.asarray(ops.convert_to_numpy(variable), dtype)


def _spatial(shape) -> tuple[int, int]:
    return int(shape[1]), int(shape[2])


def _emit(g: _Graph, layer, x: list[str], in_shapes: list) -> str:
    """ONNX nodes for one Keras layer; returns the output tensor name."""
    kind = type(layer).__name__
    if kind in ("Functional", "Sequential"):
        return _convert(g, layer, x)
    if kind in ("InputLayer", "Dropout"):
        return x[0]
    if kind == "Conv2D":
        if layer.data_format != "channels_last" or tuple(layer.dilation_rate) != (1, 1) or layer.groups != 1:
            raise NotImplementedError(f"{layer.name}: only channels_last, undilated, ungrouped Conv2D is exported")
        kernel = _array(layer.kernel)
        kh, kw, cin, cout = kernel.shape
        sh, sw = layer.strides
        if layer.padding == "same":
            h, w = _spatial(in_shapes[0])
            (pt, pb), (pl, pr) = _same_pads(h, kh, sh), _same_pads(w, kw, sw)
        else:
            pt = pb = pl = pr = 0
        bias = _array(layer.bias) if layer.use_bias else np.zeros(cout, "float32")
        wname = g.const("W", kernel.transpose(3, 2, 0, 1))
        bname = g.const("B", bias)
        out = g.node("Conv", [x[0], wname, bname], "conv", kernel_shape=[kh, kw], strides=[sh, sw],
                     pads=[pt, pl, pb, pr])
        g.conv[out] = (wname, bname)
        return g.activation(out, layer.activation, layer.name)
    if kind == "BatchNormalization":
        if list(np.atleast_1d(layer.axis)) not in ([-1], [3]):
            raise NotImplementedError(f"{layer.name}: batch normalisation over axis {layer.axis}")
        mean, var = _array(layer.moving_mean, "float64"), _array(layer.moving_variance, "float64")
        gamma = _array(layer.gamma, "float64") if layer.scale else np.ones_like(mean)
        beta = _array(layer.beta, "float64") if layer.center else np.zeros_like(mean)
        scale = gamma / np.sqrt(var + layer.epsilon)
        shift = beta - mean * scale
        src = x[0]
        if src in g.conv and g.consumers.get(src, 0) == 0:          # fold into the convolution that feeds it
            wname, bname = g.conv.pop(src)
            g.weights[wname] = (g.weights[wname] * scale[:, None, None, None]).astype("float32")
            g.weights[bname] = (g.weights[bname] * scale + shift).astype("float32")
            return src
        s = g.const("bn_scale", scale.astype("float32").reshape(1, -1, 1, 1))
        b = g.const("bn_shift", shift.astype("float32").reshape(1, -1, 1, 1))
        return g.node("Add", [g.node("Mul", [src, s], "bn_mul"), b], "bn_add")
    if kind == "Activation":
        return g.activation(x[0], layer.activation, layer.name)
    if kind == "ReLU":
        if layer.max_value is not None or float(layer.negative_slope) != 0.0 or float(layer.threshold) != 0.0:
            raise NotImplementedError(f"{layer.name}: only the plain ReLU is exported")
        return g.node("Relu", [x[0]], "relu")
    if kind in ("MaxPooling2D", "AveragePooling2D"):
        (kh, kw), (sh, sw) = layer.pool_size, layer.strides
        if layer.padding == "same":
            h, w = _spatial(in_shapes[0])
            (pt, pb), (pl, pr) = _same_pads(h, kh, sh), _same_pads(w, kw, sw)
        else:
            pt = pb = pl = pr = 0
        if kind == "MaxPooling2D":
            return g.node("MaxPool", [x[0]], "maxpool", kernel_shape=[kh, kw], strides=[sh, sw],
                          pads=[pt, pl, pb, pr])
        return g.node("AveragePool", [x[0]], "avgpool", kernel_shape=[kh, kw], strides=[sh, sw],
                      pads=[pt, pl, pb, pr], count_include_pad=0)     # TensorFlow averages real pixels only
    if kind == "ZeroPadding2D":
        (pt, pb), (pl, pr) = layer.padding
        pads = g.const("pads", np.array([0, 0, pt, pl, 0, 0, pb, pr], "int64"))
        return g.node("Pad", [x[0], pads], "pad", mode="constant")
    if kind == "Add":
        out = x[0]
        for other in x[1:]:
            out = g.node("Add", [out, other], "add")
        return out
    if kind == "GlobalAveragePooling2D":
        if getattr(layer, "keepdims", False):
            raise NotImplementedError(f"{layer.name}: keepdims=True")
        return g.node("Flatten", [g.node("GlobalAveragePool", [x[0]], "gap")], "flatten", axis=1)
    if kind == "Flatten":
        if len(in_shapes[0]) == 4:   # Keras flattens (H, W, C) in that order: back to channels last first
            return g.node("Flatten", [g.node("Transpose", [x[0]], "nhwc", perm=[0, 2, 3, 1])], "flatten", axis=1)
        return g.node("Flatten", [x[0]], "flatten", axis=1)
    if kind == "Dense":
        kernel = _array(layer.kernel)
        bias = _array(layer.bias) if layer.use_bias else np.zeros(kernel.shape[1], "float32")
        out = g.node("Gemm", [x[0], g.const("W", kernel), g.const("B", bias)], "dense")
        return g.activation(out, layer.activation, layer.name)
    raise NotImplementedError(f"layer {layer.name!r} of type {kind} is not supported by the ONNX export "
                              f"(supported: {', '.join(SUPPORTED_LAYERS)})")


def _convert(g: _Graph, model, inputs: list[str]) -> str:
    """Inline a Sequential or functional Keras model; returns the name of its (single) output."""
    if type(model).__name__ == "Sequential":
        x, shape = inputs[0], model.inputs[0].shape
        for layer in model.layers:
            x = _emit(g, layer, [x], [shape])
            shape = layer.output.shape
        return x
    names = {id(t): n for t, n in zip(model.inputs, inputs)}
    for op in model.operations:
        for node in op._inbound_nodes:
            ins = list(node.input_tensors)
            if not ins or not all(id(t) in names for t in ins) or any(id(t) in names for t in node.output_tensors):
                continue
            out = _emit(g, op, [names[id(t)] for t in ins], [t.shape for t in ins])
            (t_out,) = node.output_tensors
            names[id(t_out)] = out
    (out_tensor,) = model.outputs
    if id(out_tensor) not in names:
        raise NotImplementedError(f"could not trace {model.name}'s graph to its output")
    return names[id(out_tensor)]


def to_onnx(model, name: str | None = None):
    """The ONNX ``ModelProto`` of a keypoint network: input ``image`` (N, 1, H, W), output ``keypoints``."""
    from onnx import TensorProto, checker, helper, numpy_helper

    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise NotImplementedError("only single-input, single-output models are exported")
    _, h, w, c = model.inputs[0].shape
    k2 = int(model.outputs[0].shape[-1])
    g = _Graph()
    g.node("Identity", [_convert(g, model, ["image"])], "out")
    g.nodes[-1].output[0] = "keypoints"
    initializers = [numpy_helper.from_array(np.ascontiguousarray(v), name=n) for n, v in g.weights.items()]
    graph = helper.make_graph(
        g.nodes, name or model.name,
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", int(c), int(h), int(w)])],
        [helper.make_tensor_value_info("keypoints", TensorProto.FLOAT, ["N", k2])],
        initializer=initializers)
    proto = helper.make_model(graph, producer_name="facekp", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 8
    checker.check_model(proto)
    return proto


def save_onnx(model, path) -> Path:
    """Write :func:`to_onnx` of ``model`` to ``path`` (``.onnx``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(to_onnx(model).SerializeToString())
    return path


class OnnxForward:
    """``f(x) -> numpy``: an exported network run by ONNX Runtime on the CPU; ``x`` is (N, 96, 96, 1) like Keras.

    ``source``: a ``.onnx`` file, an ONNX ``ModelProto`` or a Keras model (exported on the fly, float32).
    ``threads``: intra-op threads (default: the CPUs this process may use).
    """

    def __init__(self, source, threads: int | None = None):
        import onnxruntime as ort

        if isinstance(source, (str, Path)):
            data = Path(source).read_bytes()
            self.source = str(source)
        elif hasattr(source, "SerializeToString"):
            data = source.SerializeToString()
            self.source = "ModelProto"
        else:
            data = to_onnx(source).SerializeToString()
            self.source = f"{getattr(source, 'name', 'model')} (float32 export)"
        options = ort.SessionOptions()
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        options.intra_op_num_threads = threads or usable or 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self.session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        self.input_name = self.session.get_inputs()[0].name
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata = dict(meta) if meta else {}

    def __call__(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or x.shape[-1] != 1:
            raise ValueError(f"expected images of shape (N, H, W, 1), got {x.shape}")
        x = np.ascontiguousarray(x.reshape(x.shape[0], 1, x.shape[1], x.shape[2]))
        return self.session.run(None, {self.input_name: x})[0].reshape(x.shape[0], -1)


def check_export(model, x, forward: OnnxForward | None = None) -> float:
    """Largest absolute difference between Keras' and the exported network's outputs on ``x`` (N, H, W, 1)."""
    forward = forward or OnnxForward(model)
    ref = np.asarray(model(np.asarray(x, "float32"), training=False))
    return float(np.max(np.abs(forward(x) - ref)))


# ----------------------------------------------------------------------------------------------------------
# int8
# ----------------------------------------------------------------------------------------------------------
def quantize(model, calibration_images, method: str = "percentile"):
    """The int8 ``ModelProto`` of a Keras model (or float32 ``ModelProto``), calibrated on real crops.

    ``calibration_images``: (N, 96, 96) uint8 or (N, 96, 96, 1) float in [0, 1], typically a few hundred
    training faces. Static quantization in QDQ format: weights int8 per output channel (7-bit range: x86 CPUs
    without VNNI multiply uint8 × int8 pairs into 16-bit sums, which saturate with full-range weights — on the
    project's machine that broke the retrained ResNet-50, 6.1 % → 55 % validation NME), activations uint8
    with ranges from the calibration faces — by default the 99.999th percentile of each activation's
    histogram (``"percentile"``), which keeps a few outliers from stretching the range (``"minmax"``) or
    ``"entropy"``. The first convolution and the output layer stay float32 (see below).
    """
    import onnx
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                          quantize_static)

    methods = {"minmax": CalibrationMethod.MinMax, "percentile": CalibrationMethod.Percentile,
               "entropy": CalibrationMethod.Entropy}
    if method not in methods:
        raise ValueError(f"calibration method must be one of {sorted(methods)}, got {method!r}")

    x = _as_nchw(calibration_images)
    proto = model if hasattr(model, "SerializeToString") else to_onnx(model)

    batch_size = 16 if method == "minmax" else 1     # the histogram collectors take one face at a time

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"image": x[i:i + batch_size]} for i in range(0, len(x), batch_size)])

        def get_next(self):
            return next(self.batches, None)

    # The first convolution and the output layer stay float32, for a fraction of a percent of the arithmetic:
    # the network's input and its coordinates keep full precision (8-bit outputs would round every coordinate
    # to a grid of 1/128 of the crop's half-width, 0.4 px at 96², about 1 % of the eye-corner distance).
    producers = {out: node for node in proto.graph.node for out in node.output}
    last = producers[proto.graph.output[0].name]
    while last.op_type == "Identity":
        last = producers[last.input[0]]
    first = next((n for n in proto.graph.node if n.op_type == "Conv"), None)    # nodes are in graph order
    keep_float = [last.name] + ([first.name] if first is not None else [])
    root_logger = logging.getLogger()
    level = root_logger.level
    with tempfile.TemporaryDirectory(prefix="facekp-quant-") as tmp:
        src, dst = Path(tmp) / "float.onnx", Path(tmp) / "int8.onnx"
        src.write_bytes(proto.SerializeToString())
        root_logger.setLevel(logging.ERROR)     # its advice to pre-process: the graph is already BN-folded
        try:
            with contextlib.redirect_stdout(io.StringIO()):   # its calibration progress prints
                quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                                calibrate_method=methods[method], nodes_to_exclude=keep_float,
                                reduce_range=True)
        finally:
            root_logger.setLevel(level)
        return onnx.load(str(dst))


def typical_faces(model, images, limit: float = 20.0) -> np.ndarray:
    """Indices of the calibration ``images`` whose activations are typical: a face whose largest activation in
    some layer exceeds ``limit`` times that layer's median (over the faces) of per-face maxima is left out.

    Min/max and histogram calibration take a range from *all* calibration faces; one face that drives a layer
    a thousand times beyond the others (the project met one among the first 256 training faces for the
    retrained ResNet-50) stretches that layer's 8-bit grid until the ordinary faces round to zero.
    """
    import onnx
    import onnxruntime as ort

    proto = model if hasattr(model, "SerializeToString") else to_onnx(model)
    probe = onnx.ModelProto()
    probe.CopyFrom(proto)
    names = [n.output[0] for n in probe.graph.node]
    del probe.graph.output[:]
    for n in names:
        probe.graph.output.append(onnx.helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(probe.SerializeToString(), providers=["CPUExecutionProvider"])
    x = _as_nchw(images)
    peaks = []                                                   # (faces, tensors): each face's peak per tensor
    for i in range(0, len(x), 16):
        outs = session.run(None, {"image": x[i:i + 16]})
        peaks.append(np.stack([np.abs(o).reshape(len(o), -1).max(axis=1) for o in outs], axis=1))
    peaks = np.concatenate(peaks)
    typical = np.median(peaks, axis=0)
    ratio = peaks / np.maximum(typical, 1e-6)
    return np.flatnonzero(np.all(ratio <= limit, axis=1))


def _as_nchw(images) -> np.ndarray:
    x = np.asarray(images)
    if x.dtype == np.uint8:
        x = x.astype(np.float32) / 255.0
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or len(x) == 0:
        raise ValueError(f"calibration images must be (N, H, W[, 1]) with N > 0, got {x.shape}")
    return np.ascontiguousarray(x.astype(np.float32).transpose(0, 3, 1, 2))


def int8_path(name_or_path) -> Path:
    """``models/<name>.int8.onnx`` for a model name, or ``<stem>.int8.onnx`` beside a ``.keras`` path."""
    from .models import resolve_model_path

    keras_path = resolve_model_path(name_or_path)
    return keras_path.with_name(keras_path.stem + ".int8.onnx")


def _metadata(proto) -> dict:
    return {p.key: p.value for p in proto.metadata_props}


MAX_INT8_GAP = 0.01      # mean |int8 − float| output, normalised units: 0.01 = 0.48 px at 96²


def export_int8(name_or_path, calibration_images=None, max_faces: int = 256, path=None) -> Path:
    """Quantize a trained model and write it beside its ``.keras`` file (see :func:`int8_path`).

    Calibration uses the typical faces among ``calibration_images`` (:func:`typical_faces`); the result is
    checked against the float network on them and refused (``RuntimeError``) if the outputs differ by more
    than :data:`MAX_INT8_GAP` on average.

    Without ``calibration_images`` the first ``max_faces`` faces of the YouTube-Faces training split are used
    (the data set must be available; see ``facekp data``). Returns the written path.
    """
    import onnx

    from .data import sha256sum
    from .models import load_model, resolve_model_path

    keras_path = resolve_model_path(name_or_path)
    source = "given images"
    if calibration_images is None:
        from .splits import load_faces

        calibration_images = load_faces("youtube-faces-68", "train", max_faces=max_faces).images
        source = f"youtube-faces-68 train, first {len(calibration_images)} faces"
    float_proto = to_onnx(load_model(keras_path, compile=False))
    keep = typical_faces(float_proto, calibration_images)
    if len(keep) == 0:
        raise ValueError("no typical calibration face (see helpers.export.typical_faces)")
    calibration = np.asarray(calibration_images)[keep]
    proto = quantize(float_proto, calibration)
    # the int8 graph must still compute the float network: compare them on the calibration faces
    x = _as_nchw(calibration).transpose(0, 2, 3, 1)
    gap = float(np.mean(np.abs(OnnxForward(proto)(x) - OnnxForward(float_proto)(x))))
    if gap > MAX_INT8_GAP:
        raise RuntimeError(f"the int8 export of {keras_path.name} differs from the float model by {gap:.4f} on "
                           f"average (normalised units, limit {MAX_INT8_GAP}); not written")
    dropped = len(calibration_images) - len(keep)
    float_ms, int8_ms = one_face_ms([OnnxForward(float_proto), OnnxForward(proto)], x[:1])
    meta = {"source": keras_path.name, "source_sha256": sha256sum(keras_path),
            "calibration": f"{source}: {len(keep)} faces used, {dropped} atypical left out",
            "mean_abs_difference": f"{gap:.5f}", "producer": "helpers.export",
            "float_ms": f"{float_ms:.4f}", "int8_ms": f"{int8_ms:.4f}"}
    onnx.helper.set_model_props(proto, meta)
    path = Path(path) if path else int8_path(keras_path)
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(proto.SerializeToString())
    tmp.replace(path)
    return path


def one_face_ms(forwards, x, repeats: int = 200) -> list[float]:
    """Median milliseconds of one call of each of ``forwards`` on ``x``, timed in alternation (so that a
    change of machine load weighs on all of them alike)."""
    import time

    times = [[] for _ in forwards]
    for f in forwards:
        f(x)                                               # first call: allocation, not speed
    for _ in range(repeats):
        for t, f in zip(times, forwards):
            start = time.perf_counter()
            f(x)
            t.append(time.perf_counter() - start)
    return [1000 * float(np.median(t)) for t in times]


def preferred_runtime(int8_file) -> str:
    """``"int8"`` or ``"onnx"``: whichever ran one face faster when the int8 file was exported.

    A small network such as LeNet can run *slower* in int8 (the quantize / dequantize steps around each layer
    cost more than its few multiply-adds save), a large one such as ResNet-50 several times faster. Exports made
    before the timing was recorded keep ``"int8"``.
    """
    import onnx

    meta = _metadata(onnx.load(str(int8_file), load_external_data=False))
    try:
        return "onnx" if float(meta["float_ms"]) < float(meta["int8_ms"]) else "int8"
    except (KeyError, ValueError):
        return "int8"


def int8_for(name_or_path) -> Path | None:
    """The int8 export of a model if it exists and was made from the current ``.keras`` file, else ``None``."""
    import onnx

    from .data import sha256sum
    from .models import resolve_model_path

    keras_path = resolve_model_path(name_or_path)
    path = int8_path(keras_path)
    if not path.exists():
        return None
    meta = _metadata(onnx.load(str(path), load_external_data=False))
    return path if meta.get("source_sha256") == sha256sum(keras_path) else None
