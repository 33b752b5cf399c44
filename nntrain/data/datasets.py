"""The ``data:`` section of an experiment: data sets, where their files are, the splits.

::

    data:
      dataset: mnist_subset   # cifar10 | cifar100 | mnist | fashion_mnist | npz | mnist_subset
      path: null              # folder or archive (npz: the file); see below
      validation: 0.1         # held out of TRAIN: a count (int >= 0) or a fraction (0 < f < 1); 0 = none
      normalize: per_channel  # per_channel | per_pixel_mean | scale | zca | pca | none (see normalize.py)
      augment: []             # e.g. [{type: hflip}, {type: random_crop, size: 32, padding: 4}]
      limit: {train: null, val: null, test: null}   # keep only the first N, class-balanced
      label_mode: fine        # cifar100 only: fine (100 classes) | coarse (20)

Where the files are: ``path`` when given; otherwise ``$NNTRAIN_DATA/<dataset>``
(CIFAR archives also directly in ``$NNTRAIN_DATA``), then ``~/.cache/nntrain/<dataset>``
(where ``nntrain data fetch NAME`` puts them), then for Fashion-MNIST the Debian
package's ``/usr/share/datasets/fashion-mnist``. ``mnist_subset`` ships with nntrain.

Splits: the validation split is a stratified random subset of the training file
(fixed by the run seed); the test split is the data set's own and is never used for a
training decision. ``limit`` is applied after the validation split (each class keeps
its first samples, classes balanced) so a smoke run of a full config stays valid.
"""

from __future__ import annotations

import inspect
import numbers
import os
from dataclasses import dataclass, field
from pathlib import Path

from .. import validate as v
from ..errors import ConfigError, DataError
from ..registry import DATASETS, did_you_mean
from . import cifar, idx
from .augment import make_augmentation
from .fetch import default_root, download_urls
from .normalize import normalize_spec
from .npzdata import npz_shape_and_classes, read_npz
from .splits import Split, balanced_first, stratified_split, validation_count

EMBEDDED = Path(__file__).resolve().parent / "embedded"
COMMON_KEYS = ("dataset", "path", "validation", "normalize", "augment", "limit")
LIMIT_KEYS = ("train", "val", "test")
DEFAULTS = {"dataset": "mnist_subset", "path": None, "validation": 0.1, "normalize": "per_channel",
            "augment": [], "limit": None}
IDX_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


# ----- the data sets -------------------------------------------------------------------

class Dataset:
    """A data set type: where to look for its files and how to read them.

    Subclasses set ``folder`` (the name under $NNTRAIN_DATA and ~/.cache/nntrain),
    take their own options (validated) in ``__init__``, and implement ``find``,
    ``expected`` and ``read``.
    """

    type_name = "?"
    folder = ""
    search_data_root = False  # also look directly in $NNTRAIN_DATA (unambiguous file names)
    extra_locations: tuple = ()
    hint = ""

    def options(self) -> dict:
        return {}

    def find(self, location: Path) -> Path | None:
        """The file or folder to read at ``location``, or None if the data set is not there."""
        raise NotImplementedError

    def expected(self) -> list[str]:
        """File names shown when the data set is not found."""
        raise NotImplementedError

    def read(self, source: Path):
        """(x_train, y_train, x_test or None, y_test or None, classes)."""
        raise NotImplementedError

    def shape_and_classes(self, path) -> tuple[tuple, int]:
        """Per-sample (C, H, W) and the number of classes, without reading the images."""
        raise NotImplementedError

    def candidates(self) -> list[Path]:
        out = []
        env = os.environ.get("NNTRAIN_DATA")
        if env:
            out.append(Path(env).expanduser() / self.folder)
            if self.search_data_root:
                out.append(Path(env).expanduser())
        out.append(Path.home() / ".cache" / "nntrain" / self.folder)
        out.extend(Path(p) for p in self.extra_locations)
        return out

    def locate(self, path) -> Path:
        """The source to read: at ``path`` if given, else at the first candidate holding it."""
        places = [Path(path).expanduser()] if path is not None else self.candidates()
        for place in places:
            found = self.find(place)
            if found is not None:
                return found
        raise DataError(self._not_found(places, path is not None))

    def _not_found(self, places, explicit: bool) -> str:
        lines = [f"data set '{self.type_name}' not found. Expected " + " or ".join(self.expected()) + " in:"]
        lines += [f"  {p}{'' if p.exists() else '  (does not exist)'}" for p in places]
        urls = download_urls(self.type_name)
        if urls:
            lines.append(f"Download it with `nntrain data fetch {self.type_name}` (into "
                         f"{default_fetch_root(self.type_name)}), or yourself from:")
            lines += [f"  {u}" for u in urls]
            lines.append(f"then set data.path, or put the files in $NNTRAIN_DATA/{self.folder}.")
        if self.hint:
            lines.append(self.hint)
        return "\n".join(lines)


