"""The baseline interface and its registry.

A baseline trains on the *full noisy* training set (never on clean labels) and is tested
with the common protocol: the preset's ``model``, its ``baseline.train`` recipe (optimiser,
schedule, augmentation, epochs, batch size), ``baseline.runs`` networks, final-epoch clean
test accuracy (``ce_selected``: of the epoch it chose on the noisy validation labels). Only the
learning-with-noisy-labels method differs between baselines.

Implementing a new baseline
---------------------------
1. Write ``ddlnl/baselines/<name>.py`` with a subclass of :class:`Baseline` that sets
   ``name`` and an ``Options`` dataclass (the method's hyper-parameters with the paper's
   CIFAR-10 defaults). :meth:`Baseline.train` is the one method a baseline implements; its
   default is the one trainer with :meth:`Baseline.train_config` on the full noisy set (enough
   for a loss: override ``train_config``). A method that trains differently overrides
   ``train`` and still calls :func:`ddlnl.train.train_network`, with a
   :class:`ddlnl.train.TrainHook` (sample selection, co-divide) and, if it needs them, several
   networks. Work shared by all runs (cleanlab's pruning) goes in :meth:`Baseline.prepare`.
   A baseline that needs something of the data (``ce_selected``: a validation split) says so in
   :meth:`Baseline.check_data`; without it the run records the baseline as skipped.
2. Decorate it with ``@register_baseline`` and import the module in ``baselines/__init__.py``.
3. Give it an entry under ``baselines:`` in each preset (``smoke``, ``quick``, ``paper``).
   (A baseline in another package is found through its entry point in the group
   ``ddlnl.baselines`` and brings its preset blocks in ``preset_options`` instead; docs/api.md.)

Every option block may carry ``train: {...}``: overrides of the preset's ``baseline.train``
for this baseline only (e.g. a longer schedule). Leave it out to keep the shared recipe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from ddlnl.errors import ConfigError, DdlnlError
from ddlnl.evaluate import EvalResult, build_model, evaluate_runs
from ddlnl.train import TrainConfig, TrainHook, TrainStats, train_network
from ddlnl.utils.registry import Configurable, Registry
from ddlnl.utils.runtime import generator as make_generator


class BaselineUnavailable(DdlnlError):
    """An optional baseline whose extra dependency is missing; the run records it as skipped."""


@dataclass
class BaselineContext:
    """Everything a baseline may read. ``data.noisy.labels`` are the training labels."""

    data: object  # ddlnl.experiment.PreparedData
    preset: dict
    device: torch.device = torch.device("cpu")
    seed: int = 0
    progress: bool = False
    log: Callable[[str], None] = print

    @property
    def runs(self) -> int:
        return int(self.preset["baseline"].get("runs", 1))

    def model(self, num_classes: int | None = None) -> nn.Module:
        d = self.data
        return build_model(self.preset["model"], num_classes or d.num_classes, d.x_train.shape[-1]).to(self.device)


@dataclass
class RunOutcome:
    """One trained run: the network(s) to test and what training cost."""

    net: nn.Module
    images_processed: int
    details: dict = field(default_factory=dict)
    stats: TrainStats | None = None  # the trainer's statistics (epoch losses), when one network was trained


@dataclass
class Prepared:
    """What :meth:`Baseline.prepare` did once for all runs: its cost and its diagnostics."""

    images_processed: int = 0
    details: dict = field(default_factory=dict)


class Baseline(Configurable):
    kind = "baseline"
    description: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Options:
        train: dict = field(default_factory=dict)

    def __init__(self, **options):
        super().__init__(**options)
        self.details: dict = {}

    def train_config(self, preset: dict, **extra) -> TrainConfig:
        """The preset's shared baseline recipe, with this baseline's ``train`` overrides."""
        over = dict(getattr(self.options, "train", None) or {})
        return TrainConfig.from_dict(dict(preset["baseline"]["train"]) | over, **extra)

    def check(self) -> None:
        """Raise :class:`BaselineUnavailable` when an optional dependency is missing."""

    def check_data(self, data) -> None:
        """Raise :class:`BaselineUnavailable` when the prepared data lacks what the method needs
        (``ce_selected``: a validation split); the run then records the baseline as skipped."""

    selection: dict | None = None  # after run(): how well its kept samples pick the correctly labelled ones

    def prepare(self, ctx: BaselineContext) -> Prepared:
        """Work done once before the runs, shared by all of them (cleanlab: find the samples to prune)."""
        return Prepared()

    def run(self, ctx: BaselineContext) -> EvalResult:
        """Train ``ctx.runs`` networks (seeds from the ``baseline`` stream) and test each on the clean test set."""
        self.check()
        self.check_data(ctx.data)
        start = time.perf_counter()
        prepared = self.prepare(ctx)
        d = ctx.data
        per_run = []

        def train_one(r: int, run_seed: int):
            outcome = self.train(ctx, run_seed)
            per_run.append(outcome.details)
            return outcome.net, outcome.images_processed

        result = evaluate_runs(lambda seeds: [train_one(r, s) for r, s in enumerate(seeds)], runs=ctx.runs, seed=ctx.seed, test_images=d.x_test, test_labels=d.y_test,
                               num_classes=d.num_classes, train=self.train_config(ctx.preset), model=ctx.preset["model"],
                               purpose="baseline", validation=d.validation)
        result.images_processed += prepared.images_processed
        result.seconds = time.perf_counter() - start
        self.details = dict(prepared.details) | ({"runs": per_run} if any(per_run) else {})
        self.selection = prepared.details.get("selection") or mean_selection([r["selection"] for r in per_run if "selection" in r])
        return result

    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        """Train one run's network(s) from ``seed`` and return the network to test.

        Default: one network (``torch.manual_seed(seed)``) trained by the one trainer with
        :meth:`train_config` on the full noisy training set, exactly as ``evaluate_set`` trains a run.
        """
        d = ctx.data
        return self.train_one_network(ctx, seed, d.x_train, d.y_train_noisy)

    def train_one_network(self, ctx: BaselineContext, seed: int, images: torch.Tensor, labels: torch.Tensor, *,
                          desc: str | None = None, hook: TrainHook | None = None) -> RunOutcome:
        """A fresh network from ``seed`` trained on (images, labels) by :func:`ddlnl.train.train_network`
        (with ``hook``, e.g. model selection at the end of each epoch)."""
        torch.manual_seed(seed)
        net = ctx.model()
        stats = train_network(net, images, labels, self.train_config(ctx.preset), generator=make_generator(seed),
                              progress=ctx.progress, desc=desc or self.name, hook=hook)
        return RunOutcome(net, stats.images_processed, stats=stats)


class Ensemble(nn.Module):
    """Sum of the softmax outputs of several networks (DivideMix tests with its two networks)."""

    def __init__(self, *nets: nn.Module):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(torch.softmax(n(x), dim=1) for n in self.nets)


BASELINES = Registry("baseline", Baseline, "ddlnl.baselines")  # also the entry points of other packages
_REGISTRY = BASELINES.classes
CANONICAL_ORDER = ("ce", "gce", "sce", "coteaching", "dividemix", "cleanlab", "ce_converged", "ce_selected")
register_baseline = BASELINES.register
list_baselines = BASELINES.names
baseline_class = BASELINES.get
create_baseline = BASELINES.create


def parse_baselines(spec: str | list[str] | None) -> list[str]:
    """``"ce,gce"`` or ``["ce", "gce"]`` or ``"all"`` → validated, de-duplicated names (``ce`` first)."""
    if spec is None or spec == "":
        return ["ce"]
    items = spec.split(",") if isinstance(spec, str) else list(spec)
    names = [s.strip() for s in items if s and s.strip()]
    if names == ["all"]:
        names = sorted(list_baselines(), key=lambda n: (CANONICAL_ORDER.index(n) if n in CANONICAL_ORDER else 99, n))
    out = []
    for n in names:
        if n not in BASELINES:
            raise ConfigError(f"unknown baseline {n!r}", f"use a comma-separated list of: {', '.join(list_baselines())} (or 'all')")
        if n not in out:
            out.append(n)
    return sorted(out, key=lambda n: (n != "ce", out.index(n)))


def mean_selection(per_run: list[dict]) -> dict | None:
    """The runs' selection scores averaged (each run keeps its own samples); None without any."""
    if not per_run:
        return None
    keys = ("precision", "recall", "kept_fraction")
    return {k: float(np.mean([r[k] for r in per_run])) for k in keys} | {"runs": len(per_run), "what": per_run[0]["what"]}
