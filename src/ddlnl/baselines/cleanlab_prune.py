"""``cleanlab`` (optional): prune the samples confident learning flags, then CE on the rest.

Out-of-sample predicted probabilities come from ``folds``-fold cross-validation with the
CE baseline's network and recipe; ``cleanlab.filter.find_label_issues(labels, pred_probs,
filter_by=...)`` flags label issues; the CE baseline is then trained on the kept samples.
cleanlab is AGPL-3.0, so it is *not* a dependency of ddlnl: install it yourself
(``pip install cleanlab``) to enable this baseline; without it the run records the
baseline as skipped and goes on.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ddlnl.baselines.base import (
    Baseline,
    BaselineContext,
    BaselineUnavailable,
    Prepared,
    RunOutcome,
    register_baseline,
)
from ddlnl.baselines.noise_rate import cross_validated_probs
from ddlnl.data.noise import selection_scores
from ddlnl.errors import ConfigError

MISSING = "cleanlab is not installed, so the optional 'cleanlab' baseline is skipped (cleanlab is AGPL-3.0 and not a ddlnl dependency)"
HOW = "pip install cleanlab into this environment to enable it, or leave 'cleanlab' out of --baselines"


def import_cleanlab_filter():
    try:
        from cleanlab import filter as cl_filter
    except ImportError:
        raise BaselineUnavailable(MISSING, HOW) from None
    return cl_filter


def label_issues(ctx: BaselineContext, cfg, folds: int, filter_by: str, purpose: str) -> tuple[np.ndarray, int]:
    """The samples cleanlab flags (a boolean mask) from ``folds``-fold out-of-fold probabilities of the
    ``cfg`` recipe (seed streams ``<purpose>.folds`` / ``<purpose>.fold_network``), and the images processed.
    Shared by this baseline and the ``cleanlab`` cleaner of ``--clean-first``."""
    cl_filter = import_cleanlab_filter()
    labels = ctx.data.noisy.labels.astype(np.int64)
    pred_probs, processed = cross_validated_probs(ctx, cfg, folds, purpose)
    return np.asarray(cl_filter.find_label_issues(labels, pred_probs, filter_by=filter_by), dtype=bool), processed


@register_baseline
class CleanlabPrune(Baseline):
    name = "cleanlab"
    description = "confident-learning pruning (cleanlab find_label_issues) + CE on the kept samples; optional"

    @dataclass(frozen=True)
    class Options:
        folds: int = 5
        filter_by: str = "prune_by_noise_rate"
        train: dict = field(default_factory=dict)

        def __post_init__(self):
            if not isinstance(self.folds, int) or self.folds < 2:
                raise ConfigError(f"cleanlab folds must be an integer >= 2, got {self.folds!r}", "use folds: 5")

    def check(self) -> None:
        import_cleanlab_filter()

    def prepare(self, ctx: BaselineContext) -> Prepared:
        """Cross-validated predicted probabilities, then cleanlab's label issues: the samples every run prunes."""
        d, o = ctx.data, self.options
        issues, processed = label_issues(ctx, self.train_config(ctx.preset), o.folds, o.filter_by, "cleanlab")
        self._keep = keep = np.flatnonzero(~issues)
        details = {"kept": int(keep.size), "flagged": int(issues.sum())}
        if d.label_correct is not None:
            details["selection"] = selection_scores(~issues, d.label_correct) | {"what": "samples cleanlab does not flag"}
            details["flagged_noisy_fraction"] = float((~d.label_correct[issues]).mean()) if issues.any() else None
        return Prepared(processed, details)

    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        """The CE baseline's run on the samples :meth:`prepare` kept."""
        d = ctx.data
        return self.train_one_network(ctx, seed, d.x_train[self._keep], d.y_train_noisy[self._keep])
