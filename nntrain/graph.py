"""The network: a DAG of layers built from an ordered list of node specs.

A node spec is the layer's YAML dict plus graph keys::

    {name: skip, type: conv2d, out_channels: 32, kernel: 3, inputs: [relu_1],
     params: {bias: {lr_mult: 2, decay_mult: 0}}, trainable: true}

- ``name``: defaults to ``<type>_<k>`` (the k-th node of that type, from 1).
- ``inputs``: names of earlier or later nodes, or ``input`` (the network input);
  defaults to the previous node (the input for the first node).
- ``params``: per-parameter ``lr_mult``, ``decay_mult``, ``trainable`` (Caffe's
  ``param {}``) and ``train_until_epoch`` (trained during the first E epochs only, then
  frozen: airbench's whitening bias); ``trainable: false`` freezes the whole layer.

Forward runs the nodes in topological order from the input to every output;
backward runs them in reverse, summing the gradients of a tensor that feeds several
nodes (fan-out). Shapes are inferred when the network is built, so a mismatch is
reported before any training, naming the layer and the shapes.

Arrays passed to ``forward`` and returned are in the usual layout, (N, C, H, W) for
images and (N, F) for vectors; inside, images are channel-major (see
``nntrain.layers.base``).
"""

from __future__ import annotations

import numpy as np

from .errors import ConfigError
from .fileio import load_npz, save_npz
from .layers.base import Layer, Parameter, to_internal, to_public
from .registry import LAYERS, did_you_mean
from .sizes import Estimate, check_batch_memory

INPUT = "input"
# Random streams are SeedSequence([seed, tag, ...]); the tags keep weight init and dropout
# apart from the data loader's [seed, epoch] and [seed, epoch, batch] streams.
RNG_INIT = 1_000_001
RNG_DROPOUT = 1_000_002
_GRAPH_KEYS = ("name", "inputs", "params", "trainable")
_PARAM_OPTIONS = ("lr_mult", "decay_mult", "trainable", "train_until_epoch")


def node_names(spec) -> list:
    """The name of each node spec in order: its ``name``, else ``<type>_<k>`` for the k-th
    node of that type (from 1, named nodes counted too); None for an item that is not a
    mapping with a ``type``. The one naming rule: ``nntrain show`` prints these names, and
    ``--set model.NAME.key=...`` finds layers by them."""
    counts, names = {}, []
    for item in spec:
        if not isinstance(item, dict) or "type" not in item:
            names.append(None)
            continue
        type_name = item["type"]
        key = type_name if isinstance(type_name, str) else repr(type_name)
        counts[key] = counts.get(key, 0) + 1
        names.append(item.get("name", f"{type_name}_{counts[key]}"))
    return names


class Node:
    __slots__ = ("name", "layer", "inputs", "output_shape", "input_shapes", "macs", "index")

    def __init__(self, name: str, layer: Layer, inputs: list[str], index: int):
        self.name = name
        self.layer = layer
        self.inputs = inputs
        self.index = index
        self.output_shape: tuple = ()
        self.input_shapes: list[tuple] = []
        self.macs = 0


