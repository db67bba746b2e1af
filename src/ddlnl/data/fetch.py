"""``ddlnl data fetch``: a dataset from its official source, in the layout the loaders read.

A fetch must never leave anything a loader would take for a dataset. So the file is
downloaded to ``<root>/.ddlnl-fetch-<name>-<digest[:12]>.part`` (a rerun after an
interruption resumes it with an HTTP Range request), its published checksum is verified, an
archive is unpacked into a hidden ``.ddlnl-fetch-<name>-unpack-*`` folder and checked there
(members outside the dataset's top folder, links and devices are refused), and only then is
the result renamed into place. No loader reads a ``.ddlnl-fetch-`` name.

``$DDLNL_FETCH_MIRROR`` (a base URL) replaces the official host, keeping the file name and
the published checksum; :func:`fetch` also takes ``url`` and ``digest`` (tests, mirrors).
"""

from __future__ import annotations

import gzip
import os
import shlex
import shutil
import sys
import tarfile
import zipfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from http.client import HTTPException
from pathlib import Path
from urllib.error import HTTPError
from urllib.request import Request, urlopen

from ddlnl.errors import ConfigError, DataError
from ddlnl.utils.io import file_digest

MIRROR_ENV = "DDLNL_FETCH_MIRROR"
_CIFARN = "https://raw.githubusercontent.com/UCSC-REAL/cifar-10-100n/49df7d8a69e355470c77c1c2f2424916325a394b/data"


@dataclass(frozen=True)
class Source:
    """Where a dataset comes from, its published checksum, and what it becomes under the data root."""

    url: str
    algorithm: str  # md5 | sha256
    digest: str
    kind: str  # tar | zip | file
    target: str  # path under the data root (the archive's top folder, or the file's place)


# Where each digest is published:
# - cifar10 / cifar100: the md5 of the python archives that torchvision checks (CIFAR10.tgz_md5 and
#   CIFAR100.tgz_md5 in torchvision/datasets/cifar.py); CIFAR-10's is also printed on the dataset's
#   page, https://www.cs.toronto.edu/~kriz/cifar.html.
# - tinyimagenet: Stanford publishes no checksum. This md5 is the one that dataset libraries pin
#   for tiny-imagenet-200.zip (e.g. TinyImagenet.md5 in ContinualAI's Avalanche,
#   avalanche/benchmarks/datasets/tiny_imagenet/tiny_imagenet.py).
# - cifar10n / cifar100n: sha256 of data/CIFAR-10_human.pt and data/CIFAR-100_human.pt in GitHub
#   UCSC-REAL/cifar-10-100n at the commit pinned in _CIFARN (the values of cifarn.HUMAN_LABEL_SHA256);
#   a URL at a pinned commit always serves the same bytes.
SOURCES: dict[str, Source] = {
    "cifar10": Source("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz", "md5",
                      "c58f30108f718f92721af3b95e74349a", "tar", "cifar-10-batches-py"),
    "cifar100": Source("https://www.cs.toronto.edu/~kriz/cifar-100-python.tar.gz", "md5",
                       "eb9058c3a382ffc7106e4002c42a8d85", "tar", "cifar-100-python"),
    "tinyimagenet": Source("http://cs231n.stanford.edu/tiny-imagenet-200.zip", "md5",
                           "90528d7ca1a48142e341f4ef8d21d0de", "zip", "tiny-imagenet-200"),
    "cifar10n": Source(f"{_CIFARN}/CIFAR-10_human.pt", "sha256",
                       "873e69c39cb9b5e97fb6bae2d60bb59b38a5cbc31d2b868f7903dcb2b9dd2310", "file", "cifar10n/CIFAR-10_human.pt"),
    "cifar100n": Source(f"{_CIFARN}/CIFAR-100_human.pt", "sha256",
                        "bd2d80409754d420292d622e15e25248ba21e37d27429efac49c8da723f44394", "file", "cifar100n/CIFAR-100_human.pt"),
}
ALIASES = {"cifar100_coarse": "cifar100"}  # shares CIFAR-100's files
FETCH_NAMES = tuple(SOURCES)


def fetch_hint(name: str, root: str | Path, *, force: bool = False) -> str:
    """The fix of a missing-data error: the fetch command and the official URL."""
    name = ALIASES.get(name, name)
    cmd = f"ddlnl data fetch {name}{' --force' if force else ''} --data-root {shlex.quote(str(root))}"
    return f"run `{cmd}` (downloads {SOURCES[name].url} and verifies its {SOURCES[name].algorithm})"


