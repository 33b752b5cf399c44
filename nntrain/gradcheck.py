"""Finite-difference gradient checking (float64, central differences), aware of kinks.

For a scalar objective f and a tensor T, the numerical gradient of entry i is

    n_i = (f(T + h e_i) - f(T - h e_i)) / (2 h)

and the check compares it with the analytic gradient a from ``backward`` by the relative
error ``|a - n|_2 / (|a|_2 + |n|_2)`` over the entries checked (0 when every entry agrees
within the floor of ``relative_error``). Correct float64 code gives ~1e-9; a wrong gradient
~1e-1.

Kinks
-----
A network of ReLUs and max-pools is piecewise smooth. Where the perturbation +-h moves some
unit across a kink (a ReLU input across 0, two max-pool candidates past each other: on
the flat background of real images many windows hold *equal* values, so almost any
perturbation of a pixel breaks a tie), n_i mixes the slopes of two pieces and measures
nothing (quickstart's input: relative error 0.4 for a correct gradient). So every
piecewise part reports a *branch signature* of its last forward (``Layer.branch_signature``:
ReLU's x > 0, which entries of each max-pool window equal its maximum, hinge's active
margins; None when smooth), values within rounding of each other (``tie_tolerance``)
counting as equal. The checker takes the signatures at T, T + h e_i and T - h e_i; if
either perturbed one differs from the one at T, the step crossed a kink. The entry is then
retried with steps 10 and 100 times smaller (``KINK_STEP_DIVISORS``: a kink at a small
distance, one of the thousand windows a first-layer weight feeds, is no longer crossed);
if every step crosses one, the entry is *at a kink*: skipped, counted, and another entry is
drawn in its place, until the requested number of entries away from kinks were checked
(or ``DRAWS_PER_ENTRY`` times as many were drawn). A tensor none of whose drawn entries
could be checked is reported as such and does not pass.

The step h is scaled by a tensor's root mean square when that exceeds 1 (an unnormalised
input in the hundreds would otherwise have its gradient drowned in round-off).

Round-off floor
---------------
Each of f(T +- h e_i) carries a rounding error of a few ulp of the objective's magnitude
S (|f|, or the largest logit, which a log-sum-exp cancels), so n_i is only known to
~ ROUNDOFF_ULPS * eps * S / h (``roundoff_floor``). Entries that agree within that floor,
or within ``REL_FLOOR`` of the tensor's largest gradient entry, count as equal: a truly
zero gradient (a conv bias feeding batch normalisation) checks as 0, while an error in a
tiny but real gradient (a ``std: 0.0001`` init) still shows.

- ``check_layer``: one layer, objective ``sum(R * layer(x))`` with a fixed random R, for
  the input(s) and every parameter.
- ``check_network`` / ``check_network_tensors``: a whole network with its loss, objective =
  mean data loss, for the input and every parameter (a random subset of large tensors).
- ``check_experiment``: the ``nntrain gradcheck`` command: an experiment's network in
  float64 on real training examples, in evaluation and in training mode (batch
  statistics, dropout with a fixed mask), as a ``GradcheckReport``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .layers.base import Layer, batch_shape

DEFAULT_TOLERANCE = 1e-6
DEFAULT_STEP = 1e-6
ROUNDOFF_ULPS = 16  # rounding of one objective evaluation, in ulps of its magnitude
REL_FLOOR = 1e-7  # differences below this fraction of a tensor's largest gradient entry are ignored
DRAWS_PER_ENTRY = 10  # draw budget: this many entries per wanted one, when kinks force redraws
KINK_STEP_DIVISORS = (1, 10, 100)  # an entry whose step crosses a kink is retried with h/10, then h/100
_EPS = float(np.finfo(np.float64).eps)  # ok: finite differences run in float64


def roundoff_floor(scale: float, h: float = DEFAULT_STEP) -> float:
    """How far a central difference of an objective of magnitude ``scale`` is off by rounding alone."""
    return ROUNDOFF_ULPS * _EPS * abs(scale) / h


def plain_relative_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """|a - n|_2 / (|a|_2 + |n|_2) with no floor (0 when both are 0)."""
    a = np.asarray(analytic, dtype=np.float64).ravel()  # ok: gradient checks are float64 by design
    n = np.asarray(numeric, dtype=np.float64).ravel()  # ok: gradient checks are float64 by design
    scale = np.linalg.norm(a) + np.linalg.norm(n)
    return float(np.linalg.norm(a - n) / scale) if scale > 0 else 0.0


def relative_error(analytic: np.ndarray, numeric: np.ndarray, atol=None) -> float:
    """|a - n|_2 / (|a|_2 + |n|_2), or 0 when every entry agrees within the floor
    ``max(atol, REL_FLOOR * max(|a|, |n|))``.

    ``atol`` (a number, or one per entry) is the round-off of the finite differences
    (``roundoff_floor`` of the objective and step); by default that of an objective of
    magnitude 1 with the default step.
    It matters for gradients that are truly zero: there the numerical gradient is pure
    round-off (~1e-10) and a relative error would be ~1 although nothing is wrong. The
    floor is never a fixed absolute number above that: a 10% error in a gradient of
    size 1e-9 is reported when the objective is small enough to resolve it.
    """
    a = np.asarray(analytic, dtype=np.float64).ravel()  # ok: gradient checks are float64 by design
    n = np.asarray(numeric, dtype=np.float64).ravel()  # ok: gradient checking is float64 by design
    if a.size == 0:
        return 0.0
    atol = roundoff_floor(1.0) if atol is None else atol
    floor = np.maximum(atol, REL_FLOOR * max(np.max(np.abs(a)), np.max(np.abs(n))))
    if np.all(np.abs(a - n) <= floor):
        return 0.0
    return plain_relative_error(a, n)


# ----- kinks --------------------------------------------------------------------------
def branch_signatures(parts) -> list:
    """The branch signature of the last forward of each part (layers, a loss; None: smooth)."""
    return [getattr(p, "branch_signature", lambda: None)() for p in parts]


def same_branches(a: list, b: list) -> bool:
    """Whether two lists of branch signatures are equal, i.e. no kink lies between the two forwards."""
    return all((x is None and y is None) or (x is not None and y is not None and np.array_equal(x, y))
               for x, y in zip(a, b))


@dataclass
class TensorCheck:
    """The finite-difference check of one tensor.

    ``wanted`` entries were asked for (all of a small tensor); ``checked`` were measured
    away from kinks and ``at_kinks`` drawn ones skipped because their +-h forward took
    another branch somewhere. ``error`` is the relative error over the checked entries
    (``relative_error``: 0 when every entry agrees within the round-off floor), inf when
    none could be checked (all at kinks); ``raw_error`` the same without the floor, what
    the report prints beside it (correct float64 code: ~1e-10..1e-8).
    """

    name: str
    size: int
    wanted: int
    checked: int
    at_kinks: int
    error: float
    raw_error: float = math.nan

    def passed(self, tolerance: float) -> bool:
        return (self.checked > 0 or self.wanted == 0) and self.error <= tolerance

    def status(self, tolerance: float) -> str:
        if self.checked == 0 and self.wanted:
            return f"NOT CHECKED: all {self.at_kinks} entries drawn are at kinks"
        return "ok" if self.error <= tolerance else "FAIL"


def _draw(size: int, want: int, max_draws: int, rng) -> np.ndarray:
    """Entries to try, in random order: all of them when the tensor is no larger than ``want``."""
    if size <= want:
        return np.arange(size)
    return rng.choice(size, min(size, max_draws), replace=False)


@dataclass
class Objective:
    """A scalar objective of tensors that the checker perturbs in place.

    ``evaluate()`` runs the forward at the tensors' current values and returns ``(value,
    branch signatures)``; ``signatures`` are those at the unperturbed point and ``scale``
    the magnitude of the objective's terms there (for ``roundoff_floor``).
    """

    evaluate: Callable[[], tuple[float, list]]
    signatures: list
    scale: float


def check_tensor(name: str, tensor: np.ndarray, analytic: np.ndarray, objective: Objective, *,
                 want: int | None, rng, h: float = DEFAULT_STEP, max_draws: int | None = None) -> TensorCheck:
    """Check ``analytic`` (d objective / d tensor) on ``want`` entries of ``tensor`` away from kinks.

    ``want=None`` checks every entry. Entries are drawn at random, up to ``max_draws``
    (default ``DRAWS_PER_ENTRY * want``) when kinks force redraws; steps and retries as
    in the module docstring (an exact tie is crossed at any step: that entry is skipped).
    """
    size = tensor.size
    want = size if want is None else min(want, size)
    order = _draw(size, want, max_draws or DRAWS_PER_ENTRY * want, rng)
    flat = tensor.reshape(-1)  # a view: tensors are contiguous
    h = h * max(1.0, float(np.sqrt(np.mean(np.square(flat))))) if size else h
    idx, num, atol, at_kinks = [], [], [], 0
    for i in order:
        if len(idx) == want:
            break
        old = flat[i]
        for step in (h / d for d in KINK_STEP_DIVISORS):
            flat[i] = old + step
            f_plus, sig_plus = objective.evaluate()
            flat[i] = old - step
            f_minus, sig_minus = objective.evaluate()
            flat[i] = old
            if same_branches(sig_plus, objective.signatures) and same_branches(sig_minus, objective.signatures):
                idx.append(i)
                num.append((f_plus - f_minus) / (2 * step))
                atol.append(roundoff_floor(objective.scale, step))
                break
        else:
            at_kinks += 1
    if idx:
        a, n = np.asarray(analytic).reshape(-1)[idx], np.array(num)
        error, raw = relative_error(a, n, atol=np.array(atol)), plain_relative_error(a, n)
    else:
        error = raw = 0.0 if want == 0 else math.inf
    return TensorCheck(name, size, want, len(idx), at_kinks, error, raw)


# ----- one layer, one loss ----------------------------------------------------------------
def check_layer_tensors(layer: Layer, input_shapes, *, batch: int = 3, training: bool = True, seed: int = 0,
                        h: float = DEFAULT_STEP, max_entries: int | None = None, inputs=None) -> list[TensorCheck]:
    """``check_layer``'s checks as ``TensorCheck`` (with the counts of entries at kinks)."""
    rng = np.random.default_rng(seed)
    input_shapes = [tuple(s) for s in input_shapes]
    out_shape = layer.build(input_shapes, rng, np.float64)  # ok: finite differences need float64
    if inputs is None:
        inputs = [rng.standard_normal(batch_shape(s, batch)) for s in input_shapes]
    multi = layer.n_inputs != 1
    r = rng.standard_normal(batch_shape(out_shape, batch))

    def run():
        layer.rng = np.random.default_rng(seed + 1)
        return layer.forward(inputs if multi else inputs[0], training)

    def evaluate():
        return float(np.sum(r * run())), branch_signatures([layer])

    y = run()
    objective = Objective(evaluate, branch_signatures([layer]), float(np.sum(np.abs(r * y))))
    layer.needs_input_grad = True
    dxs = layer.backward(r.copy())
    if not multi:
        dxs = [dxs]
    params = layer.params()
    analytic = {k: p.grad.copy() for k, p in params.items()}
    options = dict(want=max_entries, rng=rng, h=h)
    checks = [check_tensor("input" if k == 0 else f"input{k}", x, dx, objective, **options)
              for k, (x, dx) in enumerate(zip(inputs, dxs))]
    checks += [check_tensor(f"param:{k}", p.value, analytic[k], objective, **options)
               for k, p in params.items()]
    return checks


