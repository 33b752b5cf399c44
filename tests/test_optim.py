"""Optimizers and weight averaging: hand-computed steps, conventions, options, exact resume."""

import numpy as np
import pytest

from nntrain.errors import CheckpointError, ConfigError
from nntrain.fileio import load_npz, save_npz
from nntrain.layers.base import Parameter
from nntrain.averaging import Lookahead, WeightAverage, make_lookahead, make_weight_average
from nntrain.optim import make_optimizer
from nntrain.registry import OPTIMIZERS
from nntrain.spec import option_names


def param(values, grad=None, *, dtype=np.float64, name="", decay=True):
    p = Parameter(np.array(values, dtype=dtype), decay=decay, name=name)
    if grad is not None:
        p.grad[...] = grad
    return p


def step(opt, grads, lr=None):
    for p, g in zip([p for _, p in opt.params], grads):
        p.grad[...] = g
    if lr is not None:
        opt.lr = lr
    opt.step()


# ----- SGD -------------------------------------------------------------------------------
@pytest.mark.parametrize("convention", ["course", "pytorch"])
def test_sgd_momentum_two_steps_known_values(convention):
    # v1 = -0.1*[0.5, 1] -> w1 = [0.95, -2.1]; v2 = 0.9 v1 - 0.1 g -> w2 = [0.855, -2.29] (pytorch: same weights)
    p = param([1.0, -2.0])
    opt = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9, "convention": convention}, [p])
    step(opt, [[0.5, 1.0]])
    np.testing.assert_allclose(p.value, [0.95, -2.1], rtol=1e-12)
    step(opt, [[0.5, 1.0]])
    np.testing.assert_allclose(p.value, [0.855, -2.29], rtol=1e-12)
    velocity = opt.state[0]["velocity"]
    np.testing.assert_allclose(velocity, [-0.095, -0.19] if convention == "course" else [0.95, 1.9], rtol=1e-12)


@pytest.mark.parametrize("convention", ["course", "pytorch"])
def test_sgd_nesterov_one_step_known_value(convention):
    # w - 0.9*0.1 g - 0.1 g = 1 - 0.19 * g
    p = param([1.0, -2.0])
    opt = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9, "nesterov": True, "convention": convention}, [p])
    step(opt, [[0.5, 1.0]])
    np.testing.assert_allclose(p.value, [0.905, -2.19], rtol=1e-12)
    # second step, same gradient: v2 = 0.9 v1 - 0.1 g = -0.19 g; w2 = w1 + 0.9 v2 - 0.1 g = w1 - 0.271 g
    step(opt, [[0.5, 1.0]])
    np.testing.assert_allclose(p.value, [0.905 - 0.1355, -2.19 - 0.271], rtol=1e-12)


def test_sgd_conventions_agree_at_constant_lr():
    rng = np.random.default_rng(0)
    grads = rng.standard_normal((20, 7))
    for nesterov in (False, True):
        ws = []
        for convention in ("course", "pytorch"):
            p = param(np.ones(7))
            opt = make_optimizer({"type": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": nesterov,
                                  "convention": convention, "weight_decay": 0.01}, [p])
            for g in grads:
                step(opt, [g])
            ws.append(p.value)
        np.testing.assert_allclose(ws[0], ws[1], rtol=1e-12)


def test_sgd_conventions_differ_after_an_lr_change():
    # g = 1 twice, lr 0.1 then 0.01, mu 0.9.
    # course:  v1 = -0.1, w1 = 0.9;  v2 = -0.09 - 0.01 = -0.1,  w2 = 0.8
    # pytorch: v1 = 1,    w1 = 0.9;  v2 = 0.9 + 1 = 1.9,       w2 = 0.9 - 0.019 = 0.881
    result = {}
    for convention in ("course", "pytorch"):
        p = param([1.0])
        opt = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9, "convention": convention}, [p])
        step(opt, [[1.0]])
        step(opt, [[1.0]], lr=0.01)
        result[convention] = p.value[0]
    assert result["course"] == pytest.approx(0.8, abs=1e-12)
    assert result["pytorch"] == pytest.approx(0.881, abs=1e-12)


