"""CIFAR-10N / CIFAR-100N human label sets (Wei et al., ICLR 2022).

The official files (GitHub ``UCSC-REAL/cifar-10-100n``) are ``CIFAR-10_human.pt`` and
``CIFAR-100_human.pt``: torch pickles of a dict of int64 arrays (or lists), indexed in
the official train order. An ``.npz`` copy with the same keys is also accepted. The
``.pt`` files are read only with ``torch.load(weights_only=True)`` and an allow-list of
the numpy globals needed to rebuild integer arrays, never with a full unpickler.

A label file is only used after its ``clean_label`` (``clean_coarse_label``) array has
been checked against the dataset's own train labels: a file in another order would
silently pair images with the wrong human labels.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

import numpy as np

from ddlnl.data.fetch import fetch_hint
from ddlnl.errors import DataError, check_choice

HUMAN_LABEL_SETS: dict[str, tuple[str, ...]] = {
    "cifar10": ("aggre", "random1", "random2", "random3", "worst"),
    "cifar100": ("noisy100",),
    "cifar100_coarse": ("noisy100",),
}

_LABEL_KEY = {
    ("cifar10", "aggre"): "aggre_label",
    ("cifar10", "random1"): "random_label1",
    ("cifar10", "random2"): "random_label2",
    ("cifar10", "random3"): "random_label3",
    ("cifar10", "worst"): "worse_label",
    ("cifar100", "noisy100"): "noisy_label",
    ("cifar100_coarse", "noisy100"): "noisy_coarse_label",
}
_CLEAN_KEY = {"cifar10": "clean_label", "cifar100": "clean_label", "cifar100_coarse": "clean_coarse_label"}
_NUM_CLASSES = {"cifar10": 10, "cifar100": 100, "cifar100_coarse": 20}
_STEM = {"cifar10": ("cifar10n", "CIFAR-10_human"), "cifar100": ("cifar100n", "CIFAR-100_human")}

# sha256 by file name: the official .pt files and the npz copies in the shared data folder.
HUMAN_LABEL_SHA256: dict[str, str] = {
    "CIFAR-10_human.pt": "873e69c39cb9b5e97fb6bae2d60bb59b38a5cbc31d2b868f7903dcb2b9dd2310",
    "CIFAR-100_human.pt": "bd2d80409754d420292d622e15e25248ba21e37d27429efac49c8da723f44394",
    "CIFAR-10_human.npz": "6024485a143efa682792c21d7f2adfdef5a374dce699bb2fcd4d62cd55cc4852",
    "CIFAR-100_human.npz": "8e7f73d20c0d055d4cf92554f8ac9ac2f3d695ddc15b652d7eb979015de8a8a4",
}

_GET_FIX = (
    "{hint}; or get {name}.pt from the GitHub repository UCSC-REAL/cifar-10-100n (folder data/) "
    "and put it at {path}"
)


def label_key(dataset: str, label_set: str) -> str:
    """Key of ``label_set`` in the label file of ``dataset``."""
    return _LABEL_KEY[(dataset, label_set)]


def clean_key(dataset: str) -> str:
    return _CLEAN_KEY[dataset]


def human_label_candidates(dataset: str, data_root: str | Path) -> list[Path]:
    """Where the label file of ``dataset`` is looked for, in order."""
    root = Path(data_root)
    sub, stem = _STEM["cifar10" if dataset == "cifar10" else "cifar100"]
    return [root / sub / f"{stem}.npz", root / sub / f"{stem}.pt", root / f"{stem}.pt", root / f"{stem}.npz"]


def find_human_label_file(dataset: str, data_root: str | Path) -> Path | None:
    return next((p for p in human_label_candidates(dataset, data_root) if p.is_file()), None)


def _numpy_safe_globals() -> list:
    """The numpy globals a torch pickle of plain integer arrays refers to, and nothing more."""
    try:
        from numpy._core import multiarray
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core import multiarray  # type: ignore[no-redef]
    ints = (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64)
    return [
        multiarray._reconstruct,
        (multiarray._reconstruct, "numpy.core.multiarray._reconstruct"),
        multiarray.scalar,
        (multiarray.scalar, "numpy.core.multiarray.scalar"),
        np.ndarray,
        np.dtype,
        *[type(np.dtype(t)) for t in ints],  # dtype instances are rebuilt with BUILD
    ]


def _read_pt(path: Path) -> object:
    from ddlnl.utils.io import (
        load_weights_only,  # deferred: only .pt label files need torch
    )

    return load_weights_only(path, safe_globals=_numpy_safe_globals(),
                             fix="use the official label file from UCSC-REAL/cifar-10-100n (or its npz copy)")


def _read_npz(path: Path) -> object:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, AttributeError) as exc:
        raise DataError(f"{path} is corrupt or truncated ({type(exc).__name__}: {exc})",
                        "re-obtain the label file") from None


def read_human_label_file(path: str | Path) -> dict[str, np.ndarray]:
    """Every label array of a CIFAR-N file (.pt or .npz), as int64."""
    path = Path(path)
    raw = _read_npz(path) if path.suffix == ".npz" else _read_pt(path)
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected a dict of label arrays, got {type(raw).__name__}",
                        "use the official CIFAR-N label file")
    out: dict[str, np.ndarray] = {}
    for key, value in raw.items():
        arr = value.numpy() if hasattr(value, "numpy") and not isinstance(value, np.ndarray) else np.asarray(value)
        if arr.ndim != 1 or (arr.size and not np.issubdtype(arr.dtype, np.integer)):
            raise DataError(f"{path}: entry {key!r} is not a 1-D integer array ({arr.dtype}, shape {arr.shape})",
                            "use the official CIFAR-N label file")
        out[str(key)] = arr.astype(np.int64)
    return out


def load_human_labels(dataset: str, label_set: str, data_root: str | Path,
                      clean_train_labels: np.ndarray) -> np.ndarray:
    """Human labels ``label_set`` for the training set of ``dataset`` (int64, train order)."""
    check_choice("dataset with human labels", dataset, HUMAN_LABEL_SETS)
    check_choice(f"{dataset} human label set", label_set, HUMAN_LABEL_SETS[dataset])
    path = find_human_label_file(dataset, data_root)
    if path is None:
        cands = human_label_candidates(dataset, data_root)
        fetch_name = _STEM["cifar10" if dataset == "cifar10" else "cifar100"][0]
        raise DataError(
            f"no {dataset} human label file ({fetch_name}) under {data_root}; looked for: {', '.join(map(str, cands))}",
            _GET_FIX.format(hint=fetch_hint(fetch_name, data_root), name=cands[1].stem, path=cands[1]),
        )
    labels = read_human_label_file(path)
    ck, nk = clean_key(dataset), label_key(dataset, label_set)
    for k in (ck, nk):
        if k not in labels:
            raise DataError(f"{path}: no {k!r} entry (has {', '.join(sorted(labels)) or 'none'})",
                            "use the official CIFAR-N label file")
    clean_train = np.asarray(clean_train_labels).astype(np.int64)
    clean, noisy = labels[ck], labels[nk]
    order_fix = f"the file must list labels in the official train order of {dataset}; use the official file"
    if clean.shape != clean_train.shape:
        raise DataError(f"{path}: {ck} has {clean.shape[0]} labels but the {dataset} training set has "
                        f"{clean_train.shape[0]}", order_fix)
    differ = int(np.count_nonzero(clean != clean_train))
    if differ:
        raise DataError(f"{path}: {ck} differs from the {dataset} train labels at {differ} of "
                        f"{clean.shape[0]} positions", order_fix)
    if noisy.shape != clean.shape:
        raise DataError(f"{path}: {nk} has {noisy.shape[0]} labels, expected {clean.shape[0]}",
                        "re-obtain the label file")
    k = _NUM_CLASSES[dataset]
    if noisy.size and (noisy.min() < 0 or noisy.max() >= k):
        raise DataError(f"{path}: {nk} has values outside 0..{k - 1} (min {noisy.min()}, max {noisy.max()})",
                        "re-obtain the label file")
    return noisy
