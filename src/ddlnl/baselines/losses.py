"""``ce``, ``gce`` and ``sce``: the one trainer on the full noisy set, with a different loss.

GCE (Zhang & Sabuncu, NeurIPS 2018): L_q = (1 - p_y^q) / q with q = 0.7.
SCE (Wang et al., ICCV 2019): alpha * CE + beta * RCE, with log 0 := A = -4 in RCE;
CIFAR-10 values alpha = 0.1, beta = 1.0. Both are ``TrainConfig.loss`` options of
:func:`ddlnl.train.train_network`, so the networks, augmentation, optimiser and schedule
are exactly those of the CE baseline.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddlnl.baselines.base import Baseline, register_baseline
from ddlnl.train import TrainConfig


class _LossBaseline(Baseline):
    """The default :meth:`Baseline.train` (the one trainer on the full noisy set) with this loss."""

    def loss_options(self) -> dict:
        return {"loss": "ce"}

    def train_config(self, preset: dict, **extra) -> TrainConfig:
        return super().train_config(preset, **(self.loss_options() | extra))


@register_baseline
class CrossEntropy(_LossBaseline):
    name = "ce"
    description = "cross-entropy on the full noisy set (results.full_noisy)"


@register_baseline
class GeneralizedCE(_LossBaseline):
    name = "gce"
    description = "generalized cross-entropy L_q (Zhang & Sabuncu 2018)"

    @dataclass(frozen=True)
    class Options:
        q: float = 0.7
        train: dict = field(default_factory=dict)

    def loss_options(self) -> dict:
        return {"loss": "gce", "gce_q": self.options.q}


@register_baseline
class SymmetricCE(_LossBaseline):
    name = "sce"
    description = "symmetric cross-entropy alpha*CE + beta*RCE (Wang et al. 2019)"

    @dataclass(frozen=True)
    class Options:
        alpha: float = 0.1
        beta: float = 1.0
        A: float = -4.0
        train: dict = field(default_factory=dict)

    def loss_options(self) -> dict:
        o = self.options
        return {"loss": "sce", "sce_alpha": o.alpha, "sce_beta": o.beta, "sce_A": o.A}
