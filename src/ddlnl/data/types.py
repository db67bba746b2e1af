"""In-memory image datasets: uint8 HWC arrays plus integer labels."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass(frozen=True)
class LabeledImages:
    """A set of images and their labels as loaded from disk.

    ``images`` is uint8 of shape (N, H, W, 3), RGB; ``labels`` is int64 of shape (N,),
    each in ``0 .. len(classes) - 1``. For a training split these are the dataset's own
    (clean) labels; noisy labels live beside them, never in place of them, so that the
    clean labels stay available for analysis.
    """

    images: np.ndarray
    labels: np.ndarray
    classes: tuple[str, ...]
    # Each image's file, relative to its split's folder (folder datasets; what a path,label file names).
    paths: tuple[str, ...] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.images.ndim != 4 or self.images.shape[-1] != 3 or self.images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 (N, H, W, 3), got {self.images.dtype} {self.images.shape}")
        if self.labels.shape != (self.images.shape[0],):
            raise ValueError(f"labels must have shape ({self.images.shape[0]},), got {self.labels.shape}")

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_size(self) -> int:
        return int(self.images.shape[1])

    def subset(self, index: np.ndarray) -> "LabeledImages":
        paths = None if self.paths is None else tuple(self.paths[i] for i in np.asarray(index))
        return LabeledImages(self.images[index], self.labels[index], self.classes, paths)

    def relabelled(self, labels: np.ndarray) -> "LabeledImages":
        return LabeledImages(self.images, np.asarray(labels, dtype=np.int64), self.classes, self.paths)


@dataclass(frozen=True)
class DatasetSplits:
    """Train and test splits of one dataset, with where and how they were read."""

    name: str
    train: LabeledImages
    test: LabeledImages
    source: str = ""
    # Indices into the original training set when train is a subset (long-tail, subsample).
    train_index: np.ndarray | None = field(default=None, repr=False)

    @property
    def num_classes(self) -> int:
        return self.train.num_classes


def check_ipc_value(ipc) -> None:
    """``ipc`` is a positive integer (the data-free half of :func:`check_ipc`)."""
    from ddlnl.errors import ConfigError

    if not isinstance(ipc, (int, np.integer)) or isinstance(ipc, bool) or ipc < 1:
        raise ConfigError(f"--ipc must be a positive integer, got {ipc!r}", "pass --ipc 1, 10 or 50")


def check_ipc(labels: np.ndarray, num_classes: int, ipc) -> None:
    """Fail early (before any training) when ``ipc`` is not a positive integer or exceeds a noisy class's size."""
    from ddlnl.errors import ConfigError

    check_ipc_value(ipc)
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)
    if ipc > int(counts.min()):
        c = int(counts.argmin())
        raise ConfigError(f"IPC {ipc} is larger than noisy class {c}, which has only {int(counts.min())} training images",
                          f"use --ipc {max(int(counts.min()), 1)} or less (or a larger training set)")