def test_plain_sgd_weight_decay_and_multipliers():
    # g = grad + 0.1 * decay_mult * w; eta = 0.5 * lr_mult
    w = param([1.0], [0.0])
    b = param([1.0], [0.2], decay=False)  # decay_mult 0
    fast = param([1.0], [0.0])
    fast.lr_mult = 2.0
    frozen = param([1.0], [5.0])
    frozen.trainable = False
    opt = make_optimizer({"type": "sgd", "lr": 0.5, "weight_decay": 0.1}, [w, b, fast, frozen])
    opt.step()
    assert w.value[0] == pytest.approx(1 - 0.5 * 0.1)
    assert b.value[0] == pytest.approx(1 - 0.5 * 0.2)
    assert fast.value[0] == pytest.approx(1 - 1.0 * 0.1)
    assert frozen.value[0] == 1.0
    assert opt.state[3] == {}


def test_weight_decay_energy():
    a = param([1.0, 2.0])
    b = param([3.0], decay=False)
    c = param([2.0])
    c.decay_mult = 2.0
    frozen = param([10.0])
    frozen.trainable = False
    opt = make_optimizer({"type": "sgd", "lr": 0.1, "weight_decay": 0.1}, [a, b, c, frozen])
    # 0.5 * 0.1 * (1 * (1 + 4) + 0 * 9 + 2 * 4)
    assert opt.weight_decay_energy() == pytest.approx(0.65)
    assert make_optimizer({"type": "adamw", "weight_decay": 0.1}, [a]).weight_decay_energy() == 0.0


def test_clip_grad_norm_includes_decay_term():
    a, b = param([0.0], [3.0]), param([0.0], [4.0])
    opt = make_optimizer({"type": "sgd", "lr": 1.0, "clip_grad_norm": 1.0}, [a, b])
    opt.step()
    assert opt.last_grad_norm == pytest.approx(5.0)
    np.testing.assert_allclose([a.value[0], b.value[0]], [-0.6, -0.8])
    # decay counts: g = 0 + 1.0 * w = [3, 4] -> norm 5 -> clipped to 2
    a, b = param([3.0], [0.0]), param([4.0], [0.0])
    opt = make_optimizer({"type": "sgd", "lr": 1.0, "clip_grad_norm": 2.0, "weight_decay": 1.0}, [a, b])
    opt.step()
    assert opt.last_grad_norm == pytest.approx(5.0)
    np.testing.assert_allclose([a.value[0], b.value[0]], [3 - 1.2, 4 - 1.6])
    # under the limit: untouched
    a = param([0.0], [0.3])
    opt = make_optimizer({"type": "sgd", "lr": 1.0, "clip_grad_norm": 1.0}, [a])
    opt.step()
    assert a.value[0] == pytest.approx(-0.3)


# ----- Adam, AdamW, RMSprop ----------------------------------------------------------------
def test_adam_two_steps_known_values():
    p = param([1.0, -1.0])
    opt = make_optimizer({"type": "adam", "lr": 0.01}, [p])
    step(opt, [[0.1, -0.2]])
    # bias-corrected first step: lr * g / (|g| + eps)
    np.testing.assert_allclose(p.value, [1 - 0.01 * 0.1 / (0.1 + 1e-8), -1 + 0.01 * 0.2 / (0.2 + 1e-8)], rtol=1e-12)
    step(opt, [[0.3, 0.0]])
    # m = [0.039, -0.018], s = [9.999e-5, 3.996e-5]; w -= 0.01 * (m / 0.19) / (sqrt(s / 0.001999) + 1e-8)
    np.testing.assert_allclose(p.value, [0.98082219, -0.98329942], rtol=1e-8)


def test_adamw_decay_is_decoupled():
    # zero gradient: Adam's step is 0, so only the decay acts: w (1 - lr * lambda) = 2 * 0.99
    p = param([2.0], [0.0])
    make_optimizer({"type": "adamw", "lr": 0.1, "weight_decay": 0.1}, [p]).step()
    assert p.value[0] == pytest.approx(1.98, abs=1e-12)
    # Adam's L2 decay goes through the normalised step instead: g = 0.2 -> w - lr * sign(g)
    q = param([2.0], [0.0])
    make_optimizer({"type": "adam", "lr": 0.1, "weight_decay": 0.1}, [q]).step()
    assert q.value[0] == pytest.approx(1.9, abs=1e-6)
    # decay_mult 0 (biases): no decay
    b = param([2.0], [0.0], decay=False)
    make_optimizer({"type": "adamw", "lr": 0.1, "weight_decay": 0.1}, [b]).step()
    assert b.value[0] == 2.0


