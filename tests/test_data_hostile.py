"""Hostile data files (issue 19, class 5): each is refused with one message naming the file,
exit 2, no traceback, and memory bounded by what the format allows.

The bombs are small on disk: one gzip stream whose deflate data repeats the same ~1 KB
block (1 MiB of zeros, flushed so that every copy is identical) decompresses to gigabytes
from a few megabytes, without compressing gigabytes to make it. They run through the command
line in a subprocess under RLIMIT_AS (``bounded_cli``), where reading one whole would fail
with "out of memory" instead of the refusal. Generated cases (hypothesis) mutate IDX
headers and npz files: the reader returns a valid array or raises DataError, nothing else.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from nntrain.data import cifar, idx
from nntrain.bounded import NpzReader
from nntrain.data.npzdata import MAX_CLASSES, npz_shape_and_classes, read_npz
from nntrain.errors import DataError

from .bounded_cli import LIMIT, assert_refused, run_cli
from .conftest import write_yaml

GIB = 1 << 30


def gzip_bomb(prefix: bytes, mib: int) -> bytes:
    """One gzip member that decompresses to ``prefix`` followed by ``mib`` MiB of zeros.

    Raw deflate with a full flush after the prefix and after each MiB: the flush resets
    the compressor, so every MiB of zeros compresses to the same bytes, written ``mib``
    times. The trailer's CRC is not computed (0): a reader must stop long before it.
    """
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    zeros = c.compress(bytes(1 << 20)) + c.flush(zlib.Z_FULL_FLUSH)
    size = (len(prefix) + (mib << 20)) & 0xFFFFFFFF
    return (b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x02\x03" + head + zeros * mib + c.flush()
            + struct.pack("<II", 0, size))


def tiny_config(tmp_path, data: dict, **train) -> object:
    return write_yaml(tmp_path / "c.yaml", {
        "name": "hostile", "data": {"validation": 0, **data},
        "model": [{"type": "flatten"}, {"type": "linear", "out_features": 3}],
        "train": {"epochs": 1, "batch_size": 2, **train}})


def fit(tmp_path, data: dict):
    return run_cli(["fit", tiny_config(tmp_path, data), "--run-dir", tmp_path / "run"], tmp_path)


# ----- npz: class counts, not-a-zip, wrong arrays -------------------------------------------

def test_npz_label_2_pow_40_is_refused_naming_the_file_and_label(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), np.uint8), y=np.array([0, 1, 2, 2**40]))
    with pytest.raises(DataError, match=r"d.npz:y: label 1099511627776 is out of range.*100,000 classes"):
        read_npz(tmp_path / "d.npz")
    with pytest.raises(DataError, match="label 1099511627776"):  # nntrain show --no-data reads only the labels
        npz_shape_and_classes(tmp_path / "d.npz")
    assert_refused(fit(tmp_path, {"dataset": "npz", "path": "d.npz"}), "d.npz:y: label 1099511627776")


@pytest.mark.parametrize("y,label", [
    (np.array([0, 1, -3, 2]), "label -3"),
    (np.array([0, 1, MAX_CLASSES, 2]), f"label {MAX_CLASSES}"),
    (np.array([0, 1, 2**64 - 1, 2], np.uint64), f"label {2**64 - 1}"),  # not -1 after a cast
    (np.array([0.0, 1.0, 1e15, 2.0]), "label 1000000000000000"),
])
def test_npz_labels_outside_the_class_range(tmp_path, y, label):
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8), np.uint8), y=y)
    with pytest.raises(DataError, match=f"d.npz:y: {label} is out of range"):
        read_npz(tmp_path / "d.npz")


def test_npz_too_many_class_names(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((2, 4, 4), np.uint8), y=np.array([0, 1]),
             classes=np.array(["c"] * (MAX_CLASSES + 1)))
    with pytest.raises(DataError, match="classes must be a 1-d array of 1..100,000 names"):
        read_npz(tmp_path / "d.npz")


def test_a_npy_file_named_npz_gets_one_clear_message(tmp_path):
    with open(tmp_path / "d.npz", "wb") as f:
        np.save(f, np.zeros((4, 8, 8), np.uint8))
    with pytest.raises(DataError, match=r"d.npz: not a readable .npz file \(it is a single .npy array; save"):
        read_npz(tmp_path / "d.npz")
    with pytest.raises(DataError, match="not a readable npz data file"):
        npz_shape_and_classes(tmp_path / "d.npz")
    assert_refused(fit(tmp_path, {"dataset": "npz", "path": "d.npz"}), "d.npz: not a readable .npz file",
                   "single .npy array")


@pytest.mark.parametrize("content,message", [
    (b"", "not a zip archive"),
    (b"\x00" * 100, "not a zip archive"),
    (b"PK\x05\x06" + bytes(18), "expected arrays x, y"),  # an empty zip: no arrays
])
def test_npz_that_is_not_an_npz(tmp_path, content, message):
    (tmp_path / "d.npz").write_bytes(content)
    with pytest.raises(DataError, match=message):
        read_npz(tmp_path / "d.npz")


@pytest.mark.parametrize("arrays,message", [
    ({"x": np.zeros((3, 4, 4), bool), "y": np.zeros(3, int)}, "images must be integers or floats, found dtype bool"),
    ({"x": np.zeros((3, 4, 4), complex), "y": np.zeros(3, int)}, "images must be integers or floats"),
    ({"x": np.array([["ab"] * 4] * 3), "y": np.zeros(3, int)}, "found shape"),
    ({"x": np.zeros((3, 4, 4, 2, 2), np.uint8), "y": np.zeros(3, int)}, r"found shape \(3, 4, 4, 2, 2\)"),
    ({"x": np.zeros((3,), np.uint8), "y": np.zeros(3, int)}, r"found shape \(3,\)"),
    ({"x": np.zeros((3, 0, 4), np.uint8), "y": np.zeros(3, int)}, "hold no pixels"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(4, int)}, "4 labels for 3 images"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(3, bool)}, "labels must be integers"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array(["a", "b", "c"])}, "labels must be integers"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.array([0.0, np.inf, 1.0])}, "labels must be whole numbers"),
    ({"x": np.full((3, 4, 4), np.inf, np.float32), "y": np.zeros(3, int)}, "NaN or infinite"),
    ({"x": np.zeros((3, 4, 4), np.float16), "y": np.zeros(3, int), "x_test": np.zeros((1, 4, 4), np.float16),
      "y_test": np.array([np.nan])}, "y_test: labels must be whole numbers"),
    ({"x": np.zeros((3, 4, 4), np.uint8), "y": np.zeros(3, int), "classes": np.zeros(2)}, "classes must be"),
])
def test_npz_arrays_of_the_wrong_kind(tmp_path, arrays, message):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=message):
        read_npz(tmp_path / "d.npz")


def _patch_sizes(data: bytes, member: bytes, size: int) -> bytes:
    """The zip ``data`` with ``member``'s uncompressed size set to ``size`` in its local
    header and the central directory (its data unchanged)."""
    out = bytearray(data)
    for sig, offset, name_at in ((b"PK\x03\x04", 22, 30), (b"PK\x01\x02", 24, 46)):
        at = out.find(sig)
        while at >= 0:
            if out[at + name_at:at + name_at + len(member)] == member:
                out[at + offset:at + offset + 4] = struct.pack("<I", size)
            at = out.find(sig, at + 1)
    return bytes(out)


def _npz_with_x_header(tmp_path, shape, sizes_agree: bool) -> bytes:
    """An npz whose x.npy header announces ``shape`` (uint8) but holds 64 bytes of data."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": "|u1", "fortran_order": False, "shape": shape})
    header = buf.getvalue()
    raw = io.BytesIO()
    with zipfile.ZipFile(raw, "w") as z:
        z.writestr("x.npy", header + bytes(64))
        z.writestr("y.npy", _npy(np.zeros(shape[0] if shape[0] < 10 else 1, np.int64)))
    data = raw.getvalue()
    if sizes_agree:  # the zip directory says the same as the header (the member is short: a lie)
        data = _patch_sizes(data, b"x.npy", len(header) + int(np.prod(shape)))
    (tmp_path / "d.npz").write_bytes(data)
    return data


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_npz_header_that_disagrees_with_the_zip_directory(tmp_path):
    _npz_with_x_header(tmp_path, (3, 1000, 1000), sizes_agree=False)
    with pytest.raises(DataError, match=r"d.npz:x: the header announces shape \(3, 1000, 1000\) of uint8 "
                                        r"\(3,000,000 bytes\) but the archive holds 64 bytes of data"):
        read_npz(tmp_path / "d.npz")


