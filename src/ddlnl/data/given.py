"""A user's own labels for a dataset's training images (``--labels FILE``, ``--clean-labels FILE``).

A label file gives one label to every training image of the dataset, in one of two forms:

- ``.npy``: a 1-D integer array, one label per training image, in the dataset's order
  (for CIFAR, the official training order; for a folder dataset, sorted class folders,
  then sorted file names);
- ``.csv``: rows ``index,label`` (a training-image position) or ``path,label`` (a folder
  dataset's image, relative to its ``train/`` folder, e.g. ``cat/0001.png``), with an
  optional header row. A label is a class index or a class name.

Every training image gets exactly one label. Files are read as data (``allow_pickle=False``,
the csv module): nothing in them is executed.
"""

from __future__ import annotations

import csv
import hashlib
from pathlib import Path

import numpy as np

from ddlnl.errors import DataError

LABEL_FILE_SUFFIXES = (".npy", ".csv")
NO_CLEAN_LABELS_NOTE = ("no clean training labels: the noise rate, the transition matrix, label purity and the precision "
                        "and recall of selections are not computed; pass --clean-labels FILE to compute them")
_HEADER_KEYS = {"index", "idx", "path", "file", "filename", "image"}


def label_file_digest(path: str | Path, flag: str = "--labels") -> str:
    """The file's sha256: what a run's stage keys hold, so that moving the file changes nothing
    and editing it re-runs everything trained on it."""
    path = check_label_file_path(path, flag)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def check_label_file_path(path: str | Path, flag: str = "--labels") -> Path:
    path = Path(path).expanduser()
    if path.suffix.lower() not in LABEL_FILE_SUFFIXES:
        raise DataError(f"{flag} {path}: unknown label file type {path.suffix or '(none)'!r}",
                        "give a .npy array of integer labels, or a .csv file of index,label or path,label rows")
    if not path.is_file():
        raise DataError(f"{flag} {path}: no such file", f"check the path given to {flag}")
    return path


def read_label_file(path: str | Path, *, classes: tuple[str, ...], n: int, image_paths: tuple[str, ...] | None = None,
                    flag: str = "--labels") -> np.ndarray:
    """The labels (int64, one per training image, in the dataset's order) that ``path`` gives."""
    path = check_label_file_path(path, flag)
    what = f"{flag} {path}"
    labels = _read_npy(path, what) if path.suffix.lower() == ".npy" else _read_csv(path, what, classes, n, image_paths)
    if labels.shape != (n,):
        raise DataError(f"{what} holds {labels.size} labels, but the dataset has {n} training images",
                        "give exactly one label per training image, in the dataset's order")
    bad = np.flatnonzero((labels < 0) | (labels >= len(classes)))
    if bad.size:
        raise DataError(f"{what}: label {int(labels[bad[0]])} (position {int(bad[0])}, and {bad.size - 1} more) is not a class "
                        f"of this dataset (0..{len(classes) - 1})", "use class indices 0..C-1 (or class names in a CSV)")
    return labels


def _read_npy(path: Path, what: str) -> np.ndarray:
    try:
        arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise DataError(f"{what} is not a readable .npy array ({exc})", "save the labels with numpy.save(path, labels)") from None
    if arr.ndim != 1 or not np.issubdtype(arr.dtype, np.integer):
        raise DataError(f"{what} holds a {arr.dtype} array of shape {arr.shape}, not a 1-D integer array",
                        "save one integer label per training image: numpy.save(path, labels.astype('int64'))")
    return arr.astype(np.int64)


