"""Cross-entropy on the full noisy training set: the dashed line of the paper's figures.

Protocol (the paper's code defines none; this is ours, documented in docs/protocol.md): the
preset's ConvNet, random crop (pad 4) + horizontal flip, SGD momentum 0.9, weight decay
5e-4, cosine schedule, final-epoch clean test accuracy, mean ± std over ``runs`` networks.
"""

from __future__ import annotations

from ddlnl.evaluate import EvalResult, evaluate_set
from ddlnl.train import TrainConfig


def train_full_noisy(data, preset: dict, *, device, seed: int = 0, progress: bool = False) -> EvalResult:
    """Train ``preset['baseline']['runs']`` networks on all noisy labels of ``data`` and test them."""
    b = preset["baseline"]
    return evaluate_set(
        data.x_train,
        data.y_train_noisy,
        test_images=data.x_test,
        test_labels=data.y_test,
        num_classes=data.num_classes,
        model=preset["model"],
        train=TrainConfig.from_dict(b["train"]),
        runs=b.get("runs", 1),
        seed=seed,
        device=device,
        progress=progress,
        desc="full noisy",
    )
