"""The data: section (validation, defaults), locating data sets, splits, limits, real data sets."""

import hashlib
import gzip
from pathlib import Path

import numpy as np
import pytest

from nntrain.data import load_data, validate_data_config
from nntrain.data.datasets import EMBEDDED
from nntrain.data.fetch import MNIST_IDX_SHA256
from nntrain.data.idx import read_idx, write_idx
from nntrain.data.make_embedded import first_per_class, make
from nntrain.data.splits import balanced_first, stratified_split
from nntrain.errors import ConfigError, DataError
from nntrain.registry import DATASETS

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
MNIST_DIR = SHARED / "mnist"
CIFAR_XZ = SHARED / "cifar-10-python.tar.xz"
needs_mnist = pytest.mark.skipif(not MNIST_DIR.is_dir(), reason="shared/data/mnist not present")


@pytest.fixture(autouse=True)
def _isolated(monkeypatch, tmp_path):
    """No real $NNTRAIN_DATA or ~/.cache is consulted unless a test sets them."""
    monkeypatch.delenv("NNTRAIN_DATA", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))


def write_mnist_like(folder: Path, n_train=60, n_test=20, classes=10, gz=True, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    ext = ".gz" if gz else ""
    arrays = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        y = (np.arange(n) % classes).astype(np.uint8)
        rng.shuffle(y)
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(folder / f"{prefix}-images-idx3-ubyte{ext}", x)
        write_idx(folder / f"{prefix}-labels-idx1-ubyte{ext}", y)
        arrays[prefix] = (x, y)
    return arrays


# ----- validate_data_config ------------------------------------------------------------

def test_defaults_and_idempotence():
    cfg = validate_data_config(None)
    assert cfg == {"dataset": "mnist_subset", "path": None, "validation": 0.1,
                   "normalize": {"type": "per_channel"}, "augment": [],
                   "limit": {"train": None, "val": None, "test": None}}
    full = validate_data_config({"dataset": "cifar100", "label_mode": "coarse", "validation": 5000,
                                 "normalize": {"type": "zca", "epsilon": 0.1}, "limit": {"train": 100},
                                 "augment": ["hflip", {"type": "random_crop", "size": 32, "padding": 4}]})
    assert full["label_mode"] == "coarse" and full["normalize"] == {"type": "zca", "epsilon": 0.1, "samples": 10000}
    assert full["augment"] == [{"type": "hflip", "p": 0.5},
                               {"type": "random_crop", "size": 32, "padding": 4, "pad_mode": "zeros"}]
    assert validate_data_config(full) == full


@pytest.mark.parametrize("cfg,message", [
    ({"normalise": "scale"}, r"data.normalise: unknown key; did you mean 'normalize'\?"),
    ({"dataset": "cifar10", "label_mode": "fine"}, r"data.label_mode: unknown key"),
    ({"dataset": "cifar1O"}, r"data.dataset: unknown dataset type 'cifar1O'; did you mean 'cifar10'"),
    ({"dataset": "cifar100", "label_mode": "medium"}, r"data \(cifar100\): expected one of fine, coarse"),
    ({"validation": -1}, r"data.validation: expected a count \(an integer >= 0\) or a fraction .* received -1"),
    ({"validation": 1.5}, r"data.validation: expected .*received 1.5"),
    ({"validation": True}, r"data.validation: expected"),
    ({"validation": "10%"}, r"data.validation: expected"),
    ({"normalize": "per_chanel"}, r"data.normalize: expected one of .*did you mean 'per_channel'"),
    ({"normalize": {"type": "zca", "epsilon": 0}}, r"expected a number > 0.0, received data.normalize.epsilon=0"),
    ({"normalize": {"type": "scale", "epsilon": 1}}, r"data.normalize.epsilon: unknown option for scale"),
    ({"augment": [{"type": "hflip"}, {"type": "random_crop", "sise": 3}]},
     r"data.augment\[1\] \(random_crop\): unknown option 'sise'; did you mean 'size'"),
    ({"augment": [{"type": "hflipp"}]},
     r"data.augment\[0\] \(hflipp\): unknown augmentation type 'hflipp'; did you mean 'hflip'"),
    ({"augment": {"type": "hflip"}}, r"data.augment: expected a list"),
    ({"limit": {"train": 0}}, r"data.limit.train: expected a positive integer or null, received 0"),
    ({"limit": {"tarin": 5}}, r"data.limit.tarin: unknown key; did you mean 'train'"),
    ({"limit": 5}, r"data.limit: expected a mapping"),
    ({"path": 3}, r"data.path: expected a file or folder name"),
    ("mnist", r"data: expected a mapping"),
])
def test_config_errors_name_the_key(cfg, message):
    with pytest.raises(ConfigError, match=message):
        validate_data_config(cfg)


def test_validation_float_count_from_yaml():
    assert validate_data_config({"validation": 5e3})["validation"] == 5000
    assert validate_data_config({"validation": 0})["validation"] == 0


def test_registry_lists_the_data_sets():
    assert DATASETS.names() == ["cifar10", "cifar100", "fashion_mnist", "mnist", "mnist_subset", "npz"]


# ----- locating data ---------------------------------------------------------------------

def test_missing_data_set_says_what_where_and_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "data"))
    with pytest.raises(DataError) as info:
        load_data({"dataset": "cifar10"})
    msg = str(info.value)
    assert "cifar-10-batches-py/{data_batch_1" in msg and "cifar-10-python.tar.gz" in msg
    assert str(tmp_path / "data" / "cifar10") in msg
    assert str(tmp_path / "home" / ".cache" / "nntrain" / "cifar10") in msg
    assert "nntrain data fetch cifar10" in msg
    assert "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz" in msg


