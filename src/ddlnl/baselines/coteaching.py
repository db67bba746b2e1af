"""``coteaching``: two networks teach each other with their small-loss samples (Han et al., NeurIPS 2018).

Each mini-batch goes through both networks; each network keeps the ``1 - R(e)`` fraction of
the batch with its smallest losses, and its *peer* is updated on those samples. The forget
rate R(e) rises linearly from 0 to ``forget_rate`` over the first ``num_gradual`` epochs
(the paper's T_k = 10 of 200 epochs; short presets scale it down) and then stays there.
``forget_rate: null`` (the default) takes the noise rate estimated from the noisy labels alone
(:mod:`ddlnl.baselines.noise_rate`, once per baseline, before the runs); a number is used as
given; ``oracle`` takes the realised rate of the training labels, computed from the clean labels
(the paper assumes the rate known; a user does not know it). ``details`` says which it was.

Trains through the one trainer (:func:`ddlnl.train.train_network` with both networks and a
:class:`CoTeachingHook`), so backbone, augmentation (one draw per batch, shared by the two
networks), optimiser, schedule, compile and epochs are the CE baseline's (``baseline.train``);
network 1 is tested, network 2's accuracy is in ``details``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ddlnl.baselines.base import (
    Baseline,
    BaselineContext,
    Prepared,
    RunOutcome,
    register_baseline,
)
from ddlnl.baselines.noise_rate import estimate_noise_rate
from ddlnl.errors import ConfigError
from ddlnl.evaluate import accuracy_report, test_predictions
from ddlnl.train import Step, Sweep, TrainConfig, TrainHook, TrainRun, train_network
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed


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


def check_method_loss(cfg: TrainConfig, method: str) -> None:
    """Co-teaching and DivideMix define their own losses: refuse a recipe that asks for another one."""
    if cfg.loss != "ce" or cfg.cutmix_prob > 0:
        raise ConfigError(f"{method} defines its own loss; baseline.train asks for loss {cfg.loss!r}, cutmix_prob {cfg.cutmix_prob}",
                          f"give baselines.{method} a train override with loss: ce and cutmix_prob: 0")


class CoTeachingHook(TrainHook):
    """Both networks see every batch (one augmentation draw); each is updated on its peer's
    ``1 - R(epoch)`` smallest-loss samples. Records per-epoch diagnostics: with ``correct`` (whether
    each sample's label is its clean one; read for these only), the precision and recall of net 1's
    kept samples as a selection of the correctly labelled ones."""

    def __init__(self, schedule: np.ndarray, correct: torch.Tensor | None):
        self.schedule, self.correct = schedule, correct
        self.kept_fraction: list[float] = []
        self.kept_label_precision: list[float] = []
        self.kept_label_recall: list[float] = []
        self.epoch_losses: list[float] = []

    def plan(self, epoch: int, run: TrainRun) -> list[Sweep]:
        self._counts = [0, 0, 0.0, 0]  # kept, kept with a correct label, net 1's loss sum, correct labels seen
        self._n = run.images.shape[0]
        return [Sweep(forwards=2)]  # every sample, through both networks

    def loss(self, step: Step) -> torch.Tensor:
        out1, out2 = step.nets[0](step.x), step.nets[1](step.x)
        l1 = F.cross_entropy(out1, step.y, reduction="none")
        l2 = F.cross_entropy(out2, step.y, reduction="none")
        upd1, upd2 = small_loss_exchange(l1, l2, float(self.schedule[step.epoch]))
        loss1, loss2 = l1[upd1].mean(), l2[upd2].mean()
        c = self._counts
        c[0] += upd1.numel()
        c[2] += float(loss1.detach()) * step.idx.numel()
        if self.correct is not None:
            correct = self.correct[step.idx]
            c[1] += int(correct[upd1].sum())
            c[3] += int(correct.sum())
        if step.batch == step.batches - 1:  # the epoch's last batch: close its diagnostics
            self.kept_fraction.append(c[0] / self._n)
            if self.correct is not None:
                self.kept_label_precision.append(c[1] / max(c[0], 1))
                self.kept_label_recall.append(c[1] / max(c[3], 1))
            self.epoch_losses.append(c[2] / self._n)
        return loss1 + loss2

    def state_dict(self) -> dict:
        return {"kept_fraction": list(self.kept_fraction), "kept_label_precision": list(self.kept_label_precision),
                "kept_label_recall": list(self.kept_label_recall), "epoch_losses": list(self.epoch_losses)}

    def load_state_dict(self, state: dict) -> None:
        self.kept_fraction, self.kept_label_precision = list(state["kept_fraction"]), list(state["kept_label_precision"])
        self.kept_label_recall = list(state.get("kept_label_recall", []))
        self.epoch_losses = list(state["epoch_losses"])


@register_baseline
class CoTeaching(Baseline):
    name = "coteaching"
    description = "Co-teaching: two networks exchange small-loss samples (Han et al. 2018)"

    @dataclass(frozen=True)
    class Options:
        forget_rate: float | str | None = None  # None: estimated from the noisy labels; "oracle": the realised rate
        num_gradual: int = 10  # T_k, epochs of the linear ramp
        exponent: float = 1.0  # c in R(e) = min(e/T_k * tau^c, tau)
        train: dict = field(default_factory=dict)

        def __post_init__(self):
            f = self.forget_rate
            if f is not None and f != "oracle" and (isinstance(f, (str, bool)) or not 0 <= f < 1):
                raise ConfigError(f"coteaching forget_rate must be null, 'oracle' or a number in [0, 1), got {f!r}",
                                  "use null (estimated from the noisy labels), oracle (the realised rate) or e.g. 0.4")
            if not isinstance(self.num_gradual, int) or self.num_gradual < 1:
                raise ConfigError(f"coteaching num_gradual must be a positive integer, got {self.num_gradual!r}", "use num_gradual: 10")

    def prepare(self, ctx: BaselineContext) -> Prepared:
        """The forget rate every run uses: estimated (the default), the realised one (``oracle``) or the option's."""
        o, d = self.options, ctx.data
        if o.forget_rate is None:
            est = estimate_noise_rate(ctx, self.train_config(ctx.preset))
            self._rate, self._source = est.rate, f"estimated from the noisy labels: {est.source}"
            return Prepared(est.images_processed, {"forget_rate": est.rate, "forget_rate_source": self._source,
                                                   "estimated_per_class": list(est.per_class),
                                                   "realised_rate": d.noisy.actual_rate})
        if o.forget_rate == "oracle":
            if d.label_correct is None:
                raise ConfigError("coteaching forget_rate 'oracle' is the realised noise rate, and these labels have no clean "
                                  "labels to measure it against", "use forget_rate null (estimated), a number, or pass --clean-labels FILE")
            self._rate, self._source = float(d.noisy.actual_rate), "oracle: the realised rate, from the clean labels (a user does not know it)"
        else:
            self._rate, self._source = float(o.forget_rate), "option"
        return Prepared(0, {"forget_rate": self._rate, "forget_rate_source": self._source})

    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        o, d = self.options, ctx.data
        cfg = self.train_config(ctx.preset)
        check_method_loss(cfg, self.name)
        rate = self._rate
        sched = forget_schedule(rate, cfg.epochs, o.num_gradual, o.exponent)
        torch.manual_seed(seed)
        net1 = ctx.model()
        torch.manual_seed(stream_seed(seed, "second_network"))
        net2 = ctx.model()
        correct = None if d.label_correct is None else torch.as_tensor(d.label_correct).to(ctx.device)  # diagnostics only
        hook = CoTeachingHook(sched, correct)
        stats = train_network([net1, net2], d.x_train, d.y_train_noisy, cfg, generator=make_generator(seed),
                              progress=ctx.progress, desc=self.name, hook=hook)
        acc2, _, _ = accuracy_report(test_predictions(net2, d.x_test), d.y_test, d.num_classes)
        details = {"forget_rate": rate, "forget_rate_source": self._source, "schedule": [float(v) for v in sched], "kept_fraction": hook.kept_fraction,
                   "kept_label_precision": hook.kept_label_precision, "kept_label_recall": hook.kept_label_recall,
                   "epoch_losses": hook.epoch_losses, "net2_acc": acc2}
        if d.label_correct is not None:  # the last epoch's selection: what the trained networks ended up keeping
            details["selection"] = {"precision": hook.kept_label_precision[-1], "recall": hook.kept_label_recall[-1],
                                    "kept_fraction": hook.kept_fraction[-1], "what": "net 1's small-loss samples, last epoch"}
        return RunOutcome(net1, stats.images_processed, details)
