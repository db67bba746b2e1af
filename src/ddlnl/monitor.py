"""Watching a distillation: a quick evaluation of the current set every few iterations, and
TensorBoard scalars (``ddlnl run --eval-every N --log-dir DIR``).

The quick evaluation trains one fresh network with the run's evaluation recipe at a fifth of
its epochs (at least one) and tests it on the clean test set, and on the noisy validation split
when the preset holds one. It draws a curve to look at: nothing in a run reads it to make a
choice, and its networks have their own seed stream (``monitor``), so it changes no result.
"""

from __future__ import annotations

import copy
from pathlib import Path

from ddlnl.errors import ConfigError
from ddlnl.evaluate import evaluate_sets, synthetic_set_to_evaluate
from ddlnl.utils.seeds import stream_seed

QUICK_EPOCH_SHARE = 5  # the quick evaluation trains epochs // 5 of the recipe's


def tensorboard_writer(log_dir: str | Path):
    """A ``SummaryWriter`` into ``log_dir``; a clear error when the optional ``tensorboard`` is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ConfigError("--log-dir writes TensorBoard event files, and the tensorboard package is not installed",
                          "pip install 'ddlnl[tensorboard]' (or pip install tensorboard), or drop --log-dir") from None
    return SummaryWriter(log_dir=str(log_dir))


def check_eval_every(every) -> int:
    if not isinstance(every, int) or isinstance(every, bool) or every < 0:
        raise ConfigError(f"--eval-every must be a whole number >= 0, got {every!r}", "pass e.g. --eval-every 50 (0: off)")
    return every


class RunMonitor:
    """A :class:`ddlnl.distill.base.Monitor` for one run: quick evaluations every ``every`` iterations
    (0: none) and, with ``writer``, every number as a TensorBoard scalar."""

    def __init__(self, every: int, preset: dict, data, device, seed: int, writer=None):
        self.every = check_eval_every(every)
        self.data, self.device, self.writer = data, device, writer
        self.seed = stream_seed(seed, "monitor")
        quick = copy.deepcopy(preset)
        train = quick["evaluation"]["train"]
        train["epochs"] = max(1, int(train["epochs"]) // QUICK_EPOCH_SHARE)
        self.preset = quick

    def scalar(self, tag: str, value: float, step: int) -> None:
        if self.writer is not None:
            self.writer.add_scalar(tag, value, step)

    def evaluate(self, synset) -> dict[str, float]:
        d = self.data
        (ev,) = evaluate_sets([synthetic_set_to_evaluate(synset, self.preset, desc="monitor")], test_images=d.x_test,
                              test_labels=d.y_test, num_classes=d.num_classes, runs=1, seed=self.seed, device=self.device,
                              validation=d.validation)
        out = {"test_acc": float(ev.acc_mean)}
        if ev.val_accs is not None:
            out["val_acc"] = float(ev.val_acc_mean)
        return out
