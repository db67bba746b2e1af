"""The baseline interface and its registry.

A baseline trains on the *full noisy* training set (never on clean labels) and is tested
with the common protocol: the preset's ``model``, its ``baseline.train`` recipe (optimiser,
schedule, augmentation, epochs, batch size), ``baseline.runs`` networks, final-epoch clean
test accuracy. Only the learning-with-noisy-labels method differs between baselines.

Implementing a new baseline
---------------------------
1. Write ``ddlnl/baselines/<name>.py`` with a subclass of :class:`Baseline` that sets
   ``name`` and an ``Options`` dataclass (the method's hyper-parameters with the paper's
   CIFAR-10 defaults) and implements :meth:`Baseline.train`.
2. Decorate it with ``@register_baseline`` and import the module in ``baselines/__init__.py``.
3. Give it an entry under ``baselines:`` in each preset (``smoke``, ``quick``, ``paper``).

Every option block may carry ``train: {...}``: overrides of the preset's ``baseline.train``
for this baseline only (e.g. a longer schedule). Leave it out to keep the shared recipe.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

import torch
from torch import nn

from ddlnl.errors import ConfigError, DdlnlError
from ddlnl.evaluate import EvalResult, build_model, evaluate_runs
from ddlnl.train import TrainConfig
from ddlnl.utils.registry import Configurable, Registry


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


class Baseline(Configurable, ABC):
    kind = "baseline"
    description: ClassVar[str] = ""

    @dataclass
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

    def run(self, ctx: BaselineContext) -> EvalResult:
        """Train ``ctx.runs`` networks (seeds ``seed*1000 + r``) and test each on the clean test set."""
        self.check()
        d = ctx.data
        per_run = []

        def train_one(r: int, run_seed: int):
            outcome = self.train(ctx, run_seed)
            per_run.append(outcome.details)
            return outcome.net, outcome.images_processed

        result = evaluate_runs(train_one, runs=ctx.runs, seed=ctx.seed, test_images=d.x_test, test_labels=d.y_test,
                               num_classes=d.num_classes, train=self.train_config(ctx.preset), model=ctx.preset["model"])
        self.details = {"runs": per_run} if any(per_run) else {}
        return result

    @abstractmethod
    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        """Train one run's network(s) from ``seed`` and return the network to test."""


class Ensemble(nn.Module):
    """Sum of the softmax outputs of several networks (DivideMix tests with its two networks)."""

    def __init__(self, *nets: nn.Module):
        super().__init__()
        self.nets = nn.ModuleList(nets)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return sum(torch.softmax(n(x), dim=1) for n in self.nets)


_BASELINES = Registry("baseline")
_REGISTRY = _BASELINES.classes
CANONICAL_ORDER = ("ce", "gce", "sce", "coteaching", "dividemix", "cleanlab")
register_baseline = _BASELINES.register
list_baselines = _BASELINES.names
create_baseline = _BASELINES.create


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
        if n not in _REGISTRY:
            raise ConfigError(f"unknown baseline {n!r}", f"use a comma-separated list of: {', '.join(list_baselines())} (or 'all')")
        if n not in out:
            out.append(n)
    return sorted(out, key=lambda n: (n != "ce", out.index(n)))
