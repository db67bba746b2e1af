"""Prepared data for one experiment: splits, noisy labels and preprocessed tensors.

Built once per (dataset, noise, seed, preset data section) and shared by the baseline,
the random control and every distiller, so all of them read the same noise realisation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ddlnl.data.given import apply_label_files, given_noisy_labels
from ddlnl.data.imagefolder import PREFIX as FOLDER_PREFIX
from ddlnl.data.noise import GIVEN_NOISE, NoiseSpec, NoisyLabels, labels_digest, make_noisy_labels
from ddlnl.data.preprocess import Preprocessor
from ddlnl.data.registry import load_dataset, resolve_data_root
from ddlnl.data.types import DatasetSplits
from ddlnl.utils.seeds import stream_seed


@dataclass
class Validation:
    """Training images held out with their *noisy* labels (what a practitioner has): for every choice
    a run makes (tuning, estimated noise rates), so that the test set serves only the final number."""

    index: np.ndarray  # dataset indices of the held-out images (disjoint from the training ones)
    x: torch.Tensor  # preprocessed like the training images
    y_noisy: torch.Tensor


@dataclass
class PreparedData:
    dataset: str
    splits: DatasetSplits  # the training split without the validation images
    noisy: NoisyLabels  # the training labels (the realisation without the validation images)
    preprocess: Preprocessor
    x_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    validation: Validation | None = None
    # The whole realisation, drawn over the training split before the validation images were
    # held out (so holding some out never changes anyone's noisy label), and its clean labels.
    realised: NoisyLabels | None = None
    realised_clean: np.ndarray | None = None

    @property
    def num_classes(self) -> int:
        return self.splits.num_classes

    @property
    def label_correct(self) -> np.ndarray | None:
        """Per training image, whether its noisy label is its clean one; None where no clean labels exist
        (a user's own labels without --clean-labels): every clean-label analysis reads this, and skips on None."""
        if not self.noisy.clean_known:
            return None
        return np.asarray(self.noisy.labels) == np.asarray(self.splits.train.labels)

    @property
    def y_train_noisy(self) -> torch.Tensor:
        return torch.as_tensor(self.noisy.labels, dtype=torch.long)


def per_class_subsample(labels: np.ndarray, per_class: int, seed: int) -> np.ndarray:
    """Sorted indices of at most ``per_class`` seeded random samples of each class."""
    rng = np.random.default_rng(seed)
    keep = [rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in np.unique(labels)]
    return np.sort(np.concatenate(keep))


def stratified_subsample(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    classes = np.unique(labels)
    return per_class_subsample(labels, max(1, size // len(classes)), seed)


def test_subset(test, data_cfg: dict, seed: int):
    """The test images a preset evaluates on: all, or ``data.test_size`` of them, stratified (one
    draw for ``ddlnl run`` and ``ddlnl evaluate``, so both test on the same images)."""
    if not data_cfg.get("test_size"):
        return test
    return test.subset(stratified_subsample(test.labels, int(data_cfg["test_size"]), stream_seed(seed, "subsample.test")))


def prepare_data(
    dataset: str,
    noise: NoiseSpec,
    preset: dict,
    *,
    data_root=None,
    imbalance: float | None = None,
    seed: int = 0,
    saved_noise: Path | None = None,
    labels: str | Path | None = None,
    clean_labels: str | Path | None = None,
) -> PreparedData:
    """Load, subsample, add noise and preprocess. ``saved_noise`` reuses a saved realisation; under
    ``given`` noise the training labels are ``labels`` (a file; else the dataset's own) and the
    clean ones ``clean_labels`` (see :func:`ddlnl.data.given.apply_label_files`)."""
    root = resolve_data_root(data_root)
    splits = load_dataset(dataset, root, imbalance=imbalance, seed=seed)
    given, clean_known = None, True
    if noise.type == GIVEN_NOISE:
        splits, given, clean_known = _apply_label_files(dataset, root, splits, labels, clean_labels)
    data_cfg = preset.get("data", {})
    train_index = splits.train_index if splits.train_index is not None else np.arange(len(splits.train))
    train, test = splits.train, splits.test
    if data_cfg.get("train_per_class"):
        keep = per_class_subsample(train.labels, int(data_cfg["train_per_class"]), stream_seed(seed, "subsample.train"))
        train, train_index = train.subset(keep), train_index[keep]
        given = None if given is None else given[keep]
    test = test_subset(test, data_cfg, seed)
    splits = DatasetSplits(splits.name, train, test, splits.source, train_index)
    noisy = load_saved_noise(saved_noise, noise, train.labels) if saved_noise and given is None else None
    if given is not None:  # a file, not a draw: read again every time, never a saved copy
        noisy = given_noisy_labels(given, train.labels if clean_known else None, noise, train.num_classes)
    if noisy is None:
        noisy = make_noisy_labels(dataset, train.labels, train.num_classes, noise, data_root=root, train_index=train_index,
                                  images=train.images)
    realised, realised_clean, held = noisy, train.labels, None
    if data_cfg.get("validation"):  # stratified by noisy label: the labels a practitioner has
        held = per_class_subsample(noisy.labels, int(data_cfg["validation"]), stream_seed(seed, "validation"))
        keep = np.setdiff1d(np.arange(len(train)), held)
        held_images, held_labels, held_index = train.images[held], noisy.labels[held], train_index[held]
        noisy = noisy.subset(keep, train.labels)
        train, train_index = train.subset(keep), train_index[keep]
        splits = DatasetSplits(splits.name, train, test, splits.source, train_index)
    pre = Preprocessor(preset.get("preprocess", "normalize")).fit(train.images)
    validation = None if held is None else Validation(held_index, pre.apply_uint8(held_images),
                                                       torch.as_tensor(held_labels, dtype=torch.long))
    return PreparedData(
        validation=validation,
        realised=realised,
        realised_clean=realised_clean,
        dataset=dataset,
        splits=splits,
        noisy=noisy,
        preprocess=pre,
        x_train=pre.apply_uint8(train.images),
        x_test=pre.apply_uint8(test.images),
        y_test=torch.tensor(test.labels, dtype=torch.long),  # a copy: loaded arrays are read-only
    )


def _apply_label_files(dataset: str, root: Path, splits: DatasetSplits, labels, clean_labels):
    """:func:`ddlnl.data.given.apply_label_files` for ``dataset``: label files index its whole training
    split, and a benchmark's own labels are clean (a folder dataset's are not known to be)."""
    full = splits.train if splits.train_index is None else load_dataset(dataset, root).train
    return apply_label_files(splits, full, labels, clean_labels, own_labels_clean=not dataset.startswith(FOLDER_PREFIX))


def save_noise(folder: Path, data: PreparedData) -> None:
    """Write the realisation (labels + summary) so every later stage and rerun reads the same one.

    ``noise.json`` records the sha256 of ``noisy_labels.npy``; both are written atomically under
    ``noisy_labels.npy.lock``, so runs or study cells sharing the folder never see half a pair.
    """
    from ddlnl.utils.io import file_lock, sha256_file, write_json, write_npy

    labels_file = folder / "noisy_labels.npy"
    realised = data.realised or data.noisy  # the whole realisation, validation images included
    clean = data.realised_clean if data.realised_clean is not None else data.splits.train.labels
    with file_lock(folder / "noisy_labels.npy.lock"):
        write_npy(labels_file, realised.labels)
        summary = realised.summary() | {"clean_labels_sha": labels_digest(clean), "labels_sha256": sha256_file(labels_file)}
        write_json(folder / "noise.json", summary)


def load_saved_noise(folder: Path, spec: NoiseSpec, clean: np.ndarray, log=None) -> NoisyLabels | None:
    """The realisation saved in ``folder`` if it was made from the same spec and clean labels and is intact.

    The labels file is checked against the sha256 recorded in ``noise.json``; a damaged or
    unverifiable pair is ignored with a warning (the noise is realised again: it is
    deterministic in the spec's seed, so the rerun gets the same labels).
    """
    import json

    from ddlnl.data.noise import empirical_transition
    from ddlnl.utils.io import file_lock, sha256_file

    warn = log or _warn
    labels_file, summary_file = folder / "noisy_labels.npy", folder / "noise.json"
    if not (labels_file.exists() and summary_file.exists()):
        return None
    with file_lock(folder / "noisy_labels.npy.lock", shared=True):
        try:
            summary = json.loads(summary_file.read_text())
        except (OSError, ValueError) as e:
            summary = f"unreadable ({e})"
        if not isinstance(summary, dict):
            warn(f"[ddlnl] warning: {summary_file} is {summary if isinstance(summary, str) else 'not a JSON object'}; "
                 "realising the noise again")
            return None
        if summary.get("clean_labels_sha") != labels_digest(clean) or summary.get("type") != spec.type or summary.get("seed") != spec.seed:
            return None
        if spec.takes_rate and abs(summary.get("nominal_rate", -1) - spec.rate) > 1e-9:
            return None
        recorded = summary.get("labels_sha256")
        if recorded is None or sha256_file(labels_file) != recorded:
            why = "no recorded sha256" if recorded is None else "sha256 does not match noise.json"
            if recorded is not None:
                warn(f"[ddlnl] warning: {labels_file} is damaged ({why}); realising the noise again")
            return None
        try:
            labels = np.load(labels_file, allow_pickle=False)
        except (OSError, ValueError, EOFError) as e:
            warn(f"[ddlnl] warning: {labels_file} is unreadable ({e}); realising the noise again")
            return None
    if labels.shape != clean.shape or not np.issubdtype(labels.dtype, np.integer):
        warn(f"[ddlnl] warning: {labels_file} holds {labels.dtype} {labels.shape}, not {clean.shape[0]} labels; realising the noise again")
        return None
    labels = labels.astype(np.int64)
    C = int(max(clean.max(), labels.max())) + 1
    return NoisyLabels(labels, spec, summary["nominal_rate"], float(np.mean(labels != clean)), empirical_transition(clean, labels, C))


def _warn(msg: str) -> None:
    import sys

    print(msg, file=sys.stderr)


def prepare_noise_only(dataset: str, noise: NoiseSpec, *, data_root=None, imbalance: float | None = None, seed: int = 0,
                       labels: str | Path | None = None, clean_labels: str | Path | None = None):
    """The training split and one noise realisation, without preprocessing (``ddlnl noise``)."""
    root = resolve_data_root(data_root)
    splits = load_dataset(dataset, root, imbalance=imbalance, seed=seed)
    if noise.type == GIVEN_NOISE:
        splits, given, clean_known = _apply_label_files(dataset, root, splits, labels, clean_labels)
        return splits, given_noisy_labels(given, splits.train.labels if clean_known else None, noise, splits.num_classes)
    noisy = make_noisy_labels(dataset, splits.train.labels, splits.num_classes, noise, data_root=root, train_index=splits.train_index,
                              images=splits.train.images)
    return splits, noisy
