"""The steps of one experiment as functions of its :class:`~ddlnl.spec.ExperimentSpec`, for Python callers.

:func:`distill` is ``ddlnl distill``; :func:`evaluate` scores a set under the spec's preset, as
``ddlnl evaluate`` does. :func:`ddlnl.run.run_experiment` runs every step, with the controls and
baselines, into a resumable run folder. (They live here, not as ``ddlnl.distill`` /
``ddlnl.evaluate``: those names are the package's distiller package and evaluation module.)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch

from ddlnl.baselines.cleaners import check_kept
from ddlnl.data.registry import load_dataset
from ddlnl.evaluate import EvalResult, evaluate_synthetic_set
from ddlnl.experiment import PreparedData, test_subset
from ddlnl.spec import ExperimentSpec
from ddlnl.synset import SyntheticSet
from ddlnl.utils.runtime import resolve_device, seed_everything


def distill(spec: ExperimentSpec, *, data: PreparedData | None = None, log: Callable[[str], None] = print,
            progress: bool = False, checkpoint: str | Path | None = None, checkpoint_every_s: float = 300.0) -> SyntheticSet:
    """The set ``spec.method`` distils from the spec's noisy training set, stamped with what made it.

    With ``spec.clean_first`` the method distils only the samples the cleaner keeps (``meta["clean_first"]``).
    ``data``: the spec's prepared data when the caller has it already (else prepared here);
    ``checkpoint``: a file the distillation loop saves to and resumes from.
    """
    distiller, device = spec.distiller(), resolve_device(spec.device)
    seed_everything(spec.seed)
    data = spec.prepare_data() if data is None else data
    cleaned = None
    if spec.clean_first is not None:  # the two-stage baseline: the method distils the samples the cleaner keeps
        cleaned = spec.clean(data, device, log=log, progress=progress)
        check_kept(cleaned, data.noisy.labels, data.num_classes, spec.ipc, spec.clean_first)
    ctx = spec.distill_context(data, device, log=log, progress=progress,
                               checkpoint=None if checkpoint is None else Path(checkpoint), checkpoint_every_s=checkpoint_every_s,
                               keep=None if cleaned is None else cleaned.kept)
    synset = distiller.run(ctx, spec.ipc)
    if cleaned is not None:
        ctx.timings["clean_first"] = cleaned.seconds
        synset.meta["clean_first"] = {"cleaner": spec.clean_first, "key": spec.clean_key(), "kept": int(cleaned.kept.size),
                                      "images_processed": cleaned.images_processed}
    synset.meta.update(spec.synset_meta(data) | {"timings_s": ctx.timings})
    return synset


def evaluate(synset: SyntheticSet, spec: ExperimentSpec, *, runs: int | None = None, hard_labels: bool = False,
             progress: bool = False) -> EvalResult:
    """Clean test accuracy of fresh networks trained on ``synset`` with the spec's evaluation recipe.

    The test images are the preset's (``data.test_size``), preprocessed as the set was; ``runs``
    defaults to the preset's ``evaluation.runs``; ``hard_labels`` trains on the argmax labels.
    """
    preset = spec.resolved.preset
    splits = load_dataset(spec.dataset, spec.data_root)  # only the test split is used: it is never long-tailed
    test = test_subset(splits.test, preset["data"], spec.seed)
    seed_everything(spec.seed)
    return evaluate_synthetic_set(synset, preset, test_images=synset.preprocess.apply_uint8(test.images),
                                  test_labels=torch.as_tensor(test.labels, dtype=torch.long), num_classes=splits.num_classes,
                                  runs=preset["evaluation"]["runs"] if runs is None else runs, seed=spec.seed, device=resolve_device(spec.device),
                                  progress=progress, desc="evaluate", labels=synset.hard_labels() if hard_labels else None)
