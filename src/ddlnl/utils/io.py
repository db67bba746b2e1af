"""Atomic file writes: finished work is never half-written."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside ``path``; rename it into place only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_json(path: str | Path, obj) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def write_npy(path: str | Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        np.save(f, array, allow_pickle=False)


def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


# --------------------------------------------------------------------------- locks and hashes


@contextmanager
def file_lock(path: str | Path, *, shared: bool = False, on_wait=None):
    """Hold an advisory lock on ``path`` (a ``.lock`` file beside what it guards) for the block.

    ``fcntl.flock`` on a file that is never deleted: concurrent processes on one machine (and
    on NFS v4 / Lustre clients that honour flock) take turns; the lock is released when the
    block ends or the process dies. Blocks until the lock is free. A no-op where fcntl is
    unavailable (Windows). ``on_wait()`` is called once if the lock is busy, before waiting.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX
        yield
        return
    mode = fcntl.LOCK_SH if shared else fcntl.LOCK_EX
    with open(path, "a+b") as f:
        try:
            fcntl.flock(f.fileno(), mode | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(f.fileno(), mode)
        try:
            yield
        finally:
            fcntl.flock(f.fileno(), fcntl.LOCK_UN)


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """The hex digest of a file, read in chunks (datasets are hundreds of MB)."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def sha256_file(path: str | Path) -> str:
    return file_digest(path, "sha256")


def sidecar(path: str | Path) -> Path:
    """``<file>.sha256``: the hex digest of ``<file>``, written after it."""
    path = Path(path)
    return path.with_name(path.name + ".sha256")


def write_sidecar(path: str | Path) -> str:
    """Hash ``path`` and write its ``.sha256`` sidecar atomically; returns the digest."""
    digest = sha256_file(path)
    with atomic_path(sidecar(path)) as tmp:
        tmp.write_text(digest + "\n")
    return digest


def verify_sidecar(path: str | Path) -> str | None:
    """None if ``path`` matches its sidecar, else why not (missing file or sidecar, or a mismatch)."""
    path, side = Path(path), sidecar(path)
    if not path.is_file():
        return "file missing"
    if not side.is_file():
        return "no .sha256 sidecar (written before it finished, or by an older ddlnl)"
    try:
        expected = side.read_text().split()[0].strip()
    except (OSError, IndexError):
        return "unreadable .sha256 sidecar"
    actual = sha256_file(path)
    if actual != expected:
        return f"sha256 mismatch (file {actual[:12]}…, recorded {expected[:12]}…)"
    return None


def remove_entry(path: str | Path) -> None:
    """Delete a cache file and its sidecar (a damaged entry, before rebuilding it)."""
    for p in (Path(path), sidecar(path)):
        p.unlink(missing_ok=True)


# --------------------------------------------------------------------------- torch files


def load_weights_only(path: str | Path, *, safe_globals: list | None = None, fix: str = "pass a file saved with torch.save"):
    """``torch.load(path, weights_only=True)`` (never a full unpickler); failures become one-line DataErrors.

    ``safe_globals`` admits extra globals (e.g. the numpy array rebuilders) on top of torch's
    weights-only allow-list. A file that names any other callable is refused without running it.
    """
    import pickle

    import torch

    from ddlnl.errors import DataError

    path = Path(path)
    try:
        if safe_globals:
            with torch.serialization.safe_globals(safe_globals):
                return torch.load(path, map_location="cpu", weights_only=True)
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise DataError(f"{path}: refused to load ({torch_load_reason(exc)}); only plain tensors and arrays are read, "
                        "nothing that names other code", fix) from None
    except Exception as exc:  # noqa: BLE001 - zip, EOF, runtime, index errors of a truncated or foreign file
        raise DataError(f"{path} is corrupt, truncated or not a torch file ({type(exc).__name__}: {torch_load_reason(exc)})",
                        fix) from None


def torch_load_reason(exc: BaseException) -> str:
    """The informative line of a torch.load error, without torch's advice to disable weights_only."""
    lines = [s.strip() for s in str(exc).splitlines() if s.strip()]
    skip = ("Weights only load failed", "Check the documentation", "Please file an issue", "You can use")
    keep = [s for s in lines if not s.startswith(skip)]
    text = (keep or lines or [type(exc).__name__])[0]
    text = text.split("WeightsUnpickler error:")[-1].strip()
    text = text.split(". This is an internal miniz error")[0]  # torch's boilerplate after a zip error
    return text[:300]