def test_npz_whose_array_is_shorter_than_announced(tmp_path):
    _npz_with_x_header(tmp_path, (3, 100, 100), sizes_agree=True)
    with pytest.raises(DataError, match="d.npz:x: corrupt array data|d.npz:x: truncated"):
        read_npz(tmp_path / "d.npz")


def test_npz_announcing_more_than_the_memory_limit_is_refused_before_reading(tmp_path):
    """x.npy announces 1.9 GiB and the zip directory agrees (it holds 64 bytes): under a
    1.5 GiB limit, np.load would allocate it; the reader refuses with the numbers."""
    _npz_with_x_header(tmp_path, (1900, 1024, 1024), sizes_agree=True)
    result = fit(tmp_path, {"dataset": "npz", "path": "d.npz"})
    assert_refused(result, "d.npz:x:", "needs 1.86 GiB", "this process may address (ulimit -v) 1.5 GiB")


def test_npz_corrupt_deflate_stream(tmp_path):
    np.savez_compressed(tmp_path / "d.npz", x=np.arange(4000, dtype=np.uint8).reshape(10, 20, 20),
                        y=np.zeros(10, int))
    data = bytearray((tmp_path / "d.npz").read_bytes())
    at = data.find(b"x.npy") + 200  # inside x's compressed data
    data[at:at + 40] = bytes(40)
    (tmp_path / "d.npz").write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"d.npz:x: (corrupt array data|not a readable .npy array)"):
        read_npz(tmp_path / "d.npz")


