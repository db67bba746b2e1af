"""``dividemix``: co-divide with a loss GMM, then semi-supervised MixMatch (Li, Socher & Hoi, ICLR 2020).

Two networks. After ``warmup`` epochs of cross-entropy on all noisy labels, every epoch:

1. *Co-divide.* Each network computes the per-sample cross-entropy of the whole training set
   (no augmentation); a two-component 1-D GMM on the min-max normalised losses gives each
   sample's clean probability w. Samples with w > ``p_threshold`` form the labelled set, the
   rest the unlabelled set. Each network trains on the division made by *the other* network.
2. *MixMatch with co-refinement and co-guessing.* Two augmentations of a labelled and an
   unlabelled batch. Labelled targets: w * noisy one-hot + (1 - w) * the network's mean
   prediction (co-refinement); unlabelled targets: the mean prediction of both networks on
   both augmentations (co-guessing); both sharpened with temperature ``T``. Inputs and targets
   are mixed with lambda ~ Beta(alpha, alpha), lambda = max(lambda, 1 - lambda).
   Loss = CE on mixed labelled + lambda_u(e) * MSE on mixed unlabelled + a uniform-prior
   penalty, with lambda_u ramped linearly over ``rampup_epochs`` after warm-up.

Trains through the one trainer (:func:`ddlnl.train.train_network` with both networks and a
:class:`DivideMixHook`: co-divide is its epoch plan, MixMatch its batch loss), so optimiser,
schedule, epochs, batch size, augmentation and compile come from ``baseline.train`` (the same
as the CE baseline); ``warmup`` counts epochs within ``baseline.train.epochs``. The test
prediction is the sum of both networks' softmax, as in the paper.
Defaults are the paper's CIFAR-10 values (lambda_u 25 is its 50%/80% symmetric setting;
its Table 7 uses 0 at 20% symmetric and asymmetric noise; set it per setting).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from ddlnl.baselines.base import (
    Baseline,
    BaselineContext,
    Ensemble,
    RunOutcome,
    register_baseline,
)
from ddlnl.baselines.coteaching import check_method_loss
from ddlnl.errors import ConfigError
from ddlnl.evaluate import accuracy_report, test_predictions
from ddlnl.train import Step, Sweep, TrainConfig, TrainHook, TrainRun, TrainStats, train_network
from ddlnl.trust import clean_probability
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed


def sharpen(p: torch.Tensor, T: float) -> torch.Tensor:
    p = p ** (1.0 / T)
    return p / p.sum(dim=1, keepdim=True)


@torch.no_grad()
def per_sample_losses(net, x: torch.Tensor, y: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    net.eval()
    out = torch.cat([F.cross_entropy(net(x[i : i + batch_size]), y[i : i + batch_size], reduction="none")
                     for i in range(0, x.shape[0], batch_size)])
    net.train()
    return out.cpu()


def co_divide(prob: np.ndarray, p_threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(labelled indices, unlabelled indices) of one network's division; never an empty labelled set."""
    labelled = np.flatnonzero(prob > p_threshold)
    if labelled.size == 0:
        labelled = np.array([int(np.argmax(prob))])
    unlabelled = np.setdiff1d(np.arange(prob.size), labelled)
    return labelled, unlabelled


@dataclass
class _Division:
    """One network's MixMatch sweep of an epoch: it trains on the division made by its peer."""

    k: int  # the network that trains
    unlabelled: torch.Tensor  # sample indices
    w: torch.Tensor  # (N,) clean probability of each sample by the peer's GMM (read on the labelled set)
    unl_order: torch.Tensor | None = None
    u_pos: int = 0