def test_rmsprop_one_step_known_value():
    # s = 0.01 * 0.25 = 0.0025 -> w = 1 - 0.01 * 0.5 / 0.05
    p = param([1.0], [0.5])
    make_optimizer({"type": "rmsprop", "lr": 0.01}, [p]).step()
    assert p.value[0] == pytest.approx(0.9, abs=1e-7)
    # with momentum, second step: s2 = 0.99 * 0.0025 + 0.0025; b2 = 0.9 * 10 + 0.5 / sqrt(s2)
    p = param([1.0], [0.5])
    opt = make_optimizer({"type": "rmsprop", "lr": 0.01, "momentum": 0.9}, [p])
    opt.step()
    opt.step()
    b2 = 0.9 * 10 + 0.5 / np.sqrt(0.99 * 0.0025 + 0.0025)
    assert p.value[0] == pytest.approx(1 - 0.1 - 0.01 * b2, abs=1e-7)


# ----- registry-wide ------------------------------------------------------------------------
def _cases():
    for name, cls in OPTIMIZERS.items():
        for i, options in enumerate(cls.examples):
            yield pytest.param(name, options, id=f"{name}-{i}")


CASES = list(_cases())


def _params(dtype=np.float32):
    rng = np.random.default_rng(0)
    w = param(rng.standard_normal((4, 3)), dtype=dtype, name="fc.weight")
    b = param(rng.standard_normal(4), dtype=dtype, name="fc.bias", decay=False)
    b.lr_mult = 2.0
    frozen = param(rng.standard_normal(2), dtype=dtype, name="frozen")
    frozen.trainable = False
    return [w, b, frozen]


def _run(opt, steps, start=0):
    for s in range(start, start + steps):
        rng = np.random.default_rng(100 + s)
        for _, p in opt.params:
            p.grad[...] = rng.standard_normal(p.shape)
        opt.lr = 0.05 / (1 + s)  # a changing rate, as a schedule would set
        opt.step()


def test_every_optimizer_declares_examples():
    missing = [name for name, cls in OPTIMIZERS.items() if not cls.examples]
    assert not missing, f"optimizers without examples: {missing}"


@pytest.mark.parametrize("name,options", CASES)
def test_resume_is_bit_exact(name, options, tmp_path):
    """N steps == k steps, save (npz, no pickle), load into a fresh optimizer, N - k steps."""
    straight = _params()
    opt = make_optimizer({"type": name, **options}, straight)
    _run(opt, 7)

    resumed = _params()
    first = make_optimizer({"type": name, **options}, resumed)
    _run(first, 3)
    save_npz(tmp_path / "opt.npz", first.state_dict())
    weights = [p.value.copy() for p in resumed]
    again = _params()
    for p, w in zip(again, weights):
        p.value[...] = w
    second = make_optimizer({"type": name, **options}, again)
    second.load_state_dict(load_npz(tmp_path / "opt.npz"))
    assert second.steps == 3
    _run(second, 4, start=3)
    for a, b in zip(straight, again):
        np.testing.assert_array_equal(a.value, b.value)


@pytest.mark.parametrize("name,options", CASES)
def test_chunked_threaded_update_is_bit_identical(name, options, monkeypatch):
    """Large parameters are updated chunk by chunk on several threads (optimizers written as
    ``_apply``): every element sees the same operations as in the one-call update."""
    from nntrain import optim
    from nntrain.ops import parallel

    one_call = _params()
    _run(make_optimizer({"type": name, **options}, one_call), 5)
    monkeypatch.setattr(optim, "CHUNKED_MIN", 1)
    monkeypatch.setattr(optim, "CHUNK", 3)  # ragged: parameter sizes are not multiples of it
    monkeypatch.setattr(parallel, "MIN_ELEMENTS", 0)
    monkeypatch.setitem(parallel._state, "threads", 3)
    monkeypatch.setitem(parallel._state, "pool", None)
    chunked = _params()
    opt = make_optimizer({"type": name, **options}, chunked)
    assert opt._chunked(chunked[0]) == (type(opt)._apply is not optim.Optimizer._apply)
    _run(opt, 5)
    for a, b in zip(one_call, chunked):
        np.testing.assert_array_equal(a.value, b.value)


@pytest.mark.parametrize("name,options", CASES)
def test_float32_in_place_and_grad_untouched(name, options):
    params = _params()
    values = [p.value for p in params]
    opt = make_optimizer({"type": name, **options}, params)
    _run(opt, 2)
    grads = [p.grad.copy() for p in params]
    opt.step()
    for p, val, g in zip(params, values, grads):
        assert p.value is val and p.value.dtype == np.float32
        np.testing.assert_array_equal(p.grad, g)
    for key, arr in opt.state_dict().items():
        assert arr.dtype in (np.float32, np.float64, np.int64), key
        if arr.ndim:
            assert arr.dtype == np.float32, key
    assert "frozen" not in " ".join(opt.state_dict())


