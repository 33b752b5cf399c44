"""Shared fixtures: tiny experiments on the embedded MNIST subset, and the shared data folder."""

from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

TINY = {
    "name": "tiny",
    "seed": 3,
    "data": {"dataset": "mnist_subset", "validation": 100, "normalize": "per_channel",
             "limit": {"train": 300, "test": 100},
             "augment": [{"type": "translate", "max_shift": 1}]},
    "model": [
        {"type": "conv2d", "out_channels": 4, "kernel": 3, "stride": 2},
        {"type": "relu"},
        {"type": "flatten"},
        {"type": "dropout", "rate": 0.2},
        {"type": "linear", "out_features": 10},
    ],
    "optimizer": {"type": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 0.001},
    "schedule": {"type": "multistep", "milestones": [2], "factor": 0.5},
    "train": {"epochs": 3, "batch_size": 32},
}


@pytest.fixture
def tiny_config(tmp_path):
    """Path of a YAML file with a tiny, fast experiment (a few seconds in all)."""
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(TINY, sort_keys=False))
    return path


def write_yaml(path: Path, data) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False) if not isinstance(data, str) else data)
    return path