def test_missing_mnist_and_fashion_messages(tmp_path):
    with pytest.raises(DataError) as info:
        load_data({"dataset": "mnist", "path": str(tmp_path / "nowhere")})
    msg = str(info.value)
    assert "train-images-idx3-ubyte" in msg and "(does not exist)" in msg
    assert "https://ossci-datasets.s3.amazonaws.com/mnist/train-images-idx3-ubyte.gz" in msg
    with pytest.raises(DataError, match=r"(?s)fashion-mnist.s3-website.*apt-get install dataset-fashion-mnist"):
        load_data({"dataset": "fashion_mnist", "path": str(tmp_path)})


def test_npz_needs_a_path():
    with pytest.raises(ConfigError, match="data.path: the npz data set needs"):
        load_data({"dataset": "npz"})


def test_partial_mnist_folder_is_not_found(tmp_path):
    write_mnist_like(tmp_path / "m")
    (tmp_path / "m" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DataError, match="data set 'mnist' not found"):
        load_data({"dataset": "mnist", "path": str(tmp_path / "m")})


def test_search_order_env_then_cache(tmp_path, monkeypatch):
    cache = tmp_path / "home" / ".cache" / "nntrain" / "mnist"
    write_mnist_like(cache, n_train=30, gz=False)
    data = load_data({"dataset": "mnist", "validation": 0})
    assert data.source == str(cache) and len(data.train) == 30
    write_mnist_like(tmp_path / "env" / "mnist", n_train=40)
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "env"))
    data = load_data({"dataset": "mnist", "validation": 0})
    assert data.source == str(tmp_path / "env" / "mnist") and len(data.train) == 40


def test_load_idx_folder(tmp_path):
    arrays = write_mnist_like(tmp_path / "m")
    data = load_data({"dataset": "mnist", "path": str(tmp_path / "m"), "validation": 0}, seed=3)
    assert data.val is None and data.num_classes == 10 and data.input_shape == (1, 28, 28)
    np.testing.assert_array_equal(data.train.x[:, 0], arrays["train"][0])
    np.testing.assert_array_equal(data.test.y, arrays["t10k"][1])
    assert data.train.y.dtype == np.int64 and data.name == "mnist"
    assert "mnist: train 60, test 20; 10 classes" in data.describe()


def test_load_npz_without_test(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(50) % 5, classes=np.array(list("abcde")))
    data = load_data({"dataset": "npz", "path": str(tmp_path / "d.npz"), "validation": 10})
    assert data.test is None and data.classes == list("abcde") and data.input_shape == (3, 8, 8)
    assert len(data.train) == 40 and len(data.val) == 10
    assert data.val.class_counts(5).tolist() == [2] * 5


def test_validation_larger_than_train_is_refused(tmp_path):
    write_mnist_like(tmp_path / "m", n_train=30)
    with pytest.raises(DataError, match="data.validation: holding out 30 samples leaves none of the 30"):
        load_data({"dataset": "mnist", "path": str(tmp_path / "m"), "validation": 30})


