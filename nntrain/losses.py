"""Losses on a batch of logits, and the error rate.

Interface: ``value = loss.forward(logits, targets)`` returns the mean loss over the
batch as a Python float and keeps what ``backward`` needs; ``dlogits = loss.backward()``
returns d(mean loss)/d(logits), same shape and dtype as the logits. ``logits`` is
(N, K). The per-element work stays in the logits' dtype (float32 in training); only
the final scalar is accumulated in float64.

``backward`` turns the array kept by ``forward`` into the gradient in place (no
extra (N, K) buffer) and drops it: call ``forward`` again before the next ``backward``.

Targets are class indices, an integer array (N,) with values in [0, K); ``mse`` and
``bce_with_logits`` also take an (N, K) float array (regression values, or per-class
probabilities), and read class indices as one-hot rows.
"""

from __future__ import annotations

import numpy as np

from . import validate as v
from .errors import ConfigError, DataError
from .registry import LOSSES
from .spec import Configurable, build_from_spec


class Loss(Configurable):
    """Base class. Subclasses list ``examples``: ``(options, K)`` pairs that the
    registry-wide tests build and gradient-check for every kind in ``target_kinds``
    (``"classes"``: int indices; ``"values"``: any floats; ``"probabilities"``: in [0, 1]).
    """

    examples: list = []
    target_kinds: tuple = ("classes",)

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        raise NotImplementedError

    def backward(self) -> np.ndarray:
        raise NotImplementedError

    def branch_signature(self) -> np.ndarray | None:
        """Which branch a piecewise loss took in the last ``forward`` (None: smooth); see
        ``Layer.branch_signature``."""
        return None

    def _take(self, name: str = "_cache"):
        """The array forward kept, which backward may overwrite; then forget it."""
        kept = self.__dict__.get(name)
        if kept is None:
            raise RuntimeError(f"{self.type_name}: backward() needs a forward() first (one backward per forward)")
        self.__dict__[name] = None
        return kept


# ----- helpers -----------------------------------------------------------------------
def _check_logits(logits, where: str) -> np.ndarray:
    if not isinstance(logits, np.ndarray) or logits.dtype.kind != "f" or logits.ndim != 2 or logits.shape[0] < 1:
        shape = getattr(logits, "shape", None)
        dtype = getattr(logits, "dtype", type(logits).__name__)
        raise ConfigError(f"{where}: expected logits as a float array (N, K) with N >= 1, "
                          f"received shape {shape} dtype {dtype} (the network output must be flat: add a flatten "
                          f"or global pooling layer before the last linear layer)")
    return logits


def _class_targets(targets, n: int, k: int, where: str) -> np.ndarray:
    """Integer class indices (N,) in [0, K), checked."""
    t = np.asarray(targets)
    if t.ndim != 1 or t.shape[0] != n:
        raise DataError(f"{where}: expected {n} class indices (shape ({n},)), received targets of shape {t.shape}")
    if t.dtype.kind not in "iu":
        raise DataError(f"{where}: expected integer class indices, received targets of dtype {t.dtype}")
    lo, hi = int(t.min()), int(t.max())
    if lo < 0 or hi >= k:
        bad = lo if lo < 0 else hi
        raise DataError(f"{where}: target class {bad} is out of range for {k} logits "
                        f"(the last layer must have one output per class)")
    return t


def _value_targets(targets, logits: np.ndarray, where: str, *, unit: bool) -> np.ndarray:
    """(N, K) float targets in the logits' dtype (a copy only if the dtype differs)."""
    t = np.asarray(targets, dtype=logits.dtype)
    if t.shape != logits.shape:
        raise DataError(f"{where}: expected targets of shape {logits.shape} (or ({logits.shape[0]},) class "
                        f"indices), received {t.shape}")
    if unit and (t.min() < 0 or t.max() > 1):
        raise DataError(f"{where}: expected target probabilities in [0, 1], received values in "
                        f"[{float(t.min())}, {float(t.max())}]")
    return t


def _is_classes(targets) -> bool:
    return np.ndim(targets) == 1


def _sum64(a: np.ndarray) -> float:
    """Sum accumulated in float64 (the array itself stays in its dtype)."""
    return float(a.sum(dtype=np.float64))


def softmax(logits: np.ndarray) -> np.ndarray:
    """p_ik = exp(x_ik - m_i) / sum_j exp(x_ij - m_i), m_i = max_j x_ij (stable); a new array."""
    p = logits - logits.max(axis=-1, keepdims=True)
    np.exp(p, out=p)
    p /= p.sum(axis=-1, keepdims=True)
    return p