class Network:
    """A DAG of layers with shape inference, forward, backward and weights I/O.

    >>> net = Network([{"type": "linear", "out_features": 10}], input_shape=(784,))
    >>> logits = net.forward(np.zeros((5, 784), np.float32))   # (5, 10)
    >>> net.backward(np.ones_like(logits))                     # fills every param.grad
    >>> for name, p in net.named_parameters(): ...
    """

    def __init__(self, spec: list[dict], input_shape, *, outputs=None, seed: int = 0, dtype=np.float32):
        if not isinstance(spec, (list, tuple)) or not spec:
            raise ConfigError("model: expected a non-empty list of layers")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.dtype = np.dtype(dtype)
        self.rng = np.random.default_rng([seed, RNG_DROPOUT])  # stochastic layers (dropout); the trainer re-seeds per step
        self.nodes: list[Node] = self._make_nodes(spec)
        self.by_name = {n.name: n for n in self.nodes}
        self.output_names = self._output_names(outputs)
        self.order = self._topological_order()
        self._infer_shapes(np.random.default_rng([seed, RNG_INIT]))
        self._set_input_grad_flags(False)

    # ----- building ------------------------------------------------------------------
    def _make_nodes(self, spec) -> list[Node]:
        nodes, names = [], set()
        for i, (item, name) in enumerate(zip(spec, node_names(spec))):
            where = f"model[{i}]"
            if not isinstance(item, dict):
                raise ConfigError(f"{where}: expected a mapping like {{type: conv2d, ...}}, received {item!r}")
            if "type" not in item:
                raise ConfigError(f"{where}: missing 'type' (known: {', '.join(LAYERS.names())})")
            type_name = item["type"]
            if not isinstance(name, str) or not name or name == INPUT:
                raise ConfigError(f"{where}: invalid layer name {name!r} ('{INPUT}' is reserved)")
            if name in names:
                raise ConfigError(f"{where}: duplicate layer name '{name}'")
            names.add(name)
            where = f"{where} ('{name}', {type_name})"
            options = {k: val for k, val in item.items() if k not in _GRAPH_KEYS and k != "type"}
            try:
                layer = LAYERS.get(type_name).from_config(options)
            except ConfigError as exc:
                raise ConfigError(f"{where}: {exc}") from None
            inputs = item.get("inputs")
            if inputs is None:
                inputs = [nodes[-1].name] if nodes else [INPUT]
            elif isinstance(inputs, str):
                inputs = [inputs]
            if not isinstance(inputs, list) or not inputs or not all(isinstance(s, str) for s in inputs):
                raise ConfigError(f"{where}: 'inputs' must be a layer name or a list of names, received {inputs!r}")
            if layer.n_inputs is not None and len(inputs) != layer.n_inputs:
                raise ConfigError(f"{where}: takes {layer.n_inputs} input(s), received inputs={inputs}")
            node = Node(name, layer, inputs, i)
            node.layer._param_spec = (item.get("params"), item.get("trainable", True), where)
            nodes.append(node)
        known = [INPUT] + [n.name for n in nodes]
        for node in nodes:
            for src in node.inputs:
                if src not in known:
                    raise ConfigError(
                        f"model[{node.index}] ('{node.name}'): unknown input '{src}'{did_you_mean(src, known)}"
                    )
                if src == node.name:
                    raise ConfigError(f"model[{node.index}] ('{node.name}'): a layer cannot be its own input")
        return nodes

    def _output_names(self, outputs) -> list[str]:
        if outputs is None:
            return [self.nodes[-1].name]
        if isinstance(outputs, str):
            outputs = [outputs]
        for name in outputs:
            if name not in self.by_name:
                raise ConfigError(f"outputs: unknown layer '{name}'{did_you_mean(name, self.by_name)}")
        return list(outputs)

    def _topological_order(self) -> list[Node]:
        """Depth-first order from the outputs; a cycle is an error naming its nodes."""
        order, state = [], {}

        def visit(name, path):
            if name == INPUT or state.get(name) == "done":
                return
            if state.get(name) == "active":
                cycle = path[path.index(name):] + [name]
                raise ConfigError(f"model: the layers form a cycle: {' -> '.join(cycle)}")
            state[name] = "active"
            node = self.by_name[name]
            for src in node.inputs:
                visit(src, path + [name])
            state[name] = "done"
            order.append(node)

        for name in [n.name for n in self.nodes]:
            visit(name, [])
        reachable = self._reachable_from_outputs()
        return [n for n in order if n.name in reachable]

    def _reachable_from_outputs(self) -> set:
        seen, stack = set(), list(self.output_names)
        while stack:
            name = stack.pop()
            if name == INPUT or name in seen:
                continue
            seen.add(name)
            stack.extend(self.by_name[name].inputs)
        return seen

    def _infer_shapes(self, init_rng) -> None:
        """Build every layer in order; each layer's parameters are counted before ``build``
        allocates them and its output after, so a network that cannot fit in memory is
        refused before anything large is allocated (``nntrain.sizes``)."""
        from .ops.parallel import num_threads

        shapes = {INPUT: self.input_shape}
        self.memory = Estimate(self.dtype.itemsize, self.input_shape, num_threads())
        for node in self.order:
            node.input_shapes = [shapes[s] for s in node.inputs]
            where = f"model[{node.index}] ('{node.name}', {node.layer.type_name})"
            try:
                self.memory.add_parameters(node.name, node.layer.param_shapes(node.input_shapes))
                out = node.layer.build(node.input_shapes, init_rng, self.dtype)
                self.memory.add_output(node.name, node.inputs, out, has_params=bool(node.layer.params()),
                                       workspace=node.layer.workspace_bytes(node.input_shapes, out,
                                                                            self.dtype.itemsize))
            except ConfigError as exc:
                shown = ", ".join(f"{s} {tuple(shapes[s])}" for s in node.inputs)
                raise ConfigError(f"{where}: {exc} (inputs: {shown})") from None
            node.output_shape = tuple(int(d) for d in out)
            node.macs = int(node.layer.macs(node.input_shapes, node.output_shape))
            shapes[node.name] = node.output_shape
            node.layer.rng = self.rng
            self._apply_param_spec(node, where)

    @staticmethod
    def _apply_param_spec(node: Node, where: str) -> None:
        spec, trainable, _ = node.layer._param_spec
        params = node.layer.params()
        for pname, p in params.items():
            p.name = f"{node.name}.{pname}"
        if not isinstance(trainable, bool):
            raise ConfigError(f"{where}: expected true or false, received trainable={trainable!r}")
        if not trainable:
            for p in params.values():
                p.trainable = False
        if spec is None:
            return
        if not isinstance(spec, dict):
            raise ConfigError(f"{where}: 'params' must map parameter names to options, received {spec!r}")
        for pname, opts in spec.items():
            if pname not in params:
                raise ConfigError(
                    f"{where}: no parameter '{pname}'{did_you_mean(pname, params)} (has: {', '.join(params) or 'none'})"
                )
            if not isinstance(opts, dict):
                raise ConfigError(f"{where}: params.{pname} must be a mapping, received {opts!r}")
            for key, value in opts.items():
                if key not in _PARAM_OPTIONS:
                    raise ConfigError(
                        f"{where}: unknown option params.{pname}.{key}{did_you_mean(key, _PARAM_OPTIONS)}"
                        f" (options: {', '.join(_PARAM_OPTIONS)})"
                    )
                from . import validate as v

                if key == "trainable":
                    params[pname].trainable = v.boolean(value, f"params.{pname}.trainable")
                else:
                    setattr(params[pname], key, v.non_negative(value, f"params.{pname}.{key}"))
            if params[pname].train_until_epoch is not None and not params[pname].trainable:
                raise ConfigError(f"{where}: params.{pname}.train_until_epoch stops the training of a parameter, "
                                  f"but '{pname}' is not trainable")

    def _set_input_grad_flags(self, input_grad: bool) -> None:
        """A layer computes dx only if something upstream needs it: a trainable parameter
        (or the network input, when ``input_grad``). So the first layer with weights, and
        a linear layer behind a parameter-free flatten, skip their largest product."""
        wants = {INPUT: input_grad}
        for node in self.order:
            node.layer.needs_input_grad = any(wants[s] for s in node.inputs)
            has_trainable = any(p.trainable for p in node.layer.params().values())
            wants[node.name] = node.layer.needs_input_grad or has_trainable

    # ----- running -------------------------------------------------------------------
    def forward(self, x: np.ndarray, training: bool = False):
        """Outputs for a batch ``x`` of shape (N, *input_shape); one array or a list."""
        x = np.asarray(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise ConfigError(f"network input: expected (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        if x.dtype != self.dtype:
            x = x.astype(self.dtype)
        values = {INPUT: to_internal(x)}
        consumers = self._consumer_counts()
        for node in self.order:
            args = [values[s] for s in node.inputs]
            values[node.name] = node.layer.forward(args[0] if node.layer.n_inputs == 1 else args, training)
            for s in node.inputs:  # free activations nobody else reads (layers keep their own)
                consumers[s] -= 1
                if consumers[s] == 0 and s not in self.output_names:
                    del values[s]
        outs = [to_public(values[name]) for name in self.output_names]
        return outs[0] if len(outs) == 1 else outs

    def data_samples(self) -> int:
        """How many training examples the data-computed initializers need (0: none)."""
        return max((node.layer.data_samples() for node in self.order), default=0)

    def initialize_from_data(self, x: np.ndarray) -> None:
        """Compute the weights whose initializer needs data (e.g. ``pca_whitening``) from the
        batch ``x`` (N, *input_shape), preprocessed as in training: each such layer sees its
        input as produced by the layers before it (in eval mode)."""
        pending = [node for node in self.order if node.layer.data_samples()]
        x = np.asarray(x, dtype=self.dtype)
        values = {INPUT: to_internal(x)}
        for node in self.order:
            if not pending:
                break
            args = [values[s] for s in node.inputs]
            if node is pending[0]:
                try:
                    node.layer.init_from_data(args[0])
                except ConfigError as exc:
                    raise ConfigError(f"model[{node.index}] ('{node.name}', {node.layer.type_name}): {exc}") from None
                pending.pop(0)
            values[node.name] = node.layer.forward(args[0] if node.layer.n_inputs == 1 else args, False)
        self.clear()

    def _consumer_counts(self) -> dict:
        counts = {INPUT: 0}
        for node in self.order:
            counts.setdefault(node.name, 0)
            for s in node.inputs:
                counts[s] = counts.get(s, 0) + 1
        return counts

    def backward(self, output_grads, input_grad: bool = False):
        """Backpropagate d(objective)/d(outputs); fills every parameter's ``grad``.

        ``output_grads`` is one array (one output) or a list matching the outputs.
        Returns d(objective)/d(input) when ``input_grad`` is true, else None.
        """
        if len(self.output_names) == 1 and not isinstance(output_grads, (list, tuple)):
            output_grads = [output_grads]
        if len(output_grads) != len(self.output_names):
            raise ValueError(f"backward: expected {len(self.output_names)} output gradients, got {len(output_grads)}")
        self._set_input_grad_flags(input_grad)  # cheap; follows trainable flags changed after build
        grads: dict[str, np.ndarray] = {}
        for name, g in zip(self.output_names, output_grads):
            grads[name] = to_internal(np.asarray(g, dtype=self.dtype))
        try:
            for node in reversed(self.order):
                dy = grads.pop(node.name, None)
                if dy is None:  # the node's output does not reach an output: nothing flows back
                    node.layer.clear()
                    continue
                dxs = node.layer.backward(dy)
                node.layer.clear()  # its cache is dead: the backward peak holds only those still needed
                if node.layer.n_inputs == 1:
                    dxs = [dxs]
                for src, dx in zip(node.inputs, dxs):
                    if dx is None or (src == INPUT and not input_grad):
                        continue
                    # fan-out: sum, out of place (a layer may pass its dy through as dx)
                    grads[src] = grads[src] + dx if src in grads else dx
        finally:
            if input_grad:
                self._set_input_grad_flags(False)
        if input_grad:
            return to_public(grads[INPUT])
        return None

    def set_rng(self, rng: np.random.Generator) -> None:
        """Give every stochastic layer (dropout) this generator.

        The trainer passes a generator derived from (seed, iteration) before each step,
        so a resumed run draws exactly the masks an uninterrupted run would have drawn.
        """
        self.rng = rng
        for node in self.order:
            node.layer.rng = rng

    def clear(self) -> None:
        """Free what the layers kept for backward."""
        for node in self.order:
            node.layer.clear()

    # ----- parameters and state ------------------------------------------------------
    def named_parameters(self) -> list[tuple[str, Parameter]]:
        """(``layer.param``, Parameter) for every parameter, in network order."""
        return [(f"{n.name}.{k}", p) for n in self.order for k, p in n.layer.params().items()]

    def parameters(self) -> list[Parameter]:
        return [p for _, p in self.named_parameters()]

    def named_buffers(self) -> list[tuple[str, np.ndarray]]:
        return [(f"{n.name}.{k}", b) for n in self.order for k, b in n.layer.buffers().items()]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Parameter values and buffers (running statistics) by qualified name."""
        state = {f"param/{k}": p.value for k, p in self.named_parameters()}
        state.update({f"buffer/{k}": b for k, b in self.named_buffers()})
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy values in place; every key must be present with the same shape."""
        targets = {f"param/{k}": p.value for k, p in self.named_parameters()}
        targets.update({f"buffer/{k}": b for k, b in self.named_buffers()})
        missing = [k for k in targets if k not in state]
        if missing:
            raise ConfigError(f"weights do not match this network: missing {', '.join(missing[:5])}"
                              + (" ..." if len(missing) > 5 else ""))
        for key, target in targets.items():
            value = np.asarray(state[key])
            if value.shape != target.shape:
                raise ConfigError(f"weights do not match this network: {key} has shape {value.shape}, "
                                  f"the network expects {target.shape}")
            target[...] = value

    def save_weights(self, path) -> None:
        """Write parameters and buffers to an npz (atomic, no pickle)."""
        save_npz(path, self.state_dict())

    def load_weights(self, path) -> None:
        state = load_npz(path)
        self.load_state_dict({k: v for k, v in state.items() if k.startswith(("param/", "buffer/"))})

    # ----- description ---------------------------------------------------------------
    def summary(self) -> list[dict]:
        """One row per layer: name, type, inputs, output shape, parameter count, MACs."""
        rows = []
        for n in self.order:
            params = n.layer.params()
            rows.append({
                "name": n.name, "type": n.layer.type_name, "inputs": list(n.inputs),
                "output_shape": n.output_shape,
                "params": int(sum(p.size for p in params.values())),
                "trainable": int(sum(p.size for p in params.values() if p.trainable)),
                "macs": n.macs,
            })
        return rows

    def format_summary(self) -> str:
        rows = self.summary()
        lines = [f"{'layer':<16} {'type':<14} {'output shape':<16} {'params':>10} {'MACs':>14}  inputs"]
        lines.append("-" * len(lines[0]))
        lines.append(f"{INPUT:<16} {'':<14} {str(self.input_shape):<16} {'':>10} {'':>14}")
        for r in rows:
            inputs = "" if r["inputs"] == [self._previous(r["name"])] else ", ".join(r["inputs"])
            lines.append(f"{r['name']:<16} {r['type']:<14} {str(r['output_shape']):<16} "
                         f"{r['params']:>10,} {r['macs']:>14,}  {inputs}")
        total_p = sum(r["params"] for r in rows)
        total_t = sum(r["trainable"] for r in rows)
        total_m = sum(r["macs"] for r in rows)
        lines.append("-" * len(lines[0]))
        lines.append(f"total: {total_p:,} parameters ({total_t:,} trainable), "
                     f"{total_m:,} multiply-adds per sample forward")
        return "\n".join(lines)

    def _previous(self, name: str) -> str:
        i = self.by_name[name].index
        return self.nodes[i - 1].name if i > 0 else INPUT

    @property
    def macs_per_sample(self) -> int:
        return sum(n.macs for n in self.order)

    def check_memory(self, batch_size: int, *, training: bool = True, option: str = "train.batch_size") -> None:
        """ConfigError if a training step (or an evaluation pass) at ``batch_size`` cannot
        fit in this machine's memory; the message names ``option`` and the numbers.
        ``self.memory`` (an ``nntrain.sizes.Estimate``) holds the estimate itself."""
        check_batch_memory(self.memory, batch_size, training=training, option=option)

    def output_shapes(self) -> list[tuple]:
        return [self.by_name[n].output_shape for n in self.output_names]

    def get_config(self) -> list[dict]:
        """The node specs this network was built from (layer options in full)."""
        out = []
        for n in self.nodes:
            cfg = {"name": n.name, **n.layer.get_config(), "inputs": list(n.inputs)}
            spec, trainable, _ = n.layer._param_spec
            if spec is not None:
                cfg["params"] = spec
            if trainable is not True:
                cfg["trainable"] = trainable
            out.append(cfg)
        return out

