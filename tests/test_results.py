"""Committed results come from the committed configs: results/<config>.json records the hash
of the resolved config it ran, which must still be the hash of configs/<config>.yaml (a config
changed after its run must be run again). Earlier attempts live in results/attempts/.
A result of another framework (``"framework": "pytorch"``: bench/torch_airbench.py) is a
reference run beside an nntrain config: it has no config of its own, but must say how it was
made, and the README must show it."""

import json

import pytest

from nntrain.config import config_hash, load_config

from .conftest import REPO

ALL_RESULTS = sorted((REPO / "results").glob("*.json"))


def _framework(path) -> str:
    return json.loads(path.read_text()).get("framework", "nntrain")


RESULTS = [p for p in ALL_RESULTS if _framework(p) == "nntrain"]
REFERENCES = [p for p in ALL_RESULTS if _framework(p) != "nntrain"]


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_result_matches_its_committed_config(path):
    summary = json.loads(path.read_text())
    config = REPO / "configs" / f"{path.stem}.yaml"
    assert config.exists(), f"{path.name} has no configs/{path.stem}.yaml"
    assert summary["config_hash"] == config_hash(load_config(config)), \
        f"configs/{config.name} changed after the run recorded in {path.name}: run it again"
    assert summary["stop_reason"] in ("finished", "early_stopping")
    assert summary["test"] is not None and 0.0 <= summary["test"]["accuracy"] <= 1.0


@pytest.mark.parametrize("path", REFERENCES, ids=[p.stem for p in REFERENCES])
def test_reference_result_says_how_it_was_made(path):
    summary = json.loads(path.read_text())
    assert 0.0 <= summary["accuracy"] <= 1.0
    assert summary["epochs"] > 0 and isinstance(summary["seed"], int)
    assert summary["command"] and summary["machine"]
    assert f"{100 * summary['accuracy']:.2f}%" in (REPO / "README.md").read_text(), \
        f"README does not show {path.stem}'s accuracy"


def test_readme_lists_every_result():
    readme = (REPO / "README.md").read_text()
    for path in RESULTS:
        summary = json.loads(path.read_text())
        assert f"`{path.stem}.yaml`" in readme
        assert f"{100 * summary['test']['accuracy']:.2f}%" in readme, f"README does not show {path.stem}'s accuracy"
