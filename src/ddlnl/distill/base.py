"""The distiller interface and its registry.

Implementing a new distiller
----------------------------
1. Write ``ddlnl/distill/<name>.py`` with a frozen options dataclass
   (``@dataclass(frozen=True)``: every hyper-parameter, with the default a preset may
   override) and a subclass of :class:`Distiller` that sets ``name``, ``Options`` and
   ``capabilities`` (:class:`Capabilities`: what the method can do, declared, never probed)
   and implements :meth:`Distiller.distill` (and :meth:`Distiller.init_only` if it declares
   ``init_only``).
2. Decorate the class with ``@register_distiller``.
3. Import the module in ``ddlnl/distill/__init__.py`` and give it a section under
   ``methods:`` in each preset (``smoke``, ``quick``, ``paper``). ``tests/test_contracts.py``
   then checks it (smoke run, save/load, determinism, resume, option errors, declared
   capabilities) without a test of its own.

A distiller in another package skips step 3: it is found through its entry point in the group
``ddlnl.distillers`` and brings its preset blocks in ``preset_options`` (docs/api.md).

Options are read-only after construction: a method that derives per-run values (DATM's
``setting: auto``) computes them into a new object (``dataclasses.replace``) for that run.

``distill`` receives a :class:`DistillContext` (preprocessed training images, *noisy*
labels, the model recipe, the device, a seed) and returns a :class:`SyntheticSet`. It never
sees clean labels: the distillers are label-agnostic, as in the paper.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, ClassVar, Protocol

import numpy as np
import torch

from ddlnl.data.noise import NoiseSpec
from ddlnl.data.preprocess import Preprocessor
from ddlnl.data.types import check_ipc
from ddlnl.errors import ConfigError
from ddlnl.synset import SyntheticSet
from ddlnl.utils.registry import Configurable, Registry
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed


@dataclass(frozen=True)
class Capabilities:
    """What a distiller can do, declared as data on the class (``Distiller.capabilities``).

    The pipeline reads these instead of probing for methods; ``tests/test_contracts.py``
    checks every registered distiller against its declaration.
    """

    init_only: bool = False  # Distiller.init_only(ctx, ipc): its starting set, undistilled (the init-only control)
    soft_labels: bool = False  # its sets may carry float (soft / regression) labels
    learned_lr: bool = False  # its sets carry a learned training lr (SyntheticSet.lr)
    native_eval: bool = False  # it has its own evaluation recipe (methods.<name>.native_eval in the presets)
    # It runs an iterative loop that checkpoints to ctx.checkpoint (DistillLoop) and resumes from
    # it; False: a one-shot draw with no loop, resumable trivially by running again.
    checkpoints: bool = True


class Monitor(Protocol):
    """What watches a distillation: ``ddlnl run`` evaluates the current set quickly and may write
    TensorBoard scalars. Monitoring never feeds back into the distillation."""

    every: int  # evaluate every this many iterations (0: never)

    def scalar(self, tag: str, value: float, step: int) -> None: ...

    def evaluate(self, synset: SyntheticSet) -> dict[str, float]: ...


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
    # The noise model of the labels, only for looking up published per-setting hyper-parameters
    # (DATM's paper table); distillers never see clean labels.
    noise: NoiseSpec | None = None
    images_processed: int = 0  # forward passes over real and synthetic images (cost accounting)
    # Where the distillation loop checkpoints (None: no checkpoints) and how often (seconds);
    # see ddlnl.distill.loop.DistillLoop. `ddlnl run` keys the file by method, options and IPC.
    checkpoint: Path | None = None
    checkpoint_every_s: float = 300.0
    # Training samples the method selected, by name (positions in ``images``): the run scores them
    # against the clean labels, which the method never sees (see :meth:`record_selection`).
    selections: dict = field(default_factory=dict)
    # Optional: told every loss, and every ``monitor.every`` iterations asked to evaluate the current
    # set (see :class:`Monitor`); the loop's record of both lands in ``history``.
    monitor: Monitor | None = None
    history: dict | None = None
    # Where each image sits in the full training set, when the context holds a subset of it (``--clean-first``):
    # recorded selections, and so a set's ``init_index``, are mapped to those positions. None: the whole set.
    positions: np.ndarray | None = None

    def __post_init__(self):
        if self.noise is not None and not isinstance(self.noise, NoiseSpec):
            raise TypeError(f"DistillContext.noise must be a ddlnl.data.noise.NoiseSpec or None, got {self.noise!r}")

    def seed_for(self, purpose: str, *index: int) -> int:
        """The seed of one of the distiller's random streams (see :mod:`ddlnl.utils.seeds`)."""
        return stream_seed(self.seed, purpose, *index)

    def generator(self, purpose: str, *index: int) -> torch.Generator:
        """A torch generator on the stream ``purpose`` (image draws, batch orders, augmentation)."""
        return make_generator(self.seed_for(purpose, *index))

    def class_indices(self, c: int) -> np.ndarray:
        return np.flatnonzero(self.labels == c)

    def check_ipc(self, ipc: int) -> None:
        """``ipc`` is a positive integer no larger than the smallest noisy class."""
        check_ipc(self.labels, self.num_classes, ipc)

    def random_real(self, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """``ipc`` distinct random training images of each noisy class (the random control's draw)."""
        index, _ = self.real_index(ipc, generator)
        return self.images[index].clone(), torch.arange(self.num_classes).repeat_interleave(ipc)

    def real_index(self, ipc: int, generator: torch.Generator, allowed: np.ndarray | None = None,
                   prefer: Callable[[int, np.ndarray], list[int]] | None = None,
                   record: bool = True) -> tuple[np.ndarray, int]:
        """Positions of ``ipc`` real images per noisy class (slot order), and how many came from outside ``allowed``.

        The one per-class draw every real-image start goes through (the random control, DATM's expert
        filter and trusted init), so one seed draws the same images whichever asks. Per class: the
        ``allowed`` images (a boolean mask over ``images``; None: all) in a random order; ``prefer(c,
        shuffled)``'s picks among them first (DATM's filter), then the rest in that order; a class with
        too few allowed images fills from its others, in a second random order. ``record``: note the
        draw as the ``init`` selection (False: the caller does, after its own).
        """
        picks, outside = [], 0
        for c in range(self.num_classes):
            pool = self.class_indices(c)
            if allowed is not None:
                pool, extra = pool[allowed[pool]], pool[~allowed[pool]]
            pool = pool[torch.randperm(len(pool), generator=generator).numpy()]
            chosen = np.asarray([] if prefer is None else prefer(c, pool), dtype=np.int64)
            pick = np.concatenate([chosen, pool[~np.isin(pool, chosen)][: ipc - len(chosen)]])
            if allowed is not None and len(pick) < ipc:
                outside += ipc - len(pick)
                pick = np.concatenate([pick, extra[torch.randperm(len(extra), generator=generator).numpy()][: ipc - len(pick)]])
            picks.append(pick)
        index = np.concatenate(picks)
        if record:
            self.record_selection("init", index, what="the real images the set's slots start from")
        return index, outside

    def record_selection(self, name: str, kept, *, among=None, what: str = "", labels=None) -> None:
        """Note that the method kept training samples ``kept`` (positions in ``images``, in slot order for
        ``init``) out of ``among`` (None: all of this context's images). ``init`` becomes the set's ``meta["init_index"]``.
        Stored as full-training-set positions (see ``positions``), which is what the run scores. ``labels``: the
        labels the method gives the kept samples when not their noisy ones (pseudo-labels; the run scores them)."""
        def full(p):
            p = np.asarray(p, dtype=np.int64)
            return p if self.positions is None else np.asarray(self.positions, dtype=np.int64)[p]

        if among is None and self.positions is not None:
            among = np.arange(len(self.positions))  # all of this context's images: the subset
        self.selections[name] = {"kept": full(kept), "what": what, "among": None if among is None else full(among),
                                 **({} if labels is None else {"labels": np.asarray(labels, dtype=np.int64)})}

    def stamp_init_index(self, synset) -> None:
        """Record in ``synset.meta`` which training image each slot started from, when a single real image
        did (so that its label can be checked later: label purity, the framed ``distilled.png``)."""
        init = self.selections.get("init")
        if init is not None and len(init["kept"]) == synset.images.shape[0]:
            synset.meta["init_index"] = init["kept"].tolist()


class Distiller(Configurable, ABC):
    """Turns a noisy training set into ``ipc`` synthetic images per class."""

    kind = "distiller"
    capabilities: ClassVar[Capabilities] = Capabilities()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not isinstance(cls.capabilities, Capabilities):
            raise TypeError(f"{cls.__name__}.capabilities must be a ddlnl.distill.base.Capabilities")
        defines = cls.init_only is not Distiller.init_only
        if defines != cls.capabilities.init_only:
            raise TypeError(f"{cls.__name__} {'defines' if defines else 'does not define'} init_only but declares "
                            f"capabilities.init_only={cls.capabilities.init_only}: make the two agree")

    def run(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        """Check the request, distil, and stamp the result with method, IPC and options."""
        ctx.check_ipc(ipc)
        start = time.perf_counter()
        synset = self.distill(ctx, ipc)
        ctx.stamp_init_index(synset)
        ctx.timings.setdefault("distill", time.perf_counter() - start - ctx.timings.get("experts", 0.0))
        synset.meta.update({"method": self.name, "ipc": ipc, "options": self.options_dict()})
        return synset

    @abstractmethod
    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        ...

    def init_only(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        """The method's starting set without distillation (the init-only control); only for
        distillers that declare ``capabilities.init_only`` (and override this)."""
        raise ConfigError(f"method {self.name!r} has no init-only control (capabilities.init_only is false)",
                          "check distiller.capabilities.init_only before asking for it; DATM and DANCE have one")


DISTILLERS = Registry("method", Distiller, "ddlnl.distillers")  # also the entry points of other packages
_REGISTRY = DISTILLERS.classes
register_distiller = DISTILLERS.register
list_distillers = DISTILLERS.names
distiller_class = DISTILLERS.get
create_distiller = DISTILLERS.create
