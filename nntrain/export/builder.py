"""A small ONNX graph builder: nodes, constant tensors, unique names, the final ModelProto.

The layer mappings (``nntrain.export.onnx_layers``) and the network exporter
(``nntrain.export.onnx``) write into one ``GraphBuilder``::

    g = GraphBuilder(opset=22)
    w = g.constant("fc.weight", weight)            # an initializer; returns its (unique) name
    g.op("Gemm", ["images", w], "logits", transB=1)  # a node writing tensor "logits"
    model = g.model(inputs=[("images", ("N", 784))], outputs=[("logits", ("N", 10))])

Every constant is stored as float32 (int64 for shapes and indices): the exported model
computes in float32 whatever dtype the network was trained in. Names are made unique
with a numeric suffix, so a layer named like a graph input or output cannot collide.
"""

from __future__ import annotations

import numpy as np

from ..errors import ConfigError

INSTALL_HINT = ("exporting to ONNX needs the onnx package, an optional extra: install it with\n"
                "    pip install 'nntrain[onnx]'\n"
                "(or: pip install onnx onnxruntime)")
RUNTIME_HINT = ("checking an ONNX model needs onnxruntime, an optional extra: install it with\n"
                "    pip install 'nntrain[onnx]'\n"
                "(or: pip install onnxruntime)")


def require_onnx():
    """The ``onnx`` module, or a ConfigError (exit 2) saying how to install it."""
    try:
        import onnx
    except ImportError:
        raise ConfigError(INSTALL_HINT) from None
    return onnx


def require_onnxruntime():
    """The ``onnxruntime`` module, or a ConfigError (exit 2) saying how to install it."""
    try:
        import onnxruntime
    except ImportError:
        raise ConfigError(RUNTIME_HINT) from None
    return onnxruntime


class GraphBuilder:
    """Collects the nodes and initializers of one ONNX graph for one opset."""

    def __init__(self, opset: int, reserved=()):
        self.opset = int(opset)
        self.nodes: list = []
        self.initializers: list = []
        self._used: set[str] = set(reserved)

    def name(self, base: str) -> str:
        """``base``, or ``base:2``, ``base:3``... when taken; the returned name is now taken."""
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}:{k}"
        self._used.add(name)
        return name

    def constant(self, base: str, array) -> str:
        """A constant tensor (float32, or int64 for integer arrays); its unique name."""
        onnx = require_onnx()
        array = np.asarray(array)
        array = array.astype(np.int64 if array.dtype.kind in "iu" else np.float32)
        name = self.name(base)
        self.initializers.append(onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def op(self, op_type: str, inputs: list[str], out: str | None = None, **attrs) -> str:
        """Append node ``op_type(inputs) -> out`` (a fresh name from ``op_type`` if None); ``out``.

        An ``out`` given by the caller must already be reserved (by ``name`` or ``reserved``).
        """
        onnx = require_onnx()
        if out is None:
            out = self.name(op_type.lower())
        self.nodes.append(onnx.helper.make_node(op_type, list(inputs), [out], name=self.name(f"{out}/{op_type}"),
                                                **attrs))
        return out

    def model(self, inputs, outputs, *, graph_name: str = "nntrain", metadata: dict | None = None,
              doc: str = ""):
        """The ModelProto: ``inputs`` / ``outputs`` are (name, shape) pairs, float32; a str in a
        shape is a symbolic dimension (the batch). The IR version is the oldest that carries
        the opset, so older runtimes load the model too."""
        onnx = require_onnx()
        helper = onnx.helper

        def info(name, shape):
            return helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, list(shape))

        graph = helper.make_graph(self.nodes, graph_name, [info(*i) for i in inputs], [info(*o) for o in outputs],
                                  initializer=self.initializers)
        opsets = [helper.make_opsetid("", self.opset)]
        model = helper.make_model(graph, opset_imports=opsets, producer_name="nntrain",
                                  ir_version=helper.find_min_ir_version_for(opsets))
        from .. import __version__

        model.producer_version = __version__
        model.doc_string = doc
        if metadata:
            helper.set_model_props(model, {str(k): str(v) for k, v in metadata.items()})
        return model