def source_for(name: str, url: str | None = None, digest: str | None = None) -> Source:
    """``SOURCES[name]``, its URL moved to ``url`` or ``$DDLNL_FETCH_MIRROR``, its digest to ``digest``."""
    if ALIASES.get(name, name) not in SOURCES:
        raise ConfigError(f"cannot fetch {name!r}", f"use one of: {', '.join(FETCH_NAMES)}")
    src = SOURCES[ALIASES.get(name, name)]
    mirror = os.environ.get(MIRROR_ENV, "").strip()
    if url is None and mirror:
        url = f"{mirror.rstrip('/')}/{src.url.rsplit('/', 1)[-1]}"
    return replace(src, url=url or src.url, digest=(digest or src.digest).lower())


@dataclass
class FetchResult:
    name: str
    status: str  # fetched | present
    path: Path


def fetch(name: str, root: str | Path, *, url: str | None = None, digest: str | None = None, force: bool = False,
          progress: bool = True, log: Callable[[str], None] | None = None) -> FetchResult:
    """Download, verify and place dataset ``name`` under ``root``; a complete copy is left alone unless ``force``."""
    from ddlnl.utils.io import file_lock

    log = log or (lambda m: print(m, file=sys.stderr))
    src = source_for(name, url, digest)
    name = ALIASES.get(name, name)
    root = Path(root).expanduser().resolve()  # as the loaders resolve it, so that paths compare equal
    try:
        root.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataError(f"cannot create the data root {root}: {exc.strerror or exc}",
                        "pass a writable --data-root (or set $DDLNL_DATA)") from None
    with file_lock(root / f".ddlnl-fetch-{name}.lock", on_wait=lambda: log(f"{name}: waiting for another fetch of it")):
        row, target = _row(name, root), root / src.target
        if row["status"] == "found" and not force:
            return FetchResult(name, "present", Path(row["path"]))
        if target.exists() and not force:
            raise DataError(f"{name}: {target} exists but is not a complete copy ({row['detail'] or 'see `ddlnl data list`'})",
                            f"remove it, or rerun with --force to fetch {name} and replace it")
        for stale in root.glob(f".ddlnl-fetch-{name}-unpack-*"):  # left by a killed fetch
            shutil.rmtree(stale, ignore_errors=True)
        part = root / f".ddlnl-fetch-{name}-{src.digest[:12]}.part"
        resumed = part.is_file() and part.stat().st_size > 0
        log(f"{name}: {'resuming' if resumed else 'downloading'} {src.url}")
        download(src.url, part, progress=progress, desc=name, log=log)
        got = file_digest(part, src.algorithm)
        if got != src.digest and resumed:  # a stale partial file: once more from scratch
            log(f"{name}: the resumed download does not verify; downloading it again from the start")
            part.unlink()
            download(src.url, part, progress=progress, desc=name, log=log)
            got = file_digest(part, src.algorithm)
        if got != src.digest:
            part.unlink()
            raise DataError(f"{name}: the file downloaded from {src.url} has {src.algorithm} {got}, not the expected "
                            f"{src.digest} (corrupt, truncated or altered; it was deleted and nothing was unpacked)",
                            f"rerun `ddlnl data fetch {name} --data-root {shlex.quote(str(root))}`; if it fails again, "
                            f"{src.url} serves another file (with ${MIRROR_ENV} set: point it at a faithful copy, or unset it)")
        try:
            path = _place(name, src, part, root)
        except DataError:  # a verified file that is not what the loaders read: downloading it again will not help
            part.unlink(missing_ok=True)
            raise
        except OSError as exc:  # disk full, permissions: keep the verified download for the rerun
            raise DataError(f"{name}: unpacking into {root} failed ({exc.strerror or exc}); nothing was placed",
                            f"free space or fix permissions there, then rerun (the verified download {part.name} is reused)") from None
        part.unlink(missing_ok=True)
        used = _row(name, root)["path"]
    log(f"{name}: fetched into {path}")
    if Path(used) != path:
        log(f"{name}: note: the loader reads {used} first (it takes precedence over {path})")
    return FetchResult(name, "fetched", path)


def _row(name: str, root: Path) -> dict:
    from ddlnl.data.check import describe_data_root

    return next(r for r in describe_data_root(root) if r["name"] == name)


# ---- download ------------------------------------------------------------------------

