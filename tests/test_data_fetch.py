"""fetch_dataset against a local HTTP server (127.0.0.1 only): checksums, atomic writes, errors."""

import functools
import hashlib
import http.server
import re
import threading

import pytest

from nntrain.data import fetch
from nntrain.data.fetch import fetch_dataset
from nntrain.errors import DataError


class _Quiet(http.server.SimpleHTTPRequestHandler):
    requests: list = []

    def log_message(self, *args):
        pass

    def do_GET(self):
        _Quiet.requests.append(self.path)
        super().do_GET()


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Serve tmp_path/'served' on an ephemeral port of 127.0.0.1; yields (folder, base_url)."""
    for var in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    served = tmp_path / "served"
    served.mkdir()
    _Quiet.requests = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield served, f"http://127.0.0.1:{httpd.server_address[1]}/"
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_download_verifies_and_writes_atomically(server, tmp_path):
    served, url = server
    payload = b"not really cifar" * 100_000  # 1.6 MB: several read blocks
    (served / "cifar-10-python.tar.gz").write_bytes(payload)
    seen = []
    root = tmp_path / "cache" / "cifar10"
    paths = fetch_dataset("cifar10", root, base_url=url, checksums={"cifar-10-python.tar.gz": _sha(payload)},
                          progress=lambda name, done, total: seen.append((name, done, total)))
    assert paths == [root / "cifar-10-python.tar.gz"]
    assert (root / "cifar-10-python.tar.gz").read_bytes() == payload
    assert [p.name for p in root.iterdir()] == ["cifar-10-python.tar.gz"]  # no temporary left
    assert seen[-1] == ("cifar-10-python.tar.gz", len(payload), len(payload))
    # present with the right checksum: not downloaded again
    before = len(_Quiet.requests)
    fetch_dataset("cifar10", root, base_url=url, checksums={"cifar-10-python.tar.gz": _sha(payload)})
    assert len(_Quiet.requests) == before


def test_wrong_checksum_is_refused_and_nothing_is_written(server, tmp_path):
    served, url = server
    (served / "train-images-idx3-ubyte.gz").write_bytes(b"tampered")
    root = tmp_path / "mnist"
    with pytest.raises(DataError, match=r"checksum mismatch for http://127\.0\.0\.1:\d+/train-images-idx3-ubyte\.gz: "
                                        r"expected sha256 0{64}, got [0-9a-f]{64}.*not saved"):
        fetch_dataset("mnist", root, base_url=url, checksums={"train-images-idx3-ubyte.gz": "0" * 64})
    assert list(root.iterdir()) == []


def test_a_corrupt_existing_file_is_replaced(server, tmp_path):
    served, url = server
    (served / "a.gz").write_bytes(b"good")
    root = tmp_path / "r"
    root.mkdir()
    (root / "a.gz").write_bytes(b"half")
    fetch_dataset("mnist", root, base_url=url.rstrip("/"), checksums={"a.gz": _sha(b"good")})
    assert (root / "a.gz").read_bytes() == b"good"


def test_missing_file_on_the_server(server, tmp_path):
    _, url = server
    with pytest.raises(DataError, match=r"could not download http://127\.0\.0\.1:\d+/nope\.gz: HTTP Error 404"):
        fetch_dataset("mnist", tmp_path / "r", base_url=url, checksums={"nope.gz": "0" * 64})
    assert list((tmp_path / "r").iterdir()) == []


def test_nothing_to_fetch_for_embedded_or_npz(tmp_path):
    for name in ("mnist_subset", "npz", "imagenet"):
        with pytest.raises(DataError, match="nothing to download"):
            fetch_dataset(name, tmp_path)


def test_pinned_checksums():
    for name, (base, files) in fetch.FILES.items():
        assert base.startswith(("https://", "http://")) and base.endswith("/")
        assert files and all(re.fullmatch(r"[0-9a-f]{64}", h) for h in files.values()), name
    assert fetch.FILES["cifar10"][1]["cifar-10-python.tar.gz"] == \
        "c4a38c50a1bc5f3a1c5537f2155ab9d68f9f25eb1ed8d9ddda3db29a59bca1dd"
    assert fetch.FILES["cifar100"][1]["cifar-100-python.tar.gz"] == \
        "85cd44d02ba6437773c5bbd22e183051d648de2e7d6b014e1ef29b855ba677a7"
    assert sorted(fetch.FILES["mnist"][1]) == sorted(fetch.FILES["fashion_mnist"][1])
    assert fetch.download_urls("mnist_subset") == []


def test_default_root(monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("NNTRAIN_DATA", raising=False)
    assert fetch.default_root("cifar10") == tmp_path / ".cache" / "nntrain" / "cifar10"
    monkeypatch.setenv("NNTRAIN_DATA", str(tmp_path / "d"))
    assert fetch.default_root("mnist") == tmp_path / "d" / "mnist"
