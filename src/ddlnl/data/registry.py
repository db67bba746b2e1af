"""Dataset names -> loaders, the data-root convention and an in-process cache.

The cache keeps each dataset's arrays once per process (keyed by name and resolved
data root), so that sweeps over noise settings do not re-read the files. Cached arrays
are made read-only: whoever needs to modify images must copy them first.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ddlnl.data.cifar import CIFAR_NAMES, coarse_view, load_cifar
from ddlnl.data.imagefolder import PREFIX as FOLDER_PREFIX
from ddlnl.data.imagefolder import folder_path, load_image_folder
from ddlnl.data.longtail import longtail_indices
from ddlnl.data.tiny import load_tiny_imagenet
from ddlnl.data.types import DatasetSplits, LabeledImages
from ddlnl.errors import ConfigError

DATASETS: tuple[str, ...] = CIFAR_NAMES + ("tinyimagenet",)
ENV_VAR = "DDLNL_DATA"

_CACHE: dict[tuple[str, Path], DatasetSplits] = {}


def resolve_data_root(data_root: str | Path | None = None) -> Path:
    """``data_root`` if given, else ``$DDLNL_DATA``, else ``./data`` (made absolute)."""
    if data_root is None or str(data_root) == "":
        data_root = os.environ.get(ENV_VAR) or "data"
    return Path(data_root).expanduser().resolve()


def list_datasets() -> list[str]:
    """Built-in dataset names (any ``folder:<path>`` is accepted as well)."""
    return list(DATASETS)


def clear_cache() -> None:
    _CACHE.clear()


def _freeze(splits: DatasetSplits) -> DatasetSplits:
    for part in (splits.train, splits.test):
        part.images.flags.writeable = False
        part.labels.flags.writeable = False
    return splits


def _load_uncached(name: str, root: Path) -> DatasetSplits:
    if name == "cifar100_coarse":
        return coarse_view(_load_full("cifar100", root))  # shares CIFAR-100's image arrays
    if name in CIFAR_NAMES:
        return load_cifar(name, root)
    if name == "tinyimagenet":
        return load_tiny_imagenet(root)
    check_dataset_name(name)
    return load_image_folder(folder_path(name, root), name=name)


def check_dataset_name(name: str) -> str:
    """``name`` if it names a dataset this package reads (a registered one or ``folder:PATH``)."""
    if name in DATASETS or (isinstance(name, str) and name.startswith(FOLDER_PREFIX) and len(name) > len(FOLDER_PREFIX)):
        return name
    raise ConfigError(
        f"unknown dataset {name!r}",
        f"use one of: {', '.join(DATASETS)}, or folder:<path> for an ImageFolder tree "
        "(<path>/train/<class>/<image> and <path>/test/<class>/<image>; path absolute or relative to the data root)",
    )


def _load_full(name: str, root: Path) -> DatasetSplits:
    key = (name, root)
    if key not in _CACHE:
        _CACHE[key] = _freeze(_load_uncached(name, root))
    return _CACHE[key]


def load_dataset(name: str, data_root: str | Path | None = None, *,
                 imbalance: float | None = None, seed: int = 0) -> DatasetSplits:
    """Train/test splits of ``name``; with ``imbalance`` the train split is long-tailed.

    A long-tailed train split keeps the indices it took from the full train set in
    ``train_index``; the test split is never changed.
    """
    root = resolve_data_root(data_root)
    full = _load_full(name, root)
    if imbalance is None:
        return full
    index = longtail_indices(full.train.labels, imbalance, seed)
    train: LabeledImages = full.train.subset(index)
    return DatasetSplits(full.name, train, full.test, full.source, train_index=np.asarray(index))