# ----- splits ----------------------------------------------------------------------------

def test_stratified_split_counts_disjoint_and_fixed_by_seed():
    y = np.repeat(np.arange(4), [100, 50, 30, 20])
    np.random.default_rng(0).shuffle(y)
    keep, held = stratified_split(y, 40, seed=7)
    assert len(held) == 40 and len(keep) == 160
    assert np.intersect1d(keep, held).size == 0
    np.testing.assert_array_equal(np.sort(np.r_[keep, held]), np.arange(200))
    assert np.bincount(y[held], minlength=4).tolist() == [20, 10, 6, 4]
    assert np.all(np.diff(keep) > 0) and np.all(np.diff(held) > 0)
    again = stratified_split(y, 40, seed=7)
    np.testing.assert_array_equal(again[1], held)
    assert not np.array_equal(stratified_split(y, 40, seed=8)[1], held)


def test_stratified_split_uneven_proportions_sum_exactly():
    y = np.repeat(np.arange(3), [7, 7, 7])
    keep, held = stratified_split(y, 10, seed=0)
    counts = np.bincount(y[held], minlength=3)
    assert counts.sum() == 10 and counts.max() - counts.min() <= 1


def test_stratified_split_is_random_within_classes():
    y = np.zeros(1000, np.int64)
    _, held = stratified_split(y, 100, seed=0)
    assert held.max() > 500 and held.min() < 500  # not just the first ones


def test_validation_fraction_in_load_data(tmp_path):
    write_mnist_like(tmp_path / "m", n_train=200)
    a = load_data({"dataset": "mnist", "path": str(tmp_path / "m"), "validation": 0.25}, seed=1)
    b = load_data({"dataset": "mnist", "path": str(tmp_path / "m"), "validation": 0.25}, seed=1)
    assert len(a.val) == 50 and len(a.train) == 150
    np.testing.assert_array_equal(a.val.x, b.val.x)
    assert a.val.class_counts(10).tolist() == [5] * 10


def test_balanced_first_round_robin_in_file_order():
    y = np.array([0, 0, 0, 0, 1, 2, 2, 1, 0, 2])
    sel = balanced_first(y, 6)
    assert sel.tolist() == [0, 1, 4, 5, 6, 7]  # two of each class, the earliest ones
    assert balanced_first(y, None).tolist() == list(range(10))
    y2 = np.array([0] * 8 + [1])
    assert balanced_first(y2, 4).tolist() == [0, 1, 2, 8]  # class 1 runs out, class 0 fills in


def test_limit_applies_after_the_validation_split(tmp_path):
    write_mnist_like(tmp_path / "m", n_train=200, n_test=100)
    cfg = {"dataset": "mnist", "path": str(tmp_path / "m"), "validation": 50,
           "limit": {"train": 20, "val": 10, "test": 30}}
    data = load_data(cfg, seed=0)
    assert (len(data.train), len(data.val), len(data.test)) == (20, 10, 30)
    assert data.train.class_counts(10).tolist() == [2] * 10
    full = load_data({**cfg, "limit": None}, seed=0)
    assert set(map(bytes, data.val.x)) <= set(map(bytes, full.val.x))  # the same hold-out, then limited


# ----- embedded and real data -----------------------------------------------------------

def test_embedded_mnist_subset_is_the_default():
    data = load_data({"validation": 0})
    assert data.name == "mnist_subset" and data.source == str(EMBEDDED)
    assert len(data.train) == 10000 and len(data.test) == 2000
    assert data.train.class_counts(10).tolist() == [1000] * 10
    assert data.test.class_counts(10).tolist() == [200] * 10
    assert data.train.x.shape == (10000, 1, 28, 28) and data.train.x.dtype == np.uint8
    assert sum(f.stat().st_size for f in EMBEDDED.iterdir()) < 4_000_000
    assert (EMBEDDED / "README.md").read_text().count("CC BY-SA 3.0") >= 1


def test_first_per_class():
    y = np.array([3, 1, 3, 3, 1, 0, 1])
    assert first_per_class(y, 2).tolist() == [0, 1, 2, 4, 5]