class DivideMixHook(TrainHook):
    """Warm-up epochs: one CE sweep over all samples per network. Later epochs: co-divide in
    :meth:`plan` (per-sample losses → GMM → each network's labelled set is its peer's division),
    then one MixMatch sweep per network over its labelled set, MixMatch being :meth:`loss`.
    ``correct`` (whether each label is its clean one; None where unknown) feeds the diagnostics only."""

    def __init__(self, options, correct: np.ndarray | None, seed: int):
        self.o, self.correct, self.seed = options, correct, seed
        self.rng = np.random.default_rng(seed)  # mixup's Beta draws
        self.history: list[dict] = []

    def plan(self, epoch: int, run: TrainRun) -> list[Sweep]:
        o, n = self.o, run.images.shape[0]
        if epoch < o.warmup:
            self._warm = [0.0, 0.0]
            self.history.append({"epoch": epoch, "phase": "warmup", "loss": self._warm})
            return [Sweep(tag=k) for k in (0, 1)]
        probs = []
        for k, net in enumerate(run.nets):
            probs.append(clean_probability(per_sample_losses(net, run.images, run.labels).numpy(), max_iter=o.gmm_max_iter,
                                           tol=o.gmm_tol, reg_covar=o.gmm_reg_covar,
                                           seed=stream_seed(self.seed, "dividemix.gmm", epoch, k)))
            run.count(n)
        row = {"epoch": epoch, "phase": "dividemix", "labelled": [], "labelled_precision": [], "labelled_recall": []}
        sweeps = []
        dev = run.images.device
        for k in (0, 1):  # net k trains on the division made by the other network
            lab, unl = co_divide(probs[1 - k], o.p_threshold)
            w = torch.zeros(n, dtype=torch.float32)
            w[lab] = torch.as_tensor(probs[1 - k][lab], dtype=torch.float32)
            div = _Division(k, torch.as_tensor(unl, device=dev), w.to(dev))
            sweeps.append(Sweep(indices=torch.as_tensor(lab), tag=div, start=lambda div=div: self._start(div, run), forwards=0))
            row["labelled"].append(int(lab.size))
            if self.correct is not None:
                row["labelled_precision"].append(float(self.correct[lab].mean()) if lab.size else 0.0)
                row["labelled_recall"].append(float(self.correct[lab].sum() / max(self.correct.sum(), 1)))
        self.history.append(row)
        return sweeps

    def _start(self, div: _Division, run: TrainRun) -> None:
        """After the labelled permutation: the unlabelled one; the peer guesses in eval mode."""
        div.unl_order = torch.randperm(max(div.unlabelled.numel(), 1), generator=run.generator).to(run.images.device)
        run.nets[div.k].train()
        run.nets[1 - div.k].eval()

    def loss(self, step: Step) -> torch.Tensor:
        if isinstance(step.sweep.tag, int):
            return self._warmup_loss(step)
        return self._mixmatch_loss(step)

    def _warmup_loss(self, step: Step) -> torch.Tensor:
        k = step.sweep.tag
        logits = step.nets[k](step.x)
        loss = F.cross_entropy(logits, step.y)
        if self.o.conf_penalty:
            p = F.softmax(logits, dim=1)
            loss = loss + (p * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
        self._warm[k] += float(loss.detach()) * step.idx.numel()
        if step.batch == step.batches - 1:
            self._warm[k] /= step.run.images.shape[0]
        return loss

    def _mixmatch_loss(self, step: Step) -> torch.Tensor:
        o, run, div = self.o, step.run, step.sweep.tag
        B, dev = run.cfg.batch_size, run.images.device
        net, peer = step.nets[div.k], step.nets[1 - div.k]
        x_all, unl = run.images, div.unlabelled
        yi, wi = step.y, div.w[step.idx].view(-1, 1)
        x1, x2 = step.x, run.augment(x_all[step.idx])
        if unl.numel():
            take = torch.arange(div.u_pos, div.u_pos + B, device=dev) % unl.numel()
            div.u_pos = (div.u_pos + B) % unl.numel()
            ui = unl[div.unl_order[take]]
            u1, u2 = run.augment(x_all[ui]), run.augment(x_all[ui])
        else:
            u1 = u2 = x_all[:0]
        bx, bu = x1.shape[0], u1.shape[0]
        with torch.no_grad():
            out_x = net(torch.cat([x1, x2]))
            num_classes = out_x.shape[1]
            px = (F.softmax(out_x[:bx], 1) + F.softmax(out_x[bx:], 1)) / 2
            targets_x = sharpen(wi * F.one_hot(yi, num_classes).float() + (1 - wi) * px, o.T)
            parts = [targets_x, targets_x]
            if bu:
                uu = torch.cat([u1, u2])
                o1, o2 = net(uu), peer(uu)
                pu = (F.softmax(o1[:bu], 1) + F.softmax(o1[bu:], 1) + F.softmax(o2[:bu], 1) + F.softmax(o2[bu:], 1)) / 4
                targets_u = sharpen(pu, o.T)
                parts += [targets_u, targets_u]
        lam = float(self.rng.beta(o.alpha, o.alpha))
        lam = max(lam, 1 - lam)
        inputs = torch.cat([x1, x2, u1, u2])
        targets = torch.cat(parts)
        perm = torch.randperm(inputs.shape[0], generator=run.generator).to(dev)
        mixed_x = lam * inputs + (1 - lam) * inputs[perm]
        mixed_t = lam * targets + (1 - lam) * targets[perm]
        logits = net(mixed_x)
        run.count(2 * bx + 4 * bu + inputs.shape[0])  # co-refinement, co-guessing (both nets), the mixed batch
        lx, tx = logits[: 2 * bx], mixed_t[: 2 * bx]
        loss = -(F.log_softmax(lx, 1) * tx).sum(1).mean()
        if bu:
            lu, tu = logits[2 * bx :], mixed_t[2 * bx :]
            ramp = min(max((step.epoch + step.batch / step.batches - o.warmup) / o.rampup_epochs, 0.0), 1.0)
            loss = loss + o.lambda_u * ramp * ((F.softmax(lu, 1) - tu) ** 2).mean()
        prior = torch.full((num_classes,), 1.0 / num_classes, device=dev)
        pred_mean = F.softmax(logits, 1).mean(0)
        return loss + (prior * torch.log(prior / pred_mean)).sum()

    def state_dict(self) -> dict:
        return {"history": self.history, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state["history"])
        self.rng.bit_generator.state = state["rng"]


def train_two_networks(ctx: BaselineContext, options, cfg: TrainConfig, seed: int, *, correct: np.ndarray | None,
                       desc: str) -> tuple[list[torch.nn.Module], DivideMixHook, TrainStats]:
    """DivideMix's two networks (the second from its own seed stream), trained on the noisy labels through
    the one trainer with a :class:`DivideMixHook`. The method and the ``dividemix`` cleaner (its warm-up
    only) share this set-up, so that one seed gives both the same networks and draws.
    ``correct`` (clean-label agreement, or None) feeds the hook's diagnostics only."""
    torch.manual_seed(seed)
    nets = [ctx.model()]
    torch.manual_seed(stream_seed(seed, "second_network"))
    nets.append(ctx.model())
    hook = DivideMixHook(options, correct, seed)
    stats = train_network(nets, ctx.data.x_train, ctx.data.y_train_noisy, cfg, generator=make_generator(seed),
                          progress=ctx.progress, desc=desc, hook=hook)
    return nets, hook, stats


@register_baseline
class DivideMix(Baseline):
    name = "dividemix"
    description = "DivideMix: GMM co-divide + MixMatch co-refinement/co-guessing (Li et al. 2020)"

    @dataclass(frozen=True)
    class Options:
        warmup: int = 10  # epochs of plain CE (CIFAR-10: 10)
        p_threshold: float = 0.5
        T: float = 0.5  # sharpening temperature
        alpha: float = 4.0  # Beta(alpha, alpha) for mixup
        lambda_u: float = 25.0
        rampup_epochs: int = 16  # lambda_u ramps linearly over this many epochs after warm-up
        conf_penalty: bool = False  # negative-entropy penalty during warm-up (the paper's asymmetric setting)
        gmm_max_iter: int = 10
        gmm_tol: float = 1e-2
        gmm_reg_covar: float = 5e-4
        train: dict = field(default_factory=dict)

        def __post_init__(self):
            if not isinstance(self.warmup, int) or self.warmup < 0:
                raise ConfigError(f"dividemix warmup must be a non-negative integer, got {self.warmup!r}", "use warmup: 10")
            if not 0 < self.p_threshold < 1 or self.T <= 0 or self.alpha <= 0 or self.lambda_u < 0 or self.rampup_epochs < 1:
                raise ConfigError("dividemix options out of range", "use 0 < p_threshold < 1, T > 0, alpha > 0, lambda_u >= 0, rampup_epochs >= 1")

    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        o, d = self.options, ctx.data
        cfg = self.train_config(ctx.preset)
        check_method_loss(cfg, self.name)
        if o.warmup >= cfg.epochs:
            raise ConfigError(f"dividemix warmup ({o.warmup}) must be shorter than training ({cfg.epochs} epochs)",
                              "lower baselines.dividemix.warmup or raise the epochs")
        nets, hook, stats = train_two_networks(ctx, o, cfg, seed, correct=d.label_correct, desc=self.name)
        for net in nets:
            net.train()
        accs = [accuracy_report(test_predictions(n, d.x_test), d.y_test, d.num_classes)[0] for n in nets]
        details = {"history": hook.history, "net_accs": accs}
        last = hook.history[-1]
        if d.label_correct is not None and last.get("labelled_precision"):  # the last co-divide: net 1's labelled set
            details["selection"] = {"precision": last["labelled_precision"][0], "recall": last["labelled_recall"][0],
                                    "kept_fraction": last["labelled"][0] / len(d.label_correct),
                                    "what": "net 1's labelled set (its peer's GMM division), last epoch"}
        return RunOutcome(Ensemble(*nets), stats.images_processed, details)
