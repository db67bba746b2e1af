"""``tad``: Trust-Aware Diversion (Wu et al., ICML 2025) on DATM, as we read it (docs/tad.md).

TAD's paper and code were out of reach; its abstract and summaries give the parts, the details
are ours. Three changes to DATM (:mod:`ddlnl.distill.datm`), nothing else:

* **Experts train on the trusted part.** After ``trust_warmup`` epochs on every sample, each
  expert's per-sample CE losses are split by a two-component mixture per noisy class
  (:func:`ddlnl.trust.trust_split`), refreshed every ``refresh_every`` epochs with the network
  being trained; each epoch sweeps only the trusted samples, plus the recalled ones
  (:class:`ddlnl.trust.TrustHook`).
* **Recall.** An untrusted sample whose embedding lies as close (Mahalanobis, Ledoit-Wolf shared
  covariance) to its nearest trusted class anchor as that class's own trusted samples do
  (``recall_quantile``), and points the same way (cosine >= ``recall_cosine``), trains under
  that class's label (``recall: false`` turns it off).
* **Initialisation.** The split of expert 0 at ``label_epoch`` (default: final) is the pool of
  DATM's initial images: its expert filter (``pix_init: samples_predicted_correctly``) or a
  random draw (``real``/``trusted``) among trusted samples only; soft labels as DATM's. The run
  scores the final ``trusted`` and ``recalled`` sets against the clean labels.

The TAD options enter the experts' cache key (``ExpertConfig.hook_key``), so TAD's experts never
mix with DATM's. The split in force is the hook's state, saved in an expert's partial file, so an
interrupted expert resumes with it.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from functools import partial

import numpy as np

from ddlnl.distill.base import DistillContext, register_distiller
from ddlnl.distill.datm import DATM, expert_network
from ddlnl.distill.mtt import TrajectoryMatchingBase, expert_length
from ddlnl.errors import ConfigError
from ddlnl.experts import ExpertConfig
from ddlnl.trust import TrustHook, TrustRule, TrustSplit, trust_split
from ddlnl.utils.seeds import stream_seed

# The options that change how the experts train, hence their cache key.
EXPERT_OPTIONS = ("trust_threshold", "trust_warmup", "refresh_every", "recall", "recall_quantile", "recall_cosine",
                  "recall_fit_samples")


@register_distiller
class TAD(DATM):
    name = "tad"

    @dataclass(frozen=True)
    class Options(DATM.Options):
        trust_warmup: int = 1  # expert epochs on every sample before the first split
        refresh_every: int = 1  # epochs between two splits of an expert's training set
        recall: bool = True  # relabel untrusted samples close to a trusted class anchor
        recall_quantile: float = 0.5  # recalled when as close to the anchor as this quantile of its trusted samples
        recall_cosine: float = 0.3  # ... and cosine similarity to the anchor at least this (centred features)
        recall_fit_samples: int = 1000  # trusted samples the shared covariance is fitted on (at most)

        def __post_init__(self):
            super().__post_init__()
            n = expert_length(self)
            for name, low, high in (("trust_warmup", 0, n - 1), ("refresh_every", 1, n)):
                v = getattr(self, name)
                if not isinstance(v, int) or isinstance(v, bool) or not low <= v <= high:
                    raise ConfigError(f"tad {name} must be an integer in [{low}, {high}] (the experts train {n} epochs), "
                                      f"got {v!r}", f"set {name} to e.g. {max(low, 1)}")

        def trust_rule(self) -> TrustRule:
            return TrustRule(threshold=self.trust_threshold, recall=self.recall, recall_quantile=self.recall_quantile,
                             recall_cosine=self.recall_cosine, recall_fit_samples=self.recall_fit_samples)

    KEY_ONLY_IF_SET = TrajectoryMatchingBase.KEY_ONLY_IF_SET  # a new method: every option in its keys

    def __init__(self, **options):
        super().__init__(**options)
        self.hooks: list[TrustHook] = []  # the hooks of the experts this run trained (none on a cache hit)

    def expert_config(self, o=None) -> ExpertConfig:
        """DATM's experts, each trained with a :class:`TrustHook`; the TAD options are in the key."""
        o = self.options if o is None else o
        cfg = super().expert_config(o)
        names = {f.name for f in fields(cfg)}
        values = {f: getattr(cfg, f) for f in names if f not in ("hook", "hook_key")}
        return ExpertConfig(**values, hook=partial(self.make_hook, o),
                            hook_key={"method": "tad"} | {k: getattr(o, k) for k in EXPERT_OPTIONS})

    def make_hook(self, o, ctx, k: int) -> TrustHook:
        """Expert k's hook; its splits draw from ``stream_seed(ctx.seed, "tad.split", k)``."""
        hook = TrustHook(o.trust_rule(), ctx.num_classes, stream_seed(ctx.seed, "tad.split", k), warmup=o.trust_warmup,
                         refresh_every=o.refresh_every)
        self.hooks.append(hook)
        return hook

    def trusted_split(self, ctx: DistillContext, experts, row: int, o) -> TrustSplit:
        """Expert 0's split at ``row`` with recall; records ``trusted`` and ``recalled``."""
        split = trust_split(expert_network(ctx, experts[0][row]), ctx.images, ctx.labels, ctx.num_classes, o.trust_rule(),
                            ctx.seed_for("tad.final_split"))
        ctx.images_processed += split.images_processed
        ctx.record_selection("trusted", np.flatnonzero(split.trusted),
                             what="samples expert 0's per-class loss mixture trusts at the label epoch")
        recalled = np.flatnonzero(split.recalled)
        ctx.record_selection("recalled", recalled, labels=split.labels[recalled],
                             what="untrusted samples recalled with a pseudo-label (precision: their noisy label was right; "
                                  "label accuracy: their pseudo-label is the clean one)")
        self.final_split = {"trusted": int(split.trusted.sum()), "recalled": int(recalled.size),
                            "recalled_relabelled": int((split.labels[recalled] != np.asarray(ctx.labels)[recalled]).sum()),
                            "seconds": split.seconds, "images_processed": split.images_processed}
        return split

    def cost_report(self) -> dict:
        """What the experts' splits cost in this run (zero on a cache hit) and the final split."""
        refreshes = [r for h in self.hooks for r in h.refreshes]
        return {"refreshes": len(refreshes), "refresh_seconds": sum(r["seconds"] for r in refreshes),
                "refresh_images_processed": sum(r["images_processed"] for r in refreshes),
                "expert_splits": refreshes[-5:], "final_split": getattr(self, "final_split", None)}

    def distill(self, ctx: DistillContext, ipc: int):
        synset = super().distill(ctx, ipc)
        synset.meta["tad"] = self.cost_report()
        return synset

    def init_only(self, ctx: DistillContext, ipc: int):
        synset = super().init_only(ctx, ipc)
        synset.meta["tad"] = self.cost_report()
        return synset
