"""How well an attack separates members from non-members: ROC, AUC, balanced accuracy, TPR at a
low FPR, each with a seeded bootstrap interval.

TPR at a low FPR is the number that matters (Carlini et al. 2022): an attack that is right on a
few examples with near certainty breaks their privacy even when its AUC is close to 0.5. The
rule here: the highest TPR over the thresholds whose FPR is at most the bound. With ``m``
non-members the smallest non-zero FPR is ``1/m``: below that the bound allows no false positive
at all, so ``fpr_resolution`` is reported beside the rates.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from ddlnl.errors import ConfigError

FPR_BOUNDS = (0.001, 0.01)
METRICS = ("auc", "balanced_accuracy", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr")


def _labels_and_scores(members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    members, non_members = np.asarray(members, dtype=np.float64), np.asarray(non_members, dtype=np.float64)
    if members.size == 0 or non_members.size == 0:
        raise ConfigError("an attack needs members and non-members to score", "audit at least one image of each")
    if not (np.isfinite(members).all() and np.isfinite(non_members).all()):
        raise ConfigError("attack scores must be finite", "check the network's outputs (NaN or Inf logits)")
    return np.r_[np.ones(members.size), np.zeros(non_members.size)], np.r_[members, non_members]


def roc(members: np.ndarray, non_members: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(FPR, TPR) at every threshold; a higher score means "member"."""
    y, s = _labels_and_scores(members, non_members)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    return fpr, tpr


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, bound: float) -> float:
    """The highest TPR among thresholds whose FPR is at most ``bound`` (the curve starts at (0, 0))."""
    return float(tpr[fpr <= bound].max())


def balanced_accuracy(fpr: np.ndarray, tpr: np.ndarray) -> float:
    """The best accuracy of a threshold on equally many members and non-members: max of (TPR + 1 - FPR) / 2."""
    return float(np.max(1.0 - (fpr + 1.0 - tpr) / 2.0))


def attack_metrics(members: np.ndarray, non_members: np.ndarray) -> dict[str, float]:
    """AUC, balanced accuracy and TPR at 0.1 % and 1 % FPR of one attack's scores."""
    y, s = _labels_and_scores(members, non_members)
    fpr, tpr = roc(members, non_members)
    return {"auc": float(roc_auc_score(y, s)), "balanced_accuracy": balanced_accuracy(fpr, tpr),
            "tpr_at_0.1%_fpr": tpr_at_fpr(fpr, tpr, FPR_BOUNDS[0]), "tpr_at_1%_fpr": tpr_at_fpr(fpr, tpr, FPR_BOUNDS[1])}


def fast_metrics(members: np.ndarray, non_members: np.ndarray) -> np.ndarray:
    """:func:`attack_metrics`' four values (same order) by sorting alone: for the bootstrap, where
    scikit-learn's per-call overhead would dominate (``tests/test_privacy.py`` checks they agree)."""
    m, o = np.sort(members), np.sort(non_members)
    below, upto = np.searchsorted(o, m, "left"), np.searchsorted(o, m, "right")
    auc = (below.sum() + 0.5 * (upto - below).sum()) / (m.size * o.size)
    t = np.r_[np.unique(np.r_[m, o]), np.inf]  # thresholds: "member" when score >= t
    tpr = (m.size - np.searchsorted(m, t, "left")) / m.size
    fpr = (o.size - np.searchsorted(o, t, "left")) / o.size
    return np.array([auc, balanced_accuracy(fpr, tpr), tpr_at_fpr(fpr, tpr, FPR_BOUNDS[0]), tpr_at_fpr(fpr, tpr, FPR_BOUNDS[1])])


def with_intervals(members: np.ndarray, non_members: np.ndarray, *, bootstrap: int = 200, seed: int = 0,
                   level: float = 0.95) -> dict:
    """:func:`attack_metrics` with percentile bootstrap intervals: members and non-members are resampled
    separately (with replacement, ``bootstrap`` times, from ``seed``), so each draw keeps both counts."""
    if not isinstance(bootstrap, int) or isinstance(bootstrap, bool) or bootstrap < 0:
        raise ConfigError(f"bootstrap must be a non-negative integer, got {bootstrap!r}", "pass e.g. --bootstrap 200 (0: no intervals)")
    members, non_members = np.asarray(members, dtype=np.float64), np.asarray(non_members, dtype=np.float64)
    point = attack_metrics(members, non_members)
    out = {name: {"value": value} for name, value in point.items()}
    if bootstrap:
        rng = np.random.default_rng(seed)
        draws = np.array([fast_metrics(rng.choice(members, members.size), rng.choice(non_members, non_members.size))
                          for _ in range(bootstrap)])
        low, high = np.percentile(draws, [50 * (1 - level), 50 * (1 + level)], axis=0)
        for k, name in enumerate(point):
            out[name] |= {"low": float(low[k]), "high": float(high[k])}
    return out | {"members": int(members.size), "non_members": int(non_members.size), "fpr_resolution": 1.0 / non_members.size,
                  "interval": {"level": level, "bootstrap": bootstrap} if bootstrap else None}


def strongest_attack(attacks: dict) -> tuple[str, dict]:
    """The attack (name, metrics) with the highest TPR at 0.1 % FPR, ties broken by TPR at 1 % FPR, then AUC:
    the tail first (Carlini et al. 2022). Picked after scoring, so it is the best of several tries."""
    return max(attacks.items(), key=lambda kv: tuple(kv[1][k]["value"] for k in ("tpr_at_0.1%_fpr", "tpr_at_1%_fpr", "auc")))


def format_metric(v: dict) -> str:
    """``0.512 [0.431, 0.598]`` (the value and its bootstrap interval), ``0.512`` without one."""
    return f"{v['value']:.3f}" + (f" [{v['low']:.3f}, {v['high']:.3f}]" if "low" in v else "")
