"""The distiller interface and its registry.

Implementing a new distiller
----------------------------
1. Write ``ddlnl/distill/<name>.py`` with an options dataclass (every hyper-parameter, with
   the default a preset may override) and a subclass of :class:`Distiller` that sets
   ``name``, ``Options`` and implements :meth:`Distiller.distill`.
2. Decorate the class with ``@register_distiller``.
3. Import the module in ``ddlnl/distill/__init__.py`` and give it a section under
   ``methods:`` in each preset (``smoke``, ``quick``, ``paper``).

``distill`` receives a :class:`DistillContext` (preprocessed training images, *noisy*
labels, the model recipe, the device, a seed) and returns a :class:`SyntheticSet`. It never
sees clean labels: the distillers are label-agnostic, as in the paper.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.errors import ConfigError
from ddlnl.synset import SyntheticSet
from ddlnl.utils.registry import Configurable, Registry


@dataclass
class DistillContext:
    """Everything a distiller may read. ``images`` are preprocessed; ``labels`` are the noisy ones."""

    dataset: str
    images: torch.Tensor  # float (N, 3, H, W), preprocessed
    labels: np.ndarray  # int64 (N,), noisy
    num_classes: int
    preprocess: Preprocessor
    model: dict
    device: torch.device = torch.device("cpu")
    seed: int = 0
    cache_dir: Path | None = None
    progress: bool = False
    log: Callable[[str], None] = print
    timings: dict = field(default_factory=dict)  # the distiller adds 'experts' / 'distill' seconds here
    # The noise spec ({"type", "rate"}), only for looking up published per-setting hyper-parameters
    # (DATM's paper table); distillers never see clean labels.
    noise: dict | None = None
    images_processed: int = 0  # forward passes over real and synthetic images (cost accounting)
    # Where the distillation loop checkpoints (None: no checkpoints) and how often (seconds);
    # see ddlnl.distill.loop.DistillLoop. `ddlnl run` keys the file by method, options and IPC.
    checkpoint: Path | None = None
    checkpoint_every_s: float = 300.0

    def class_indices(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.labels == c)

    def check_ipc(self, ipc: int) -> None:
        if not isinstance(ipc, (int, np.integer)) or ipc < 1:
            raise ConfigError(f"IPC must be a positive integer, got {ipc!r}", "pass --ipc 1, 10 or 50")
        counts = np.bincount(self.labels, minlength=self.num_classes)
        smallest = int(counts.min())
        if ipc > smallest:
            c = int(counts.argmin())
            raise ConfigError(
                f"IPC {ipc} is larger than noisy class {c}, which has only {smallest} training images",
                f"use --ipc {max(smallest, 1)} or less (or a larger training set)",
            )

    def random_real(self, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``ipc`` distinct random training images of each noisy class (the random control's draw)."""
        xs, ys = [], []
        for c in range(self.num_classes):
            idx = self.class_indices(c)
            pick = idx[torch.randperm(len(idx), generator=generator)[:ipc].numpy()]
            xs.append(self.images[pick])
            ys.append(torch.full((ipc,), c, dtype=torch.long))
        return torch.cat(xs).clone(), torch.cat(ys)


class Distiller(Configurable, ABC):
    """Turns a noisy training set into ``ipc`` synthetic images per class."""

    kind = "distiller"

    def run(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        """Check the request, distil, and stamp the result with method, IPC and options."""
        ctx.check_ipc(ipc)
        start = time.perf_counter()
        synset = self.distill(ctx, ipc)
        ctx.timings.setdefault("distill", time.perf_counter() - start - ctx.timings.get("experts", 0.0))
        synset.meta.update({"method": self.name, "ipc": ipc, "options": self.options_dict()})
        return synset

    @abstractmethod
    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        ...


_DISTILLERS = Registry("method")
_REGISTRY = _DISTILLERS.classes
register_distiller = _DISTILLERS.register
list_distillers = _DISTILLERS.names
create_distiller = _DISTILLERS.create