def test_npz_reader_reads_only_what_the_headers_announce(tmp_path):
    x = np.arange(2 * 3 * 5, dtype=np.float64).reshape(2, 3, 5)
    np.savez(tmp_path / "d.npz", x=np.asfortranarray(x), y=np.array([1, 0]), classes=np.array(["a", "b"]))
    with NpzReader(tmp_path / "d.npz") as npz:
        assert npz.headers == {"x": ((2, 3, 5), np.dtype("<f8")), "y": ((2,), np.dtype(np.array([1]).dtype)),
                               "classes": ((2,), np.dtype("<U1"))}
        np.testing.assert_array_equal(npz.read("x"), x)
        assert npz.read("classes").tolist() == ["a", "b"]


# ----- IDX and CIFAR bombs ----------------------------------------------------------------

def _idx_header(dims, code=0x08) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _write_mnist(folder, images: bytes | None = None):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", 6), ("t10k", 3)):
        idx.write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", np.zeros((n, 28, 28), np.uint8))
        idx.write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", (np.arange(n) % 3).astype(np.uint8))
    if images is not None:
        (folder / "train-images-idx3-ubyte.gz").write_bytes(images)


def test_idx_gzip_bomb_after_a_valid_header_is_not_read(tmp_path):
    """6 images as the header says, then 4 GiB of zeros: refused after reading one byte more."""
    bomb = gzip_bomb(_idx_header((6, 28, 28)) + bytes(6 * 784), 4 << 10)
    assert len(bomb) < 8 << 20
    _write_mnist(tmp_path / "mnist", bomb)
    result = fit(tmp_path, {"dataset": "mnist", "path": "mnist"})
    assert_refused(result, "train-images-idx3-ubyte.gz: more than 1,048,576 unexpected bytes (decompressed) "
                           "after the 4720")


def test_idx_gzip_header_announcing_more_than_fits(tmp_path):
    bomb = gzip_bomb(_idx_header((60000, 28 * 100, 28 * 10)), 2)  # 4.7 GB announced, 2 MiB present
    _write_mnist(tmp_path / "mnist", bomb)
    result = fit(tmp_path, {"dataset": "mnist", "path": "mnist"})
    assert_refused(result, "train-images-idx3-ubyte.gz: the array of shape (60000, 2800, 280) its header "
                           "announces needs 43.8 GiB but this process may address (ulimit -v) 1.5 GiB")


def test_idx_gzip_shorter_than_its_header_says(tmp_path):
    (tmp_path / "f.gz").write_bytes(gzip.compress(_idx_header((5, 10, 10)) + bytes(20)))
    with pytest.raises(DataError, match=r"f.gz: truncated: .*\(5, 10, 10\), i.e. 516 bytes, but the file has "
                                        r"36 bytes \(decompressed\)"):
        idx.read_idx(tmp_path / "f.gz")


def test_idx_that_is_a_device_not_a_file(tmp_path):
    (tmp_path / "f").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="f: not a regular file"):
        idx.read_idx(tmp_path / "f")


