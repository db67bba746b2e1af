"""``ddlnl data fetch`` against a real HTTP server on 127.0.0.1 serving small fixture archives.

The server is written here because the stdlib one ignores Range requests: it answers them with
206 + Content-Range, and can be told to stop a response after a given byte (an interrupted
transfer). The fixtures are the official layouts in miniature (tests/data/fixtures.py), packed
the way the official archives are: a tar.gz with one top folder, a zip with one top folder, a
torch-saved label file.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest

from ddlnl.cli import main as cli_main
from ddlnl.data import (
    check_data,
    describe_data_root,
    load_human_labels,
    read_human_label_file,
)
from ddlnl.data.fetch import MIRROR_ENV, SOURCES, fetch, fetch_hint
from ddlnl.data.registry import clear_cache, load_dataset
from ddlnl.errors import ConfigError, DataError
from tests.data import fixtures as fx

# ---- the server ------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    """GET /<name> from ``server.files``; ``Range: bytes=N-`` gets 206 unless ``server.ranges`` is off."""

    def do_GET(self):
        srv = self.server
        name, rng = self.path.lstrip("/"), self.headers.get("Range")
        srv.requests.append((name, rng))
        data = srv.files.get(name)
        if data is None:
            self.send_error(404)
            return
        start = int(re.fullmatch(r"bytes=(\d+)-", rng).group(1)) if rng and srv.ranges else 0
        if start >= len(data) > 0:
            self.send_response(416)
            self.send_header("Content-Range", f"bytes */{len(data)}")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        stop = srv.cuts.pop(0) if srv.cuts else len(data)  # a cut: the body ends early, the connection closes
        self.wfile.write(data[start:max(start, stop)])

    def log_message(self, *args):
        pass


class Server:
    def __init__(self):
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.daemon_threads = True
        self.httpd.files, self.httpd.requests, self.httpd.cuts, self.httpd.ranges = {}, [], [], True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, name: str, data: bytes) -> str:
        self.httpd.files[name] = data
        return f"{self.base}/{name}"

    @property
    def requests(self) -> list[tuple[str, str | None]]:
        return self.httpd.requests

    def cut(self, *offsets: int) -> None:
        """The next responses stop at these absolute byte offsets (one per response)."""
        self.httpd.cuts[:] = list(offsets)


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


@pytest.fixture(autouse=True)
def _no_mirror(monkeypatch):
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    clear_cache()
    yield
    clear_cache()


# ---- fixture archives --------------------------------------------------------------------


def _tar_gz(src: Path, top: str, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(src / top, arcname=top)
        for name, data in (extra or {}).items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def _zip(src: Path, top: str, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        for p in sorted([src / top, *(src / top).rglob("*")]):
            z.write(p, p.relative_to(src).as_posix())
        for name, data in (extra or {}).items():
            z.writestr(name, data)
    return buf.getvalue()


def _digest(data: bytes, name: str) -> str:
    return hashlib.new(SOURCES[name].algorithm, data).hexdigest()


def _cifar10(tmp_path: Path, seed: int = 0):
    a = fx.write_cifar10_torchvision(tmp_path / f"src{seed}", seed=seed)
    return _tar_gz(tmp_path / f"src{seed}", "cifar-10-batches-py"), a


def _file_name(name: str) -> str:
    return SOURCES[name].url.rsplit("/", 1)[-1]


def _hidden(root: Path) -> list[str]:
    """What a fetch leaves behind besides its lock files (nothing, when it is done)."""
    return sorted(p.name for p in root.glob(".ddlnl-fetch-*") if not p.name.endswith(".lock"))


def _fetch(name, root, srv, data, *, digest=None, **kw):
    url = srv.serve(_file_name(name), data)
    return fetch(name, root, url=url, digest=digest or _digest(data, name), progress=False, log=lambda m: None, **kw)


# ---- fetch ok -> the loaders read it -----------------------------------------------------


def test_cifar10_fetched_is_what_the_loader_reads(tmp_path, server):
    data, a = _cifar10(tmp_path)
    root = tmp_path / "root"
    res = _fetch("cifar10", root, server, data)
    assert (res.status, res.path) == ("fetched", root.resolve() / "cifar-10-batches-py")
    splits = load_dataset("cifar10", root)
    np.testing.assert_array_equal(splits.train.images, a.train_x)
    np.testing.assert_array_equal(splits.test.labels, a.test_y)
    assert _hidden(root) == [] and server.requests == [("cifar-10-python.tar.gz", None)]
    row = next(r for r in check_data(root, ["cifar10"]))
    assert not any("missing" in p for p in row["problems"])  # complete layout (counts differ: it is a fixture)


def test_cifar100_and_its_coarse_view_read_the_fetched_copy(tmp_path, server):
    a = fx.write_cifar100_torchvision(tmp_path / "src")
    data = _tar_gz(tmp_path / "src", "cifar-100-python")
    root = tmp_path / "root"
    assert _fetch("cifar100", root, server, data).status == "fetched"
    np.testing.assert_array_equal(load_dataset("cifar100", root).train.labels, a.train_y)
    np.testing.assert_array_equal(load_dataset("cifar100_coarse", root).test.labels, a.test_coarse)


def test_tinyimagenet_zip_fetched_is_what_the_loader_reads(tmp_path, server):
    t = fx.write_tiny(tmp_path / "src")
    data = _zip(tmp_path / "src", "tiny-imagenet-200")
    root = tmp_path / "root"
    assert _fetch("tinyimagenet", root, server, data).path == root.resolve() / "tiny-imagenet-200"
    splits = load_dataset("tinyimagenet", root)
    np.testing.assert_array_equal(splits.train.labels, t.train_labels)
    np.testing.assert_array_equal(splits.test.images, fx.decode_rgb(t.val_files))
    assert _hidden(root) == []


def test_cifar10n_label_file_fetched_is_what_the_loader_reads(tmp_path, server):
    clean = np.arange(20) % 10
    labels = fx.human_label_arrays("cifar10", clean)
    pt = fx.write_human_labels(tmp_path / "src", "cifar10", labels, fmt="pt")
    root = tmp_path / "root"
    res = _fetch("cifar10n", root, server, pt.read_bytes())
    assert res.path == root.resolve() / "cifar10n" / "CIFAR-10_human.pt"
    np.testing.assert_array_equal(read_human_label_file(res.path)["worse_label"], labels["worse_label"])
    np.testing.assert_array_equal(load_human_labels("cifar10", "aggre", root, clean), labels["aggre_label"])
    assert next(r for r in describe_data_root(root) if r["name"] == "cifar10n")["status"] == "found"


def test_a_verified_file_that_is_not_a_label_file_is_not_placed(tmp_path, server):
    root = tmp_path / "root"
    with pytest.raises(DataError):
        _fetch("cifar100n", root, server, b"not a torch file")
    assert not (root / "cifar100n").exists() and _hidden(root) == []


# ---- corrupted and truncated downloads ---------------------------------------------------


def test_corrupted_archive_is_refused_deleted_and_nothing_placed(tmp_path, server):
    data, _ = _cifar10(tmp_path)
    bad = bytearray(data)
    bad[len(bad) // 2] ^= 0xFF
    root = tmp_path / "root"
    with pytest.raises(DataError) as e:
        _fetch("cifar10", root, server, bytes(bad), digest=_digest(data, "cifar10"))
    assert _digest(data, "cifar10") in e.value.problem and "deleted" in e.value.problem
    assert not (root / "cifar-10-batches-py").exists() and _hidden(root) == []


def test_truncated_archive_fails_its_checksum(tmp_path, server):
    data, _ = _cifar10(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="not the expected"):
        _fetch("cifar10", root, server, data[: len(data) // 2], digest=_digest(data, "cifar10"))
    assert not (root / "cifar-10-batches-py").exists() and _hidden(root) == []


def test_truncated_archive_whose_checksum_matches_is_not_unpacked(tmp_path, server):
    """A mirror that publishes the checksum of its own truncated file: the unpacking fails cleanly."""
    data, _ = _cifar10(tmp_path)
    root = tmp_path / "root"
    with pytest.raises(DataError, match="cannot unpack"):
        _fetch("cifar10", root, server, data[: len(data) // 2])
    assert not (root / "cifar-10-batches-py").exists() and _hidden(root) == []


def test_interrupted_transfer_resumes_on_rerun(tmp_path, server):
    data, a = _cifar10(tmp_path)
    root, k = tmp_path / "root", len(data) // 3
    server.cut(k, k)  # the transfer stops at byte k, and the retry from k gets nothing either
    with pytest.raises(DataError, match=f"stopped after {k} bytes") as e:
        _fetch("cifar10", root, server, data)
    assert "rerun" in e.value.fix and not (root / "cifar-10-batches-py").exists()
    (part,) = root.glob(".ddlnl-fetch-cifar10-*.part")
    assert part.stat().st_size == k
    res = _fetch("cifar10", root, server, data)  # the rerun asks for the rest only, then verifies
    assert res.status == "fetched" and server.requests[-1] == ("cifar-10-python.tar.gz", f"bytes={k}-")
    np.testing.assert_array_equal(load_dataset("cifar10", root).train.labels, a.train_y)
    assert _hidden(root) == []


def test_a_dropped_connection_is_resumed_within_one_fetch(tmp_path, server):
    data, _ = _cifar10(tmp_path)
    server.cut(100)
    assert _fetch("cifar10", tmp_path / "root", server, data).status == "fetched"
    assert [r for _, r in server.requests] == [None, "bytes=100-"]


def test_a_server_without_ranges_restarts_from_the_start(tmp_path, server):
    data, a = _cifar10(tmp_path)
    root = tmp_path / "root"
    server.httpd.ranges = False
    server.cut(100)
    assert _fetch("cifar10", root, server, data).status == "fetched"  # the 200 to the Range request replaces the part
    assert [r for _, r in server.requests] == [None, "bytes=100-"]
    np.testing.assert_array_equal(load_dataset("cifar10", root).train.images, a.train_x)


def test_a_stale_partial_file_that_does_not_verify_is_downloaded_again(tmp_path, server):
    data, _ = _cifar10(tmp_path)
    root = tmp_path / "root"
    root.mkdir()
    (root / f".ddlnl-fetch-cifar10-{_digest(data, 'cifar10')[:12]}.part").write_bytes(b"x" * 50)
    assert _fetch("cifar10", root, server, data).status == "fetched"
    assert [r for _, r in server.requests] == ["bytes=50-", None]


def test_http_error_names_the_url(tmp_path, server):
    with pytest.raises(DataError, match="HTTP 404"):
        fetch("cifar10", tmp_path, url=f"{server.base}/nothing.tar.gz", digest="0" * 32, progress=False, log=lambda m: None)
    assert _hidden(tmp_path) == []


# ---- archives that try to write elsewhere --------------------------------------------------


@pytest.mark.parametrize("member", ["../evil", "cifar-10-batches-py/../../evil", "/tmp/evil_ddlnl_fetch", "other/evil"])
def test_tar_member_outside_the_top_folder_is_refused(tmp_path, server, member):
    fx.write_cifar10_torchvision(tmp_path / "src")
    data = _tar_gz(tmp_path / "src", "cifar-10-batches-py", {member: b"pwned"})
    root = tmp_path / "a" / "root"
    with pytest.raises(DataError, match="outside cifar-10-batches-py/"):
        _fetch("cifar10", root, server, data)
    assert not (root / "cifar-10-batches-py").exists() and _hidden(root) == []
    assert not (tmp_path / "a" / "evil").exists() and not (tmp_path / "evil").exists() and not (root / "other").exists()


def test_tar_symlink_member_is_refused(tmp_path, server):
    fx.write_cifar10_torchvision(tmp_path / "src")
    (tmp_path / "src" / "cifar-10-batches-py" / "link").symlink_to("/etc/passwd")
    data = _tar_gz(tmp_path / "src", "cifar-10-batches-py")
    with pytest.raises(DataError, match="not plain files"):
        _fetch("cifar10", tmp_path / "root", server, data)
    assert not (tmp_path / "root" / "cifar-10-batches-py").exists()


def test_zip_member_outside_the_top_folder_is_refused(tmp_path, server):
    fx.write_tiny(tmp_path / "src")
    data = _zip(tmp_path / "src", "tiny-imagenet-200", {"tiny-imagenet-200/../../evil": b"pwned"})
    root = tmp_path / "a" / "root"
    with pytest.raises(DataError, match="outside tiny-imagenet-200/"):
        _fetch("tinyimagenet", root, server, data)
    assert not (root / "tiny-imagenet-200").exists() and not (tmp_path / "a" / "evil").exists()


# ---- present, partial, --force ---------------------------------------------------------------


def test_a_present_copy_is_left_untouched(tmp_path, server):
    fx.write_cifar10_torchvision(tmp_path)
    before = {p: p.read_bytes() for p in (tmp_path / "cifar-10-batches-py").iterdir()}
    data, _ = _cifar10(tmp_path, seed=5)
    res = _fetch("cifar10", tmp_path, server, data)
    assert (res.status, res.path) == ("present", tmp_path.resolve() / "cifar-10-batches-py")
    assert server.requests == [] and {p: p.read_bytes() for p in before} == before


def test_force_replaces_a_present_copy(tmp_path, server):
    fx.write_cifar10_torchvision(tmp_path, seed=0)
    data, new = _cifar10(tmp_path, seed=5)
    assert _fetch("cifar10", tmp_path, server, data, force=True).status == "fetched"
    np.testing.assert_array_equal(load_dataset("cifar10", tmp_path).train.images, new.train_x)
    assert _hidden(tmp_path) == []


def test_an_incomplete_copy_needs_force(tmp_path, server):
    fx.write_cifar10_torchvision(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    data, new = _cifar10(tmp_path, seed=5)
    with pytest.raises(DataError, match="not a complete copy") as e:
        _fetch("cifar10", tmp_path, server, data)
    assert "--force" in e.value.fix and server.requests == []
    assert _fetch("cifar10", tmp_path, server, data, force=True).status == "fetched"
    np.testing.assert_array_equal(load_dataset("cifar10", tmp_path).test.labels, new.test_y)


# ---- the command line --------------------------------------------------------------------------


def test_cli_fetch_through_the_mirror_checks_the_published_md5(tmp_path, server, monkeypatch, capsys):
    """The CLI uses the published checksum: a fixture served as cifar-10-python.tar.gz fails it."""
    data, _ = _cifar10(tmp_path)
    server.serve("cifar-10-python.tar.gz", data)
    monkeypatch.setenv(MIRROR_ENV, server.base + "/")
    root = tmp_path / "root"
    assert cli_main(["data", "fetch", "cifar10", "--data-root", str(root), "-q"]) == 2
    err = capsys.readouterr().err
    assert f"{server.base}/cifar-10-python.tar.gz" in err and SOURCES["cifar10"].digest in err and "fix:" in err
    assert server.requests == [("cifar-10-python.tar.gz", None)]
    assert not (root / "cifar-10-batches-py").exists() and _hidden(root) == []


def test_cli_fetch_of_a_present_dataset_downloads_nothing(tmp_path, server, monkeypatch, capsys):
    fx.write_cifar10_torchvision(tmp_path)
    monkeypatch.setenv(MIRROR_ENV, server.base)
    assert cli_main(["data", "fetch", "cifar10", "--data-root", str(tmp_path)]) == 0
    assert "already present" in capsys.readouterr().out and server.requests == []


@pytest.mark.parametrize("argv", [["data", "fetch"], ["data", "fetch", "cifar10", "mnist"]])
def test_cli_fetch_needs_known_names(tmp_path, server, monkeypatch, capsys, argv):
    monkeypatch.setenv(MIRROR_ENV, server.base)
    assert cli_main([*argv, "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "cifar10, cifar100, tinyimagenet, cifar10n, cifar100n" in err and server.requests == []
    with pytest.raises(ConfigError):
        fetch("mnist", tmp_path)


# ---- missing-data errors name the dataset, where they looked, the command and the URL ----------


@pytest.mark.parametrize("name, fetch_name, looked", [
    ("cifar10", "cifar10", "cifar-10-batches-py"),
    ("cifar100", "cifar100", "cifar-100-python"),
    ("cifar100_coarse", "cifar100", "cifar-100-python"),
    ("tinyimagenet", "tinyimagenet", "tiny-imagenet-200"),
])
def test_missing_dataset_error_names_the_fetch_command_and_url(tmp_path, name, fetch_name, looked):
    with pytest.raises(DataError) as e:
        load_dataset(name, tmp_path)
    msg = str(e.value)
    assert fetch_name in e.value.problem and str(tmp_path / looked) in e.value.problem
    assert f"ddlnl data fetch {fetch_name} --data-root {tmp_path}" in msg and SOURCES[fetch_name].url in msg


@pytest.mark.parametrize("dataset, fetch_name", [("cifar10", "cifar10n"), ("cifar100_coarse", "cifar100n")])
def test_missing_human_labels_error_names_the_fetch_command_and_url(tmp_path, dataset, fetch_name):
    with pytest.raises(DataError) as e:
        load_human_labels(dataset, "aggre" if dataset == "cifar10" else "noisy100", tmp_path, np.zeros(3))
    assert fetch_name in e.value.problem and str(tmp_path / fetch_name) in e.value.problem
    assert f"ddlnl data fetch {fetch_name} --data-root {tmp_path}" in e.value.fix and SOURCES[fetch_name].url in e.value.fix


def test_data_check_says_how_to_fetch_what_is_missing(tmp_path):
    rows = {r["name"]: r for r in check_data(tmp_path, ["cifar10", "cifar100n"])}
    for name in rows:
        assert any(fetch_hint(name, tmp_path) in n for n in rows[name]["notes"])


def test_fetch_hint_quotes_a_root_with_spaces():
    assert "--data-root '/my data'" in fetch_hint("cifar10", "/my data")
