"""Every shipped config builds and trains a few iterations on a small slice of its real data,
so a config that no longer builds fails CI. The full runs are in results/ (see README)."""

import os
from pathlib import Path

import pytest

from nntrain.config import load_config
from nntrain.experiment import build_experiment
from nntrain.train import Trainer

from .conftest import REPO, SHARED_DATA

FASHION = Path("/usr/share/datasets/fashion-mnist")
CONFIGS = sorted(p for p in (REPO / "configs").glob("*.yaml") if not p.name.startswith("_"))


def _available(cfg) -> bool:
    dataset = cfg["data"]["dataset"]
    if dataset in ("cifar10",):
        return (SHARED_DATA / "cifar-10-python.tar.xz").exists()
    if dataset == "mnist":
        return (SHARED_DATA / "mnist").is_dir()
    if dataset == "fashion_mnist":
        return FASHION.is_dir()
    return True


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_config_trains_a_few_iterations(path, tmp_path, monkeypatch):
    monkeypatch.setenv("NNTRAIN_DATA", str(SHARED_DATA))
    cfg = load_config(path)
    if not _available(cfg):
        pytest.skip(f"data for {cfg['data']['dataset']} not available here")
    limit = "{train: 300, val: 100, test: 100}"
    val = cfg["data"]["validation"]
    overrides = [f"data.limit={limit}", "train.max_iterations=3", "eval.batch_size=100",
                 "train.batch_size=32"]
    if val:
        overrides.append("data.validation=100")
    cfg = load_config(path, overrides)
    summary = Trainer(build_experiment(cfg), tmp_path / "run", quiet=True).run()
    assert summary["iterations"] == 3
    assert summary["test"] is not None and 0.0 <= summary["test"]["error"] <= 1.0


def test_configs_exist():
    names = {p.stem for p in CONFIGS}
    assert {"quickstart", "mnist_mlp", "cifar10_quick"} <= names
