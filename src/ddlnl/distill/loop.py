"""The distillation loop's bookkeeping: checkpoints, resume, and rejection of non-finite steps.

A distiller hands :class:`DistillLoop` everything that changes from one outer iteration to
the next (the synthetic images and labels, learned lr, optimisers, random generators,
model pools, loss logs) and iterates over it::

    loop = DistillLoop(ctx, o.iterations, {"images": images, "opt": opt, "gen": g, "losses": losses})
    for it in loop:
        ...  # one outer iteration: compute the loss, step the optimisers
        loop.report(loss)

The loop then

* saves a checkpoint (atomically: temporary file, then rename) every
  ``ctx.checkpoint_every_s`` seconds and when it finishes, so that after ``kill -9`` the
  same command resumes from the last checkpoint. All random state is in the checkpoint, so
  on CPU the resumed result equals an uninterrupted run's;
* records each iteration's loss, and every ``ctx.monitor.every`` iterations the metrics of a
  quick evaluation of the current set (``snapshot()``, when the distiller gives one), in
  ``loop.history`` (checkpointed with the state; the run puts it in ``result.json``), and
  hands each number to ``ctx.monitor`` (e.g. a TensorBoard writer);
* keeps the last good state in memory: an iteration whose loss or state is NaN/Inf is
  rejected (the state goes back, the random generators move on), and after
  ``max_faults`` consecutive rejections the last good state is saved and the run stops with
  a :class:`DistillationDiverged` error that says how to continue.

Checkpoints hold only tensors, numbers, strings and containers, and are read back with
``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ddlnl.errors import DdlnlError
from ddlnl.utils.io import atomic_path

CHECKPOINT_VERSION = 1


class DistillationDiverged(DdlnlError):
    """Repeated non-finite steps: the last good state is saved and the run stops."""


def _get(value):
    """A state entry as checkpointable data (tensors, numbers, containers)."""
    if isinstance(value, torch.Tensor):
        return value.detach().clone()
    if isinstance(value, (torch.optim.Optimizer, nn.Module)):
        return copy.deepcopy(value.state_dict())
    if isinstance(value, torch.Generator):
        return value.get_state()
    if isinstance(value, np.random.Generator):
        return copy.deepcopy(value.bit_generator.state)
    if isinstance(value, np.random.RandomState):
        name, keys, pos, has_gauss, gauss = value.get_state()
        return {"name": name, "keys": torch.from_numpy(keys.astype(np.int64)), "pos": pos, "has_gauss": has_gauss, "gauss": gauss}
    if isinstance(value, (list, dict)):
        return copy.deepcopy(value)
    raise TypeError(f"DistillLoop cannot checkpoint a {type(value).__name__}; pass tensors, optimizers, modules, "
                    "generators, lists or dicts")


def _set(value, saved) -> None:
    """Put checkpointed data back into a state entry, in place."""
    if isinstance(value, torch.Tensor):
        with torch.no_grad():
            value.copy_(saved)
    elif isinstance(value, (torch.optim.Optimizer, nn.Module)):
        value.load_state_dict(copy.deepcopy(saved))
    elif isinstance(value, torch.Generator):
        value.set_state(saved)
    elif isinstance(value, np.random.Generator):
        value.bit_generator.state = copy.deepcopy(saved)
    elif isinstance(value, np.random.RandomState):
        value.set_state((saved["name"], saved["keys"].numpy().astype(np.uint32), saved["pos"], saved["has_gauss"], saved["gauss"]))
    elif isinstance(value, list):
        value[:] = copy.deepcopy(saved)
    elif isinstance(value, dict):
        value.clear()
        value.update(copy.deepcopy(saved))


_RANDOM = (torch.Generator, np.random.Generator, np.random.RandomState)


def _finite(value) -> bool:
    if isinstance(value, torch.Tensor):
        return bool(torch.isfinite(value).all()) if value.is_floating_point() else True
    if isinstance(value, nn.Module):
        return all(bool(torch.isfinite(p).all()) for p in value.parameters())
    return True


class DistillLoop:
    """Iterate ``range(iterations)`` from the last checkpoint, saving and guarding ``state``."""

    def __init__(self, ctx, iterations: int, state: dict, *, max_faults: int = 5, snapshot=None):
        self.ctx, self.iterations, self.state, self.max_faults = ctx, int(iterations), state, max_faults
        self.snapshot = snapshot  # () -> the current SyntheticSet, for the monitor's quick evaluations
        self.history = {"iteration": [], "loss": [], "eval": []}
        state["loop_history"] = self.history  # checkpointed: a resumed run's history is whole
        self.monitor = getattr(ctx, "monitor", None)
        self._it = -1
        self.path: Path | None = ctx.checkpoint  # ctx: a DistillContext
        self.every_s = float(ctx.checkpoint_every_s)
        self.start = 0
        self.rejected = 0  # all rejected iterations
        self._faults = 0  # consecutive
        if self.path is not None and Path(self.path).exists():
            self._restore(Path(self.path))
        self._good = self._snapshot(self.start)
        self._last_save = time.monotonic()
        self._reported = False

    # -- iteration --------------------------------------------------------------------------
    def __iter__(self):
        it = self.start
        while it < self.iterations:
            self._reported = False
            self._it = it
            yield it
            if not self._reported:
                self.report(0.0)
            it += 1
            if self._ok:
                self._evaluate(it)
                self._good = self._snapshot(it)
                if self.path is not None and (it == self.iterations or time.monotonic() - self._last_save >= self.every_s):
                    self.save()
        self.ctx.history = self.history

    def report(self, loss: float) -> bool:
        """Record this iteration's loss; returns False (and rolls the state back) when it is not finite."""
        self._reported = True
        self._ok = math.isfinite(float(loss)) and all(_finite(v) for v in self.state.values())
        if self._ok:
            self._faults = 0
            if not self.history["iteration"] or self.history["iteration"][-1] != self._it:  # the first report of an iteration
                self.history["iteration"].append(self._it)
                self.history["loss"].append(float(loss))
                if self.monitor is not None:
                    self.monitor.scalar("distill/loss", float(loss), self._it)
            return True
        self._faults += 1
        self.rejected += 1
        it = self._good["iteration"]
        self.ctx.log(f"[ddlnl] non-finite {'loss' if not math.isfinite(float(loss)) else 'state'} at iteration {it}: "
                     f"step rejected, back to the last good state ({self._faults}/{self.max_faults} in a row)")
        keep_random = {k: _get(v) for k, v in self.state.items() if isinstance(v, _RANDOM)}
        self._load(self._good["state"])
        for k, v in keep_random.items():  # the generators move on, so the next try draws new batches
            _set(self.state[k], v)
        if self._faults >= self.max_faults:
            where = ""
            if self.path is not None:
                self._write(self._good)
                where = f"; the last good state (iteration {it}) is saved in {self.path}"
            raise DistillationDiverged(
                f"distillation diverged: {self._faults} steps in a row gave NaN/Inf{where}",
                "lower the image or lr learning rates (e.g. --set methods.NAME.lr_img=...) and rerun; "
                "a rerun with the same settings resumes from the saved state")
        return False

    def _evaluate(self, done: int) -> None:
        """After ``done`` iterations: the monitor's quick evaluation of the current set, when it is due."""
        every = getattr(self.monitor, "every", 0)
        if self.snapshot is None or not every or (done % every and done != self.iterations):
            return
        metrics = self.monitor.evaluate(self.snapshot())
        self.history["eval"].append({"iteration": done, **metrics})
        for name, value in metrics.items():
            self.monitor.scalar(f"distill/{name}", value, done)
        self.ctx.log(f"[ddlnl] after {done}/{self.iterations} iterations: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()))

    def refresh(self) -> None:
        """Take the current state as the last good one (after set-up done outside the loop, such as
        RCIG's learning-rate tuning, so a rollback keeps it)."""
        self._good = self._snapshot(self._good["iteration"])

    # -- checkpoints ------------------------------------------------------------------------
    def _snapshot(self, iteration: int) -> dict:
        return {"iteration": iteration, "state": {k: _get(v) for k, v in self.state.items()},
                "torch_rng": torch.get_rng_state()}

    def _load(self, state: dict) -> None:
        for k, v in self.state.items():
            _set(v, state[k])

    def save(self) -> None:
        """Write the last good state now (atomic)."""
        if self.path is not None:
            self._write(self._good)
            self._last_save = time.monotonic()

    def _write(self, snap: dict) -> None:
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(Path(self.path)) as tmp:
            torch.save({"version": CHECKPOINT_VERSION, "keys": sorted(self.state), **snap}, tmp)

    def _restore(self, path: Path) -> None:
        before = self._snapshot(0)
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
            if saved.get("version") != CHECKPOINT_VERSION or saved.get("keys") != sorted(self.state):
                raise ValueError("made by a different distiller or ddlnl version")
            self._load(saved["state"])
            torch.set_rng_state(saved["torch_rng"])
        except Exception as e:  # a damaged or foreign checkpoint: start over, loudly
            self._load(before["state"])
            self.ctx.log(f"[ddlnl] ignoring checkpoint {path} ({type(e).__name__}: {e}); starting from iteration 0")
            return
        self.start = int(saved["iteration"])
        self.ctx.log(f"[ddlnl] resuming from checkpoint {path} at iteration {self.start}/{self.iterations}")