def check_layer(layer: Layer, input_shapes, *, batch: int = 3, training: bool = True, seed: int = 0,
                h: float = DEFAULT_STEP, max_entries: int | None = None, inputs=None) -> dict[str, float]:
    """Relative error of d sum(R*y)/d(input_k) and d/d(param) for a freshly built ``layer``.

    ``layer`` must not be built yet; it is built in float64. Returns ``{'input': err,
    'input1': err, ..., 'param:weight': err, ...}``; inf for a tensor whose entries were
    all at kinks. Stochastic layers are re-seeded before every forward, so dropout masks
    stay fixed across the evaluations.
    """
    checks = check_layer_tensors(layer, input_shapes, batch=batch, training=training, seed=seed, h=h,
                                 max_entries=max_entries, inputs=inputs)
    return {c.name: c.error for c in checks}


def check_loss(loss, logits: np.ndarray, targets: np.ndarray, h: float = DEFAULT_STEP) -> float:
    """Relative error of d loss / d logits for a loss object (float64 logits); inf if all at kinks."""
    def evaluate():
        return float(loss.forward(logits, targets)), branch_signatures([loss])

    value, signatures = evaluate()
    analytic = loss.backward().copy()
    objective = Objective(evaluate, signatures, max(abs(value), float(np.max(np.abs(logits)))))
    return check_tensor("logits", logits, analytic, objective, want=None, rng=None, h=h).error


