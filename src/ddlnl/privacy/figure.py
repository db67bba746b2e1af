"""``privacy_roc.png``: each target's ROC curves on log-log axes, where low-FPR leaks show."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ddlnl.privacy.metrics import roc
from ddlnl.utils.io import atomic_path

SHOWN = ("lira_online_fixed_variance", "lira_online", "lira_offline_fixed_variance", "loss", "global_threshold")


def roc_figure(curves: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]], path: Path) -> Path:
    """One panel per target; ``curves[target][attack] = (member scores, non-member scores)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(curves), figsize=(4.2 * len(curves), 4.0), squeeze=False)
    for ax, (target, attacks) in zip(axes[0], curves.items()):
        floor = None
        for name in SHOWN:
            if name not in attacks:
                continue
            members, others = attacks[name]
            fpr, tpr = roc(members, others)
            floor = 1.0 / others.size
            ax.plot(np.maximum(fpr, floor / 2), np.maximum(tpr, floor / 2), label=name.replace("_", " "))
        if floor is not None:
            ax.plot([floor / 2, 1], [floor / 2, 1], color="grey", linestyle=":", label="chance")
            ax.set_xlim(floor / 2, 1)
            ax.set_ylim(floor / 2, 1)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"target: {target.replace('_', ' ')}", fontsize=10)
        ax.set_xlabel("false positive rate")
        ax.set_ylabel("true positive rate")
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=150, format="png")
    plt.close(fig)
    return path