@needs_mnist
def test_embedded_subset_is_reproducible_from_mnist(tmp_path):
    make(MNIST_DIR, tmp_path)
    for f in EMBEDDED.glob("*.gz"):
        np.testing.assert_array_equal(read_idx(tmp_path / f.name), read_idx(f))


@needs_mnist
def test_real_mnist():
    data = load_data({"dataset": "mnist", "path": str(MNIST_DIR), "validation": 0})
    assert data.train.x.shape == (60000, 1, 28, 28) and data.test.x.shape == (10000, 1, 28, 28)
    assert data.train.class_counts(10).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert data.test.class_counts(10).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(data.train.x.mean(dtype=np.float64) - 33.318) < 1e-3
    for f in MNIST_DIR.glob("*.gz"):  # the decompressed files are the original release
        with gzip.open(f) as g:
            assert hashlib.sha256(g.read()).hexdigest() == MNIST_IDX_SHA256[f.name[:-3]]


@needs_mnist
def test_real_mnist_validation_split_is_stratified():
    data = load_data({"dataset": "mnist", "path": str(MNIST_DIR), "validation": 6000}, seed=0)
    counts = data.val.class_counts(10)
    full = np.array([5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949])
    assert counts.sum() == 6000 and np.all(np.abs(counts - full / 10) <= 1)


@pytest.mark.slow
@pytest.mark.skipif(not CIFAR_XZ.is_file(), reason="shared/data CIFAR-10 not present")
def test_real_cifar10_from_the_xz_archive():
    data = load_data({"dataset": "cifar10", "path": str(CIFAR_XZ), "validation": 0})
    assert data.train.x.shape == (50000, 3, 32, 32) and data.test.x.shape == (10000, 3, 32, 32)
    assert data.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
                            "truck"]
    assert data.train.class_counts(10).tolist() == [5000] * 10
    assert data.test.class_counts(10).tolist() == [1000] * 10


@pytest.mark.skipif(not CIFAR_XZ.is_file(), reason="shared/data CIFAR-10 not present")
def test_shared_data_folder_works_as_nntrain_data(monkeypatch, tmp_path):
    """$NNTRAIN_DATA=shared/data finds both the CIFAR archive (in the folder itself) and mnist/."""
    from nntrain.data.datasets import Cifar10, Mnist

    monkeypatch.setenv("NNTRAIN_DATA", str(SHARED))
    assert Cifar10().locate(None) == CIFAR_XZ
    if MNIST_DIR.is_dir():
        assert Mnist().locate(None) == MNIST_DIR


def test_default_fetch_root_is_searched(tmp_path, monkeypatch):
    from nntrain.data import default_fetch_root

    assert default_fetch_root("cifar10") == tmp_path / "home" / ".cache" / "nntrain" / "cifar10"
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "d"))
    root = default_fetch_root("mnist")
    assert root == tmp_path / "d" / "mnist"
    write_mnist_like(root)
    assert load_data({"dataset": "mnist"}).source == str(root)


def test_known_input_shape_without_reading_images(tmp_path):
    from nntrain.data import known_input_shape

    assert known_input_shape({"dataset": "cifar10"}) == ((3, 32, 32), 10)  # no files needed
    assert known_input_shape({"dataset": "cifar100", "label_mode": "coarse"}) == ((3, 32, 32), 20)
    assert known_input_shape({"dataset": "cifar100"}) == ((3, 32, 32), 100)
    assert known_input_shape({"dataset": "fashion_mnist"}) == ((1, 28, 28), 10)
    assert known_input_shape({}) == ((1, 28, 28), 10)
    np.savez(tmp_path / "a.npz", x=np.zeros((4, 9, 7, 3), np.uint8), y=np.array([0, 1, 5, 2]))
    assert known_input_shape({"dataset": "npz", "path": str(tmp_path / "a.npz")}) == ((3, 9, 7), 6)
    np.savez(tmp_path / "b.npz", x=np.zeros((4, 9, 7)), y=np.zeros(4, int), classes=np.array(["a", "b"]))
    assert known_input_shape({"dataset": "npz", "path": str(tmp_path / "b.npz")}) == ((1, 9, 7), 2)
    (tmp_path / "c.npz").write_bytes(b"nope")
    with pytest.raises(DataError, match="not a readable npz data file"):
        known_input_shape({"dataset": "npz", "path": str(tmp_path / "c.npz")})
