"""Cleaners: which training samples to keep, judged from the noisy labels alone (``--clean-first``).

A cleaner trains briefly on the full noisy set and returns the positions it keeps, with what that
cost. ``ddlnl run --clean-first NAME`` then lets any registered distiller work on the kept subset
only: the two-stage "clean, then distil" baseline. The run, not the cleaner, scores the kept set
against the clean labels (a cleaner never sees them).

``loss_gmm``  a warm-up network's per-sample CE losses, a two-component Gaussian mixture per noisy
              class; keep the samples whose low-loss posterior exceeds ``threshold``
              (:func:`loss_gmm_split`: the trusted split of :mod:`ddlnl.trust`);
``dividemix`` DivideMix's two-network warm-up and its first co-divide (one global mixture per
              network); keep the samples both networks' mixtures call clean;
``cleanlab``  the samples cleanlab's confident learning does not flag (optional package).

Every cleaner trains the preset's ``model`` with the ``baseline.train`` recipe (``train`` overrides
it), for ``epochs`` epochs: by default the recipe's own, at most 10 (DivideMix's CIFAR warm-up):
long enough to rank the samples by loss, short enough not to memorise the wrong labels.
Seeds come from the streams ``clean_first.<name>.*`` of the run seed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import ClassVar

import numpy as np

from ddlnl.baselines.base import BaselineContext, BaselineUnavailable
from ddlnl.baselines.cleanlab_prune import import_cleanlab_filter, label_issues
from ddlnl.baselines.coteaching import check_method_loss
from ddlnl.baselines.dividemix import DivideMix, co_divide, train_two_networks
from ddlnl.errors import ConfigError
from ddlnl.train import TrainConfig, recipe_key
from ddlnl.trust import LossSplit, clean_probability, per_sample_ce, warmup_loss_split
from ddlnl.utils.registry import Configurable, Registry
from ddlnl.utils.seeds import stream_seed

MAX_WARMUP_EPOCHS = 10  # DivideMix's CIFAR-10 warm-up: the default cap on a cleaner's training


@dataclass
class Cleaned:
    """What a cleaner kept (sorted positions in the training set) and what it cost."""

    kept: np.ndarray
    seconds: float
    images_processed: int
    details: dict = field(default_factory=dict)


def loss_gmm_split(ctx: BaselineContext, cfg: TrainConfig, *, threshold: float = 0.5, per_class: bool = True,
                   purpose: str = "clean_first.loss_gmm") -> LossSplit:
    """The trusted split of a warm-up network on ``ctx``'s noisy labels (:func:`ddlnl.trust.warmup_loss_split`).
    Seeds: ``<purpose>.network``, ``<purpose>.gmm``."""
    d = ctx.data
    return warmup_loss_split(ctx.model, d.x_train, d.y_train_noisy, d.num_classes, cfg, seed=ctx.seed, threshold=threshold,
                             per_class=per_class, purpose=purpose, progress=ctx.progress)


class Cleaner(Configurable):
    """Keeps the training samples it judges correctly labelled; :meth:`split` is the one method to write."""

    kind = "cleaner"
    description: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Options:
        epochs: int | None = None  # None: baseline.train's epochs, at most MAX_WARMUP_EPOCHS
        train: dict = field(default_factory=dict)  # overrides of baseline.train for the cleaner's networks

        def __post_init__(self):
            if self.epochs is not None and (not isinstance(self.epochs, int) or isinstance(self.epochs, bool) or self.epochs < 1):
                raise ConfigError(f"cleaner epochs must be a positive integer or null, got {self.epochs!r}",
                                  "e.g. --clean-option epochs=10")
            if not isinstance(self.train, dict):
                raise ConfigError(f"cleaner train must be a mapping of training options, got {self.train!r}",
                                  "e.g. --clean-option 'train={lr: 0.02}'")

    def check(self) -> None:
        """Raise ConfigError when an optional dependency is missing."""

    def recipe(self, preset: dict) -> dict:
        """The training recipe of the cleaner's networks (a dict, as in a preset)."""
        train = dict(preset["baseline"]["train"]) | dict(self.options.train)
        epochs = self.options.epochs or min(int(train["epochs"]), MAX_WARMUP_EPOCHS)
        return train | {"epochs": epochs}

    def train_config(self, preset: dict) -> TrainConfig:
        return TrainConfig.from_dict(self.recipe(preset))

    def key(self, preset: dict) -> dict:
        """Everything its kept set depends on beyond the data: a stage key."""
        return {"name": self.name, "options": self.options_dict(), "recipe": recipe_key({"train": self.recipe(preset)})["train"],
                "model": preset["model"]}

    def clean(self, ctx: BaselineContext) -> Cleaned:
        """Run the split and time it; ``kept`` are sorted training positions."""
        self.check()
        start = time.perf_counter()
        mask, processed, details = self.split(ctx)
        kept = np.flatnonzero(mask)
        counts = np.bincount(np.asarray(ctx.data.noisy.labels)[kept], minlength=ctx.data.num_classes)
        details = {"kept": int(kept.size), "removed": int(mask.size - kept.size), "kept_per_class": counts.tolist()} | details
        return Cleaned(kept, time.perf_counter() - start, int(processed), details)

    def split(self, ctx: BaselineContext) -> tuple[np.ndarray, int, dict]:
        """(boolean keep mask over the training set, images processed, diagnostics without clean labels)."""
        raise NotImplementedError


