"""Noise models: realised rates, allowed flips only, seeded reproducibility."""

import numpy as np
import pytest

from ddlnl.data.noise import (
    CIFAR10_ASYMMETRIC_FLIPS,
    NoiseSpec,
    make_noisy_labels,
    realise,
    transition_matrix,
)
from ddlnl.errors import ConfigError


def balanced_labels(C, per_class=2000, seed=1):
    rng = np.random.default_rng(seed)
    return rng.permutation(np.repeat(np.arange(C), per_class))


@pytest.mark.parametrize("rate", [0.2, 0.4, 0.8])
def test_symmetric_excludes_true_class_and_hits_rate(rate):
    y = balanced_labels(10, 5000)
    noisy = make_noisy_labels("cifar10", y, 10, NoiseSpec("symmetric", rate, 0))
    assert abs(noisy.actual_rate - rate) < 0.015
    # every flip goes to another class uniformly: off-diagonal rows ≈ rate / 9
    T = noisy.transition
    off = T[~np.eye(10, dtype=bool)]
    assert np.allclose(off, rate / 9, atol=0.02)
    assert np.allclose(np.diag(T), 1 - rate, atol=0.03)


def test_symmetric_inclusive_rate_is_scaled():
    y = balanced_labels(10)
    noisy = make_noisy_labels("cifar10", y, 10, NoiseSpec("symmetric_inclusive", 0.5, 0))
    assert abs(noisy.actual_rate - 0.5 * 9 / 10) < 0.015


@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_cifar10_asymmetric_only_allowed_flips(rate):
    y = balanced_labels(10)
    noisy = make_noisy_labels("cifar10", y, 10, NoiseSpec("asymmetric", rate, 3))
    flipped = noisy.labels != y
    pairs = set(zip(y[flipped].tolist(), noisy.labels[flipped].tolist()))
    assert pairs <= set(CIFAR10_ASYMMETRIC_FLIPS.items())
    assert pairs == set(CIFAR10_ASYMMETRIC_FLIPS.items())
    assert abs(noisy.actual_rate - rate / 2) < 0.015  # five of ten classes flip
    for s, t in CIFAR10_ASYMMETRIC_FLIPS.items():
        assert abs(noisy.transition[s, t] - rate) < 0.04


def test_cifar100_asymmetric_cycles_within_superclass_including_mouse():
    from ddlnl.data.cifar import CIFAR100_FINE_CLASSES, CIFAR100_SUPERCLASS_OF_FINE

    P = transition_matrix("asymmetric", 0.4, 100, "cifar100")
    sc = np.asarray(CIFAR100_SUPERCLASS_OF_FINE)
    assert np.allclose(P.sum(1), 1)
    for s in range(100):
        targets = np.flatnonzero((P[s] > 0) & (np.arange(100) != s))
        assert len(targets) == 1 and sc[targets[0]] == sc[s]
    mouse = CIFAR100_FINE_CLASSES.index("mouse")
    assert P[mouse, mouse] == pytest.approx(0.6)  # the paper code's missing 'mouse' is fixed
    # each superclass is one 5-cycle
    for c in range(20):
        members = np.flatnonzero(sc == c)
        assert len(members) == 5
        s, seen = members[0], set()
        for _ in range(5):
            seen.add(int(s))
            s = int(np.flatnonzero((P[s] > 0) & (np.arange(100) != s))[0])
        assert seen == set(members.tolist()) and s == members[0]


def test_pairflip_goes_to_next_class():
    y = balanced_labels(5, 1000)
    noisy = make_noisy_labels("x", y, 5, NoiseSpec("pairflip", 0.3, 0))
    flipped = noisy.labels != y
    assert np.all(noisy.labels[flipped] == (y[flipped] + 1) % 5)
    assert abs(noisy.actual_rate - 0.3) < 0.02


def test_same_seed_same_labels_other_seed_differs():
    y = balanced_labels(10, 500)
    a = make_noisy_labels("cifar10", y, 10, NoiseSpec("symmetric", 0.4, 7)).labels
    b = make_noisy_labels("cifar10", y, 10, NoiseSpec("symmetric", 0.4, 7)).labels
    c = make_noisy_labels("cifar10", y, 10, NoiseSpec("symmetric", 0.4, 8)).labels
    assert np.array_equal(a, b)
    assert not np.array_equal(a, c)


def test_realise_matches_the_paper_codes_sequential_multinomial():
    # DD_LNL's multiclass_noisify: RandomState(seed), one multinomial(1, P[y_i], 1) per sample in order.
    y = balanced_labels(10, 50)
    P = transition_matrix("symmetric", 0.4, 10)
    rng = np.random.RandomState(0)
    expected = np.array([np.where(rng.multinomial(1, P[t, :], 1)[0] == 1)[0][0] for t in y])
    assert np.array_equal(realise(y, P, 0), expected)


def test_clean_noise_changes_nothing():
    y = balanced_labels(10, 100)
    noisy = make_noisy_labels("cifar10", y, 10, NoiseSpec("clean", 0.0, 0))
    assert np.array_equal(noisy.labels, y) and noisy.actual_rate == 0


@pytest.mark.parametrize("kwargs", [dict(type="symmetric", rate=1.0), dict(type="symmetric", rate=-0.1),
                                    dict(type="gaussian", rate=0.2), dict(type="worst", rate=0.3)])
def test_bad_specs_are_refused(kwargs):
    with pytest.raises(ConfigError):
        NoiseSpec(**kwargs)


def test_asymmetric_on_unknown_dataset_is_refused():
    with pytest.raises(ConfigError, match="pairflip"):
        transition_matrix("asymmetric", 0.2, 200, "tinyimagenet")


def test_summary_has_the_documented_keys():
    y = balanced_labels(10, 100)
    s = make_noisy_labels("cifar10", y, 10, NoiseSpec("symmetric", 0.2, 0)).summary()
    assert {"nominal_rate", "actual_rate", "transition", "seed", "type"} <= set(s)
    assert np.allclose(np.sum(s["transition"], axis=1), 1, atol=1e-3)