@pytest.mark.parametrize("name,options", CASES)
def test_config_round_trip(name, options):
    config = make_optimizer({"type": name, **options}, _params()).get_config()
    assert config["type"] == name and "params" not in config
    assert make_optimizer(config, _params()).get_config() == config


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_unknown_option_suggests_closest(name):
    first = option_names(OPTIMIZERS.get(name))[0]
    with pytest.raises(ConfigError, match=f"optimizer \\({name}\\): unknown option '{first}s'; did you mean '{first}'"):
        make_optimizer({"type": name, "lr": 0.1, first + "s": 1}, _params())


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match=r"optimizer \(sgd\): missing required option 'lr'"):
        make_optimizer({"type": "sgd"}, _params())
    with pytest.raises(ConfigError, match=r"received lr=0"):
        make_optimizer({"type": "sgd", "lr": 0}, _params())
    with pytest.raises(ConfigError, match=r"received momentum=1"):
        make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 1}, _params())
    with pytest.raises(ConfigError, match="nesterov"):
        make_optimizer({"type": "sgd", "lr": 0.1, "nesterov": True}, _params())
    with pytest.raises(ConfigError, match="did you mean 'pytorch'"):
        make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9, "convention": "pytroch"}, _params())
    with pytest.raises(ConfigError, match="betas"):
        make_optimizer({"type": "adam", "betas": [0.9]}, _params())
    with pytest.raises(ConfigError, match="did you mean 'adam'"):
        make_optimizer({"type": "adma"}, _params())


def test_loading_foreign_or_mismatched_state_fails():
    adam = make_optimizer({"type": "adam"}, _params())
    _run(adam, 1)
    sgd = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9}, _params())
    with pytest.raises(CheckpointError, match="no saved state for optimizer 'sgd' \\(found: adam\\)"):
        sgd.load_state_dict(adam.state_dict())
    _run(sgd, 1)
    state = sgd.state_dict()
    state["sgd/velocity/fc.weight"] = np.zeros((3, 4), np.float32)
    with pytest.raises(CheckpointError, match="shape"):
        make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.9}, _params()).load_state_dict(state)


def test_named_pairs_key_the_state():
    params = [("conv.w", param([1.0])), ("conv.b", param([2.0]))]
    opt = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.5}, params)
    step(opt, [[1.0], [1.0]])
    assert set(opt.state_dict()) == {"sgd/step", "sgd/lr", "sgd/velocity/conv.w", "sgd/velocity/conv.b"}
    # unnamed (or clashing) names fall back to positions
    opt = make_optimizer({"type": "sgd", "lr": 0.1, "momentum": 0.5}, [param([1.0]), param([2.0])])
    step(opt, [[1.0], [1.0]])
    assert "sgd/velocity/1" in opt.state_dict()


# ----- weight averaging ----------------------------------------------------------------------
def test_weight_average_known_values_and_swap():
    p = param([0.0])
    frozen = param([7.0])
    frozen.trainable = False
    ema = WeightAverage([p, frozen], decay=0.5, warmup=False)
    p.value[...] = 1.0
    assert ema.update(1)
    assert ema.copies[0][0] == 0.5  # 0.5 * 0 + 0.5 * 1
    assert ema.update(2)
    assert ema.copies[0][0] == 0.75
    assert len(ema.copies) == 1  # frozen parameters are not averaged
    with ema.averaged():
        assert p.value[0] == 0.75
    assert p.value[0] == 1.0 and ema.copies[0][0] == 0.75


def test_weight_average_every_and_warmup():
    p = param([0.0])
    ema = make_weight_average({"decay": 0.999, "every": 2}, [p])
    p.value[...] = 1.0
    assert not ema.update(1)
    assert ema.update(2)
    assert ema.copies[0][0] == pytest.approx(0.9)  # d = min(0.999, 1/10)
    ema.update(4)
    assert ema.copies[0][0] == pytest.approx(0.9 + (1 - 2 / 11) * 0.1)  # d = 2/11


def test_weight_average_resume_exact():
    def run(ema, p, steps, start):
        for s in range(start, start + steps):
            p.value[...] = np.random.default_rng(s).standard_normal(3)
            ema.update(s + 1)

    p = param(np.zeros(3), dtype=np.float32)
    ema = WeightAverage([p], decay=0.9)
    run(ema, p, 6, 0)
    q = param(np.zeros(3), dtype=np.float32)
    first = WeightAverage([q], decay=0.9)
    run(first, q, 2, 0)
    second = WeightAverage([q], decay=0.9)
    second.load_state_dict(first.state_dict())
    run(second, q, 4, 2)
    np.testing.assert_array_equal(ema.copies[0], second.copies[0])
    assert second.count == 6
    with pytest.raises(CheckpointError, match="missing"):
        WeightAverage([param([1.0], name="other")]).load_state_dict(first.state_dict())


