"""File formats: IDX (MNIST), CIFAR python batches (restricted unpickling), npz; every bad-data case."""

import gzip
import io
import os
import pickle
import struct
import tarfile

import numpy as np
import pytest

from nntrain.data import cifar, idx
from nntrain.data.npzdata import read_npz
from nntrain.errors import DataError


# ----- IDX -------------------------------------------------------------------------------

def test_idx_reads_a_hand_written_file(tmp_path):
    """A header written byte by byte (not by our writer) is parsed as the format says."""
    pixels = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    raw = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">III", 2, 3, 4) + pixels.tobytes()
    (tmp_path / "a-idx3-ubyte").write_bytes(raw)
    with gzip.open(tmp_path / "b-idx3-ubyte.gz", "wb") as f:
        f.write(raw)
    for name in ("a-idx3-ubyte", "b-idx3-ubyte.gz"):
        out = idx.read_idx(tmp_path / name, ndim=3)
        assert out.dtype == np.uint8 and out.shape == (2, 3, 4)
        np.testing.assert_array_equal(out, pixels)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16, np.int32, np.float32, np.float64])
def test_idx_round_trip_every_type(tmp_path, dtype):
    arr = (np.arange(24).reshape(2, 3, 4) - 5).astype(dtype)
    if dtype == np.uint8:
        arr = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
    idx.write_idx(tmp_path / "f.gz", arr)
    out = idx.read_idx(tmp_path / "f.gz")
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    np.testing.assert_array_equal(out, arr)


def test_idx_gzip_output_is_reproducible(tmp_path):
    arr = np.arange(100, dtype=np.uint8)
    idx.write_idx(tmp_path / "a.gz", arr)
    idx.write_idx(tmp_path / "b.gz", arr)
    assert (tmp_path / "a.gz").read_bytes() == (tmp_path / "b.gz").read_bytes()


def _images(n=5, h=4, w=4):
    return (np.arange(n * h * w) % 256).astype(np.uint8).reshape(n, h, w)


def test_idx_bad_magic(tmp_path):
    (tmp_path / "f").write_bytes(b"\x1f\x8b\x08\x03" + bytes(20))
    with pytest.raises(DataError, match="not an IDX file.*magic"):
        idx.read_idx(tmp_path / "f")


def test_idx_wrong_rank(tmp_path):
    idx.write_idx(tmp_path / "f", _images())
    with pytest.raises(DataError, match="expected a 1-dimensional IDX file, the header says 3"):
        idx.read_idx(tmp_path / "f", ndim=1)


def test_idx_truncated_file_names_expected_and_actual_bytes(tmp_path):
    raw = idx.idx_bytes(_images())  # 16-byte header + 80 bytes
    (tmp_path / "f").write_bytes(raw[:-7])
    with pytest.raises(DataError, match=r"f: truncated: .*shape \(5, 4, 4\).* 96 bytes, but the file has 89 bytes"):
        idx.read_idx(tmp_path / "f")


def test_idx_truncated_header(tmp_path):
    (tmp_path / "f").write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match="truncated header"):
        idx.read_idx(tmp_path / "f")


def test_idx_extra_bytes(tmp_path):
    (tmp_path / "f").write_bytes(idx.idx_bytes(_images()) + b"xyz")
    with pytest.raises(DataError, match="3 unexpected bytes"):
        idx.read_idx(tmp_path / "f")


