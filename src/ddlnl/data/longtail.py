"""Long-tailed subsets of a training set (exponential profile, as in Cao et al. 2019).

Class ``c`` of ``C`` keeps ``n_c = floor(n_max * rho ** (-c / (C - 1)))`` samples (at
least one), so class 0 keeps ``n_max`` and the last class ``n_max / rho``; ``rho`` is the
imbalance ratio. ``n_max`` is class 0's sample count, and no class keeps more samples
than it has. Which samples are kept is drawn with a seeded generator.
"""

from __future__ import annotations

import math

import numpy as np

from ddlnl.errors import ConfigError
from ddlnl.utils.seeds import stream_seed


def _check_rho(rho: float) -> float:
    try:
        rho = float(rho)
    except (TypeError, ValueError):
        raise ConfigError(f"imbalance ratio must be a number, got {rho!r}", "use a ratio >= 1, e.g. 10 or 100") from None
    if not math.isfinite(rho) or rho < 1:
        raise ConfigError(f"imbalance ratio must be >= 1, got {rho}",
                          "use 1 for the balanced set or a larger ratio such as 10, 50 or 100")
    return rho


def longtail_counts(n_max: int, num_classes: int, rho: float) -> np.ndarray:
    """Samples to keep per class (int64, length ``num_classes``)."""
    rho = _check_rho(rho)
    if num_classes < 1 or n_max < 1:
        raise ConfigError(f"long-tail needs num_classes >= 1 and n_max >= 1, got {num_classes} and {n_max}")
    if num_classes == 1:
        return np.array([n_max], dtype=np.int64)
    c = np.arange(num_classes, dtype=np.float64)
    counts = np.floor(n_max * rho ** (-c / (num_classes - 1)) + 1e-9)  # guard exact powers against float error
    return np.maximum(counts, 1).astype(np.int64)


def longtail_indices(labels: np.ndarray, rho: float, seed: int) -> np.ndarray:
    """Sorted indices into ``labels`` of a long-tailed subset; ``rho == 1`` keeps everything."""
    rho = _check_rho(rho)
    labels = np.asarray(labels)
    if rho == 1:
        return np.arange(labels.shape[0], dtype=np.int64)
    num_classes = int(labels.max()) + 1
    available = np.bincount(labels, minlength=num_classes)
    if available[0] == 0:
        raise ConfigError("long-tail needs samples of class 0 (its count is n_max)")
    wanted = np.minimum(longtail_counts(int(available[0]), num_classes, rho), available)
    rng = np.random.default_rng(stream_seed(seed, "longtail"))
    keep = [rng.choice(np.flatnonzero(labels == c), size=int(k), replace=False)
            for c, k in enumerate(wanted) if k > 0]
    return np.sort(np.concatenate(keep)).astype(np.int64)
