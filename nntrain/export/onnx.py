"""A checkpoint as a self-contained ONNX model: raw images in, logits and probabilities out.

The graph (tensor names in quotes)::

    "images"  float32 (N, C, H, W), the data set's own values (0..255 for the image sets)
      -> normalisation      x * scale + shift (per_channel, scale), x + shift (per_pixel_mean),
                            or (flatten(x) + shift) @ matrix (zca, pca), as nntrain.data.Normalizer
      -> evaluation view    the eval transform of data.augment when it is not the identity
                            (a centre crop): a Gather of the kept pixels, zero where padded
      -> the network        one or more ONNX nodes per layer (nntrain.export.onnx_layers),
                            tensors named after the layers, in evaluation mode
      -> "logits"           (N, K)
      -> "probabilities"    Softmax(logits), (N, K)

This is what ``nntrain eval`` computes without test-time augmentation (``--tta none``).
The weights are the checkpoint's evaluation weights: the exponential moving average when
the run evaluated with it (``nntrain.evaluate.load_model`` swaps them in). Metadata
(``metadata_props``, strings): ``classes`` (a JSON list), ``config_hash``,
``nntrain_version``, ``input_layout`` (NCHW), ``input_scale``, ``input_shape``,
``normalization``, ``weights``, ``iteration``.

Usage: ``export_checkpoint(run_or_checkpoint, "model.onnx")``; ``run_onnx`` and
``check_export`` run the file with ONNX Runtime and compare it with nntrain.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .. import validate as v
from ..errors import ConfigError, RunError
from ..graph import INPUT
from .builder import GraphBuilder, require_onnx, require_onnxruntime
from .onnx_layers import MIN_OPSET, convert_layer

DEFAULT_OPSET = 22  # the first whose ceil-mode pooling sizes are nntrain's (see onnx_layers)
IMAGES, LOGITS, PROBABILITIES = "images", "logits", "probabilities"
BATCH = "N"  # the symbolic batch dimension
CHECK_TOLERANCE = 1e-4  # largest relative difference of the logits ``check_export`` accepts
CHECK_IMAGES = 100


def check_opset(opset) -> int:
    """``opset`` as an int in [MIN_OPSET, onnx's newest]; ConfigError otherwise."""
    onnx = require_onnx()
    return v.integer(opset, "--opset", min_value=MIN_OPSET, max_value=onnx.defs.onnx_opset_version())


def add_normalization(g: GraphBuilder, normalizer, x: str) -> str:
    """The nodes of ``normalizer.apply`` on tensor ``x`` (N, C, H, W); the output's name."""
    if normalizer.matrix is not None:  # zca, pca: (flatten(x) + shift) @ matrix, back to (C, H, W)
        flat = g.op("Reshape", [x, g.constant("normalize.flat_shape", [0, -1])])
        centred = g.op("Add", [flat, g.constant("normalize.shift", normalizer.shift)])
        white = g.op("MatMul", [centred, g.constant("normalize.matrix", normalizer.matrix)])
        return g.op("Reshape", [white, g.constant("normalize.shape", [0, *normalizer.shape])], g.name("normalized"))
    if normalizer.scale is not None:
        x = g.op("Mul", [x, g.constant("normalize.scale", normalizer.scale)], g.name("scaled"))
    if normalizer.shift is not None:
        x = g.op("Add", [x, g.constant("normalize.shift", normalizer.shift)], g.name("normalized"))
    return x


def eval_view_indices(augment, shape: tuple) -> np.ndarray | None:
    """Where each pixel of the evaluation view comes from: (Ho, Wo) flat indices into the
    (H, W) plane, -1 for zero fill; None when the eval transform is the identity.

    Found by running ``augment.eval_transform`` on an image whose pixels hold their own
    index (1-based, so zero padding shows as 0); an eval transform that is not such a
    selection of pixels (one that computes) cannot be exported and is a ConfigError.
    """
    c, h, w = shape
    # ok: float64 holds every pixel index exactly; one (C, H, W) probe per export
    probe = np.broadcast_to(np.arange(1, h * w + 1, dtype=np.float64).reshape(1, 1, h, w), (1, c, h, w)).copy()
    view = np.asarray(augment.eval_transform(probe))
    if view.shape == probe.shape and np.array_equal(view, probe):
        return None
    plane = view[0, 0]
    if (view.shape[:2] != (1, c) or not np.all(view == plane) or not np.array_equal(plane, np.round(plane))
            or plane.min() < 0 or plane.max() > h * w):
        raise ConfigError(f"data.augment: the evaluation transform {augment!r} is not a selection of pixels "
                          "(a crop or a padding): it cannot be exported to ONNX")
    return plane.astype(np.int64) - 1


def add_eval_view(g: GraphBuilder, augment, shape: tuple, x: str) -> str:
    """The eval transform (e.g. a centre crop) on tensor ``x``: Reshape to (N, C, H*W), a zero
    appended where the view pads, Gather of the view's pixels -> (N, C, Ho, Wo)."""
    idx = eval_view_indices(augment, shape)
    if idx is None:
        return x
    plane = g.op("Reshape", [x, g.constant("eval_view.plane_shape", [0, 0, -1])])
    if (idx < 0).any():
        plane = g.op("Pad", [plane, g.constant("eval_view.pads", [0, 0, 0, 0, 0, 1])])
        idx = np.where(idx < 0, shape[1] * shape[2], idx)
    return g.op("Gather", [plane, g.constant("eval_view.indices", idx)], g.name("eval_view"), axis=2)


def add_network(g: GraphBuilder, network, x: str, out: str) -> None:
    """Every node of ``network`` (single output) on tensor ``x``; the output written to ``out``."""
    if len(network.output_names) != 1:
        raise ConfigError(f"ONNX export: the network must have one output, it has {len(network.output_names)}")
    tensors = {INPUT: x}
    for node in network.order:
        name = out if node.name == network.output_names[0] else g.name(node.name)
        where = f"model[{node.index}] ('{node.name}', {node.layer.type_name})"
        convert_layer(g, node.layer, [tensors[s] for s in node.inputs], name, where)
        tensors[node.name] = name


def build_model(exp, meta: dict, opset: int = DEFAULT_OPSET):
    """The ONNX ModelProto of experiment ``exp`` (weights loaded) and checkpoint ``meta``; checked
    with ``onnx.checker.check_model(full_check=True)`` (shape inference included)."""
    onnx = require_onnx()
    opset = check_opset(opset)
    from .. import __version__
    from ..config import config_hash

    data, network = exp.data, exp.network
    g = GraphBuilder(opset, reserved=(IMAGES, LOGITS, PROBABILITIES))
    x = add_normalization(g, exp.normalizer, IMAGES)
    x = add_eval_view(g, exp.augment, data.input_shape, x)
    add_network(g, network, x, LOGITS)
    g.op("Softmax", [LOGITS], PROBABILITIES, axis=1)
    k = data.num_classes
    uint8 = data.train.x.dtype == np.uint8
    metadata = {
        "classes": json.dumps(list(data.classes)),
        "config_hash": meta.get("config_hash") or config_hash(exp.config),
        "nntrain_version": __version__, "trained_with": meta.get("nntrain_version", ""),
        "input_layout": "NCHW", "input_shape": json.dumps(list(data.input_shape)),
        "input_scale": ("raw pixel values 0..255 (uint8 images) as float32" if uint8
                        else "the data file's own float32 values"),
        "normalization": f"{exp.normalizer.kind} (in the graph)",
        "weights": meta.get("eval_weights", "raw"), "iteration": meta.get("iteration", ""),
    }
    doc = (f"nntrain model '{exp.config.get('name', '')}': {IMAGES} (N, {', '.join(map(str, data.input_shape))}) "
           f"float32 raw values -> {LOGITS} (N, {k}), {PROBABILITIES} (N, {k}).")
    model = g.model([(IMAGES, (BATCH, *data.input_shape))], [(LOGITS, (BATCH, k)), (PROBABILITIES, (BATCH, k))],
                    graph_name=str(exp.config.get("name") or "nntrain"), metadata=metadata, doc=doc)
    try:
        onnx.checker.check_model(model, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as exc:
        raise RunError(f"the exported ONNX model does not pass onnx.checker: {exc}") from None
    return model


def export_checkpoint(checkpoint, output, *, opset: int = DEFAULT_OPSET, data_path=None):
    """Write ``checkpoint`` (a file or a run directory) as ONNX to ``output``; (path, model, exp).

    The data set is not read (the checkpoint describes it), except for checkpoints of
    older versions that do not record its dtype."""
    onnx = require_onnx()
    opset = check_opset(opset)
    from ..evaluate import load_model

    exp, ckpt = load_model(checkpoint, data_path=data_path, read_data=False)
    model = build_model(exp, ckpt.meta, opset)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(output))
    return output, model, exp


def reference_logits(exp, x_raw: np.ndarray) -> np.ndarray:
    """nntrain's logits for raw images: normalise, eval view, ``Network.forward(training=False)``."""
    x = exp.augment.for_eval()(exp.normalizer.apply(x_raw), None)
    logits = exp.network.forward(x, training=False)
    exp.network.clear()
    return logits


def run_onnx(model, x_raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities) of an ONNX model (path, bytes or ModelProto) run by ONNX Runtime
    on the CPU for raw images ``x_raw`` (converted to float32)."""
    ort = require_onnxruntime()
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    session = ort.InferenceSession(model if isinstance(model, bytes) else str(model),
                                   providers=["CPUExecutionProvider"])
    logits, proba = session.run([LOGITS, PROBABILITIES], {IMAGES: np.asarray(x_raw, dtype=np.float32)})
    return logits, proba


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """max |got - ref| / max |ref| (0 when both are 0)."""
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    diff = float(np.max(np.abs(np.asarray(got, np.float64) - ref))) if ref.size else 0.0  # ok: a check, not a hot path
    return diff / scale if scale > 0 else diff


def check_images(exp, n: int = CHECK_IMAGES, data_path=None) -> tuple[np.ndarray, str]:
    """(images, what they are) for ``check_export``: the first ``n`` test images (else training
    images) of the experiment's data, read now if the experiment was built without it; when
    the data cannot be read here, ``n`` random images in the data's value range (0..255 for
    uint8 images, standard normal for float ones), seeded."""
    from ..data import load_data
    from ..errors import DataError

    data = exp.data
    if not len(data.train):  # built from the checkpoint's description of the data
        cfg = dict(exp.config["data"], **({"path": str(data_path)} if data_path is not None else {}))
        try:
            data = load_data(cfg, exp.config["seed"])
        except DataError as exc:
            rng, shape = np.random.default_rng(0), (n, *data.input_shape)
            uint8 = data.train.x.dtype == np.uint8
            x = rng.integers(0, 256, shape).astype(np.uint8) if uint8 else rng.standard_normal(shape, np.float32)
            return x, f"random images (the data set is not readable here: {exc})"
    split = data.test if data.test is not None and len(data.test) else data.train
    return split.x[:n], f"{'test' if split is data.test else 'training'} images"


def check_export(model, exp, n: int = CHECK_IMAGES, data_path=None) -> dict:
    """Run ``model`` with ONNX Runtime and nntrain on ``n`` images (``check_images``); RunError if
    the logits differ by more than ``CHECK_TOLERANCE`` (relative)."""
    x, what = check_images(exp, n, data_path)
    logits, _ = run_onnx(model, x)
    err = relative_error(logits, reference_logits(exp, x))
    if not err <= CHECK_TOLERANCE:
        raise RunError(f"ONNX Runtime and nntrain disagree on {len(x)} {what}: relative difference of the "
                       f"logits {err:.3g} > {CHECK_TOLERANCE:g}")
    return {"images": len(x), "what": what, "relative_error": err}