def _cifar_bomb(tmp_path, member: str, gib: int) -> None:
    info = tarfile.TarInfo(f"cifar-10-batches-py/{member}")
    info.size = gib * GIB
    (tmp_path / "cifar-10-python.tar.gz").write_bytes(gzip_bomb(info.tobuf(tarfile.GNU_FORMAT), gib << 10))


def test_cifar_tar_member_announcing_gigabytes_is_refused_unread(tmp_path):
    _cifar_bomb(tmp_path, "data_batch_1", 4)
    assert_refused(fit(tmp_path, {"dataset": "cifar10", "path": "cifar-10-python.tar.gz"}),
                   "cifar-10-python.tar.gz:cifar-10-batches-py/data_batch_1: 4,294,967,296 bytes, larger than "
                   "a batch of 10,000 images can be (65,048,576 bytes at most)")


def test_cifar_archive_that_decompresses_beyond_any_cifar_archive(tmp_path):
    """An unknown 2 GiB member: the stream is cut off at the most a CIFAR-10 archive holds."""
    _cifar_bomb(tmp_path, "readme.html", 2)
    caps = cifar.file_caps("cifar10")
    total = sum(cap for cap, _ in caps.values()) + cifar.META_BYTES
    assert total < LIMIT / 3
    assert_refused(fit(tmp_path, {"dataset": "cifar10", "path": "cifar-10-python.tar.gz"}),
                   f"cifar-10-python.tar.gz: the archive holds more than {total:,} bytes, the most a cifar10 "
                   f"archive can hold")


def test_cifar_folder_file_larger_than_a_batch(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(bytes(2 << 20))
    with pytest.raises(DataError, match=r"batches.meta: 2,097,152 bytes, larger than the class names can be"):
        cifar.load_cifar(folder, "cifar10")
    (folder / "batches.meta").unlink()
    (folder / "batches.meta").symlink_to("/dev/zero")
    with pytest.raises(DataError, match="batches.meta: not a regular file"):
        cifar.load_cifar(folder, "cifar10")


def test_cifar_archive_with_too_many_entries(tmp_path):
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for i in range(cifar.MAX_MEMBERS + 1):
            tar.addfile(tarfile.TarInfo(f"junk{i}"), io.BytesIO(b""))
    (tmp_path / "a.tar").write_bytes(raw.getvalue())
    with pytest.raises(DataError, match=f"more than {cifar.MAX_MEMBERS} entries; not a cifar10 archive"):
        cifar.load_cifar(tmp_path / "a.tar", "cifar10")


def test_download_larger_than_any_official_file_is_refused(tmp_path, monkeypatch):
    from nntrain.data import fetch

    class Endless(io.RawIOBase):
        headers = {}

        def read(self, n=-1):
            return bytes(n)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(fetch, "MAX_DOWNLOAD", 5 << 20)
    monkeypatch.setattr(fetch.urllib.request, "urlopen", lambda url, timeout: Endless())
    with pytest.raises(DataError, match=r"refusing http://x/f: it sent more than the 5,242,880 bytes"):
        fetch.fetch_dataset("mnist", tmp_path, base_url="http://x/", checksums={"f": "0" * 64})
    assert list(tmp_path.iterdir()) == []  # the partial file is removed
    Endless.headers = {"Content-Length": str(6 << 20)}
    with pytest.raises(DataError, match="it announces 6,291,456 bytes"):
        fetch.fetch_dataset("mnist", tmp_path, base_url="http://x/", checksums={"f": "0" * 64})


# ----- generated cases ------------------------------------------------------------------

_VALID_IDX = idx.idx_bytes(np.arange(3 * 4 * 5, dtype=np.uint8).reshape(3, 4, 5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, 15), st.integers(0, 255)), min_size=1, max_size=4),
       cut=st.integers(-8, 8), gz=st.booleans())
def test_idx_header_mutations_load_or_raise_data_error(tmp_path, edits, cut, gz):
    """Bytes of the magic, type, rank and dimensions changed, the file cut or extended."""
    data = bytearray(_VALID_IDX)
    for at, value in edits:
        data[at] = value
    data = bytes(data[:len(data) + cut]) if cut < 0 else bytes(data) + bytes(cut)
    path = tmp_path / ("f.gz" if gz else "f")
    path.write_bytes(gzip.compress(data, mtime=0) if gz else data)
    for read in (lambda: idx.parse_idx(data, "f"), lambda: idx.read_idx(path)):
        try:
            arr = read()
        except DataError:
            continue
        assert arr.nbytes + 4 + 4 * arr.ndim == len(data)


