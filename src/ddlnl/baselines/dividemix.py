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

Optimiser, schedule, batch size and augmentation come from ``baseline.train`` (the same as
the CE baseline); the test prediction is the sum of both networks' softmax, as in the paper.
Defaults are the paper's CIFAR-10 values (lambda_u 25 is its 50%/80% symmetric setting;
its Table 7 uses 0 at 20% symmetric and asymmetric noise; set it per setting).
"""

from __future__ import annotations

import math
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
from ddlnl.baselines.gmm import clean_probability
from ddlnl.errors import ConfigError
from ddlnl.evaluate import accuracy_report, test_predictions
from ddlnl.train import augment_batch, lr_at
from ddlnl.utils.runtime import generator as make_generator


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


@register_baseline
class DivideMix(Baseline):
    name = "dividemix"
    description = "DivideMix: GMM co-divide + MixMatch co-refinement/co-guessing (Li et al. 2020)"

    @dataclass
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
        if o.warmup >= cfg.epochs:
            raise ConfigError(f"dividemix warmup ({o.warmup}) must be shorter than training ({cfg.epochs} epochs)",
                              "lower baselines.dividemix.warmup or raise the epochs")
        torch.manual_seed(seed)
        nets = [ctx.model()]
        torch.manual_seed(seed + 7919)
        nets.append(ctx.model())
        g = make_generator(seed)
        self._rng = np.random.default_rng(seed)
        opts = [torch.optim.SGD(n.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay) for n in nets]
        x_all, y_all = d.x_train.to(ctx.device), d.y_train_noisy.to(ctx.device)
        clean = np.asarray(d.splits.train.labels) == np.asarray(d.noisy.labels)  # diagnostics only
        self._processed = 0
        history = []
        from tqdm.auto import tqdm

        for epoch in tqdm(range(cfg.epochs), desc="dividemix", disable=not ctx.progress, leave=False):
            for opt in opts:
                for group in opt.param_groups:
                    group["lr"] = lr_at(cfg, epoch)
            if epoch < o.warmup:
                losses = [self._warmup_epoch(net, opt, x_all, y_all, cfg, g) for net, opt in zip(nets, opts)]
                history.append({"epoch": epoch, "phase": "warmup", "loss": losses})
                continue
            probs = []
            for net in nets:
                probs.append(clean_probability(per_sample_losses(net, x_all, y_all).numpy(), max_iter=o.gmm_max_iter,
                                               tol=o.gmm_tol, reg_covar=o.gmm_reg_covar))
                self._processed += x_all.shape[0]
            row = {"epoch": epoch, "phase": "dividemix", "labelled": [], "labelled_precision": [], "labelled_recall": []}
            for k in (0, 1):  # net k trains on the division made by the other network
                lab, unl = co_divide(probs[1 - k], o.p_threshold)
                w = torch.as_tensor(probs[1 - k][lab], dtype=torch.float32)
                self._mixmatch_epoch(nets[k], nets[1 - k], opts[k], x_all, y_all, lab, unl, w, epoch, cfg, g)
                row["labelled"].append(int(lab.size))
                row["labelled_precision"].append(float(clean[lab].mean()))
                row["labelled_recall"].append(float(clean[lab].sum() / max(clean.sum(), 1)))
            history.append(row)
        accs = [accuracy_report(test_predictions(n, d.x_test), d.y_test, d.num_classes)[0] for n in nets]
        return RunOutcome(Ensemble(*nets), self._processed, {"history": history, "net_accs": accs})

    def _warmup_epoch(self, net, opt, x_all, y_all, cfg, g) -> float:
        n, total = x_all.shape[0], 0.0
        order = torch.randperm(n, generator=g).to(x_all.device)
        for i in range(0, n, cfg.batch_size):
            idx = order[i : i + cfg.batch_size]
            logits = net(augment_batch(x_all[idx], cfg, g))
            loss = F.cross_entropy(logits, y_all[idx])
            if self.options.conf_penalty:
                p = F.softmax(logits, dim=1)
                loss = loss + (p * F.log_softmax(logits, dim=1)).sum(dim=1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
        self._processed += n
        if not math.isfinite(total):
            raise FloatingPointError("DivideMix warm-up loss is not finite")
        return total / n

    def _mixmatch_epoch(self, net, peer, opt, x_all, y_all, lab, unl, w, epoch, cfg, g) -> None:
        o, B = self.options, cfg.batch_size
        dev = x_all.device
        lab_t, unl_t = torch.as_tensor(lab, device=dev), torch.as_tensor(unl, device=dev)
        w = w.to(dev)
        num_iter = math.ceil(lab.size / B)
        lab_order = torch.randperm(lab.size, generator=g).to(dev)
        unl_order = torch.randperm(max(unl.size, 1), generator=g).to(dev)
        u_pos = 0
        net.train()
        peer.eval()
        for it in range(num_iter):
            bi = lab_order[it * B : (it + 1) * B]
            xi, yi, wi = lab_t[bi], y_all[lab_t[bi]], w[bi].view(-1, 1)
            x1, x2 = augment_batch(x_all[xi], cfg, g), augment_batch(x_all[xi], cfg, g)
            if unl.size:
                take = torch.arange(u_pos, u_pos + B, device=dev) % unl.size
                u_pos = (u_pos + B) % unl.size
                ui = unl_t[unl_order[take]]
                u1, u2 = augment_batch(x_all[ui], cfg, g), augment_batch(x_all[ui], cfg, g)
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
            self._processed += 2 * bx + 4 * bu
            lam = float(self._rng.beta(o.alpha, o.alpha))
            lam = max(lam, 1 - lam)
            inputs = torch.cat([x1, x2, u1, u2])
            targets = torch.cat(parts)
            perm = torch.randperm(inputs.shape[0], generator=g).to(dev)
            mixed_x = lam * inputs + (1 - lam) * inputs[perm]
            mixed_t = lam * targets + (1 - lam) * targets[perm]
            logits = net(mixed_x)
            self._processed += inputs.shape[0]
            lx, tx = logits[: 2 * bx], mixed_t[: 2 * bx]
            loss = -(F.log_softmax(lx, 1) * tx).sum(1).mean()
            if bu:
                lu, tu = logits[2 * bx :], mixed_t[2 * bx :]
                ramp = min(max((epoch + it / num_iter - o.warmup) / o.rampup_epochs, 0.0), 1.0)
                loss = loss + o.lambda_u * ramp * ((F.softmax(lu, 1) - tu) ** 2).mean()
            prior = torch.full((num_classes,), 1.0 / num_classes, device=dev)
            pred_mean = F.softmax(logits, 1).mean(0)
            loss = loss + (prior * torch.log(prior / pred_mean)).sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if not math.isfinite(float(loss.detach())):
                raise FloatingPointError(f"DivideMix loss became {float(loss)} at epoch {epoch}")
        peer.train()