def test_lookahead_known_values_and_state():
    p = param([0.0])
    la = make_lookahead({"k": 2, "alpha": 0.5}, [p])
    p.value[...] = 1.0
    assert not la.update()
    p.value[...] = 2.0
    assert la.update()  # slow = 0 + 0.5 * (2 - 0) = 1, fast <- slow
    assert p.value[0] == 1.0 and la.copies[0][0] == 1.0
    other = Lookahead([param([5.0])], k=2)
    other.load_state_dict(la.state_dict())
    assert other.count == 2 and other.copies[0][0] == 1.0


def test_lookahead_decay_schedule_start_and_sync():
    p = param([0.0])
    la = make_lookahead({"k": 2, "decay": 0.5, "power": 1.0, "start_step": 2}, [p], total_steps=8)
    p.value[...] = 1.0
    assert not la.update(1) and not la.started  # before the start
    p.value[...] = 2.0
    assert not la.update(2) and la.started and la.copies[0][0] == 2.0  # slow weights begin at step 2
    p.value[...] = 3.0
    assert not la.update(3)
    p.value[...] = 4.0
    assert la.update(4)  # alpha = 1 - 0.5**2 * (4/8) = 0.875: slow = 2 + 0.875 * (4 - 2)
    assert la.copies[0][0] == p.value[0] == 3.75
    p.value[...] = 5.0
    la.sync()
    assert p.value[0] == 3.75
    other = make_lookahead({"k": 2}, [param([0.0])], total_steps=8)
    other.load_state_dict(la.state_dict())
    assert other.started and other.count == 2 and other.copies[0][0] == 3.75
    with pytest.raises(ConfigError, match="total_steps"):
        make_lookahead({"decay": 0.9}, [param([0.0])])


def test_averaging_options_are_checked():
    with pytest.raises(ConfigError, match="did you mean 'decay'"):
        make_weight_average({"decya": 0.9}, [param([1.0])])
    with pytest.raises(ConfigError, match="received decay=1"):
        make_weight_average({"decay": 1}, [param([1.0])])
    with pytest.raises(ConfigError, match="received k=0"):
        make_lookahead({"k": 0}, [param([1.0])])
    assert make_weight_average({}, [param([1.0])]).get_config() == {"decay": 0.999, "every": 1, "warmup": True}


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_bias_correction_counts_each_parameters_own_steps(kind):
    """A parameter unfrozen after 3 steps takes Adam's *first* step then: with bias
    correction by its own t = 1 the update is lr * g / (|g| + eps') = lr * sign(g); a
    global step count (t = 4) would give another size."""
    a = param([1.0, -2.0], [0.5, -0.25])
    b = param([3.0, 4.0], [2.0, -1.0])
    b.trainable = False
    opt = make_optimizer({"type": kind, "lr": 0.1, "weight_decay": 0.0}, [("a", a), ("b", b)])
    for _ in range(3):
        opt.step()
    np.testing.assert_array_equal(b.value, [3.0, 4.0])
    b.trainable = True
    opt.step()
    np.testing.assert_allclose(b.value, [3.0 - 0.1, 4.0 + 0.1], rtol=1e-6)


def test_lookahead_averages_the_float_buffers_with_buffers_true():
    """airbench's lookahead averages its whole state: batch-norm running statistics too."""
    p = param([0.0])
    stats = np.array([10.0, 20.0])
    counter = np.array([3], np.int64)  # not a float: left alone
    la = make_lookahead({"k": 1, "alpha": 0.5, "buffers": True}, [p], network_buffers=[("bn.mean", stats),
                                                                                        ("bn.count", counter)])
    p.value[...] = 2.0
    stats[...] = [20.0, 40.0]
    assert la.update(1)
    assert p.value[0] == 1.0 and list(stats) == [15.0, 30.0]
    restored = make_lookahead({"k": 1, "buffers": True}, [param([0.0])], network_buffers=[("bn.mean", np.zeros(2))])
    restored.load_state_dict(la.state_dict())
    np.testing.assert_array_equal(restored.copies[1], [15.0, 30.0])
    plain = make_lookahead({"k": 1, "alpha": 0.5}, [param([0.0])], network_buffers=[("bn.mean", stats)])
    assert len(plain.copies) == 1  # buffers: false (default) averages parameters only
