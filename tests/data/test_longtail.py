"""Long-tailed subsets: counts follow the exponential profile and are reproducible."""

from __future__ import annotations

import numpy as np
import pytest

from ddlnl.data.longtail import longtail_counts, longtail_indices
from ddlnl.errors import ConfigError


def test_counts_match_cifar10_lt_profile():
    assert longtail_counts(5000, 10, 100).tolist() == [5000, 2997, 1796, 1077, 645, 387, 232, 139, 83, 50]
    assert longtail_counts(5000, 10, 10).tolist() == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert longtail_counts(5000, 10, 50).tolist()[-1] == 100


def test_counts_cifar100_lt_ends():
    c = longtail_counts(500, 100, 100)
    assert c[0] == 500 and c[-1] == 5 and len(c) == 100
    assert np.all(np.diff(c) <= 0)


def test_counts_at_least_one_and_trivial_cases():
    assert longtail_counts(5, 10, 100).tolist() == [5, 2, 1, 1, 1, 1, 1, 1, 1, 1]  # 5 * 100**(-1/9) = 2.997
    assert longtail_counts(7, 1, 100).tolist() == [7]
    assert longtail_counts(9, 4, 1).tolist() == [9, 9, 9, 9]


@pytest.mark.parametrize("rho", [0.5, 0, -3, float("nan"), float("inf"), "abc"])
def test_bad_rho(rho):
    with pytest.raises(ConfigError, match="imbalance ratio"):
        longtail_counts(10, 3, rho)
    with pytest.raises(ConfigError, match="imbalance ratio"):
        longtail_indices(np.array([0, 1, 2]), rho, 0)


def test_rho_one_keeps_everything():
    labels = np.array([2, 0, 1, 1, 0])
    assert longtail_indices(labels, 1, 5).tolist() == [0, 1, 2, 3, 4]


def test_indices_per_class_counts_and_membership():
    labels = np.repeat(np.arange(5), 100)
    np.random.default_rng(0).shuffle(labels)
    idx = longtail_indices(labels, 10, seed=1)
    assert idx.dtype == np.int64
    assert np.all(np.diff(idx) > 0)  # sorted and unique
    assert np.bincount(labels[idx], minlength=5).tolist() == longtail_counts(100, 5, 10).tolist()


def test_indices_seeded():
    labels = np.repeat(np.arange(4), 50)
    a = longtail_indices(labels, 5, seed=7)
    assert np.array_equal(a, longtail_indices(labels, 5, seed=7))
    assert not np.array_equal(a, longtail_indices(labels, 5, seed=8))


def test_n_max_is_class0_and_capped_by_availability():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 40)
    idx = longtail_indices(labels, 4, seed=0)
    # wanted: 10, 5, 2  -> class 1 only has 3; class 2 keeps 2 although 40 are available
    assert np.bincount(labels[idx]).tolist() == [10, 3, 2]


def test_missing_class0_is_refused():
    with pytest.raises(ConfigError, match="class 0"):
        longtail_indices(np.array([1, 1, 2]), 10, 0)