CLEANERS = Registry("cleaner", Cleaner, "ddlnl.cleaners")
register_cleaner = CLEANERS.register
list_cleaners = CLEANERS.names
create_cleaner = CLEANERS.create


@register_cleaner
class LossGMM(Cleaner):
    name = "loss_gmm"
    description = "a warm-up network's per-sample losses, a 2-component GMM per class; keep the low-loss component"

    @dataclass(frozen=True)
    class Options(Cleaner.Options):
        threshold: float = 0.5  # keep samples with P(low-loss component) > threshold
        per_class: bool = True  # one mixture per noisy class (False: one over all samples, as DivideMix)

        def __post_init__(self):
            super().__post_init__()
            if not isinstance(self.threshold, (int, float)) or isinstance(self.threshold, bool) or not 0 <= self.threshold < 1:
                raise ConfigError(f"loss_gmm threshold must be in [0, 1), got {self.threshold!r}", "use threshold=0.5")

    def split(self, ctx):
        o = self.options
        s = loss_gmm_split(ctx, self.train_config(ctx.preset), threshold=o.threshold, per_class=o.per_class)
        return s.trusted, s.images_processed, {"warmup_epochs": self.recipe(ctx.preset)["epochs"]}


@register_cleaner
class DivideMixSplit(Cleaner):
    name = "dividemix"
    description = "DivideMix's warm-up of two networks and its first co-divide; keep what both call clean"

    @dataclass(frozen=True)
    class Options(Cleaner.Options):
        p_threshold: float = 0.5
        conf_penalty: bool = False  # DivideMix's warm-up penalty for asymmetric noise

        def __post_init__(self):
            super().__post_init__()
            DivideMix.Options(p_threshold=self.p_threshold)  # DivideMix's own range check

    def split(self, ctx):
        o, d = self.options, ctx.data
        cfg = self.train_config(ctx.preset)
        check_method_loss(cfg, "the dividemix cleaner")
        dm = DivideMix.Options(warmup=cfg.epochs, p_threshold=o.p_threshold, conf_penalty=o.conf_penalty)
        nets, _, stats = train_two_networks(ctx, dm, cfg, stream_seed(ctx.seed, "clean_first.dividemix.network"), correct=None,
                                            desc="clean_first dividemix warm-up")
        keep, n = np.ones(len(d.noisy.labels), dtype=bool), len(d.noisy.labels)
        labelled = []
        for k, net in enumerate(nets):
            prob = clean_probability(per_sample_ce(net, d.x_train, d.y_train_noisy), max_iter=dm.gmm_max_iter, tol=dm.gmm_tol,
                                     reg_covar=dm.gmm_reg_covar, seed=stream_seed(ctx.seed, "clean_first.dividemix.gmm", k))
            lab, _ = co_divide(prob, o.p_threshold)
            keep &= np.isin(np.arange(n), lab)
            labelled.append(int(lab.size))
        return keep, stats.images_processed + 2 * n, {"warmup_epochs": cfg.epochs, "labelled_per_network": labelled}


@register_cleaner
class CleanlabSplit(Cleaner):
    name = "cleanlab"
    description = "the samples cleanlab's confident learning does not flag (out-of-fold probabilities); optional"

    @dataclass(frozen=True)
    class Options(Cleaner.Options):
        folds: int = 5
        filter_by: str = "prune_by_noise_rate"

        def __post_init__(self):
            super().__post_init__()
            if not isinstance(self.folds, int) or isinstance(self.folds, bool) or self.folds < 2:
                raise ConfigError(f"cleanlab folds must be an integer >= 2, got {self.folds!r}", "use folds=5")

    def check(self) -> None:
        try:
            import_cleanlab_filter()
        except BaselineUnavailable:
            raise ConfigError("--clean-first cleanlab needs the cleanlab package, which is not installed "
                              "(cleanlab is AGPL-3.0 and not a ddlnl dependency)",
                              "pip install cleanlab into this environment, or use --clean-first loss_gmm") from None

    def split(self, ctx):
        o = self.options
        issues, processed = label_issues(ctx, self.train_config(ctx.preset), o.folds, o.filter_by, "clean_first.cleanlab")
        return ~issues, processed, {"flagged": int(issues.sum())}


def check_kept(cleaned: Cleaned, labels: np.ndarray, num_classes: int, ipc: int, name: str) -> None:
    """Every noisy class keeps at least ``ipc`` samples after cleaning, or a ConfigError says what to change."""
    counts = np.bincount(np.asarray(labels)[cleaned.kept], minlength=num_classes)
    if int(counts.min()) < ipc:
        c = int(counts.argmin())
        raise ConfigError(f"after cleaning with {name}, noisy class {c} keeps {int(counts.min())} training images, fewer than "
                          f"IPC {ipc} (kept per class: {counts.tolist()})",
                          f"use --ipc {max(int(counts.min()), 1)} or less, or let the cleaner keep more (a lower "
                          "--clean-option threshold=0.3 for loss_gmm, p_threshold=0.3 for dividemix; a longer warm-up, epochs=N)")
