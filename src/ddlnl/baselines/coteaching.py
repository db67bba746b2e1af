"""``coteaching``: two networks teach each other with their small-loss samples (Han et al., NeurIPS 2018).

Each mini-batch goes through both networks; each network keeps the ``1 - R(e)`` fraction of
the batch with its smallest losses, and its *peer* is updated on those samples. The forget
rate R(e) rises linearly from 0 to ``forget_rate`` over the first ``num_gradual`` epochs
(the paper's T_k = 10 of 200 epochs; short presets scale it down) and then stays there.
``forget_rate: null`` takes the noise rate estimate: the nominal rate of the noise model
(the paper assumes it known); for CIFAR-N label sets, the rate of the whole published set.

Same backbone, augmentation (one draw per batch, shared by the two networks), optimiser and
schedule as the CE baseline (``baseline.train``); network 1 is tested, network 2's accuracy is
in ``details``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ddlnl.baselines.base import (
    Baseline,
    BaselineContext,
    RunOutcome,
    register_baseline,
)
from ddlnl.errors import ConfigError
from ddlnl.evaluate import accuracy_report, test_predictions
from ddlnl.train import augment_batch, lr_at
from ddlnl.utils.runtime import generator as make_generator


def forget_schedule(forget_rate: float, epochs: int, num_gradual: int, exponent: float = 1.0) -> np.ndarray:
    """R(e) for e = 0..epochs-1: linear ramp from 0 to forget_rate**exponent over num_gradual epochs, then forget_rate."""
    sched = np.full(epochs, float(forget_rate))
    k = max(1, int(num_gradual))
    ramp = np.linspace(0.0, forget_rate**exponent, k)
    sched[: min(k, epochs)] = ramp[: min(k, epochs)]
    return sched


def num_remember(batch: int, forget_rate: float) -> int:
    """How many samples of a batch are kept at forget rate ``forget_rate`` (at least one)."""
    return max(1, int((1.0 - forget_rate) * batch))


def small_loss_exchange(loss1: torch.Tensor, loss2: torch.Tensor, forget_rate: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices each network trains on: (net 1's update set = net 2's small-loss samples, net 2's = net 1's)."""
    k = num_remember(loss1.numel(), forget_rate)
    keep1 = torch.argsort(loss1.detach())[:k]  # samples net 1 finds clean
    keep2 = torch.argsort(loss2.detach())[:k]
    return keep2, keep1


def noise_rate_estimate(data) -> float:
    """The noise model's nominal rate (for CIFAR-N label sets: the rate of the whole published set)."""
    return float(data.noisy.nominal_rate or 0.0)


@register_baseline
class CoTeaching(Baseline):
    name = "coteaching"
    description = "Co-teaching: two networks exchange small-loss samples (Han et al. 2018)"

    @dataclass
    class Options:
        forget_rate: float | None = None  # None: the noise rate estimate
        num_gradual: int = 10  # T_k, epochs of the linear ramp
        exponent: float = 1.0  # c in R(e) = min(e/T_k * tau^c, tau)
        train: dict = field(default_factory=dict)

        def __post_init__(self):
            if self.forget_rate is not None and not 0 <= self.forget_rate < 1:
                raise ConfigError(f"coteaching forget_rate must be in [0, 1), got {self.forget_rate!r}", "use null (noise rate) or e.g. 0.4")
            if not isinstance(self.num_gradual, int) or self.num_gradual < 1:
                raise ConfigError(f"coteaching num_gradual must be a positive integer, got {self.num_gradual!r}", "use num_gradual: 10")

    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        o, d = self.options, ctx.data
        cfg = self.train_config(ctx.preset)
        rate = noise_rate_estimate(d) if o.forget_rate is None else float(o.forget_rate)
        sched = forget_schedule(rate, cfg.epochs, o.num_gradual, o.exponent)
        torch.manual_seed(seed)
        net1 = ctx.model()
        torch.manual_seed(seed + 7919)
        net2 = ctx.model()
        g = make_generator(seed)
        opts = [torch.optim.SGD(n.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay) for n in (net1, net2)]
        x_all, y_all = d.x_train.to(ctx.device), d.y_train_noisy.to(ctx.device)
        clean = torch.tensor(d.splits.train.labels, dtype=torch.long).to(ctx.device)  # diagnostics only
        n = x_all.shape[0]
        kept_frac, kept_clean, losses = [], [], []
        from tqdm.auto import tqdm

        net1.train(), net2.train()
        for epoch in tqdm(range(cfg.epochs), desc="coteaching", disable=not ctx.progress, leave=False):
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, epoch)
            order = torch.randperm(n, generator=g).to(ctx.device)
            kept = clean_kept = 0
            total = 0.0
            for i in range(0, n, cfg.batch_size):
                idx = order[i : i + cfg.batch_size]
                x, y = augment_batch(x_all[idx], cfg, g), y_all[idx]
                out1, out2 = net1(x), net2(x)
                l1 = F.cross_entropy(out1, y, reduction="none")
                l2 = F.cross_entropy(out2, y, reduction="none")
                upd1, upd2 = small_loss_exchange(l1, l2, float(sched[epoch]))
                loss1, loss2 = l1[upd1].mean(), l2[upd2].mean()
                for opt in opts:
                    opt.zero_grad(set_to_none=True)
                (loss1 + loss2).backward()
                for opt in opts:
                    opt.step()
                kept += upd1.numel()
                clean_kept += int((y[upd1] == clean[idx][upd1]).sum())
                total += float(loss1.detach()) * idx.numel()
            if not np.isfinite(total):
                raise FloatingPointError(f"co-teaching loss became {total} at epoch {epoch}")
            kept_frac.append(kept / n)
            kept_clean.append(clean_kept / max(kept, 1))
            losses.append(total / n)
        acc2, _, _ = accuracy_report(test_predictions(net2, d.x_test), d.y_test, d.num_classes)
        details = {"forget_rate": rate, "schedule": [float(v) for v in sched], "kept_fraction": kept_frac,
                   "kept_label_precision": kept_clean, "epoch_losses": losses, "net2_acc": acc2}
        return RunOutcome(net1, 2 * n * cfg.epochs, details)