def default_fetch_root(name: str) -> Path:
    """Where ``nntrain data fetch NAME`` writes (see ``fetch.default_root``); ``load_data`` searches it."""
    return default_root(_dataset_class(name).folder)


class _Cifar(Dataset):
    search_data_root = True

    num_classes = 10

    def shape_and_classes(self, path):
        return (3, 32, 32), self.num_classes

    def find(self, location):
        return cifar.find_source(location, self.type_name)

    def expected(self):
        return cifar.expected_files(self.type_name)


@DATASETS.register("cifar10")
class Cifar10(_Cifar):
    """CIFAR-10: 50,000 train + 10,000 test 32x32 colour images, 10 classes."""

    folder = "cifar10"

    def read(self, source):
        return cifar.load_cifar(source, "cifar10")


@DATASETS.register("cifar100")
class Cifar100(_Cifar):
    """CIFAR-100: 50,000 + 10,000 32x32 colour images; 100 fine or 20 coarse classes."""

    folder = "cifar100"

    def __init__(self, label_mode: str = "fine"):
        self.label_mode = v.choice(label_mode, "label_mode", ["fine", "coarse"])
        self.num_classes = 100 if self.label_mode == "fine" else 20

    def options(self):
        return {"label_mode": self.label_mode}

    def read(self, source):
        return cifar.load_cifar(source, "cifar100", self.label_mode)


class _Idx(Dataset):
    classes: list[str] = [str(i) for i in range(10)]

    def shape_and_classes(self, path):
        return (1, 28, 28), len(self.classes)

    def _file(self, location: Path, base: str) -> Path | None:
        for name in (base + ".gz", base):
            if (location / name).is_file():
                return location / name
        return None

    def find(self, location):
        if location.is_dir() and all(self._file(location, b) for b in IDX_FILES):
            return location
        return None

    def expected(self):
        return ["{" + ", ".join(IDX_FILES) + "} (each .gz or not)"]

    def read(self, source):
        f = {b: self._file(source, b) for b in IDX_FILES}
        k = len(self.classes)
        x, y = idx.read_image_label_pair(f[IDX_FILES[0]], f[IDX_FILES[1]], k)
        x_test, y_test = idx.read_image_label_pair(f[IDX_FILES[2]], f[IDX_FILES[3]], k)
        if x_test.shape[1:] != x.shape[1:]:
            raise DataError(f"{source}: test images are {x_test.shape[2:]} but training images are {x.shape[2:]}")
        return x, y, x_test, y_test, list(self.classes)


@DATASETS.register("mnist")
class Mnist(_Idx):
    """MNIST: 60,000 train + 10,000 test 28x28 grey digits."""

    folder = "mnist"


@DATASETS.register("fashion_mnist")
class FashionMnist(_Idx):
    """Fashion-MNIST (Zalando): 60,000 + 10,000 28x28 grey clothing images, 10 classes."""

    folder = "fashion_mnist"
    extra_locations = ("/usr/share/datasets/fashion-mnist",)
    hint = "On Debian/Ubuntu: apt-get install dataset-fashion-mnist (files in /usr/share/datasets/fashion-mnist)."
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]


@DATASETS.register("mnist_subset")
class MnistSubset(_Idx):
    """The embedded default: 10,000 train + 2,000 test MNIST digits (first 1000 / 200 per class)."""

    folder = "mnist_subset"

    def candidates(self):
        return [EMBEDDED]


@DATASETS.register("npz")
class Npz(Dataset):
    """Your own arrays in an .npz file (see nntrain.data.npzdata); ``path`` is required."""

    folder = "npz"

    def find(self, location):
        return location if location.is_file() else None

    def expected(self):
        return ["an .npz file with arrays x, y (optionally x_test, y_test, classes)"]

    def locate(self, path):
        if path is None:
            raise ConfigError("data.path: the npz data set needs the path of its .npz file")
        return super().locate(path)

    def read(self, source):
        return read_npz(source)

    def shape_and_classes(self, path):
        return npz_shape_and_classes(self.locate(path))


# ----- the data: section ---------------------------------------------------------------

def _dataset_class(name):
    try:
        return DATASETS.get(name)
    except ConfigError as exc:
        raise ConfigError(f"data.dataset: {exc}") from None


def _dataset_option_names(cls) -> list[str]:
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "args", "kwargs")]


