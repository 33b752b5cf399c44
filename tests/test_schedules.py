"""Learning-rate schedules: known values (epochs -> iterations), warm-up, plateau state."""

import math

import numpy as np
import pytest

from nntrain.errors import CheckpointError, ConfigError
from nntrain.registry import SCHEDULES
from nntrain.schedules import make_schedule
from nntrain.spec import option_names

IPE = 10  # iterations per epoch
LR = 0.1


def sched(spec, total_epochs=10):
    return make_schedule(spec, LR, IPE, total_epochs)


def lrs(s, iterations):
    return [s.lr(i) for i in iterations]


def test_constant_and_default():
    assert lrs(sched("constant"), [0, 7, 10_000]) == [LR] * 3
    assert sched(None).lr(3) == LR


def test_step_in_epochs():
    s = sched({"type": "step", "step_size": 2, "factor": 0.5})
    np.testing.assert_allclose(lrs(s, [0, 19, 20, 39, 40]), [0.1, 0.1, 0.05, 0.05, 0.025])
    half = sched({"type": "step", "step_size": 0.5})  # every 5 iterations
    np.testing.assert_allclose(lrs(half, [4, 5, 10]), [0.1, 0.01, 0.001])


def test_multistep_milestones_in_epochs():
    s = sched({"type": "multistep", "milestones": [2, 5]})
    np.testing.assert_allclose(lrs(s, [0, 19, 20, 49, 50, 500]), [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    frac = sched({"type": "multistep", "milestones": [0.5, 1.25], "factor": 0.5})  # iterations 5 and 12.5 -> 12
    np.testing.assert_allclose(lrs(frac, [4, 5, 11, 12]), [0.1, 0.05, 0.05, 0.025])


def test_exponential_gamma_per_epoch():
    s = sched({"type": "exponential", "gamma": 0.5})
    np.testing.assert_allclose(lrs(s, [0, 5, 10, 20]), [0.1, 0.1 * math.sqrt(0.5), 0.05, 0.025])


def test_inverse_counts_iterations_like_caffe():
    s = sched({"type": "inverse", "gamma": 0.01, "power": 1})
    np.testing.assert_allclose(lrs(s, [0, 100, 300]), [0.1, 0.05, 0.025])


def test_polynomial():
    s = sched({"type": "polynomial", "power": 2})  # T = 100
    np.testing.assert_allclose(lrs(s, [0, 50, 100, 200]), [0.1, 0.025, 0.0, 0.0], atol=1e-15)
    m = sched({"type": "polynomial", "power": 1, "min_lr": 0.01})
    np.testing.assert_allclose(lrs(m, [50, 100]), [0.055, 0.01])


def test_cosine():
    s = sched({"type": "cosine", "min_lr": 0.001})
    np.testing.assert_allclose(lrs(s, [0, 25, 50, 100, 150]),
                               [0.1, 0.001 + 0.099 * 0.5 * (1 + math.sqrt(0.5)), 0.0505, 0.001, 0.001])


def test_onecycle_like_pytorch():
    # T = 100, pct_start 0.3: up from 0.1/25 to 0.1 over steps 0..29, down to 0.004/1e4 over 29..99
    s = sched({"type": "onecycle"})
    np.testing.assert_allclose(lrs(s, [0, 29, 64, 99, 500]), [0.004, 0.1, (0.1 + 4e-7) / 2, 4e-7, 4e-7], rtol=1e-9)
    up = s.lr(14)
    assert up == pytest.approx(0.1 + (0.004 - 0.1) / 2 * (math.cos(math.pi * 14 / 29) + 1))
    peak = sched({"type": "onecycle", "max_lr": 1.0, "div_factor": 10, "final_div_factor": 100})
    np.testing.assert_allclose(lrs(peak, [0, 29, 99]), [0.1, 1.0, 0.001], rtol=1e-9)


def test_warmup_ramps_linearly_in_front_of_the_schedule():
    s = sched({"type": "constant", "warmup": {"epochs": 1, "start_factor": 0.1}})
    np.testing.assert_allclose(lrs(s, [0, 5, 9, 10, 50]), [0.01, 0.055, 0.1 * (0.1 + 0.9 * 0.9), 0.1, 0.1])
    # the schedule's own clock is not shifted: the milestone at 0.5 epochs falls inside the ramp
    m = sched({"type": "multistep", "milestones": [0.5], "warmup": {"epochs": 1}})
    np.testing.assert_allclose(lrs(m, [0, 5, 10]), [0.01, 0.01 * 0.55, 0.01])
    c = sched({"type": "cosine", "warmup": {"epochs": 2, "start_factor": 0.0}})
    assert c.lr(0) == 0.0 and c.lr(10) == pytest.approx(0.5 * c._lr(10))


# ----- plateau ---------------------------------------------------------------------------------
def test_plateau_reduces_after_patience():
    s = sched({"type": "plateau", "factor": 0.5, "patience": 2})
    for metric, expected in [(1.0, 0.1), (1.0, 0.1), (0.99995, 0.1), (1.0, 0.05), (0.5, 0.05)]:
        s.observe(metric)  # 0.99995 is within the relative threshold 1e-4: not an improvement
        assert s.lr(123) == pytest.approx(expected)
    assert s.best == 0.5 and s.num_bad == 0


def test_plateau_cooldown_min_lr_and_max_mode():
    s = sched({"type": "plateau", "mode": "max", "factor": 0.1, "patience": 0, "cooldown": 2, "min_lr": 0.005})
    rates = []
    for metric in [0.5, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]:
        s.observe(metric)
        rates.append(s.lr(0))
    # bad at #2 -> 0.01; two cooldown evaluations; bad at #5 -> max(0.001, 0.005); cooldown; then eps stops changes
    np.testing.assert_allclose(rates, [0.1, 0.01, 0.01, 0.01, 0.005, 0.005, 0.005, 0.005])
    a = sched({"type": "plateau", "patience": 0, "threshold_mode": "abs", "threshold": 0.1})
    a.observe(1.0)
    a.observe(0.95)  # not better by more than 0.1
    assert a.lr(0) == pytest.approx(0.01)


def test_plateau_state_restores_exactly():
    metrics = [1.0, 0.9, 0.91, 0.92, 0.93, 0.8, 0.85, 0.86, 0.87, 0.88, 0.89]
    spec = {"type": "plateau", "factor": 0.5, "patience": 1, "cooldown": 1}
    straight = sched(spec)
    for m in metrics:
        straight.observe(m)
    first = sched(spec)
    for m in metrics[:4]:
        first.observe(m)
    state = first.state_dict()
    second = sched(spec)
    second.load_state_dict(state)
    for m in metrics[4:]:
        second.observe(m)
    for attr in ("best", "num_bad", "cooldown_left", "current_lr"):
        assert getattr(second, attr) == getattr(straight, attr), attr
    assert second.lr(0) < LR
    with pytest.raises(CheckpointError, match="plateau"):
        sched(spec).load_state_dict({})


# ----- registry-wide ------------------------------------------------------------------------
def _cases():
    for name, cls in SCHEDULES.items():
        for i, options in enumerate(cls.examples):
            yield pytest.param(name, options, id=f"{name}-{i}")


CASES = list(_cases())


def test_every_schedule_declares_examples():
    missing = [name for name, cls in SCHEDULES.items() if not cls.examples]
    assert not missing, f"schedules without examples: {missing}"


@pytest.mark.parametrize("name,options", CASES)
def test_rates_are_finite_and_bounded(name, options):
    s = sched({"type": name, **options})
    for m in (1.0, 2.0, 3.0):
        s.observe(m)
    rates = np.array(lrs(s, range(0, 150)))
    peak = max(LR, options.get("max_lr", LR))
    assert np.all(np.isfinite(rates)) and np.all(rates >= 0) and np.all(rates <= peak * (1 + 1e-12))


@pytest.mark.parametrize("name,options", CASES)
def test_warmup_applies_to_every_schedule(name, options):
    s = sched({"type": name, **options, "warmup": {"epochs": 2, "start_factor": 0.25}})
    assert s.lr(0) == pytest.approx(0.25 * s._lr(0))
    assert s.lr(10) == pytest.approx((0.25 + 0.75 * 0.5) * s._lr(10))
    assert s.lr(20) == pytest.approx(s._lr(20))


@pytest.mark.parametrize("name,options", CASES)
def test_config_round_trip(name, options):
    config = sched({"type": name, **options}).get_config()
    assert config["type"] == name
    assert not {"base_lr", "iterations_per_epoch", "total_epochs"} & set(config)
    again = sched(config)
    assert again.get_config() == config
    assert lrs(again, range(0, 120, 7)) == lrs(sched({"type": name, **options}), range(0, 120, 7))


@pytest.mark.parametrize("name", SCHEDULES.names())
def test_unknown_option_suggests_closest(name):
    first = option_names(SCHEDULES.get(name))[0]
    with pytest.raises(ConfigError, match=f"schedule \\({name}\\): unknown option '{first}s'; did you mean '{first}'"):
        sched({"type": name, first + "s": 1})


@pytest.mark.parametrize("name", ["cosine", "polynomial", "onecycle"])
def test_run_length_is_required(name):
    with pytest.raises(ConfigError, match="needs the length of the run"):
        make_schedule(name, LR, IPE)


def test_bad_values_are_named():
    with pytest.raises(ConfigError, match="increasing"):
        sched({"type": "multistep", "milestones": [5, 2]})
    with pytest.raises(ConfigError, match="received factor=0"):
        sched({"type": "step", "step_size": 1, "factor": 0})
    with pytest.raises(ConfigError, match="received factor=1"):
        sched({"type": "plateau", "factor": 1})
    with pytest.raises(ConfigError, match="missing required option 'step_size'"):
        sched("step")
    with pytest.raises(ConfigError, match="did you mean 'start_factor'"):
        sched({"type": "constant", "warmup": {"epochs": 1, "start_facter": 0.1}})
    with pytest.raises(ConfigError, match="did you mean 'max'"):
        sched({"type": "plateau", "mode": "maxx"})
    with pytest.raises(ConfigError, match="did you mean 'cosine'"):
        sched("cosin")
    with pytest.raises(ConfigError, match="iteration=-1"):
        sched("constant").lr(-1)


def test_onecycle_linear_is_a_triangle():
    from nntrain.schedules import make_schedule
    sched = make_schedule({"type": "onecycle", "pct_start": 0.25, "div_factor": 5, "final_div_factor": 2,
                           "anneal_strategy": "linear"}, 1.0, iterations_per_epoch=9, total_epochs=1)
    # e = 0.25 * 9 - 1 = 1.25; up from 0.2 to 1 over [0, 1.25], down to 0.1 over [1.25, 8]
    assert [sched.lr(i) for i in (0, 8)] == pytest.approx([0.2, 0.1])
    assert sched.lr(1) == pytest.approx(0.2 + 0.8 / 1.25)
    assert sched.lr(4) == pytest.approx(1 + (0.1 - 1) * (4 - 1.25) / 6.75)