def _read_csv(path: Path, what: str, classes: tuple[str, ...], n: int, image_paths: tuple[str, ...] | None) -> np.ndarray:
    by_name = {c: i for i, c in enumerate(classes)}
    by_path = None if image_paths is None else {p: i for i, p in enumerate(image_paths)}
    labels = np.full(n, -1, dtype=np.int64)
    try:
        with open(path, newline="") as f:
            rows = [r for r in csv.reader(f) if r and any(x.strip() for x in r)]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{what} is not a readable CSV file ({exc})", "write rows of index,label or path,label") from None
    if rows and rows[0][0].strip().lower() in _HEADER_KEYS:
        rows = rows[1:]
    for line, row in enumerate(rows, start=1):
        if len(row) != 2:
            raise DataError(f"{what}, data row {line}: {len(row)} fields ({','.join(row)!r})", "write two fields per row: index,label or path,label")
        key, value = row[0].strip(), row[1].strip()
        i = _position(key, by_path, n, f"{what}, data row {line}")
        if labels[i] != -1:
            raise DataError(f"{what}, data row {line}: training image {key!r} is labelled twice", "give each training image one row")
        labels[i] = _label(value, by_name, len(classes), f"{what}, data row {line}")
    missing = np.flatnonzero(labels == -1)
    if missing.size:
        first = missing[0] if image_paths is None else image_paths[missing[0]]
        raise DataError(f"{what} labels {n - missing.size} of the {n} training images; {missing.size} have no row "
                        f"(first: {first!s})", "give every training image one row")
    return labels


def _position(key: str, by_path: dict[str, int] | None, n: int, where: str) -> int:
    if key.lstrip("-").isdigit():
        i = int(key)
        if not 0 <= i < n:
            raise DataError(f"{where}: index {i} is not a training-image position (0..{n - 1})",
                            "use positions 0..N-1 in the dataset's order" + (" or paths relative to train/" if by_path else ""))
        return i
    if by_path is None:
        raise DataError(f"{where}: {key!r} is not an index, and this dataset has no image paths",
                        "use index,label rows (paths work only for folder:PATH datasets)")
    rel = key.replace("\\", "/").removeprefix("./").removeprefix("train/")
    if rel not in by_path:
        raise DataError(f"{where}: no training image {key!r} (paths are relative to the dataset's train/ folder, e.g. "
                        f"{next(iter(by_path), 'cat/0001.png')})", "fix the path, or use index,label rows")
    return by_path[rel]


def _label(value: str, by_name: dict[str, int], C: int, where: str) -> int:
    if value in by_name:
        return by_name[value]
    if value.lstrip("-").isdigit() and 0 <= int(value) < C:
        return int(value)
    raise DataError(f"{where}: label {value!r} is not a class of this dataset (indices 0..{C - 1} or names: "
                    f"{', '.join(list(by_name)[:10])}{', ...' if len(by_name) > 10 else ''})", "use a class index or a class name")


def apply_label_files(splits, full_train, labels: str | Path | None, clean_labels: str | Path | None, *,
                      own_labels_clean: bool):
    """``(splits, given, clean_known)``: the training split relabelled with its clean labels (the
    given ones where no clean labels are known, so that nothing can compare against labels that
    are not clean), and the given labels of the training split.

    ``full_train`` is the dataset's whole training split (label files index it); ``splits.train``
    may be a subset of it (``splits.train_index``). Clean labels are ``clean_labels`` when given,
    else the dataset's own where ``own_labels_clean`` (a curated benchmark) and ``labels`` replaces
    them, else unknown.
    """
    from dataclasses import replace

    def read(path, flag):
        return read_label_file(path, classes=full_train.classes, n=len(full_train), image_paths=full_train.paths, flag=flag)

    given_full = read(labels, "--labels") if labels is not None else full_train.labels
    if clean_labels is not None:
        clean_full = read(clean_labels, "--clean-labels")
    else:
        clean_full = full_train.labels if (labels is not None and own_labels_clean) else None
    idx = np.arange(len(full_train)) if splits.train_index is None else np.asarray(splits.train_index)
    kept = (clean_full if clean_full is not None else given_full)[idx]
    return replace(splits, train=splits.train.relabelled(kept)), np.asarray(given_full[idx], dtype=np.int64), clean_full is not None


def given_noisy_labels(given: np.ndarray, clean: np.ndarray | None, spec, num_classes: int):
    """The given labels as a realisation: measured against ``clean`` when known, unmeasured otherwise."""
    from ddlnl.data.noise import NoisyLabels, empirical_transition

    if clean is None:
        return NoisyLabels(given, spec, None, None, None)
    rate = float(np.mean(given != clean)) if len(given) else 0.0
    return NoisyLabels(given, spec, rate, rate, empirical_transition(clean, given, num_classes))
