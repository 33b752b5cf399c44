"""Checkpoints mutated at random (hypothesis): a resume or an eval either works or is one
clear error (exit 2) — never a traceback, never code execution (npz without pickle)."""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nntrain.cli import main
from nntrain.config import load_config
from nntrain.experiment import build_experiment
from nntrain.train import Trainer

from .conftest import TINY, write_yaml

JSON = st.recursive(st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
                    | st.text(max_size=8), lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    config = write_yaml(tmp / "c.yaml", {**TINY, "train": {**TINY["train"], "ema": {"decay": 0.9}}})
    Trainer(build_experiment(load_config(config)), tmp / "run", quiet=True, stop_at_iteration=4).run()
    data = dict(np.load(tmp / "run" / "checkpoints" / "last.npz"))
    return tmp / "run", data


def _paths(obj, prefix=()):
    """Every key path of a JSON object (lists by index)."""
    items = obj.items() if isinstance(obj, dict) else enumerate(obj) if isinstance(obj, list) else ()
    for key, value in items:
        yield (*prefix, key)
        yield from _paths(value, (*prefix, key))


def _set(obj, path, value):
    for key in path[:-1]:
        obj = obj[key]
    obj[path[-1]] = value


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_checkpoint_metadata_resumes_or_is_one_clear_error(interrupted, tmp_path_factory, data):
    run, arrays = interrupted
    meta = json.loads(str(arrays["meta"]))
    paths = sorted(_paths(meta), key=str)
    path = data.draw(st.sampled_from(paths))
    _set(meta, path, data.draw(JSON))
    target = tmp_path_factory.mktemp("m") / "run"
    (target / "checkpoints").mkdir(parents=True)
    np.savez(target / "checkpoints" / "last.npz", **{**arrays, "meta": np.array(json.dumps(meta))})
    for command in (["eval", str(target / "checkpoints" / "last.npz")], ["fit", "--resume", str(target), "-q"]):
        result = CliRunner().invoke(main, command)
        assert result.exit_code in (0, 2), (path, result.output, result.exception)
        if result.exit_code == 2:
            errors = [line for line in result.output.splitlines() if line.startswith("error:")]
            assert len(errors) == 1, result.output


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_checkpoint_arrays_resume_or_are_one_clear_error(interrupted, tmp_path_factory, data):
    run, arrays = interrupted
    key = data.draw(st.sampled_from(sorted(k for k in arrays if k != "meta")))
    mutated = dict(arrays)
    choice = data.draw(st.sampled_from(["shape", "dtype", "drop", "text"]))
    if choice == "shape":
        mutated[key] = np.zeros(data.draw(st.lists(st.integers(0, 4), max_size=3)), np.float32)
    elif choice == "dtype":
        dtype = data.draw(st.sampled_from(["int8", "float64", "bool", "complex64"]))
        source = arrays[key]
        mutated[key] = source.astype(dtype) if source.dtype.kind in "biuf" else np.zeros(source.shape, dtype)
    elif choice == "drop":
        del mutated[key]
    else:
        mutated[key] = np.array(["x"] * max(1, arrays[key].size))
    target = tmp_path_factory.mktemp("a") / "run"
    (target / "checkpoints").mkdir(parents=True)
    np.savez(target / "checkpoints" / "last.npz", **mutated)
    result = CliRunner().invoke(main, ["fit", "--resume", str(target), "-q"])
    assert result.exit_code in (0, 2), (key, choice, result.output, result.exception)
