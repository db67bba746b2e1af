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

    def __post_init__(self):
        for name in ("epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise ConfigError(f"{name} must be a positive integer, got {v!r}", f"set {name} to 1 or more")
        check_choice("schedule", self.schedule, SCHEDULES)
        check_choice("augmentation", self.augment, AUGMENTS)
        check_choice("loss", self.loss, LOSSES)
        check_choice("optimizer", self.optimizer, OPTIMIZERS)
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


def batch_loss(model, x: torch.Tensor, y: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
    """The loss of one (already augmented) batch, with CutMix when ``cfg.cutmix_prob`` > 0."""
    if cfg.cutmix_prob > 0:
        from ddlnl.augment import cutmix

        x, y_a, y_b, lam = cutmix(x, y, generator=generator, p=cfg.cutmix_prob)
        out = model(x)
        if lam < 1.0:
            return lam * label_loss(out, y_a, cfg) + (1.0 - lam) * label_loss(out, y_b, cfg)
        return label_loss(out, y_a, cfg)
    return label_loss(model(x), y, cfg)


def augment_batch(x: torch.Tensor, cfg: TrainConfig, generator: torch.Generator | None) -> torch.Tensor:
    from ddlnl import augment

    if cfg.augment == "dsa":
        return augment.dsa(x, cfg.dsa_strategy, generator=generator)
    if cfg.augment == "crop_flip":
        return augment.crop_flip(x, generator=generator)
    return x


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
    """What a hook may use while :func:`train_network` runs: the (eager) networks, the data on the
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
    """How a method changes :func:`train_network`; this base class is plain training.

    ``plan(epoch, run)`` is called at the start of every epoch, after the lr is set, and returns the
    epoch's sweeps (plain training: one sweep over every sample; DivideMix co-divides here);
    ``loss(step)`` returns one batch's loss (plain training: the configured loss of network 0, with
    CutMix; Co-teaching selects small-loss samples here); ``end_epoch(epoch, run)`` is called after
    every epoch (plain training: nothing; checkpoint tests, model selection). The trainer owns the
    rest: one optimiser over all networks' parameters, the lr schedule, batch drawing, augmentation,
    compile, loss bookkeeping and resume (``state_dict``/``load_state_dict`` carry the hook's own state).
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
    """Train ``net`` in place on preprocessed ``images`` (N, 3, H, W) with SGD.

    ``labels`` are int64 class indices or float (N, C) soft-label logits. Batches are drawn
    from a fresh permutation each epoch; the last partial batch is kept. ``epoch_callback``
    (if given) is called as ``epoch_callback(epoch, net, state)`` after every epoch, where
    ``state()`` returns what :func:`training_state` needs to resume; pass that dict back as
    ``resume`` to continue after its epoch exactly as if never interrupted.

    ``net`` may be a list of networks trained jointly (one optimiser over all their parameters,
    which for SGD and Adam is the same as one optimiser per network); ``hook`` (a
    :class:`TrainHook`) then says which samples each epoch sweeps and what each batch's loss is.
    """
    from tqdm.auto import tqdm

    if images.shape[0] != labels.shape[0]:
        raise ConfigError(f"{images.shape[0]} images but {labels.shape[0]} labels", "pass one label per image")
    if images.shape[0] == 0:
        raise ConfigError("cannot train on an empty set", "check the dataset and IPC")
    nets = list(net) if isinstance(net, (list, tuple)) else [net]
    hook = hook or TrainHook()
    device = next(nets[0].parameters()).device
    images, labels = images.to(device), labels.to(device)
    opt = make_optimizer([p for m in nets for p in m.parameters()], cfg)
    first = restore_training_state(resume, net, opt, generator, hook)
    n = images.shape[0]
    # dynamic=False: one static graph per batch shape (at most two), not a slower dynamic-shape one.
    forwards = [torch.compile(m, dynamic=False) for m in nets] if cfg.compile else nets
    stats = TrainStats()
    run = TrainRun(nets, images, labels, cfg, generator, stats)
    start = time.perf_counter()
    for m in nets:
        m.train()
    bar = tqdm(range(first, cfg.epochs), desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for epoch in bar:
        for group in opt.param_groups:
            group["lr"] = lr_at(cfg, epoch)
        total, count = 0.0, 0
        for sweep in hook.plan(epoch, run):
            size = n if sweep.indices is None else int(sweep.indices.numel())
            order = torch.randperm(size, generator=generator, device="cpu").to(device)
            if sweep.indices is not None:
                order = sweep.indices.to(device)[order]
            if sweep.start is not None:
                sweep.start()
            compile_partial = cfg.compile and size % cfg.batch_size * (cfg.epochs - first) >= COMPILE_MIN_IMAGES
            batches = math.ceil(size / cfg.batch_size)
            for b in range(batches):
                idx = order[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                x = augment_batch(images[idx], cfg, generator)
                models = forwards if idx.numel() == cfg.batch_size or compile_partial else nets
                loss = hook.loss(Step(run, epoch, sweep, b, batches, idx, x, labels[idx], models))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
            stats.images_processed += size * sweep.forwards
        stats.epoch_losses.append(total / max(count, 1))
        if not math.isfinite(stats.epoch_losses[-1]):
            raise FloatingPointError(f"training loss became {stats.epoch_losses[-1]} at epoch {epoch}")
        hook.end_epoch(epoch, run)
        bar.set_postfix(loss=f"{stats.epoch_losses[-1]:.3f}")
        if epoch_callback is not None:
            epoch_callback(epoch, net, lambda epoch=epoch: training_state(epoch, net, opt, generator, hook))
    stats.seconds = time.perf_counter() - start
    return stats


def training_state(epoch: int, net: nn.Module | Sequence[nn.Module], opt: torch.optim.Optimizer,
                   generator: torch.Generator | None, hook: TrainHook | None = None) -> dict:
    """What resuming after ``epoch`` needs: weights (a list for several networks), optimiser state, the
    batch/augmentation generator, the global torch RNG and the hook's state (tensors and containers
    only, so it loads with ``weights_only=True``)."""
    def weights(m):
        return {k: v.detach().clone() for k, v in m.state_dict().items()}

    state = {"epoch": epoch, "net": [weights(m) for m in net] if isinstance(net, (list, tuple)) else weights(net),
             "opt": opt.state_dict(), "generator": None if generator is None else generator.get_state(),
             "torch_rng": torch.get_rng_state()}
    hook_state = hook.state_dict() if hook is not None else {}
    if hook_state:
        state["hook"] = hook_state
    return state


def restore_training_state(state: dict | None, net: nn.Module | Sequence[nn.Module], opt: torch.optim.Optimizer,
                           generator: torch.Generator | None, hook: TrainHook | None = None) -> int:
    """Load a :func:`training_state` dict into the training objects; returns the first epoch still to run."""
    if not state:
        return 0
    if isinstance(net, (list, tuple)):
        for m, w in zip(net, state["net"], strict=True):
            m.load_state_dict(w)
    else:
        net.load_state_dict(state["net"])
    opt.load_state_dict(state["opt"])
    if generator is not None and state.get("generator") is not None:
        generator.set_state(state["generator"])
    torch.set_rng_state(state["torch_rng"])
    if hook is not None and state.get("hook"):
        hook.load_state_dict(state["hook"])
    return int(state["epoch"]) + 1
