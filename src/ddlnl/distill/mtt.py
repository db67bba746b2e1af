"""``mtt``: matching training trajectories (Cazenavette et al., 2022), and the loop DATM reuses.

Each iteration picks an expert trajectory and a start epoch t, lets a student take
``syn_steps`` SGD steps on the synthetic set from the expert's parameters at epoch t (with
the learnable lr), and moves the images and the lr so that the student ends close to the
expert's parameters at epoch t + ``expert_epochs`` (:mod:`ddlnl.distill.matching`).

MTT: hard labels, initialisation from random real images of each noisy class, start epoch
uniform in [0, max_start_epoch), every update applied. Experts train ``train_epochs``
(default: the window max_start_epoch + expert_epochs; DD_LNL: 100); matching reads only the
window, so only it and the label epoch are cached. :class:`TrajectoryMatchingBase`
holds the loop; DATM (:mod:`ddlnl.distill.datm`) overrides the hooks for its window,
initialisation, soft labels and threshold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ddlnl.augment import DEFAULT_DSA_STRATEGY
from ddlnl.distill.base import Capabilities, DistillContext, Distiller, register_distiller
from ddlnl.distill.loop import DistillLoop
from ddlnl.distill.matching import COMPILE_MODES, MODES, CompiledSteps, EagerSteps, make_plan, match_trajectory
from ddlnl.errors import ConfigError, check_choice
from ddlnl.evaluate import build_model
from ddlnl.experts import ExpertConfig, load_or_train_experts
from ddlnl.synset import SyntheticSet


def check_common(o) -> None:
    """Range checks shared by MTT's and DATM's options."""
    check_choice("matching mode", o.mode, MODES)
    if not isinstance(o.compile, bool):
        raise ConfigError(f"compile must be true or false, got {o.compile!r}", "set compile: true or compile: false")
    check_choice("compile_mode", o.compile_mode, COMPILE_MODES)
    if o.compile and o.mode == "naive":
        raise ConfigError("compile: true works with mode exact or tesla, not naive",
                          "set mode: exact (the same gradients at constant memory) or compile: false")
    ints = {"iterations": 0, "num_experts": 1, "syn_steps": 1, "expert_epochs": 1, "max_start_epoch": 1}
    for name, low in ints.items():
        v = getattr(o, name)
        if not isinstance(v, int) or isinstance(v, bool) or v < low:
            raise ConfigError(f"{name} must be an integer >= {low}, got {v!r}", f"set {name} to {max(low, 1)} or more")
    if o.batch_syn is not None and (not isinstance(o.batch_syn, int) or o.batch_syn < 1):
        raise ConfigError(f"batch_syn must be a positive integer or null, got {o.batch_syn!r}", "set batch_syn: null (all images) or e.g. 100")
    for name in ("lr_img", "lr_lr", "lr_teacher"):
        v = getattr(o, name)
        if not isinstance(v, (int, float)) or v <= 0:
            raise ConfigError(f"{name} must be a positive number, got {v!r}", f"set {name} as in docs/methods/datm.md §2.7")
    m = o.expert_momentum
    if not isinstance(m, (int, float)) or isinstance(m, bool) or not 0.0 <= m < 1.0:
        raise ConfigError(f"expert_momentum must be a number in [0, 1), got {m!r}",
                          "set expert_momentum: 0 (MTT's and DATM's buffers) or e.g. 0.9")
    window = o.max_start_epoch + o.expert_epochs
    te = o.train_epochs
    if te is not None and (not isinstance(te, int) or isinstance(te, bool) or te < window):
        raise ConfigError(f"train_epochs ({te!r}) must be an integer >= max_start_epoch + expert_epochs "
                          f"({o.max_start_epoch} + {o.expert_epochs} = {window}): matching reads the experts up to that epoch",
                          f"set train_epochs to {window} or more (DD_LNL: 100), or null (= {window})")


def expert_length(o) -> int:
    """Epochs each expert trains: ``train_epochs``, else the matching window max_start_epoch + expert_epochs."""
    return o.max_start_epoch + o.expert_epochs if o.train_epochs is None else o.train_epochs


class TrajectoryMatchingBase(Distiller):
    """The shared loop. Subclasses may override the hooks below.

    The options a run uses come from :meth:`resolved_options` (``self.options`` as configured,
    unless a subclass derives per-setting values, as DATM's ``setting: auto`` does) and are
    passed to the hooks as ``o``; without ``o`` a hook reads the configured options.
    """

    capabilities = Capabilities(learned_lr=True)
    label_lr_momentum = 0.9
    KEY_ONLY_IF_SET = {"train_epochs": None, "label_epoch": "final", "expert_batch_networks": None, "compile_mode": "default"}  # added after runs were made

    def resolved_options(self, ctx: DistillContext, ipc: int):
        """The options for a run on ``ctx`` at ``ipc``: a new object, ``self.options`` is never changed."""
        return self.options

    # -- hooks -------------------------------------------------------------------------------
    def start_epoch(self, it: int, rng: np.random.Generator, o=None) -> int:
        o = self.options if o is None else o
        return int(rng.integers(0, o.max_start_epoch))

    def init_set(self, ctx: DistillContext, ipc: int, experts, g: torch.Generator, o=None):
        """(images, labels) to start from; float labels are soft-label logits and are learned."""
        return ctx.random_real(ipc, g)

    def accept(self, loss: float, o=None) -> bool:
        return True

    def label_lr(self, o=None) -> float | None:
        return None

    def label_epoch(self, o=None) -> int:
        """The expert epoch that labels/filters the initial set (MTT: none, so the last; it is kept anyway)."""
        return expert_length(self.options if o is None else o)

    # -- the loop ----------------------------------------------------------------------------
    def expert_config(self, o=None) -> ExpertConfig:
        """Experts train ``train_epochs``; only the matching window and the label epoch are stored."""
        o = self.options if o is None else o
        window = o.max_start_epoch + o.expert_epochs
        return ExpertConfig(num_experts=o.num_experts, epochs=expert_length(o),
                            lr=o.lr_teacher_expert, momentum=o.expert_momentum, batch_size=o.expert_batch,
                            gsam=o.expert_gsam, compile=o.expert_compile, dsa_strategy=o.dsa_strategy,
                            batch_networks=o.expert_batch_networks or "auto",
                            keep_until=window, keep_also=(self.label_epoch(o),))

    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        return self.match(ctx, ipc, self.resolved_options(ctx, ipc))

    def match(self, ctx: DistillContext, ipc: int, o) -> SyntheticSet:
        """The matching loop with the run's options ``o``."""
        experts = load_or_train_experts(ctx, self.expert_config(o))
        start_time = time.perf_counter()
        g = ctx.generator("trajectory_matching")
        rng = np.random.default_rng(ctx.seed_for("trajectory_matching.start_epochs"))
        images, labels = self.init_set(ctx, ipc, experts, g, o)
        images = images.to(ctx.device).detach().clone()
        soft = labels.is_floating_point()
        labels = labels.to(ctx.device).detach().clone()
        syn_lr = torch.tensor(float(o.lr_teacher), device=ctx.device)
        images.requires_grad_(True)
        syn_lr.requires_grad_(True)
        opt_img = torch.optim.SGD([images], lr=o.lr_img, momentum=0.5)
        opt_lr = torch.optim.SGD([syn_lr], lr=o.lr_lr, momentum=0.5)
        opt_y = None
        if soft and self.label_lr(o) is not None:
            labels.requires_grad_(True)
            opt_y = torch.optim.SGD([labels], lr=self.label_lr(o), momentum=self.label_lr_momentum)
        net = build_model(ctx.model, ctx.num_classes, images.shape[-1]).to(ctx.device)
        net.requires_grad_(False)
        steps = CompiledSteps(net, o.compile_mode) if o.compile else EagerSteps(net)
        if o.compile:
            ctx.log(f"[ddlnl] {self.name}: compiled matching steps (traced and compiled on the first iteration)")
        n = images.shape[0]
        batch_syn = o.batch_syn or n
        self.losses: list[float] = []
        count = {"skipped": 0, "images_processed": 0}
        order: list[int] = []
        state = {"images": images, "syn_lr": syn_lr, "labels": labels, "opt_img": opt_img, "opt_lr": opt_lr, "gen": g,
                 "rng": rng, "order": order, "losses": self.losses, "count": count}
        if opt_y is not None:
            state["opt_y"] = opt_y
        loop = DistillLoop(ctx, o.iterations, state, snapshot=lambda: SyntheticSet(
            images.detach().cpu(), labels.detach().cpu(), ctx.preprocess, lr=float(syn_lr.detach())))
        from tqdm.auto import tqdm

        bar = tqdm(loop, desc=self.name, initial=loop.start, total=o.iterations, disable=not ctx.progress, dynamic_ncols=True,
                   leave=False)
        for it in bar:
            if not order:
                order.extend(rng.permutation(len(experts)).tolist())
            traj = experts[order.pop()]
            t = self.start_epoch(it, rng, o)
            plan = make_plan(n, o.syn_steps, batch_syn, generator=g, dsa_strategy=o.dsa_strategy, image_size=images.shape[-1])
            r = match_trajectory(net, traj[t].to(ctx.device), traj[t + o.expert_epochs].to(ctx.device), images,
                                 labels, syn_lr, plan, mode=o.mode, steps=steps)
            # forward passes: exact/tesla run each step twice
            count["images_processed"] += o.syn_steps * min(batch_syn, n) * (1 if o.mode == "naive" else 2)
            if not loop.report(r.loss):
                continue
            self.losses.append(r.loss)
            if self.accept(r.loss, o):
                for opt, p, grad in ((opt_img, images, r.grad_images), (opt_lr, syn_lr, r.grad_lr), (opt_y, labels, r.grad_labels)):
                    if opt is not None and grad is not None:
                        opt.zero_grad(set_to_none=True)
                        p.grad = grad.to(p.dtype).reshape(p.shape)
                        opt.step()
                with torch.no_grad():  # a negative lr turns descent into ascent: keep it positive
                    syn_lr.clamp_(min=o.lr_teacher * 1e-3)
                loop.report(r.loss)  # the stepped state must be finite too
            else:
                count["skipped"] += 1
            bar.set_postfix(loss=f"{r.loss:.4f}", lr=f"{float(syn_lr.detach()):.2e}")
            if it % max(1, o.iterations // 10) == 0 or it == o.iterations - 1:
                ctx.log(f"[ddlnl] {self.name} it {it}/{o.iterations}: loss {r.loss:.4f} start epoch {t} syn_lr {float(syn_lr.detach()):.3e}")
        self.skipped = count["skipped"]
        ctx.images_processed += count["images_processed"]
        ctx.timings["distill"] = time.perf_counter() - start_time
        out = SyntheticSet(images.detach().cpu(), labels.detach().cpu(), ctx.preprocess, lr=float(syn_lr.detach()))
        out.meta["matching"] = {"losses_first_last": self.losses[:1] + self.losses[-1:], "skipped": self.skipped,
                                "iterations": o.iterations, "mode": o.mode, "final_syn_lr": float(syn_lr.detach()),
                                "expert_train_epochs": expert_length(o)}
        return out


@register_distiller
class MTT(TrajectoryMatchingBase):
    name = "mtt"

    @dataclass(frozen=True)
    class Options:
        iterations: int = 5000
        num_experts: int = 100
        syn_steps: int = 50
        expert_epochs: int = 2
        max_start_epoch: int = 20
        train_epochs: int | None = None  # experts' length (null: max_start_epoch + expert_epochs; DD_LNL: 100)
        batch_syn: int | None = None  # synthetic images per inner step (null: all)
        lr_img: float = 1000.0
        lr_lr: float = 1e-5
        lr_teacher: float = 0.01  # initial synthetic lr
        lr_teacher_expert: float = 0.01  # experts' SGD lr
        expert_momentum: float = 0.0  # experts' SGD momentum (MTT's buffers: 0)
        mode: str = "exact"  # exact | tesla | naive (see ddlnl.distill.matching)
        compile: bool = False  # exact/tesla steps through Inductor-compiled graphs (matching.CompiledSteps)
        compile_mode: str = "default"  # speed only: reduce-overhead = CUDA graphs of the compiled steps on a GPU
        dsa_strategy: str = DEFAULT_DSA_STRATEGY
        expert_batch: int = 256  # experts' SGD batch (DATM/MTT buffers: 256)
        expert_gsam: bool = False
        expert_compile: bool = False
        expert_batch_networks: int | str | None = None  # speed only: experts trained side by side (null: auto)

        def __post_init__(self):
            check_common(self)
