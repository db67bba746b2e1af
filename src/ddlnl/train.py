"""The one trainer: every network ddlnl trains goes through :func:`train_network`.

Baselines on the full noisy set, expert networks, and evaluation networks trained on a
distilled set all use it, so that a difference between two numbers in a table is a
difference in data, never in training code. Methods that train differently (Co-teaching's
small-loss selection, DivideMix's co-divide and MixMatch) do so through a :class:`TrainHook`
on it, and may train several networks jointly; the optimiser, schedule, batch drawing,
augmentation, compile option and resume stay the trainer's.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, fields

import torch
import torch.nn.functional as F
from torch import nn

from ddlnl.errors import ConfigError, check_choice

SCHEDULES = ("cosine", "step", "multistep", "constant")
AUGMENTS = ("dsa", "crop_flip", "none")
LOSSES = ("ce", "gce", "sce", "mse")
OPTIMIZERS = ("sgd", "adam")
SAMS = ("none", "gsam")
# Recipe keys that change how fast a training runs, never what it computes: left out of stage keys.
SPEED_ONLY = ("batch_networks",)


def recipe_key(section: dict) -> dict:
    """A preset section holding a training recipe (``train``) as a stage key: without speed-only keys."""
    if not isinstance(section.get("train"), dict):
        return section
    return section | {"train": {k: v for k, v in section["train"].items() if k not in SPEED_ONLY}}
# One compile of a batch shape costs about 10 s here, the time of roughly 10,000 eager training
# images of the quick ConvNet; a shape is worth compiling when twice that many go through it.
COMPILE_MIN_IMAGES = 20_000


@dataclass
class TrainConfig:
    """How to train one network. ``step`` multiplies the lr by 0.1 at half of training (DC/MTT/DATM).

    The lr is set once per epoch (warm-up and decay move in epoch steps). RCIG counts
    optimisation steps; with full-batch training one epoch is one step.
    """

    epochs: int = 300
    batch_size: int = 256
    lr: float = 0.01
    momentum: float = 0.9  # SGD only
    weight_decay: float = 5e-4  # L2 added to the gradient (SGD and Adam alike)
    optimizer: str = "sgd"  # "sgd" (momentum) or "adam" (RCIG's evaluation; betas 0.9, 0.999)
    # "step": x0.1 at half; "multistep": x gamma at each fraction of the epochs in milestones
    # (DANCE: x0.2 at 2/3 and 5/6); "cosine": to lr * lr_floor at the end; "constant".
    schedule: str = "step"
    milestones: tuple = (0.5, 0.75)
    gamma: float = 0.1
    lr_floor: float = 0.0
    warmup_epochs: float = 0.0  # linear warm-up from 0 over this many (fractional) epochs
    augment: str = "dsa"
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    # Speed only: run batches through torch.compile (about 1.7x on a 2-core CPU for full-data
    # epochs and 1.3-2x for evaluation on a small set, after ~10 s of compiling per batch shape; see
    # docs/benchmarks.md). The partial last batch is compiled too only when it will carry at
    # least COMPILE_MIN_IMAGES images (a set smaller than a batch, many epochs); otherwise it runs
    # eagerly through the same parameters and no second compile is paid for a few batches.
    compile: bool = False
    # CutMix (DANCE's training and evaluation): with this probability per batch, paste one box
    # from a permuted batch, lambda ~ Beta(1, 1); loss lambda * L(y_a) + (1 - lambda) * L(y_b).
    cutmix_prob: float = 0.0
    # Loss on hard labels: "ce"; "gce" (Zhang & Sabuncu 2018, (1 - p_y^q) / q); "sce" (Wang et
    # al. 2019, alpha * CE + beta * RCE with log 0 := sce_A). Soft labels use soft CE, except
    # "mse" (RCIG): 0.5 * mean squared error to float labels taken as regression targets, or to
    # the centred one-hot (1 - 1/C on the class, -1/C elsewhere) for hard labels.
    loss: str = "ce"
    gce_q: float = 0.7
    sce_alpha: float = 0.1
    sce_beta: float = 1.0
    sce_A: float = -4.0
    # Sharpness-aware update: "gsam" is DATM's flat-trajectory (FTD) expert step (GSAM: rho 0.01,
    # alpha 0.3, adaptive), two gradients per batch; "none": the optimiser's plain step.
    sam: str = "none"
    gsam_rho: float = 0.01
    gsam_alpha: float = 0.3
    # Speed only: how many independent trainings of this recipe run side by side as one stacked
    # network (ddlnl.models.stacked). "auto": one at a time on a CPU, where stacking measured slower
    # (docs/benchmarks.md#many-networks-at-once), and as many as half the free memory holds on a GPU.
    batch_networks: int | str = "auto"

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}", f"set {name} to 1 or more")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("augmentation", self.augment, AUGMENTS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
        check_choice("sam", self.sam, SAMS)
        if self.batch_networks != "auto" and (not isinstance(self.batch_networks, int) or isinstance(self.batch_networks, bool)
                                              or self.batch_networks < 1):
            raise ConfigError(f"batch_networks must be 'auto' or a positive integer, got {self.batch_networks!r}",
                              "set batch_networks: auto (sized from memory), or 1 (one network at a time)")
        if self.sam == "gsam" and self.cutmix_prob > 0:
            raise ConfigError("GSAM training does not support CutMix", "set cutmix_prob: 0 or sam: none")
        self.milestones = tuple(self.milestones)
        if not all(isinstance(m, (int, float)) and not isinstance(m, bool) and 0 < m < 1 for m in self.milestones):
            raise ConfigError(f"milestones must be fractions of the epochs in (0, 1), got {list(self.milestones)!r}",
                              "e.g. milestones: [0.6667, 0.8333] (DANCE: epochs 1000 and 1250 of 1500)")
        for name, low, high in (("gamma", 0.0, 1.0), ("lr_floor", 0.0, 1.0), ("cutmix_prob", 0.0, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not low <= v <= high:
                raise ConfigError(f"{name} must be a number in [{low:g}, {high:g}], got {v!r}", f"set {name} to e.g. 0.1")
        if not isinstance(self.warmup_epochs, (int, float)) or isinstance(self.warmup_epochs, bool) or not 0 <= self.warmup_epochs < self.epochs:
            raise ConfigError(f"warmup_epochs must be in [0, epochs), got {self.warmup_epochs!r}", "set warmup_epochs: 0 (off) or e.g. 5")
        if not (isinstance(self.gce_q, (int, float)) and 0 < self.gce_q <= 1):
            raise ConfigError(f"gce_q must be in (0, 1], got {self.gce_q!r}", "use gce_q: 0.7 (the GCE paper's value)")
        for name in ("sce_alpha", "sce_beta"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {v!r}", "SCE's CIFAR-10 values: alpha 0.1, beta 1.0")
        if not isinstance(self.sce_A, (int, float)) or not math.isfinite(self.sce_A) or self.sce_A >= 0:
            raise ConfigError(f"sce_A must be a negative number (log 0 stand-in), got {self.sce_A!r}", "use sce_A: -4")
        for name in ("lr", "momentum", "weight_decay"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                raise ConfigError(f"{name} must be a non-negative number, got {v!r}", f"set {name} to e.g. 0.01")
        if self.lr == 0:
            raise ConfigError("lr must be positive, got 0", "set lr to e.g. 0.01")

    @classmethod
    def from_dict(cls, d: dict, **overrides) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ConfigError(
                f"unknown training option(s): {', '.join(sorted(unknown))}",
                f"valid options: {', '.join(sorted(known))}",
            )
        return cls(**{**d, **overrides})

    def to_dict(self) -> dict:
        d = asdict(self)
        d["milestones"] = list(self.milestones)
        return d


@dataclass
class TrainStats:
    """What a training run cost and how its loss went."""

    epoch_losses: list[float] = field(default_factory=list)
    images_processed: int = 0  # forward passes over training images
    seconds: float = 0.0


def soft_cross_entropy(logits: torch.Tensor, target_logits: torch.Tensor) -> torch.Tensor:
    """Cross-entropy against softmax(target_logits): DATM's learned-soft-label loss."""
    return -(F.softmax(target_logits, dim=1) * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def gce_loss(logits: torch.Tensor, labels: torch.Tensor, q: float = 0.7, reduction: str = "mean") -> torch.Tensor:
    """Generalized cross-entropy (Zhang & Sabuncu 2018): (1 - p_y^q) / q; q → 0 gives CE, q = 1 MAE."""
    p_y = F.softmax(logits, dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
    loss = (1.0 - p_y.clamp_min(1e-7) ** q) / q
    return loss.mean() if reduction == "mean" else loss


def sce_loss(
    logits: torch.Tensor, labels: torch.Tensor, alpha: float = 0.1, beta: float = 1.0, A: float = -4.0, reduction: str = "mean"
) -> torch.Tensor:
    """Symmetric cross-entropy (Wang et al. 2019): alpha * CE(y, p) + beta * RCE, where the reverse
    cross-entropy -Σ_k p_k log y_k with log 0 := A equals -A * (1 - p_y) for a one-hot y."""
    ce = F.cross_entropy(logits, labels, reduction="none")
    p_y = F.softmax(logits, dim=1).gather(1, labels.view(-1, 1)).squeeze(1)
    loss = alpha * ce + beta * (-A) * (1.0 - p_y)
    return loss.mean() if reduction == "mean" else loss


def centred_one_hot(labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """RCIG's regression targets for class indices: 1 - 1/C on the class, -1/C elsewhere."""
    return F.one_hot(labels, num_classes).float() - 1.0 / num_classes


def mse_loss(outputs: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """0.5 * mean squared error to float targets, or to the centred one-hot of hard labels (RCIG)."""
    if labels.dtype == torch.long:
        labels = centred_one_hot(labels, outputs.shape[1]).to(outputs.dtype)
    return 0.5 * ((outputs - labels) ** 2).mean()


def label_loss(logits: torch.Tensor, labels: torch.Tensor, cfg: TrainConfig | None = None) -> torch.Tensor:
    """Hard labels (int64, (N,)) → the configured loss (CE by default); soft labels (float, (N, C) logits) → soft CE,
    or with ``loss: mse``, regression to the float labels."""
    if cfg is not None and cfg.loss == "mse":
        return mse_loss(logits, labels)
    if labels.dtype == torch.long:
        kind = "ce" if cfg is None else cfg.loss
        if kind == "gce":
            return gce_loss(logits, labels, cfg.gce_q)
        if kind == "sce":
            return sce_loss(logits, labels, cfg.sce_alpha, cfg.sce_beta, cfg.sce_A)
        return F.cross_entropy(logits, labels)
    if cfg is not None and cfg.loss != "ce":
        raise ConfigError(f"loss {cfg.loss!r} needs hard labels; this set has soft labels", "use loss: ce for soft-label sets")
    return soft_cross_entropy(logits, labels)


def lr_at(cfg: TrainConfig, epoch: float) -> float:
    """The lr at an epoch: the warm-up factor ((epoch + 1) / warmup_epochs, capped at 1) times the schedule's value."""
    warm = min(1.0, (epoch + 1) / cfg.warmup_epochs) if cfg.warmup_epochs > 0 else 1.0
    if cfg.schedule == "constant":
        return warm * cfg.lr
    if cfg.schedule == "step":
        return warm * cfg.lr * (0.1 if epoch >= cfg.epochs // 2 and cfg.epochs > 1 else 1.0)
    if cfg.schedule == "multistep":
        passed = sum(epoch >= round(m * cfg.epochs) for m in cfg.milestones)
        return warm * cfg.lr * cfg.gamma**passed
    # cosine, after the warm-up (optax warmup_cosine_decay_schedule): lr -> lr * lr_floor
    span = max(cfg.epochs - cfg.warmup_epochs, 1e-12)
    t = min(max(epoch - cfg.warmup_epochs, 0.0) / span, 1.0)
    return warm * cfg.lr * (cfg.lr_floor + (1.0 - cfg.lr_floor) * 0.5 * (1.0 + math.cos(math.pi * t)))


def make_optimizer(params, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def mix_batch(x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> tuple[torch.Tensor, tuple]:
    """CutMix's draw for one (already augmented) batch when ``cfg.cutmix_prob`` > 0: the images to
    forward and the targets ``(y_a, y_b, lam)`` for :func:`mixed_loss`; without CutMix ``(x, (y, y, 1.0))``."""
    if cfg.cutmix_prob > 0:
        from ddlnl.augment import cutmix

        x, y_a, y_b, lam = cutmix(x, y, generator=generator, p=cfg.cutmix_prob)
        return x, (y_a, y_b, lam)
    return x, (y, y, 1.0)


def mixed_loss(out: torch.Tensor, targets: tuple, cfg: TrainConfig) -> torch.Tensor:
    """``lam * L(y_a) + (1 - lam) * L(y_b)`` for the targets of :func:`mix_batch` (L alone when lam is 1)."""
    y_a, y_b, lam = targets
    if lam < 1.0:
        return lam * label_loss(out, y_a, cfg) + (1.0 - lam) * label_loss(out, y_b, cfg)
    return label_loss(out, y_a, cfg)


def batch_loss(model, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
    """The loss of one (already augmented) batch, with CutMix when ``cfg.cutmix_prob`` > 0."""
    x, targets = mix_batch(x, y, cfg, generator)
    return mixed_loss(model(x), targets, cfg)


def augment_batch(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
    from ddlnl import augment

    if cfg.augment == "dsa":
        return augment.dsa(x, cfg.dsa_strategy, generator=generator)
    if cfg.augment == "crop_flip":
        return augment.crop_flip(x, generator=generator)
    return x


def gsam_step(params: list[torch.Tensor], loss_fn: Callable[[], torch.Tensor], opt: torch.optim.Optimizer, rho: float,
              alpha: float, *, stacked: bool = False) -> torch.Tensor:
    """One GSAM (surrogate-gap SAM, adaptive) update, as DATM's FTD buffers use it; returns the first loss.

    g = dL(w); e = rho * w^2 * g / (|| |w| g || + 1e-12); g' = dL(w + e);
    g' <- g' - alpha * (g - cos(g, g') ||g|| g' / ||g'||); w <- w - lr * g' (via ``opt``).
    With ``stacked`` the parameters carry K networks along their first dimension
    (:class:`ddlnl.models.stacked.StackedNetworks`) and every norm and cosine is per network.
    """
    def total(terms):  # one sum per network: a scalar, or (K,) over the stack
        return sum(t.flatten(1).sum(1) if stacked else t.sum() for t in terms)

    def per(v: torch.Tensor, p: torch.Tensor) -> torch.Tensor:  # a per-network value, broadcast to p
        return v.view(-1, *([1] * (p.dim() - 1))) if stacked else v

    loss = loss_fn()
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        norm = torch.sqrt(total((p.abs() * g) ** 2 for p, g in zip(params, grads)))
        scale = rho / (norm + 1e-12)
        eps = [p * p * g * per(scale, p) for p, g in zip(params, grads)]
        for p, e in zip(params, eps):
            p.add_(e)
    grads2 = torch.autograd.grad(loss_fn(), params)
    with torch.no_grad():
        for p, e in zip(params, eps):
            p.sub_(e)
        inner = total(g * h for g, h in zip(grads, grads2))
        n1 = torch.sqrt(total(g * g for g in grads))
        n2 = torch.sqrt(total(h * h for h in grads2))
        cos = inner / (n1 * n2 + 1e-12)
        for p, g, h in zip(params, grads, grads2):
            p.grad = h - alpha * (g - per(cos * n1, p) * h / per(n2 + 1e-12, p))
    opt.step()
    return loss.detach()


@dataclass
class Sweep:
    """One pass of an epoch: batches of ``cfg.batch_size`` from a fresh permutation of ``indices``
    (``None``: every sample), each batch augmented once by the trainer.

    ``tag`` is handed back to the hook's loss (e.g. which network the sweep trains); ``start``
    runs right after the permutation is drawn; ``forwards`` is how many forward passes per
    sample the trainer adds to ``images_processed`` (a hook adds others with ``TrainRun.count``).
    """

    indices: torch.Tensor | None = None
    tag: object = None
    start: Callable[[], None] | None = None
    forwards: int = 1


@dataclass
class TrainRun:
    """What a hook may use while its training runs: the (eager) networks, the data on the
    training device, the recipe, the batch/augmentation generator and the running statistics."""

    nets: list[nn.Module]
    images: torch.Tensor
    labels: torch.Tensor
    cfg: TrainConfig
    generator: torch.Generator | None
    stats: TrainStats

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        """Another draw of the recipe's augmentation (e.g. a second view of the batch)."""
        return augment_batch(x, self.cfg, self.generator)

    def count(self, images: int) -> None:
        """Add forward passes the trainer does not see (extra views, a per-sample loss pass)."""
        self.stats.images_processed += int(images)


@dataclass
class Step:
    """One batch, as the hook's loss sees it. ``nets`` are the forward callables of the networks for
    this batch (compiled under ``cfg.compile`` for full batches, eager otherwise)."""

    run: TrainRun
    epoch: int
    sweep: Sweep
    batch: int  # index of the batch within its sweep
    batches: int  # batches in the sweep
    idx: torch.Tensor  # sample indices
    x: torch.Tensor  # images[idx], augmented
    y: torch.Tensor  # labels[idx]
    nets: list


class TrainHook:
    """How a method changes its training; this base class is plain training.

    ``plan(epoch, run)`` is called at the start of every epoch, after the lr is set, and returns the
    epoch's sweeps (plain training: one sweep over every sample; DivideMix co-divides here);
    ``loss(step)`` returns one batch's loss (plain training: the configured loss of network 0, with
    CutMix; Co-teaching selects small-loss samples here); ``end_epoch(epoch, run)`` is called after
    every epoch (plain training: nothing; checkpoint tests, model selection). The trainer owns the
    rest: one optimiser over all networks' parameters, the lr schedule, batch drawing, augmentation,
    compile, loss bookkeeping and resume (``state_dict``/``load_state_dict`` carry the hook's own state).
    A hook that keeps ``plan`` and ``loss`` (only ``end_epoch`` and state) lets its training be
    stacked with others (``batch_networks``).
    """

    def plan(self, epoch: int, run: TrainRun) -> list[Sweep]:
        return [Sweep()]

    def loss(self, step: Step) -> torch.Tensor:
        return batch_loss(step.nets[0], step.x, step.y, step.run.cfg, step.run.generator)

    def end_epoch(self, epoch: int, run: TrainRun) -> None:
        """Called after every epoch (0-based), before ``epoch_callback``: e.g. test the networks at a
        checkpoint (``ddlnl.evaluate.CheckpointTests``) or keep the best weights so far. Plain training: nothing."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    @property
    def stackable(self) -> bool:
        """Whether its training may run stacked with others: plain batches and loss, one network."""
        return type(self).plan is TrainHook.plan and type(self).loss is TrainHook.loss


@dataclass
class Training:
    """One training :func:`train_networks` runs: a fresh network (or co-trained networks, as a list)
    and its own data, generator (data order, augmentation, CutMix), hook, resume state and
    ``epoch_callback`` (see :func:`train_network`)."""

    net: nn.Module | Sequence[nn.Module]
    images: torch.Tensor
    labels: torch.Tensor
    generator: torch.Generator | None = None
    hook: TrainHook | None = None
    epoch_callback: Callable | None = None
    resume: dict | None = None

    @property
    def nets(self) -> list[nn.Module]:
        return list(self.net) if isinstance(self.net, (list, tuple)) else [self.net]

    @property
    def first_epoch(self) -> int:
        return 0 if not self.resume else int(self.resume["epoch"]) + 1


def train_network(
    net: nn.Module | Sequence[nn.Module],
    images: torch.Tensor,
    labels: torch.Tensor,
    cfg: TrainConfig,
    *,
    generator: torch.Generator | None = None,
    progress: bool = False,
    desc: str = "train",
    epoch_callback=None,
    resume: dict | None = None,
    hook: TrainHook | None = None,
) -> TrainStats:
    """Train ``net`` in place on preprocessed ``images`` (N, 3, H, W): :func:`train_networks` with one training.

    ``labels`` are int64 class indices or float (N, C) soft-label logits. Batches are drawn
    from a fresh permutation each epoch; the last partial batch is kept. ``epoch_callback``
    (if given) is called as ``epoch_callback(epoch, net, state)`` after every epoch, where
    ``state()`` returns what :func:`training_state` needs to resume; pass that dict back as
    ``resume`` to continue after its epoch exactly as if never interrupted.

    ``net`` may be a list of networks trained jointly (one optimiser over all their parameters,
    which for SGD and Adam is the same as one optimiser per network); ``hook`` (a
    :class:`TrainHook`) then says which samples each epoch sweeps and what each batch's loss is.
    """
    training = Training(net, images, labels, generator, hook, epoch_callback, resume)
    return train_networks([training], cfg, progress=progress, desc=desc)[0]


def train_networks(trainings: Sequence[Training], cfg: TrainConfig, *, progress: bool = False, desc: str = "train",
                   on_done: Callable[[int, TrainStats], None] | None = None) -> list[TrainStats]:
    """Run independent trainings of one recipe, ``cfg.batch_networks`` of them side by side.

    Trainings that can be stacked (one network each, of one architecture, the same number of
    images, a plain hook, the same resume epoch) train in groups as one
    :class:`ddlnl.models.stacked.StackedNetworks`: each keeps its own initial weights, data order,
    augmentation and CutMix draws (from its own generator, in the order a lone training draws them)
    and optimiser state, so a stacked training equals the same training run alone up to float
    rounding. Returns one :class:`TrainStats` per training, in order; a group's wall time is shared
    evenly among its trainings. ``on_done(i, stats)`` is called as soon as training i has finished
    (with its group), so a caller can keep finished work before the rest is done.
    """
    trainings = list(trainings)
    stats: list[TrainStats | None] = [None] * len(trainings)
    for group in stack_groups(trainings, cfg):
        for i, s in zip(group, _train_group([trainings[i] for i in group], cfg, progress, desc), strict=True):
            stats[i] = s
            if on_done is not None:
                on_done(i, s)
    return stats


def stack_groups(trainings: Sequence[Training], cfg: TrainConfig) -> list[list[int]]:
    """The trainings' indices in the groups that train side by side, in order of their first member:
    stackable trainings (one network, a plain hook) of one architecture, image shape, device and
    resume epoch, at most :func:`networks_at_once` per group; every other training alone."""
    groups, kinds = [], {}
    for i, t in enumerate(trainings):
        net = t.nets[0]
        if cfg.batch_networks == 1 or len(t.nets) > 1 or not (t.hook or TrainHook()).stackable:
            groups.append([i])
            continue
        kind = (t.first_epoch, tuple(t.images.shape), type(net), tuple((n, tuple(p.shape)) for n, p in net.state_dict().items()),
                str(next(net.parameters()).device))
        kinds.setdefault(kind, []).append(i)
    for members in kinds.values():
        first = trainings[members[0]]
        k = networks_at_once(cfg, first.nets[0], first.images.shape[1:], len(members))
        groups += [members[j : j + k] for j in range(0, len(members), k)]
    return sorted(groups, key=lambda g: g[0])


def networks_at_once(cfg: TrainConfig, net: nn.Module, image_shape: Sequence[int], count: int) -> int:
    """``cfg.batch_networks`` for ``count`` stackable trainings of ``net``'s architecture: the number
    asked for, or under ``auto`` 1 on a CPU and on a GPU as many as half its free memory holds."""
    if cfg.batch_networks != "auto":
        return max(1, min(int(cfg.batch_networks), count))
    device = next(net.parameters()).device
    if device.type != "cuda" or count == 1:
        return 1
    free, _ = torch.cuda.mem_get_info(device)
    per_net = network_training_bytes(net, image_shape, cfg.batch_size)
    return max(1, min(count, int(0.5 * free // max(per_net, 1))))


def network_training_bytes(net: nn.Module, image_shape: Sequence[int], batch: int) -> int:
    """A generous estimate of what training one network takes: four copies of its parameters
    (weights, gradients, two optimiser moments) and, per image of a batch, three times every
    layer's output (kept for the backward pass, with its gradient and a spare)."""
    elements = [0]

    def count(_module, _inputs, output):
        if isinstance(output, torch.Tensor):
            elements[0] += output[0].numel()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    try:
        with torch.no_grad():
            was_training = net.training
            net.eval()
            p = next(net.parameters())
            net(torch.zeros(1, *image_shape, device=p.device, dtype=p.dtype))
            net.train(was_training)
    finally:
        for h in handles:
            h.remove()
    param_bytes = sum(t.numel() * t.element_size() for t in net.parameters())
    return 4 * param_bytes + 3 * elements[0] * 4 * batch


def _train_group(group: list[Training], cfg: TrainConfig, progress: bool, desc: str) -> list[TrainStats]:
    """The epoch loop for one training, or for a stack of trainings (see :func:`train_networks`)."""
    from tqdm.auto import tqdm

    for t in group:
        if t.images.shape[0] != t.labels.shape[0]:
            raise ConfigError(f"{t.images.shape[0]} images but {t.labels.shape[0]} labels", "pass one label per image")
        if t.images.shape[0] == 0:
            raise ConfigError("cannot train on an empty set", "check the dataset and IPC")
    K = len(group)
    hooks = [t.hook or TrainHook() for t in group]
    gens = [t.generator for t in group]
    device = next(group[0].nets[0].parameters()).device
    images = [t.images.to(device) for t in group]
    labels = [t.labels.to(device) for t in group]
    opt_states = [restore_training_state(t.resume, t.net, t.generator, hook) for t, hook in zip(group, hooks)]
    first = group[0].first_epoch
    stack = None
    if K > 1:
        from ddlnl.models.stacked import StackedNetworks

        stack = StackedNetworks([t.nets[0] for t in group])
        params = list(stack.parameters())
    else:
        params = [p for m in group[0].nets for p in m.parameters()]
    opt = make_optimizer(params, cfg)
    if first > 0:
        opt.load_state_dict(opt_states[0] if stack is None else stack.stack_optimizer_states(opt_states))
    n = images[0].shape[0]
    # dynamic=False: one static graph per batch shape (at most two), not a slower dynamic-shape one.
    eager = [stack] if stack is not None else group[0].nets
    forwards = [torch.compile(m, dynamic=False) for m in eager] if cfg.compile else eager
    stats = [TrainStats() for _ in group]
    runs = [TrainRun(t.nets, x, y, cfg, g, s) for t, x, y, g, s in zip(group, images, labels, gens, stats)]
    passes = 2 if cfg.sam == "gsam" else 1  # forward passes per batch
    start = time.perf_counter()
    for m in eager:
        m.train()
    bar = tqdm(range(first, cfg.epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        for g in opt.param_groups:
            g["lr"] = lr_at(cfg, epoch)
        totals, count = torch.zeros(K, dtype=torch.float64), 0
        plans = [hook.plan(epoch, run) for hook, run in zip(hooks, runs)]
        for s in range(len(plans[0])):
            sweeps = [p[s] for p in plans]
            size = n if sweeps[0].indices is None else int(sweeps[0].indices.numel())
            orders = []
            for sweep, g in zip(sweeps, gens):
                order = torch.randperm(size, generator=g, device="cpu").to(device)
                orders.append(order if sweep.indices is None else sweep.indices.to(device)[order])
                if sweep.start is not None:
                    sweep.start()
            compile_partial = cfg.compile and size % cfg.batch_size * (cfg.epochs - first) >= COMPILE_MIN_IMAGES
            batches = math.ceil(size / cfg.batch_size)
            for b in range(batches):
                idxs = [order[b * cfg.batch_size : (b + 1) * cfg.batch_size] for order in orders]
                xs = [augment_batch(x[idx], cfg, g) for x, idx, g in zip(images, idxs, gens)]
                models = forwards if idxs[0].numel() == cfg.batch_size or compile_partial else eager
                if stack is None:
                    step = Step(runs[0], epoch, sweeps[0], b, batches, idxs[0], xs[0], labels[0][idxs[0]], models)

                    def losses(step=step):
                        return hooks[0].loss(step).reshape(1)
                else:
                    mixed = [mix_batch(x, y[idx], cfg, g) for x, y, idx, g in zip(xs, labels, idxs, gens)]
                    batch = torch.stack([m[0] for m in mixed])

                    def losses(batch=batch, mixed=mixed, model=models[0]):
                        out = model(batch)
                        return torch.stack([mixed_loss(out[k], mixed[k][1], cfg) for k in range(K)])

                seen = []

                def loss_fn(losses=losses, seen=seen):
                    values = losses()
                    seen.append(values.detach())
                    return values.sum()

                if cfg.sam == "gsam":
                    gsam_step(params, loss_fn, opt, cfg.gsam_rho, cfg.gsam_alpha, stacked=stack is not None)
                else:
                    loss = loss_fn()
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                totals += seen[0].double().cpu() * idxs[0].numel()
                count += idxs[0].numel()
            for st, sweep in zip(stats, sweeps):
                st.images_processed += size * sweep.forwards * passes
        for k, (t, hook, run, st) in enumerate(zip(group, hooks, runs, stats)):
            st.epoch_losses.append(float(totals[k]) / max(count, 1))
            if not math.isfinite(st.epoch_losses[-1]):
                raise FloatingPointError(f"training loss became {st.epoch_losses[-1]} at epoch {epoch}")
            hook.end_epoch(epoch, run)
            if t.epoch_callback is not None:
                def state(epoch=epoch, k=k, t=t, hook=hook):
                    opt_state = opt.state_dict() if stack is None else stack.optimizer_state(opt, k)
                    return training_state(epoch, t.net, opt_state, t.generator, hook)

                t.epoch_callback(epoch, t.net, state)
        bar.set_postfix(loss=f"{stats[0].epoch_losses[-1]:.3f}")
    seconds = time.perf_counter() - start
    if stack is not None:
        stack.release()
    for st in stats:
        st.seconds = seconds / K
    return stats


def training_state(epoch: int, net: nn.Module | Sequence[nn.Module], opt_state: dict,
                   generator: torch.Generator | None, hook: TrainHook | None = None) -> dict:
    """What resuming after ``epoch`` needs: weights (a list for several networks), the optimiser's
    state dict, the batch/augmentation generator, the global torch RNG and the hook's state
    (tensors and containers only, so it loads with ``weights_only=True``)."""
    def weights(m):
        return {k: v.detach().clone() for k, v in m.state_dict().items()}

    state = {"epoch": epoch, "net": [weights(m) for m in net] if isinstance(net, (list, tuple)) else weights(net),
             "opt": opt_state, "generator": None if generator is None else generator.get_state(),
             "torch_rng": torch.get_rng_state()}
    hook_state = hook.state_dict() if hook is not None else {}
    if hook_state:
        state["hook"] = hook_state
    return state


def restore_training_state(state: dict | None, net: nn.Module | Sequence[nn.Module],
                           generator: torch.Generator | None, hook: TrainHook | None = None) -> dict | None:
    """Load a :func:`training_state` dict into the network(s), generator and hook; returns the
    optimiser state dict it holds (None without a state), for the caller's optimiser."""
    if not state:
        return None
    if isinstance(net, (list, tuple)):
        for m, w in zip(net, state["net"], strict=True):
            m.load_state_dict(w)
    else:
        net.load_state_dict(state["net"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if hook is not None and state.get("hook"):
        hook.load_state_dict(state["hook"])
    return state["opt"]