def download(url: str, part: Path, *, progress: bool = True, desc: str = "", attempts: int = 5,
             log: Callable[[str], None] = print, timeout: float = 60) -> None:
    """Complete ``part`` from ``url``: resume what it holds (Range), retry while an attempt makes progress."""
    from tqdm import tqdm

    why = ""
    for _ in range(attempts):
        have = part.stat().st_size if part.is_file() else 0
        headers = {"User-Agent": "ddlnl-fetch", **({"Range": f"bytes={have}-"} if have else {})}
        got, total = 0, None
        try:
            with urlopen(Request(url, headers=headers), timeout=timeout) as resp:
                have, total = _resume_point(resp, have)
                with open(part, "ab" if have else "wb") as f, \
                        tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
                             disable=not progress, file=sys.stderr) as bar:
                    while chunk := resp.read(1 << 16):
                        f.write(chunk)
                        got += len(chunk)
                        bar.update(len(chunk))
            if total is None or have + got >= total:
                return
            why = f"the server closed the connection after {have + got} of {total} bytes"
        except HTTPError as exc:
            if exc.code == 416 and have:  # nothing left to send: the part is whole (the checksum decides)
                return
            raise DataError(f"downloading {url} failed: HTTP {exc.code} {exc.reason}",
                            f"check the URL (or ${MIRROR_ENV}) and your connection, then rerun") from None
        except (OSError, HTTPException) as exc:  # URLError, timeouts, resets, IncompleteRead
            why = f"{type(exc).__name__}: {getattr(exc, 'reason', None) or exc}"
        if not got:
            break  # no progress: retrying at once will not help
        log(f"{desc}: download interrupted ({why}); resuming")
    size = part.stat().st_size if part.is_file() else 0
    if not size:
        part.unlink(missing_ok=True)
        raise DataError(f"could not download {url} ({why})",
                        f"check your connection and the URL (or ${MIRROR_ENV}), then rerun")
    raise DataError(f"downloading {url} stopped after {size} bytes ({why})",
                    f"rerun the same `ddlnl data fetch` command: it resumes from {part.name} where the server allows")


def _resume_point(resp, have: int) -> tuple[int, int | None]:
    """(bytes kept from the part, full size or None) for a response to a request from ``have``."""
    length = resp.headers.get("Content-Length")
    if have and resp.status == 206:
        unit, _, spec = (resp.headers.get("Content-Range") or "").partition(" ")  # bytes START-END/TOTAL
        start, total = spec.partition("-")[0], spec.partition("/")[2]
        if unit == "bytes" and start.isdigit() and int(start) == have:
            return have, int(total) if total.isdigit() else None
        raise OSError(f"unexpected Content-Range {resp.headers.get('Content-Range')!r}")
    return 0, int(length) if length and length.isdigit() else None  # 200: the server sends the whole file


# ---- unpack and place ----------------------------------------------------------------

def _place(name: str, src: Source, part: Path, root: Path) -> Path:
    """Unpack (or check) ``part`` in a hidden folder, then rename the result into place."""
    import tempfile

    target = root / src.target
    tmp = Path(tempfile.mkdtemp(prefix=f".ddlnl-fetch-{name}-unpack-", dir=root))
    try:
        staged = tmp / src.target
        if src.kind == "file":
            _check_label_file(name, part)
            staged.parent.mkdir(parents=True)
            shutil.copyfile(part, staged)  # a copy: the verified part stays until the file is in place
        else:
            _unpack(src, part, tmp)
        row = _row(name, tmp)  # the staging folder, read as a data root: is it what the loader wants?
        if row["status"] != "found" or Path(row["path"]) != staged:
            raise DataError(f"{name}: the archive from {src.url} does not hold the expected layout "
                            f"({row['detail'] or 'found: ' + row['path']})", "check the URL (or the mirror); nothing was placed")
        target.parent.mkdir(parents=True, exist_ok=True)
        if target.exists():  # --force: the old copy goes away with the staging folder
            os.replace(target, tmp / ".old")
        os.replace(staged, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _check_label_file(name: str, path: Path) -> None:
    """Read a CIFAR-N file the way the loader does (weights-only, integer arrays) before placing it."""
    from ddlnl.data.cifarn import read_human_label_file

    labels = read_human_label_file(path)
    if "clean_label" not in labels:
        raise DataError(f"{name}: the downloaded label file has no 'clean_label' entry", "check the URL (or the mirror)")


def _member_ok(name: str, top: str) -> bool:
    parts = Path(name).parts
    return bool(parts) and parts[0] == top and not Path(name).is_absolute() and ".." not in parts


def _unpack(src: Source, archive: Path, into: Path) -> None:
    try:
        if src.kind == "tar":
            with tarfile.open(archive, "r:*") as tar:
                members = tar.getmembers()
                _refuse([m.name for m in members if not (m.isfile() or m.isdir()) or not _member_ok(m.name, src.target)],
                        src, archive)
                kw = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(into, members=members, **kw)
        else:
            with zipfile.ZipFile(archive) as z:
                names = z.namelist()
                _refuse([n for n in names if not _member_ok(n, src.target)], src, archive)
                z.extractall(into)
    except DataError:
        raise
    except (tarfile.TarError, zipfile.BadZipFile, gzip.BadGzipFile, zlib.error, EOFError, ValueError) as exc:
        raise DataError(f"cannot unpack {archive.name} from {src.url}: {type(exc).__name__}: {exc}",
                        "rerun `ddlnl data fetch` to download it again") from None


def _refuse(bad: list[str], src: Source, archive: Path) -> None:
    if bad:
        raise DataError(f"{archive.name} from {src.url} holds {len(bad)} entries outside {src.target}/ or that are not "
                        f"plain files (first: {bad[0]!r}); nothing was unpacked", "use the official archive")