def error_rate(logits: np.ndarray, targets: np.ndarray) -> float:
    """Fraction of rows whose argmax differs from the target class.

    ``targets``: class indices (N,), or (N, K) one-hot / probabilities (argmax taken).
    """
    t = np.asarray(targets)
    if t.ndim == 2:
        t = t.argmax(axis=1)
    pred = np.asarray(logits).argmax(axis=1)
    if t.shape != pred.shape:
        raise DataError(f"error_rate: {pred.shape[0]} predictions but targets of shape {np.shape(targets)}")
    return float(np.count_nonzero(pred != t)) / pred.shape[0]


# ----- losses --------------------------------------------------------------------------
@LOSSES.register("softmax_cross_entropy")
class SoftmaxCrossEntropy(Loss):
    """Softmax followed by cross-entropy with the class targets (PyTorch conventions).

    With log p_ik = x_ik - log sum_j exp(x_ij) (computed stably), smoothing eps and
    class weights w (all 1 by default)::

        l_i = (1 - eps) w_{y_i} (-log p_{i,y_i}) + (eps/K) sum_k w_k (-log p_ik)
        L   = sum_i l_i / sum_i w_{y_i}

    i.e. the target distribution is (1 - eps) onehot(y) + eps/K (``label_smoothing``),
    and the weighted mean divides by the summed weights of the targets (as
    ``torch.nn.functional.cross_entropy``). The gradient, with W = sum_k w_k::

        dL/dx_i = [(1 - eps) w_{y_i} (p_i - onehot(y_i)) + (eps/K) (W p_i - w)] / sum_i w_{y_i}

    which is (p_i - q_i) / N without weights. Known value: logits [1, 2, 3], target 2 -> 0.40760596.
    """

    examples = [
        ({}, 5),
        ({"label_smoothing": 0.2}, 4),
        ({"class_weights": [1.0, 2.0, 0.5]}, 3),
        ({"label_smoothing": 0.1, "class_weights": [0.5, 1.5, 1.0, 3.0]}, 4),
    ]

    def __init__(self, label_smoothing: float = 0.0, class_weights: list | None = None):
        self.label_smoothing = v.probability(label_smoothing, "label_smoothing")
        self.class_weights = None
        if class_weights is not None:
            weights = v.real_list(class_weights, "class_weights")
            if not weights or min(weights) <= 0:
                raise ConfigError(f"expected a non-empty list of positive numbers (one per class), "
                                  f"received class_weights={class_weights!r}")
            self.class_weights = np.array(weights)
        self._cache = None

    def forward(self, logits, targets):
        where = self.type_name
        x = _check_logits(logits, where)
        n, k = x.shape
        t = _class_targets(targets, n, k, where)
        eps = self.label_smoothing
        rows = np.arange(n)
        z = x - x.max(axis=1, keepdims=True)
        p = np.exp(z)
        s = p.sum(axis=1)
        p /= s[:, None]
        log_s = np.log(s)
        nll = log_s - z[rows, t]  # -log p_{i, y_i}
        if self.class_weights is None:
            per = nll
            if eps:
                per = (1 - eps) * nll + (eps / k) * (k * log_s - z.sum(axis=1))
            self._cache = (p, t, None, None, float(n))
            return _sum64(per) / n
        if self.class_weights.shape[0] != k:
            raise ConfigError(f"{where}: class_weights has {self.class_weights.shape[0]} entries "
                              f"but the network gives {k} logits per sample")
        w = self.class_weights.astype(x.dtype)
        wy = w[t]
        per = (1 - eps) * wy * nll
        if eps:  # sum_k w_k (-log p_ik) = W log s_i - sum_k w_k z_ik
            per += (eps / k) * (w.sum() * log_s - z @ w)
        denom = _sum64(wy)
        self._cache = (p, t, w, wy, denom)
        return _sum64(per) / denom

    def backward(self):
        p, t, w, wy, denom = self._take()
        n, k = p.shape
        eps = self.label_smoothing
        rows = np.arange(n)
        g = p  # overwritten in place
        c = 1.0 / denom
        if w is None:
            g *= c
            g[rows, t] -= (1 - eps) * c
            if eps:
                g -= eps / k * c
            return g
        g *= (wy * ((1 - eps) * c) + (eps / k * c) * w.sum())[:, None]
        g[rows, t] -= wy * ((1 - eps) * c)
        if eps:
            g -= (eps / k * c) * w
        return g