_numeric = st.sampled_from(["u1", "i2", "<i4", ">i8", "u8", "f2", "<f4", ">f8", "b1", "c8", "U3", "S2", "M8[D]"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(x=hnp.arrays(_numeric, hnp.array_shapes(min_dims=0, max_dims=5, min_side=0, max_side=4)),
       y=hnp.arrays(_numeric, hnp.array_shapes(min_dims=0, max_dims=2, min_side=0, max_side=5)),
       classes=st.none() | hnp.arrays(st.sampled_from(["U2", "S1", "f4"]), hnp.array_shapes(max_dims=2, max_side=3)))
def test_npz_generated_arrays_load_or_raise_data_error(tmp_path, x, y, classes):
    arrays = {"x": x, "y": y, **({} if classes is None else {"classes": classes})}
    np.savez(tmp_path / "d.npz", **arrays)
    for read in (read_npz, npz_shape_and_classes):
        try:
            out = read(tmp_path / "d.npz")
        except DataError:
            continue
        if read is read_npz:
            xs, ys, _, _, names = out
            assert xs.ndim == 4 and len(xs) == len(ys) > 0 and ys.max(initial=0) < len(names) <= MAX_CLASSES


_VALID_NPZ = io.BytesIO()
np.savez_compressed(_VALID_NPZ, x=np.arange(2 * 3 * 3, dtype=np.uint8).reshape(2, 3, 3), y=np.array([0, 1]))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(edits=st.lists(st.tuples(st.integers(0, len(_VALID_NPZ.getvalue()) - 1), st.integers(0, 255)),
                      min_size=1, max_size=6))
def test_npz_byte_mutations_load_or_raise_data_error(tmp_path, edits):
    """Any byte of the zip (local headers, .npy headers, deflate data, directory) changed."""
    data = bytearray(_VALID_NPZ.getvalue())
    for at, value in edits:
        data[at] = value
    (tmp_path / "d.npz").write_bytes(bytes(data))
    for read in (read_npz, npz_shape_and_classes):
        try:
            read(tmp_path / "d.npz")
        except DataError:
            pass


# ----- pixels counts in augmentation, TTA and whitening -------------------------------------

@pytest.mark.parametrize("spec,message", [
    ([{"type": "random_crop", "size": 28, "padding": 29}], "random_crop: padding 29 is larger than the 28x28 images"),
    ([{"type": "random_crop", "size": 28, "padding": 2**31}], "received padding=2147483648"),
    ([{"type": "translate", "max_shift": 100}], "translate: max_shift 100 is larger than the 28x28 images"),
])
def test_augmentation_paddings_beyond_the_image(spec, message):
    from nntrain.data import make_augmentation
    from nntrain.errors import ConfigError

    with pytest.raises(ConfigError, match=message):
        make_augmentation(spec).output_shape((1, 28, 28))


def test_tta_padding_beyond_the_image():
    from nntrain.data import predict_proba
    from nntrain.errors import ConfigError

    x = np.zeros((2, 1, 8, 8), np.float32)
    with pytest.raises(ConfigError, match="expected an integer <= 8, received padding=9"):
        predict_proba(lambda b: np.zeros((len(b), 3), np.float32), x, "crops", padding=9)


def test_whitening_that_cannot_fit_is_refused(monkeypatch):
    from nntrain.data import Normalizer
    from nntrain.errors import ConfigError

    monkeypatch.setattr("nntrain.data.normalize.memory_limit", lambda: (1 << 30, "this machine has"))
    x = np.zeros((4, 3, 64, 64), np.uint8)  # D = 12,288: three 1.1 GiB matrices in float64
    with pytest.raises(ConfigError, match=r"zca on \(3, 64, 64\) images needs 12,288 x 12,288 matrices, about "
                                          r"3.38 GiB, but this machine has 1 GiB: use per_channel"):
        Normalizer.fit("zca", x)


def test_npz_class_names_that_are_not_utf8_are_one_data_error(tmp_path):
    """Found by the hypothesis test above: bytes class names are decoded as UTF-8."""
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((2, 1, 1), np.uint8), y=np.zeros(2, np.uint8), classes=np.array([b"\x80"], "S1"))
    for read in (npz_shape_and_classes, read_npz):
        with pytest.raises(DataError, match="not UTF-8"):
            read(path)