# ----- a network --------------------------------------------------------------------------
@dataclass
class ModeCheck:
    """Every tensor's check of one network in one mode ("evaluation" or "training")."""

    mode: str
    loss: float
    tensors: list[TensorCheck]

    def passed(self, tolerance: float) -> bool:
        return all(t.passed(tolerance) for t in self.tensors)


def check_network_tensors(net, loss, x: np.ndarray, targets: np.ndarray, *, training: bool = False,
                          h: float = DEFAULT_STEP, max_entries: int | None = 30, seed: int = 0,
                          max_draws: int | None = None) -> ModeCheck:
    """Check the mean data loss of ``net`` w.r.t. its input and every parameter, skipping kinks.

    ``net`` should be built in float64. In training mode the dropout generator is
    re-seeded identically before every forward, so every evaluation draws the same mask,
    and batch normalisation uses (and is checked through) the batch statistics. The
    network's generator and buffers (running statistics) are restored afterwards.
    """
    rng = np.random.default_rng(seed)
    x = np.array(x, dtype=np.float64)  # ok: finite differences need float64
    parts = [node.layer for node in net.order] + [loss]
    saved_rng = net.rng
    saved_buffers = [(b, b.copy()) for _, b in net.named_buffers()]

    def forward():
        if training:
            net.set_rng(np.random.default_rng([seed, 1]))
        return net.forward(x, training=training)

    def evaluate():
        return float(loss.forward(forward(), targets)), branch_signatures(parts)

    try:
        out = forward()
        value = float(loss.forward(out, targets))
        objective = Objective(evaluate, branch_signatures(parts), max(abs(value), float(np.max(np.abs(out)))))
        dx = net.backward(loss.backward(), input_grad=True)
        analytic = [("input", x, dx)] + [(name, p.value, p.grad.copy()) for name, p in net.named_parameters()]
        tensors = [check_tensor(name, tensor, grad, objective, want=max_entries, rng=rng, h=h, max_draws=max_draws)
                   for name, tensor, grad in analytic]
    finally:
        net.set_rng(saved_rng)
        for buffer, value_before in saved_buffers:
            buffer[...] = value_before
        net.clear()
    return ModeCheck("training" if training else "evaluation", value, tensors)


