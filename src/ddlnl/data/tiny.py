"""Tiny-ImageNet (200 classes, 64x64) from its original folder layout.

``<root>/tiny-imagenet-200/``:
``wnids.txt`` (200 WordNet ids; class index = line order), ``words.txt`` (optional,
``wnid<TAB>names``; the first comma-separated name is the class name, else the wnid),
``train/<wnid>/images/*.JPEG`` and ``val/images/*.JPEG`` with ``val/val_annotations.txt``
(``filename<TAB>wnid<TAB>bbox...``). The official test images carry no labels, so the
val split serves as the test split. Files are read in natural name order
(``val_2`` before ``val_10``) so that indices are reproducible.

Decoding 110k JPEGs takes a while, so the decoded arrays are cached as
``ddlnl_cache_{train,val}.npz`` next to ``wnids.txt`` (written atomically, reused while
newer than ``wnids.txt`` and matching the wnids and file count).
"""

from __future__ import annotations

import os
import re
import tempfile
import zipfile
import zlib
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddlnl.data.fetch import fetch_hint
from ddlnl.data.types import DatasetSplits, LabeledImages
from ddlnl.errors import DataError

TINY_DIR = "tiny-imagenet-200"
IMAGE_SIZE = 64
_DIGITS = re.compile(r"(\d+)")


def natural_key(name: str) -> tuple:
    """Sort key that orders embedded numbers numerically (``a_2`` < ``a_10``)."""
    return tuple(int(t) if t.isdigit() else t for t in _DIGITS.split(name))


def tiny_dir(root: str | Path) -> Path:
    return Path(root) / TINY_DIR


def read_wnids(base: Path) -> list[str]:
    path = base / "wnids.txt"
    if not path.is_file():
        raise DataError(
            f"tinyimagenet (Tiny-ImageNet) not found under {base.parent}: {path} is missing",
            f"{fetch_hint('tinyimagenet', base.parent)}; or extract tiny-imagenet-200.zip so that {base}/wnids.txt, {base}/train/<wnid>/images/ and "
            f"{base}/val/images/ + {base}/val/val_annotations.txt exist",
        )
    wnids = [w.strip() for w in path.read_text().splitlines() if w.strip()]
    if len(set(wnids)) != len(wnids) or not wnids:
        raise DataError(f"{path} lists no wnids or repeats one", "re-extract tiny-imagenet-200.zip")
    return wnids


def class_names(base: Path, wnids: list[str]) -> tuple[str, ...]:
    words: dict[str, str] = {}
    path = base / "words.txt"
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            wnid, _, names = line.partition("\t")
            if names.strip():
                words[wnid.strip()] = names.split(",")[0].strip()
    return tuple(words.get(w, w) for w in wnids)


def _list_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise DataError(f"Tiny-ImageNet folder {folder} is missing", "re-extract tiny-imagenet-200.zip")
    files = [p for p in folder.iterdir() if p.suffix.lower() in (".jpeg", ".jpg") and p.is_file()]
    return sorted(files, key=lambda p: natural_key(p.name))


