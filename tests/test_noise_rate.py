"""The noise-rate estimate that replaces oracle knowledge (Co-teaching's forget rate): on
probabilities whose ranking is known, and on a real CIFAR-10 noise realisation."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from ddlnl.baselines.noise_rate import low_score_rate

REAL = os.environ.get("DDLNL_DATA")
needs_real = pytest.mark.skipif(not (REAL and Path(REAL, "cifar10").exists()), reason="needs $DDLNL_DATA with cifar10/")


def _scores(rng, clean: np.ndarray, classes: int, margin: float) -> np.ndarray:
    logits = rng.normal(0, 1, (clean.size, classes))
    logits[np.arange(clean.size), clean] += margin
    p = np.exp(logits)
    return p / p.sum(1, keepdims=True)


@pytest.mark.parametrize("rate", [0.0, 0.2, 0.4, 0.6, 0.8])
def test_low_score_rate_recovers_symmetric_noise_from_a_ranking(rate):
    rng = np.random.default_rng(1)
    clean = rng.integers(0, 10, 20000)
    noisy = clean.copy()
    flip = rng.random(clean.size) < rate
    noisy[flip] = (clean[flip] + rng.integers(1, 10, flip.sum())) % 10
    probs = _scores(rng, clean, 10, margin=3.0)  # a network that ranks its classes well, calibrated or not
    est, per_class = low_score_rate(probs, noisy)
    assert est == pytest.approx(flip.mean(), abs=0.03) and len(per_class) == 10
    # a monotone transform of the scores (a temperature) changes no estimate: only the ranking counts
    assert low_score_rate(probs**0.3, noisy)[0] == pytest.approx(est, abs=1e-12)


def test_low_score_rate_checks_its_input():
    with pytest.raises(ValueError, match="one row per label"):
        low_score_rate(np.ones((4, 3)) / 3, np.zeros(5, dtype=int))


@needs_real
def test_estimated_rate_is_near_the_realised_rate_on_real_cifar10():
    """Symmetric 40 % noise on 5,000 real CIFAR-10 training images; the estimate reads a width-32
    ConvNet-3 trained 3 epochs (the quick baseline recipe) and 2,000 held-out noisy labels."""
    from ddlnl.baselines.base import BaselineContext
    from ddlnl.baselines.noise_rate import estimate_noise_rate
    from ddlnl.spec import ExperimentSpec
    from ddlnl.train import TrainConfig

    spec = ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method=None, preset="quick", data_root=REAL,
                                 overrides=("data.train_per_class=700", "data.validation=200", "data.test_size=100",
                                            "model.width=32"))
    data = spec.prepare_data()
    preset = spec.resolved.preset
    cfg = TrainConfig.from_dict(preset["baseline"]["train"] | {"compile": False})
    est = estimate_noise_rate(BaselineContext(data, preset, seed=0), cfg)
    assert est.source == "validation split (2000 images)"
    assert abs(est.rate - data.noisy.actual_rate) < 0.1, (est.rate, data.noisy.actual_rate)
