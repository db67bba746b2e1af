"""``dm``: distribution matching (Zhao & Bilen, 2023).

Each iteration draws a fresh randomly initialised network (the evaluation architecture,
frozen) and moves the synthetic images of every class so that their mean embedding matches
the mean embedding of a batch of real images of that (noisy) class. Real and synthetic
batches of a class share one DSA draw (siamese augmentation). The per-class losses are
summed and the images take one SGD step. DANCE builds on these pieces.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from ddlnl.augment import DEFAULT_DSA_STRATEGY, sample_dsa, apply_dsa
from ddlnl.distill.base import Capabilities, DistillContext, Distiller, register_distiller
from ddlnl.distill.loop import DistillLoop
from ddlnl.errors import ConfigError
from ddlnl.evaluate import build_model
from ddlnl.synset import SyntheticSet


def class_means(features: torch.Tensor, sizes: list[int]) -> torch.Tensor:
    """Mean feature of each consecutive block of ``sizes`` rows: (len(sizes), D)."""
    return torch.stack([chunk.mean(dim=0) for chunk in torch.split(features, sizes)])


def dm_loss(real_means: torch.Tensor, syn_means: torch.Tensor) -> torch.Tensor:
    """Σ_c ‖mean_real_c − mean_syn_c‖² (sum over classes and feature dims, as in DM)."""
    return ((real_means - syn_means) ** 2).sum()


def siamese_class_batches(real, syn, generator_, strategy, device):
    """Augment each class's real and synthetic batch with one shared DSA draw per class."""
    out_real, out_syn = [], []
    for xr, xs in zip(real, syn):
        draw = sample_dsa(strategy, 1, image_size=xr.shape[-1], generator=generator_, device=device, shared=True)
        out_real.append(apply_dsa(xr, draw))
        out_syn.append(apply_dsa(xs, draw))
    return out_real, out_syn


@register_distiller
class DistributionMatching(Distiller):
    name = "dm"
    capabilities = Capabilities()  # hard labels, no learned lr

    @dataclass(frozen=True)
    class Options:
        iterations: int = 20000
        batch_real: int = 256  # real images per class per iteration
        lr_img: float = 1.0
        momentum: float = 0.5
        init: str = "real"  # real | noise
        dsa_strategy: str = DEFAULT_DSA_STRATEGY

        def __post_init__(self):
            if self.iterations < 0 or self.batch_real < 1 or self.lr_img <= 0:
                raise ConfigError(
                    f"dm options out of range (iterations={self.iterations}, batch_real={self.batch_real}, lr_img={self.lr_img})",
                    "use iterations >= 0, batch_real >= 1, lr_img > 0",
                )
            if self.init not in ("real", "noise"):
                raise ConfigError(f"unknown dm init {self.init!r}", "use init: real or init: noise")

    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        o = self.options
        g = ctx.generator("dm")
        images, labels = ctx.random_real(ipc, ctx.generator("random_control"))  # starts from the random control's images
        if o.init == "noise":
            images = torch.randn(images.shape, generator=g)
        images = images.to(ctx.device).requires_grad_(True)
        opt = torch.optim.SGD([images], lr=o.lr_img, momentum=o.momentum)
        pools = [torch.as_tensor(ctx.class_indices(c)) for c in range(ctx.num_classes)]
        sizes_syn = [ipc] * ctx.num_classes
        self.losses: list[float] = []
        from tqdm.auto import tqdm

        start = time.perf_counter()
        count = {"images_processed": 0}
        loop = DistillLoop(ctx, o.iterations, {"images": images, "opt": opt, "gen": g, "losses": self.losses, "count": count},
                           snapshot=lambda: SyntheticSet(images.detach().cpu(), labels, ctx.preprocess))
        for it in tqdm(loop, desc="dm", initial=loop.start, total=o.iterations, disable=not ctx.progress, dynamic_ncols=True, leave=False):
            torch.manual_seed(ctx.seed_for("dm.network", it))
            net = build_model(ctx.model, ctx.num_classes, images.shape[-1]).to(ctx.device)
            net.requires_grad_(False)
            real = [ctx.images[p[torch.randint(len(p), (min(o.batch_real, len(p)),), generator=g)]] for p in pools]
            syn = list(torch.split(images, sizes_syn))
            real, syn = siamese_class_batches(real, syn, g, o.dsa_strategy, ctx.device)
            with torch.no_grad():
                real_means = class_means(net.embed(torch.cat(real).to(ctx.device)), [r.shape[0] for r in real])
            loss = dm_loss(real_means, class_means(net.embed(torch.cat(syn)), sizes_syn))
            count["images_processed"] += sum(r.shape[0] for r in real) + images.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if loop.report(float(loss.detach())):
                self.losses.append(float(loss.detach()))
        ctx.timings["distill"] = time.perf_counter() - start
        ctx.images_processed += count["images_processed"]
        return SyntheticSet(images.detach().cpu(), labels, ctx.preprocess)
