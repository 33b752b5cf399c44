"""Committed results come from the committed configs: results/<config>.json records the hash
of the resolved config it ran, which must still be the hash of configs/<config>.yaml (a config
changed after its run must be run again). Earlier attempts live in results/attempts/.
Variants of a run are results/<config>.<variant>.json: ``seed<N>``, the committed config
run with ``--set seed=N`` (the README then shows each seed's accuracy and their mean), or
``ranks<N>``, the committed config run on N MPI ranks (summary.json records ``ranks``).
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


def _variant(path) -> tuple[str, str, int | None]:
    """(config, kind, N): ('cifar10_fast', 'seed', 1) for cifar10_fast.seed1.json,
    ('quickstart', 'ranks', 2) for quickstart.ranks2.json, (stem, '', None) otherwise."""
    name, _, variant = path.stem.partition(".")
    if not variant:
        return name, "", None
    kind = variant.rstrip("0123456789")
    assert kind in ("seed", "ranks") and variant[len(kind):].isdigit(), f"{path.name}: unknown variant {variant!r}"
    return name, kind, int(variant[len(kind):])


def _seed_accuracies(name: str) -> list[float]:
    """Test accuracies of every recorded seed of configs/<name>.yaml (one process each)."""
    return [json.loads(p.read_text())["test"]["accuracy"] for p in RESULTS
            if _variant(p)[0] == name and _variant(p)[1] in ("", "seed")]


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_result_matches_its_committed_config(path):
    summary = json.loads(path.read_text())
    name, kind, number = _variant(path)
    config = REPO / "configs" / f"{name}.yaml"
    assert config.exists(), f"{path.name} has no configs/{name}.yaml"
    overrides = [f"seed={number}"] if kind == "seed" else []
    assert summary["config_hash"] == config_hash(load_config(config, overrides)), \
        f"configs/{config.name} changed after the run recorded in {path.name}: run it again"
    assert summary.get("ranks", 1) == (number if kind == "ranks" else 1)
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
        name = _variant(path)[0]
        assert f"`{name}.yaml`" in readme
        assert f"{100 * summary['test']['accuracy']:.2f}%" in readme, f"README does not show {path.stem}'s accuracy"
        seeds = _seed_accuracies(name)
        if len(seeds) > 1:
            mean = f"mean {100 * sum(seeds) / len(seeds):.2f}%"
            assert mean in readme, f"README does not show the {mean} of {name}'s {len(seeds)} seeds"