def _train_files(base: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    files, labels = [], []
    for c, wnid in enumerate(wnids):
        got = _list_images(base / "train" / wnid / "images")
        files += got
        labels += [c] * len(got)
    return files, np.asarray(labels, dtype=np.int64)


def _val_files(base: Path, wnids: list[str]) -> tuple[list[Path], np.ndarray]:
    ann = base / "val" / "val_annotations.txt"
    if not ann.is_file():
        raise DataError(f"{ann} is missing", "re-extract tiny-imagenet-200.zip (val/ must keep val_annotations.txt)")
    index = {w: i for i, w in enumerate(wnids)}
    label_of: dict[str, int] = {}
    for n, line in enumerate(ann.read_text().splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split("\t")
        if len(parts) < 2 or parts[1] not in index:
            raise DataError(f"{ann} line {n}: expected 'filename<TAB>wnid...' with a wnid from wnids.txt, got {line!r}",
                            "re-extract tiny-imagenet-200.zip")
        label_of[parts[0]] = index[parts[1]]
    files = _list_images(base / "val" / "images")
    unlabelled = [f.name for f in files if f.name not in label_of]
    if unlabelled:
        raise DataError(f"{len(unlabelled)} val images have no line in {ann} (first: {unlabelled[0]})",
                        "re-extract tiny-imagenet-200.zip")
    return files, np.asarray([label_of[f.name] for f in files], dtype=np.int64)


def _decode(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as im:
            arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"cannot decode {path}: {exc}", "re-extract tiny-imagenet-200.zip") from None
    if arr.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise DataError(f"{path} is {arr.shape[1]}x{arr.shape[0]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}",
                        "re-extract tiny-imagenet-200.zip (images must not be resized)")
    return arr


def _decode_all(files: list[Path]) -> np.ndarray:
    out = np.empty((len(files), IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)
    workers = min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:  # PIL releases the GIL while decoding
        for i, arr in enumerate(pool.map(_decode, files, chunksize=64)):
            out[i] = arr
    return out


def _cache_path(base: Path, split: str) -> Path:
    return base / f"ddlnl_cache_{split}.npz"


def _read_cache(path: Path, wnids: list[str], n: int) -> tuple[np.ndarray, np.ndarray] | None:
    if not path.is_file() or path.stat().st_mtime <= (path.parent / "wnids.txt").stat().st_mtime:
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            if list(z["wnids"]) != wnids or z["labels"].shape != (n,):
                return None
            images, labels = z["images"], z["labels"]
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError):
        return None  # a broken cache is rebuilt, not an error
    if images.shape != (n, IMAGE_SIZE, IMAGE_SIZE, 3) or images.dtype != np.uint8:
        return None
    return images, labels.astype(np.int64)


def _write_cache(path: Path, images: np.ndarray, labels: np.ndarray, wnids: list[str]) -> None:
    try:
        fd, tmp = tempfile.mkstemp(prefix=path.stem + ".", suffix=".tmp", dir=path.parent)
    except OSError:
        return  # read-only data folder: work without a cache
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, images=images, labels=labels, wnids=np.asarray(wnids))
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError:
        Path(tmp).unlink(missing_ok=True)


def _load_split(base: Path, split: str, wnids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    files, labels = _train_files(base, wnids) if split == "train" else _val_files(base, wnids)
    if not files:
        raise DataError(f"no JPEG images found for the Tiny-ImageNet {split} split in {base / split}",
                        "re-extract tiny-imagenet-200.zip")
    cache = _cache_path(base, split)
    hit = _read_cache(cache, wnids, len(files))
    if hit is not None and np.array_equal(hit[1], labels):
        return hit
    with _cache_lock(cache):  # two processes decoding at once: the second waits and reads the first's cache
        hit = _read_cache(cache, wnids, len(files))
        if hit is not None and np.array_equal(hit[1], labels):
            return hit
        if cache.is_file() and cache.stat().st_mtime > (base / "wnids.txt").stat().st_mtime:
            import sys

            print(f"[ddlnl] warning: {cache} is damaged or stale; decoding the JPEGs again", file=sys.stderr)
        images = _decode_all(files)
        _write_cache(cache, images, labels, wnids)
    return images, labels


@contextmanager
def _cache_lock(cache: Path):
    """An exclusive lock on ``<cache>.lock``, or none where the data folder is read-only."""
    from ddlnl.utils.io import file_lock

    try:
        lock = file_lock(cache.with_name(cache.name + ".lock"))
        lock.__enter__()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        lock.__exit__(None, None, None)


def load_tiny_imagenet(root: str | Path) -> DatasetSplits:
    """Train and val (as test) splits of Tiny-ImageNet under ``root``."""
    base = tiny_dir(root)
    wnids = read_wnids(base)
    classes = class_names(base, wnids)
    train = LabeledImages(*_load_split(base, "train", wnids), classes)
    test = LabeledImages(*_load_split(base, "val", wnids), classes)
    return DatasetSplits("tinyimagenet", train, test, source=f"folder:{base}")
