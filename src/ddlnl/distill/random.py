"""``random``: real images drawn at random from each noisy class.

The control shown beside every distilled result: what IPC real images per class give
without any distillation, under the same evaluation recipe.
"""

from __future__ import annotations

from dataclasses import dataclass

from ddlnl.distill.base import Capabilities, DistillContext, Distiller, register_distiller
from ddlnl.synset import SyntheticSet


@register_distiller
class RandomReal(Distiller):
    name = "random"
    capabilities = Capabilities(checkpoints=False)  # one draw, no loop: running again is the resume

    @dataclass(frozen=True)
    class Options:
        pass

    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        images, labels = ctx.random_real(ipc, ctx.generator("random_control"))
        return SyntheticSet(images, labels, ctx.preprocess)
