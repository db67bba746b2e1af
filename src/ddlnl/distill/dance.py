"""``dance``: DANCE, dual-view distribution alignment (Zhang et al., IJCAI 2024).

DANCE is distribution matching (:mod:`ddlnl.distill.dm`) with two expert-based changes
(docs/methods/dance.md):

* **Pseudo long-term distribution alignment.** The encoder of each iteration is not a random
  network but a "middle" one, ``λ·θ⁰_k + (1 − λ)·θᵀ_k`` with λ ~ U(0, 1), between the initial
  and the trained weights of a randomly chosen expert k. With it, the per-class mean embeddings
  of real and synthetic images are matched (siamese augmentation: one parameter draw for both
  batches), one class and one SGD step at a time.
* **Distribution calibration.** Then, per class, the synthetic images take a step on the
  trained expert's cross-entropy for their class. The two losses alternate; they are not summed.

The set is stored with IDC's multi-formation (``factor`` 2): each stored 32×32 image holds a
2×2 grid of 16×16 images, and decodes to four 32×32 training images (:mod:`ddlnl.decode`);
the IPC budget counts stored images. The ``mix`` initialisation tiles the first
``ipc·factor²`` images of each noisy class, downsampled (nearest), into the grids.

Pixel space. The original optimises images in [0, 1] and normalises them on the way into the
network; its ``lr_img`` (0.01·IPC) is a step in pixel units and its clamp is to [0, 1]. Here
the learned tensor is the same pixel-space image: ``ctx.preprocess.inverse`` of the
initialisation, clamped to [0, 1] at the start of every iteration, and ``ctx.preprocess`` is
applied (differentiably) before decoding and the network. The stored set is the preprocessed
image, as every other method's, so clamping in pixel space is the same as clamping the
stored images to the [0, 1] bounds mapped through the normalisation,
``[(0 − mean_c)/std_c, (1 − mean_c)/std_c]`` per channel.

Experts are trained once per noisy set through :func:`ddlnl.experts.load_or_train_experts`
(the MTT/DATM cache; DANCE's recipe is part of the key) and only their first and last rows
(θ⁰, θᵀ) are used.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ddlnl.augment import apply_dsa, sample_dsa
from ddlnl.decode import decode_multiformation
from ddlnl.distill.base import Capabilities, DistillContext, Distiller, register_distiller
from ddlnl.distill.dm import class_means, dm_loss
from ddlnl.distill.loop import DistillLoop
from ddlnl.errors import ConfigError, check_choice
from ddlnl.evaluate import build_model
from ddlnl.experts import ExpertConfig, load_or_train_experts
from ddlnl.models.functional import unflatten_params
from ddlnl.synset import SyntheticSet

INITS = ("mix", "real")


# --------------------------------------------------------------------------- pieces


def interpolate_params(theta0: torch.Tensor, theta_t: torch.Tensor, lam: float | torch.Tensor) -> torch.Tensor:
    """The 'middle' encoder's flat parameters: ``lam * theta0 + (1 - lam) * theta_t`` (DANCE's ``model_interval``)."""
    return lam * theta0 + (1.0 - lam) * theta_t


@torch.no_grad()
def load_flat(net: torch.nn.Module, flat: torch.Tensor) -> torch.nn.Module:
    """Copy a flat parameter vector (the layout of :mod:`ddlnl.models.functional`) into ``net``."""
    params = dict(net.named_parameters())
    for name, value in unflatten_params(net, flat).items():  # refuses a vector of the wrong length
        params[name].copy_(value)
    return net


def mix_init(pixels: torch.Tensor, ipc: int, factor: int) -> torch.Tensor:
    """IDC/DANCE's 'mix' initialisation of one class: ``ipc·factor²`` images (N, C, H, W) → ``ipc`` grids.

    Image ``k·ipc + m`` is downsampled (nearest, as ``F.interpolate``'s default in the
    original) into cell k (row-major) of stored image m, so :func:`ddlnl.decode.decode_multiformation`,
    which is crop-major, gives back image ``k·ipc + m`` (resized) at position ``k·ipc + m``.
    """
    n_needed = ipc * factor**2
    if pixels.shape[0] != n_needed:
        raise ConfigError(f"mix init needs {n_needed} images, got {pixels.shape[0]}", "pass ipc * factor**2 images")
    _, c, h, w = pixels.shape
    if h % factor or w % factor:
        raise ConfigError(f"image size {h}x{w} is not divisible by factor {factor}", "use factor 2 for 32 or 64 px images")
    sh, sw = h // factor, w // factor
    out = torch.empty(ipc, c, h, w, dtype=pixels.dtype)
    for k in range(factor**2):
        i, j = divmod(k, factor)
        out[:, :, i * sh : (i + 1) * sh, j * sw : (j + 1) * sw] = F.interpolate(pixels[k * ipc : (k + 1) * ipc], size=(sh, sw))
    return out


def expert_config(o) -> ExpertConfig:
    """DANCE's pre-training recipe (docs/methods/dance.md §3.1) from the distiller's options."""
    return ExpertConfig(num_experts=o.num_experts, epochs=o.expert_epochs, lr=o.expert_lr, momentum=o.expert_momentum,
                        weight_decay=o.expert_weight_decay, batch_size=o.expert_batch, dsa_strategy=o.expert_dsa_strategy,
                        schedule="multistep", milestones=tuple(o.expert_milestones), gamma=o.expert_gamma,
                        cutmix_prob=o.expert_cutmix_prob, compile=o.expert_compile, batch_networks=o.expert_batch_networks or "auto")


# --------------------------------------------------------------------------- the distiller


@register_distiller
class DANCE(Distiller):
    name = "dance"
    capabilities = Capabilities(init_only=True, native_eval=True)
    KEY_ONLY_IF_SET = {"expert_batch_networks": None}  # added after runs were made

    @dataclass(frozen=True)
    class Options:
        iterations: int = 10000  # niter
        num_experts: int = 5  # num_premodel: experts the middle encoder is drawn from (the original trains 20, uses 5)
        batch_real: int = 128  # real images per class per matching step
        batch_syn_max: int = 200  # decoded synthetic images per class per step, at most
        lr_img: float | None = None  # SGD lr on pixel-space images; null: 0.01 * IPC (the original's rule)
        momentum: float = 0.5
        factor: int = 2  # multi-formation factor (1: off)
        init: str = "mix"  # mix (IDC/DANCE) | real (random real images, one per stored image)
        iter_calib: int = 1  # calibration rounds per iteration (0: matching only)
        dsa_strategy: str = "dance:color_crop_cutout"  # shared (siamese) augmentation in both steps
        # expert pre-training (docs/methods/dance.md §3.1)
        expert_epochs: int = 60
        expert_lr: float = 0.01
        expert_momentum: float = 0.9
        expert_weight_decay: float = 5e-4
        expert_batch: int = 64
        expert_milestones: tuple = (0.6667, 0.8333)  # x gamma at 2/3 and 5/6 of the epochs (40 and 50 of 60)
        expert_gamma: float = 0.2
        expert_cutmix_prob: float = 0.5
        expert_dsa_strategy: str = "dance:color_crop"
        expert_compile: bool = False  # speed only
        expert_batch_networks: int | str | None = None  # speed only: experts trained side by side (null: auto)

        def __post_init__(self):
            check_choice("dance init", self.init, INITS)
            ints = {"iterations": 0, "num_experts": 1, "batch_real": 1, "batch_syn_max": 1, "factor": 1, "iter_calib": 0,
                    "expert_epochs": 1, "expert_batch": 1}
            for name, low in ints.items():
                v = getattr(self, name)
                if not isinstance(v, int) or isinstance(v, bool) or v < low:
                    raise ConfigError(f"dance option {name} must be an integer >= {low}, got {v!r}", f"set {name} to {max(low, 1)} or more")
            if self.lr_img is not None and (not isinstance(self.lr_img, (int, float)) or isinstance(self.lr_img, bool) or self.lr_img <= 0):
                raise ConfigError(f"dance lr_img must be a positive number or null, got {self.lr_img!r}", "set lr_img: null (0.01 * IPC)")
            if not isinstance(self.momentum, (int, float)) or not 0 <= self.momentum < 1:
                raise ConfigError(f"dance momentum must be in [0, 1), got {self.momentum!r}", "use momentum: 0.5 (the original)")
            object.__setattr__(self, "expert_milestones", tuple(self.expert_milestones))  # frozen: normalise once
            expert_config(self)  # range checks of the expert recipe (ConfigError on bad values)

    def lr_img(self, ipc: int) -> float:
        return self.options.lr_img if self.options.lr_img is not None else 0.01 * ipc

    # -- initialisation -----------------------------------------------------------------------
    def init_pixels(self, ctx: DistillContext, ipc: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """Pixel-space (in [0, 1]) stored images and their labels, class by class."""
        o = self.options
        xs = []
        for c in range(ctx.num_classes):
            idx = torch.as_tensor(ctx.class_indices(c))
            if o.init == "mix":
                need = ipc * o.factor**2
                if len(idx) < need:  # DD_LNL: with replacement when a class is short; here: cycle
                    ctx.log(f"[ddlnl] dance: noisy class {c} has {len(idx)} images, mix init needs {need}; reusing some")
                    idx = idx.repeat(-(-need // len(idx)))
                px = ctx.preprocess.inverse(ctx.images[idx[:need]].float())  # the first ones, as the original
                xs.append(mix_init(px, ipc, o.factor))
            else:
                pick = idx[torch.randperm(len(idx), generator=g)[:ipc]]
                xs.append(ctx.preprocess.inverse(ctx.images[pick].float()))
        labels = torch.arange(ctx.num_classes).repeat_interleave(ipc)
        return torch.cat(xs).clamp(0.0, 1.0), labels

    def init_only(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        """The initialisation alone (the run's init-only control): with ``mix``, 4·IPC real images per class, downsampled."""
        ctx.check_ipc(ipc)
        pixels, labels = self.init_pixels(ctx, ipc, ctx.generator("dance"))  # the loop's first draw: its own start
        return self._synset(ctx, pixels, labels)

    def _synset(self, ctx, pixels, labels) -> SyntheticSet:
        with torch.no_grad():
            images = ctx.preprocess(pixels.detach().cpu())
        s = SyntheticSet(images, labels, ctx.preprocess)
        if self.options.factor > 1:
            s.meta["decode"] = {"kind": "multiformation", "factor": self.options.factor}
        return s

    # -- one view of the synthetic set --------------------------------------------------------
    def decoded(self, ctx, pixels: torch.Tensor, c: int, ipc: int, g: torch.Generator) -> torch.Tensor:
        """Class ``c``'s training images in network space (preprocessed, decoded, subsampled to batch_syn_max)."""
        return self.subsample(self.decode_class(ctx, pixels, c, ipc), self.draw_subsample(ipc, g))

    def decode_class(self, ctx, pixels: torch.Tensor, c: int, ipc: int) -> torch.Tensor:
        """Class ``c``'s stored images, preprocessed and decoded (ipc * factor² training images)."""
        return decode_multiformation(ctx.preprocess(pixels[c * ipc : (c + 1) * ipc]), self.options.factor)

    def draw_subsample(self, ipc: int, g: torch.Generator) -> torch.Tensor | None:
        """Which decoded images of a class a step uses: a draw when there are more than batch_syn_max
        (it depends only on the count, so it can be drawn before the pixels it selects exist)."""
        decoded = ipc * self.options.factor**2
        return torch.randperm(decoded, generator=g)[: self.options.batch_syn_max] if decoded > self.options.batch_syn_max else None

    @staticmethod
    def subsample(x: torch.Tensor, pick: torch.Tensor | None) -> torch.Tensor:
        return x if pick is None else x[pick.to(x.device)]

    # -- one outer iteration ------------------------------------------------------------------
    def iteration(self, ctx: DistillContext, pixels: torch.Tensor, opt: torch.optim.Optimizer, g: torch.Generator,
                  ends: list, nets: tuple, ipc: int) -> dict:
        """Middle encoder, the per-class matching steps, then the per-class calibration steps.

        ``ends`` holds each expert's (θ⁰, θᵀ); ``nets`` two networks of the model recipe that
        receive the middle and the trained weights. Returns the mean per-class losses, the
        expert and λ drawn, and the number of images the networks saw.
        """
        o = self.options
        middle, trained = nets
        # 1. the middle encoder between a random expert's initial and trained weights
        k = int(torch.randint(len(ends), (1,), generator=g))
        lam = float(torch.rand((), generator=g))
        load_flat(middle, interpolate_params(ends[k][0], ends[k][1], lam))
        load_flat(trained, ends[k][1])
        with torch.no_grad():
            pixels.clamp_(0.0, 1.0)
        # 2. inner-class view: per-class distribution matching, one step per class. The real side
        # does not depend on the steps, so every class's real batch is drawn first (in the order
        # the draws would be made class by class) and embedded in one forward.
        real, picks, draws = [], [], []
        for c in range(ctx.num_classes):
            pool = torch.as_tensor(ctx.class_indices(c))
            real.append(ctx.images[pool[torch.randperm(len(pool), generator=g)[: o.batch_real]]].to(ctx.device))
            picks.append(self.draw_subsample(ipc, g))
            draws.append(sample_dsa(o.dsa_strategy, 1, image_size=real[-1].shape[-1], generator=g, device=ctx.device, shared=True))
        with torch.no_grad():
            real_means = class_means(middle.embed(torch.cat([apply_dsa(x, d) for x, d in zip(real, draws)])), [x.shape[0] for x in real])
        inner, n_img = 0.0, 0
        for c in range(ctx.num_classes):
            syn = apply_dsa(self.subsample(self.decode_class(ctx, pixels, c, ipc), picks[c]), draws[c])
            loss = dm_loss(real_means[c : c + 1], class_means(middle.embed(syn), [syn.shape[0]]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            inner += float(loss.detach())
            n_img += real[c].shape[0] + syn.shape[0]
        # 3. inter-class view: calibration by the trained expert, one step per class
        calib = 0.0
        for _ in range(o.iter_calib):
            for c in range(ctx.num_classes):
                syn = self.decoded(ctx, pixels, c, ipc, g)
                draw = sample_dsa(o.dsa_strategy, 1, image_size=syn.shape[-1], generator=g, device=ctx.device, shared=True)
                syn = apply_dsa(syn, draw)
                target = torch.full((syn.shape[0],), c, dtype=torch.long, device=ctx.device)
                loss = F.cross_entropy(trained(syn), target)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                calib += float(loss.detach())
                n_img += syn.shape[0]
        return {"inner": inner / ctx.num_classes, "calib": calib / max(ctx.num_classes * o.iter_calib, 1),
                "expert": k, "lam": lam, "images": n_img}

    # -- the loop -----------------------------------------------------------------------------
    def setup(self, ctx: DistillContext, ipc: int, experts: list[torch.Tensor]):
        """(pixels, labels, optimiser, generator, ends, nets) for :meth:`iteration`."""
        g = ctx.generator("dance")
        pixels, labels = self.init_pixels(ctx, ipc, g)
        pixels = pixels.to(ctx.device).requires_grad_(True)
        opt = torch.optim.SGD([pixels], lr=self.lr_img(ipc), momentum=self.options.momentum)
        ends = [(t[0].to(ctx.device), t[-1].to(ctx.device)) for t in experts]  # (θ⁰, θᵀ) of each expert
        nets = tuple(build_model(ctx.model, ctx.num_classes, pixels.shape[-1]).to(ctx.device).requires_grad_(False)
                     for _ in range(2))
        return pixels, labels, opt, g, ends, nets

    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        o = self.options
        experts = load_or_train_experts(ctx, expert_config(o))
        start = time.perf_counter()
        pixels, labels, opt, g, ends, nets = self.setup(ctx, ipc, experts)
        self.losses: list[float] = []  # mean per-class matching loss, per iteration
        self.calib_losses: list[float] = []  # mean per-class calibration loss, per iteration
        count = {"images_processed": 0}
        loop = DistillLoop(ctx, o.iterations, {"pixels": pixels, "opt": opt, "gen": g, "losses": self.losses,
                                               "calib_losses": self.calib_losses, "count": count},
                           snapshot=lambda: self._synset(ctx, pixels.detach().clamp(0.0, 1.0), labels))
        from tqdm.auto import tqdm

        bar = tqdm(loop, desc="dance", initial=loop.start, total=o.iterations, disable=not ctx.progress, dynamic_ncols=True,
                   leave=False)
        for it in bar:
            r = self.iteration(ctx, pixels, opt, g, ends, nets, ipc)
            count["images_processed"] += r["images"]
            if loop.report(r["inner"] + r["calib"]):
                self.losses.append(r["inner"])
                self.calib_losses.append(r["calib"])
            bar.set_postfix(inner=f"{r['inner']:.3f}", calib=f"{r['calib']:.3f}")
            if it % max(1, o.iterations // 10) == 0 or it == o.iterations - 1:
                ctx.log(f"[ddlnl] dance it {it}/{o.iterations}: inner (matching) {r['inner']:.4f}, "
                        f"calibration {r['calib']:.4f}, expert {r['expert']}, lambda {r['lam']:.2f}")
        with torch.no_grad():
            pixels.clamp_(0.0, 1.0)
        ctx.images_processed += count["images_processed"]
        ctx.timings["distill"] = time.perf_counter() - start
        out = self._synset(ctx, pixels, labels)
        out.meta["dance"] = {"iterations": o.iterations, "lr_img": self.lr_img(ipc), "experts": len(ends),
                             "inner_first_last": self.losses[:1] + self.losses[-1:],
                             "calib_first_last": self.calib_losses[:1] + self.calib_losses[-1:], "rejected": loop.rejected}
        return out
