"""Cross-entropy on the full noisy training set: the dashed line of the paper's figures.

Protocol (the paper's code defines none; this is ours, documented in docs/protocol.md): the
preset's ConvNet, random crop (pad 4) + horizontal flip, SGD momentum 0.9, weight decay
5e-4, cosine schedule, final-epoch clean test accuracy, mean ± std over ``runs`` networks.
It is the ``ce`` baseline of the registry (see ``baselines/losses.py``).
"""

from __future__ import annotations

from ddlnl.evaluate import EvalResult


def train_full_noisy(data, preset: dict, *, device, seed: int = 0, progress: bool = False) -> EvalResult:
    """Train ``preset['baseline']['runs']`` networks on all noisy labels of ``data`` and test them."""
    from ddlnl.baselines.base import BaselineContext, create_baseline

    ctx = BaselineContext(data, preset, device=device, seed=seed, progress=progress)
    return create_baseline("ce").run(ctx)