@LOSSES.register("hinge")
class Hinge(Loss):
    """Multiclass SVM loss (Weston-Watkins; CS231n), mean over the batch.

        l_i = sum_{j != y_i} max(0, x_ij - x_{i,y_i} + margin)
        dL/dx_ij = [x_ij - x_iy + margin > 0] / N  (j != y_i),  dL/dx_{i,y_i} = -(number of such j) / N
    """

    examples = [({}, 5), ({"margin": 0.5}, 3)]

    def __init__(self, margin: float = 1.0):
        self.margin = v.positive(margin, "margin")
        self._cache = None

    def forward(self, logits, targets):
        x = _check_logits(logits, self.type_name)
        n, k = x.shape
        t = _class_targets(targets, n, k, self.type_name)
        rows = np.arange(n)
        m = x - x[rows, t][:, None]
        m += self.margin
        m[rows, t] = 0
        np.maximum(m, 0, out=m)
        self._cache = (m, t)
        return _sum64(m) / n

    def branch_signature(self):
        return None if self._cache is None else self._cache[0] > 0  # the active margins

    def backward(self):
        m, t = self._take()
        n = m.shape[0]
        np.sign(m, out=m)  # margins are >= 0: 1 where active, 0 elsewhere (and at y_i)
        m[np.arange(n), t] = -m.sum(axis=1)
        m *= 1.0 / n
        return m


@LOSSES.register("mse")
class MeanSquaredError(Loss):
    """Squared error summed over the K outputs, mean over the batch (no 1/2, no 1/K).

        L = (1/N) sum_i sum_k (x_ik - t_ik)^2,   dL/dx = 2 (x - t) / N

    Targets: (N, K) values, or class indices read as one-hot rows. (Caffe's
    EuclideanLoss is half of this; PyTorch's MSELoss(reduction='mean') is this / K.)
    """

    examples = [({}, 4)]
    target_kinds = ("classes", "values")

    def __init__(self):
        self._cache = None

    def forward(self, logits, targets):
        x = _check_logits(logits, self.type_name)
        n, k = x.shape
        if _is_classes(targets):
            t = _class_targets(targets, n, k, self.type_name)
            d = x.copy()
            d[np.arange(n), t] -= 1
        else:
            d = x - _value_targets(targets, x, self.type_name, unit=False)
        self._cache = d
        return _sum64(np.square(d)) / n

    def backward(self):
        d = self._take()
        d *= 2.0 / d.shape[0]
        return d


@LOSSES.register("bce_with_logits")
class BCEWithLogits(Loss):
    """Binary cross-entropy of sigmoid(x) per output: summed over the K outputs, mean over the batch.

        l_ik = softplus(x_ik) - t_ik x_ik = max(x, 0) - t x + log(1 + exp(-|x|))   (stable)
        L = (1/N) sum_i sum_k l_ik,   dL/dx = (sigmoid(x) - t) / N

    Targets: (N, K) probabilities in [0, 1], or class indices read as one-hot rows.
    (PyTorch's BCEWithLogitsLoss(reduction='mean') is this / K.)
    """

    examples = [({}, 4)]
    target_kinds = ("classes", "probabilities")

    def __init__(self):
        self._cache = None

    def forward(self, logits, targets):
        x = _check_logits(logits, self.type_name)
        n, k = x.shape
        e = np.abs(x)
        np.negative(e, out=e)
        np.exp(e, out=e)  # exp(-|x|) in (0, 1]: never overflows
        loss = np.log1p(e)
        loss += np.maximum(x, 0)
        r = 1 + e
        np.reciprocal(r, out=r)  # 1 / (1 + exp(-|x|))
        e *= r  # exp(-|x|) / (1 + exp(-|x|))
        sig = np.where(x >= 0, r, e)  # sigmoid(x) without overflow for either sign
        if _is_classes(targets):
            t = _class_targets(targets, n, k, self.type_name)
            rows = np.arange(n)
            loss[rows, t] -= x[rows, t]
            self._cache = (sig, t, None)
        else:
            tv = _value_targets(targets, x, self.type_name, unit=True)
            loss -= x * tv
            self._cache = (sig, None, tv)
        return _sum64(loss) / n

    def backward(self):
        sig, t, tv = self._take()
        n = sig.shape[0]
        if tv is None:
            sig[np.arange(n), t] -= 1
        else:
            sig -= tv
        sig *= 1.0 / n
        return sig


def make_loss(spec) -> Loss:
    """A Loss from ``'softmax_cross_entropy'`` or ``{type: ..., **options}``."""
    return build_from_spec(LOSSES, spec, "loss")