def validate_data_config(cfg) -> dict:
    """The ``data:`` section with defaults filled in; ConfigError naming the key otherwise.

    Idempotent: validating the result again returns it unchanged.
    """
    if cfg is None:
        cfg = {}
    if not isinstance(cfg, dict):
        raise ConfigError(f"data: expected a mapping (dataset: ..., path: ...), received {cfg!r}")
    out = dict(DEFAULTS)
    out.update(cfg)
    cls = _dataset_class(out["dataset"])
    extra = _dataset_option_names(cls)
    allowed = list(COMMON_KEYS) + extra
    for key in cfg:
        if key not in allowed:
            raise ConfigError(f"data.{key}: unknown key{did_you_mean(key, allowed)} (keys: {', '.join(allowed)})")
    try:
        ds = cls(**{k: cfg[k] for k in extra if k in cfg})
    except ConfigError as exc:
        raise ConfigError(f"data ({out['dataset']}): {exc}") from None
    out.update(ds.options())

    if out["path"] is not None and not isinstance(out["path"], (str, os.PathLike)):
        raise ConfigError(f"data.path: expected a file or folder name, received {out['path']!r}")
    if out["path"] is not None:
        out["path"] = str(out["path"])
    out["validation"] = _check_validation(out["validation"])
    out["normalize"] = normalize_spec(out["normalize"], "data.normalize")
    out["augment"] = make_augmentation(out["augment"], "data.augment").get_config()
    out["limit"] = _check_limit(out["limit"])
    return out


def known_input_shape(cfg) -> tuple[tuple, int]:
    """(per-sample (C, H, W), number of classes) of the ``data:`` section's data set.

    Known without reading any file for the built-in data sets; for npz only the array
    headers and labels of the file are read.
    """
    cfg = validate_data_config(cfg)
    cls = _dataset_class(cfg["dataset"])
    ds = cls(**{k: cfg[k] for k in _dataset_option_names(cls)})
    return ds.shape_and_classes(cfg["path"])


def _check_validation(value):
    what = "a count (an integer >= 0) or a fraction (a number with 0 < f < 1)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"data.validation: expected {what}, received {value!r}")
    if isinstance(value, numbers.Integral):
        if value < 0:
            raise ConfigError(f"data.validation: expected {what}, received {value!r}")
        return int(value)
    if float(value).is_integer() and value >= 1:  # 5000.0 from YAML 5e3: a count
        return int(value)
    if not 0 < value < 1:
        raise ConfigError(f"data.validation: expected {what}, received {value!r}")
    return float(value)


def _check_limit(value) -> dict:
    if value is None:
        return {k: None for k in LIMIT_KEYS}
    if not isinstance(value, dict):
        raise ConfigError(f"data.limit: expected a mapping like {{train: 1000, test: 500}}, received {value!r}")
    out = {k: None for k in LIMIT_KEYS}
    for key, n in value.items():
        if key not in LIMIT_KEYS:
            raise ConfigError(f"data.limit.{key}: unknown key{did_you_mean(key, LIMIT_KEYS)} "
                              f"(keys: {', '.join(LIMIT_KEYS)})")
        if n is not None and (isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1):
            raise ConfigError(f"data.limit.{key}: expected a positive integer or null, received {n!r}")
        out[key] = None if n is None else int(n)
    return out


@dataclass
class Data:
    """A loaded data set: splits of uint8 (or float32) NCHW images and int64 labels."""

    name: str
    train: Split
    val: Split | None
    test: Split | None
    classes: list[str]
    source: str
    config: dict = field(default_factory=dict)

    @property
    def input_shape(self) -> tuple:
        """Per-sample (C, H, W)."""
        return tuple(int(s) for s in self.train.x.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        sizes = ", ".join(f"{k} {len(s):,}" for k, s in (("train", self.train), ("val", self.val),
                                                         ("test", self.test)) if s is not None)
        return (f"{self.name}: {sizes}; {self.num_classes} classes; input {self.input_shape} "
                f"{self.train.x.dtype}; from {self.source}")


def load_data(cfg, seed: int = 0) -> Data:
    """Read the data set of the ``data:`` section ``cfg`` and make the train/val/test splits.

    ``seed`` fixes the validation hold-out. DataError if the files are missing,
    truncated or malformed, or the validation count does not fit.
    """
    cfg = validate_data_config(cfg)
    seed = v.integer(seed, "seed", min_value=0)
    cls = _dataset_class(cfg["dataset"])
    ds = cls(**{k: cfg[k] for k in _dataset_option_names(cls)})
    source = ds.locate(cfg["path"])
    x, y, x_test, y_test, classes = ds.read(source)
    train = Split(x, y)
    count = validation_count(cfg["validation"], len(train))
    if count >= len(train):
        raise DataError(f"data.validation: holding out {count} samples leaves none of the {len(train)} "
                        f"training samples of {cfg['dataset']} for training")
    val = None
    if count > 0:
        keep, held = stratified_split(train.y, count, seed)
        train, val = train.take(keep), train.take(held)
    test = Split(x_test, y_test) if x_test is not None else None
    limit = cfg["limit"]
    train = _limited(train, limit["train"])
    val = _limited(val, limit["val"])
    test = _limited(test, limit["test"])
    return Data(name=cfg["dataset"], train=train, val=val, test=test, classes=classes,
                source=str(source), config=cfg)


def _limited(split: Split | None, n: int | None) -> Split | None:
    if split is None or n is None or n >= len(split):
        return split
    return split.take(balanced_first(split.y, n))