def test_idx_truncated_gzip(tmp_path):
    idx.write_idx(tmp_path / "f.gz", _images(50, 10, 10))
    data = (tmp_path / "f.gz").read_bytes()
    (tmp_path / "g.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="g.gz: corrupt or truncated gzip"):
        idx.read_idx(tmp_path / "g.gz")


def test_idx_pair_label_count_mismatch(tmp_path):
    idx.write_idx(tmp_path / "img", _images(5))
    idx.write_idx(tmp_path / "lab", np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="has 4 labels but .*img has 5 images"):
        idx.read_image_label_pair(tmp_path / "img", tmp_path / "lab", 10)


def test_idx_pair_labels_out_of_range(tmp_path):
    idx.write_idx(tmp_path / "img", _images(3))
    idx.write_idx(tmp_path / "lab", np.array([1, 10, 2], np.uint8))
    with pytest.raises(DataError, match="label 10 is out of range: 10 classes allow 0..9"):
        idx.read_image_label_pair(tmp_path / "img", tmp_path / "lab", 10)


def test_idx_pair_images_must_be_uint8(tmp_path):
    idx.write_idx(tmp_path / "img", _images(3).astype(np.float32))
    idx.write_idx(tmp_path / "lab", np.zeros(3, np.uint8))
    with pytest.raises(DataError, match="expected uint8 pixels"):
        idx.read_image_label_pair(tmp_path / "img", tmp_path / "lab", 10)


def test_idx_pair_shapes(tmp_path):
    idx.write_idx(tmp_path / "img", _images(3, 5, 6))
    idx.write_idx(tmp_path / "lab", np.array([0, 1, 2], np.uint8))
    x, y = idx.read_image_label_pair(tmp_path / "img", tmp_path / "lab", 10)
    assert x.shape == (3, 1, 5, 6) and x.dtype == np.uint8
    assert y.dtype == np.int64 and y.tolist() == [0, 1, 2]


# ----- CIFAR -----------------------------------------------------------------------------

def _cifar_batch(n, num_classes, rng, label_key=b"labels", extra=None):
    d = {b"batch_label": b"testing", b"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
         label_key: rng.integers(0, num_classes, n).tolist(), b"filenames": [b"x.png"] * n}
    d.update(extra or {})
    return d


def write_cifar10(root, n_per_batch=4, seed=0, mutate=None):
    """A tiny CIFAR-10 tree in the official layout, written with pickle.dump."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _cifar_batch(n_per_batch, 10, rng) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(n_per_batch, 10, rng)
    batches["batches.meta"] = {b"label_names": [f"class{i}".encode() for i in range(10)],
                               b"num_cases_per_batch": n_per_batch, b"num_vis": 3072}
    if mutate:
        mutate(batches)
    for name, d in batches.items():
        if d is None:
            continue
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    return folder, batches


def _tar(folder, archive, mode):
    with tarfile.open(archive, mode) as tar:
        tar.add(folder, arcname=folder.name)
    return archive


def _expected(batches):
    x = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)]).reshape(-1, 3, 32, 32)
    y = np.concatenate([batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)])
    return x, y


def test_cifar10_folder_parent_and_archives(tmp_path):
    folder, batches = write_cifar10(tmp_path / "src")
    gz = _tar(folder, tmp_path / "cifar-10-python.tar.gz", "w:gz")
    xz = _tar(folder, tmp_path / "cifar-10-python.tar.xz", "w:xz")
    x_exp, y_exp = _expected(batches)
    for where in (folder, folder.parent, gz, xz):
        source = cifar.find_source(where, "cifar10")
        x, y, xt, yt, classes = cifar.load_cifar(source, "cifar10")
        assert x.shape == (20, 3, 32, 32) and x.dtype == np.uint8 and y.dtype == np.int64
        np.testing.assert_array_equal(x, x_exp)
        np.testing.assert_array_equal(y, y_exp)
        np.testing.assert_array_equal(xt, batches["test_batch"][b"data"].reshape(-1, 3, 32, 32))
        assert classes == [f"class{i}" for i in range(10)]
    # the row layout is R, G, B planes: pixel (c, i, j) of image n is data[n, c*1024 + i*32 + j]
    assert x[3, 2, 5, 7] == batches["data_batch_1"][b"data"][3, 2 * 1024 + 5 * 32 + 7]
    assert cifar.find_source(tmp_path, "cifar10") == gz  # an archive inside the folder is found


def _py2_style_pickle(obj) -> bytes:
    """A protocol-2 pickle as Python 2 wrote CIFAR: byte strings as py2 str, numpy.core module names."""

    class Py2Pickler(pickle._Pickler):
        dispatch = pickle._Pickler.dispatch.copy()

        def save_py2_str(self, data):
            if len(data) < 256:
                self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
            else:
                self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
            self.memoize(data)

        dispatch[bytes] = save_py2_str

    buf = io.BytesIO()
    Py2Pickler(buf, protocol=2).dump(obj)
    return buf.getvalue().replace(b"numpy._core.multiarray\n", b"numpy.core.multiarray\n")


def test_cifar_reads_python2_protocol2_pickles(tmp_path):
    rng = np.random.default_rng(1)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batches = {f"data_batch_{i}": _cifar_batch(3, 10, rng) for i in range(1, 6)}
    batches["test_batch"] = _cifar_batch(2, 10, rng)
    batches["batches.meta"] = {b"label_names": [b"a"] * 10}
    for name, d in batches.items():
        (folder / name).write_bytes(_py2_style_pickle(d))
    raw = (folder / "data_batch_1").read_bytes()
    assert b"cnumpy.core.multiarray\n_reconstruct" in raw and b"U\x04data" in raw  # GLOBAL, py2 str
    x, y, xt, yt, classes = cifar.load_cifar(folder, "cifar10")
    np.testing.assert_array_equal(x, _expected(batches)[0])
    assert classes == ["a"] * 10 and len(yt) == 2


def test_cifar_protocol5_pickles(tmp_path):
    folder, batches = write_cifar10(tmp_path)
    for name, d in batches.items():
        (folder / name).write_bytes(pickle.dumps(d, protocol=5))
    x, *_ = cifar.load_cifar(folder, "cifar10")
    np.testing.assert_array_equal(x, _expected(batches)[0])


def test_cifar100_fine_and_coarse(tmp_path):
    rng = np.random.default_rng(2)
    folder = tmp_path / "cifar-100-python"
    folder.mkdir()
    for name, n in (("train", 6), ("test", 3)):
        d = _cifar_batch(n, 100, rng, label_key=b"fine_labels")
        d[b"coarse_labels"] = [f // 5 for f in d[b"fine_labels"]]
        with open(folder / name, "wb") as f:
            pickle.dump(d, f)
    meta = {b"fine_label_names": [f"f{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"c{i}".encode() for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f)
    archive = _tar(folder, tmp_path / "cifar-100-python.tar.gz", "w:gz")
    x, y, _, _, classes = cifar.load_cifar(archive, "cifar100", "fine")
    xc, yc, _, _, coarse = cifar.load_cifar(archive, "cifar100", "coarse")
    assert len(classes) == 100 and len(coarse) == 20 and x.shape == (6, 3, 32, 32)
    np.testing.assert_array_equal(yc, y // 5)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_cifar_refuses_a_pickle_that_would_run_code(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder, _ = write_cifar10(tmp_path, mutate=lambda b: b["data_batch_2"].update({b"evil": _Evil()}))
    refused = r"data_batch_2: not a readable CIFAR batch.*refusing to load global '(posix|nt|os).system'"
    with pytest.raises(DataError, match=refused):
        cifar.load_cifar(folder, "cifar10")
    assert not (tmp_path / "PWNED").exists()


def test_safe_unpickler_refuses_builtins_and_odd_codecs():
    with pytest.raises(pickle.UnpicklingError, match="refusing to load global 'builtins.eval'"):
        cifar.SafeUnpickler(io.BytesIO(pickle.dumps(eval))).load()
    with pytest.raises(pickle.UnpicklingError, match="refusing _codecs.encode"):
        cifar._latin1_encode("x", "rot13")


@pytest.mark.parametrize("case,message", [
    ("short_rows", r"'data' must be a uint8 array of shape \(N, 3072\), found uint8 array of shape \(4, 100\)"),
    ("float_data", r"'data' must be a uint8 array"),
    ("label_count", r"4 images but 'labels' has shape \(3,\)"),
    ("label_range", r"label 10 is out of range"),
    ("missing_labels", r"missing 'labels'"),
    ("missing_file", r"missing data_batch_3"),
    ("not_a_dict", r"expected a pickled dict"),
])
def test_cifar_bad_data(tmp_path, case, message):
    def mutate(b):
        d = b["data_batch_2"]
        if case == "short_rows":
            d[b"data"] = d[b"data"][:, :100]
        elif case == "float_data":
            d[b"data"] = d[b"data"].astype(np.float32)
        elif case == "label_count":
            d[b"labels"] = d[b"labels"][:3]
        elif case == "label_range":
            d[b"labels"][1] = 10
        elif case == "missing_labels":
            del d[b"labels"]
        elif case == "missing_file":
            b["data_batch_3"] = None
        elif case == "not_a_dict":
            b["data_batch_2"] = [1, 2, 3]

    folder, _ = write_cifar10(tmp_path, mutate=mutate)
    with pytest.raises(DataError, match=message):
        cifar.load_cifar(folder, "cifar10")


def test_cifar_truncated_archive(tmp_path):
    folder, _ = write_cifar10(tmp_path / "src", n_per_batch=50)
    archive = _tar(folder, tmp_path / "cifar-10-python.tar.gz", "w:gz")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(DataError, match="corrupt or truncated archive"):
        cifar.load_cifar(archive, "cifar10")


def test_cifar_garbage_file_is_a_data_error(tmp_path):
    folder, _ = write_cifar10(tmp_path)
    (folder / "data_batch_4").write_bytes(b"this is not a pickle")
    with pytest.raises(DataError, match="data_batch_4: not a readable CIFAR batch"):
        cifar.load_cifar(folder, "cifar10")


# ----- npz -------------------------------------------------------------------------------

@pytest.mark.parametrize("layout", ["NHWC", "NCHW", "NHW", "NHWC1"])
def test_npz_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    c = 1 if layout in ("NHW", "NHWC1") else 3
    nchw = rng.integers(0, 256, (6, c, 5, 7), dtype=np.uint8)
    stored = {"NHWC": nchw.transpose(0, 2, 3, 1), "NHWC1": nchw.transpose(0, 2, 3, 1),
              "NCHW": nchw, "NHW": nchw[:, 0]}[layout]
    np.savez(tmp_path / "d.npz", x=stored, y=np.arange(6) % 3, x_test=stored[:2], y_test=np.array([0, 2]))
    x, y, xt, yt, classes = read_npz(tmp_path / "d.npz")
    assert x.dtype == np.uint8 and x.flags.c_contiguous
    np.testing.assert_array_equal(x, nchw)
    np.testing.assert_array_equal(xt, nchw[:2])
    assert y.dtype == np.int64 and classes == ["0", "1", "2"]


def test_npz_float_images_stay_float32_and_int_pixels_become_uint8(tmp_path):
    x = np.random.default_rng(0).random((4, 2, 5, 5))
    np.savez(tmp_path / "f.npz", x=x, y=np.zeros(4, np.int32), classes=np.array(["a", "b"]))
    xf, y, xt, yt, classes = read_npz(tmp_path / "f.npz")
    assert xf.dtype == np.float32 and xt is None and yt is None and classes == ["a", "b"]
    np.testing.assert_allclose(xf, x, rtol=1e-6)
    np.savez(tmp_path / "i.npz", x=np.full((2, 1, 2, 2), 200, np.int64), y=np.zeros(2, np.int64))
    assert read_npz(tmp_path / "i.npz")[0].dtype == np.uint8


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((3, 4, 4), np.uint8)}, "expected arrays x, y"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(2, int)}, "2 labels for 3 images"),
    ({"x": np.zeros((3, 4), np.uint8), "y": np.zeros(3, int)}, r"found shape \(3, 4\)"),
    ({"x": np.full((3, 4, 4), 300), "y": np.zeros(3, int)}, "integer pixels must be in 0..255"),
    ({"x": np.zeros((3, 4, 4)), "y": np.array([0.0, 1.5, 1.0])}, "labels must be whole numbers"),
    ({"x": np.zeros((3, 4, 4)), "y": np.zeros((3, 2))}, "one-hot"),
    ({"x": np.zeros((2, 4, 4)), "y": np.array([0, 2]), "classes": np.array(["a", "b"])}, "label 2 is out of range"),
    ({"x": np.zeros((2, 4, 4)), "y": np.array([0, -1])}, "label -1 is out of range"),
    ({"x": np.zeros((2, 4, 4)), "y": np.array([0, 1]), "x_test": np.zeros((2, 5, 5)), "y_test": np.array([0, 1])},
     r"x_test images are \(1, 5, 5\)"),
    ({"x": np.zeros((2, 4, 4)), "y": np.array([0, 1]), "x_test": np.zeros((2, 4, 4))}, "go together"),
    ({"x": np.zeros((2, 4, 4)), "y": np.array([0, 1]), "z": np.zeros(1)}, "expected arrays x, y"),
    ({"x": np.array([[[np.nan]]]), "y": np.array([0])}, "NaN"),
])
def test_npz_bad_data(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        read_npz(tmp_path / "d.npz")


def test_npz_object_arrays_are_refused_without_unpickling(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.array([_Evil()], dtype=object), y=np.zeros(1, int))
    with pytest.raises(DataError, match="cannot read without pickle"):
        read_npz(tmp_path / "d.npz")


def test_npz_not_a_zip(tmp_path):
    (tmp_path / "d.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(DataError, match="not a readable .npz"):
        read_npz(tmp_path / "d.npz")