def check_network(net, loss, x: np.ndarray, targets: np.ndarray, *, training: bool = False,
                  h: float = DEFAULT_STEP, max_entries: int | None = 30, seed: int = 0) -> dict[str, float]:
    """Relative error per parameter (and the input) of the mean data loss of ``net``
    (inf for a tensor whose entries were all at kinks); see ``check_network_tensors``.

    ``training=False`` by default: evaluation mode, running statistics and no dropout.
    """
    check = check_network_tensors(net, loss, x, targets, training=training, h=h, max_entries=max_entries,
                                  seed=seed)
    return {t.name: t.error for t in check.tensors}


# ----- an experiment (``nntrain gradcheck``) ----------------------------------------------
@dataclass
class GradcheckReport:
    """``check_experiment``'s result: one ``ModeCheck`` per mode, on ``examples`` examples."""

    examples: int
    modes: list[ModeCheck]

    def passed(self, tolerance: float) -> bool:
        return all(m.passed(tolerance) for m in self.modes)

    def lines(self, tolerance: float) -> list[str]:
        """The report as printed by ``nntrain gradcheck``."""
        names = [t.name for m in self.modes for t in m.tensors]
        width = max([len(n) for n in names] + [len("tensor")])
        about = {"evaluation": "running statistics, no dropout",
                 "training": "batch statistics, one fixed dropout mask"}
        out = []
        for m in self.modes:
            out.append(f"{m.mode} mode ({about.get(m.mode, '')}; {self.examples} examples, loss {m.loss:.4f}):")
            out.append(f"  {'tensor':<{width}}  rel.error  (raw)      checked  at kinks")
            for t in m.tensors:
                error = f"{t.error:9.2e}  ({t.raw_error:8.2e})" if t.checked else f"{'-':>9}  {'':10}"
                out.append(f"  {t.name:<{width}}  {error}  {t.checked:>3}/{t.wanted:<3}  {t.at_kinks:>8}  "
                           f"{t.status(tolerance)}")
        skipped = sum(t.at_kinks for m in self.modes for t in m.tensors)
        unchecked = sum(1 for m in self.modes for t in m.tensors if t.checked == 0 and t.wanted)
        checked = [t.error for m in self.modes for t in m.tensors if t.checked]
        worst = max(checked, default=0.0)
        worst_raw = max((t.raw_error for m in self.modes for t in m.tensors if t.checked), default=0.0)
        verdict = "pass" if self.passed(tolerance) else "FAIL"
        out.append(f"worst relative error {worst:.2e} (raw {worst_raw:.2e}; tolerance {tolerance:g}): {verdict}; "
                   f"{skipped} drawn "
                   "entries skipped at kinks (even a 100x smaller step changed a branch: a ReLU sign, a "
                   "max-pool maximum)" + (f"; {unchecked} tensors not checked (every entry drawn at a kink)"
                                          if unchecked else ""))
        return out


def check_experiment(exp, *, examples: int = 4, entries: int = 20, h: float = DEFAULT_STEP, seed: int = 0,
                     modes=("evaluation", "training")) -> GradcheckReport:
    """Check an experiment's network in float64 on its first ``examples`` training examples.

    The examples are preprocessed as at evaluation (normalised, no random augmentation);
    the network is a float64 copy of ``exp.network`` with its weights (including weights
    computed from data). ``entries`` entries away from kinks are checked per tensor.
    """
    from .experiment import build_network

    net = exp.network
    if net.dtype != np.float64:
        net = build_network(exp.config, net.input_shape, dtype=np.float64)  # ok: finite differences need float64
        net.load_state_dict(exp.network.state_dict())
    x = exp.augment.for_eval()(exp.normalizer.apply(exp.data.train.x[:examples]), None)
    y = exp.data.train.y[:examples]
    checks = [check_network_tensors(net, exp.loss, x, y, training=(mode == "training"), h=h, max_entries=entries,
                                    seed=seed) for mode in modes]
    return GradcheckReport(len(y), checks)
