"""Instance-dependent noise (Xia et al., NeurIPS 2020): its rate on real CIFAR-10, its seeding, that
its flips depend on the image (statistical tests, with symmetric noise as the control), and the
plumbing (save and reload, ``ddlnl noise``)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from scipy.stats import chi2, chi2_contingency, truncnorm

from ddlnl.data.noise import INSTANCE_FLIP_STD, NoiseSpec, instance_projection, make_noisy_labels, transition_matrix
from ddlnl.errors import ConfigError
from tests.data.fixtures import real_data_root, write_cifar10_npz

REAL = real_data_root()
needs_real = pytest.mark.skipif(REAL is None, reason="needs $DDLNL_DATA with the shared CIFAR-10")


@pytest.fixture(scope="module")
def cifar10():
    from ddlnl.data.registry import load_dataset

    return load_dataset("cifar10", REAL).train


def realise(train, rate=0.4, seed=0, noise="instance"):
    return make_noisy_labels("cifar10", train.labels, 10, NoiseSpec(noise, rate, seed), images=train.images)


@needs_real
@pytest.mark.parametrize("rate", [0.2, 0.4])
def test_realised_rate_is_the_nominal_one(cifar10, rate):
    """Each image flips with probability q_i, so the flips are Bernoulli(E q) and the realised rate
    has binomial spread sqrt(m(1-m)/N), about 0.002 on 50,000 images. E q is the truncated normal's
    mean: 0.2055 at 0.2 (the cut at 0 lies two std below) and 0.4000 at 0.4. Tolerances: 5 binomial
    std around E q, and 0.015 around the nominal rate (truncation bias plus 5 std)."""
    noisy = realise(cifar10, rate)
    n = len(cifar10.labels)
    mean = truncnorm.mean(-rate / INSTANCE_FLIP_STD, (1 - rate) / INSTANCE_FLIP_STD, loc=rate, scale=INSTANCE_FLIP_STD)
    assert abs(noisy.actual_rate - mean) <= 5 * np.sqrt(mean * (1 - mean) / n)
    assert abs(noisy.actual_rate - rate) <= 0.015
    assert noisy.nominal_rate == rate
    assert np.allclose(noisy.transition.sum(axis=1), 1.0)


@needs_real
def test_same_seed_same_labels_other_seed_other_labels(cifar10):
    a, b, c = realise(cifar10, seed=3).labels, realise(cifar10, seed=3).labels, realise(cifar10, seed=4).labels
    assert np.array_equal(a, b)
    assert np.mean(a != c) > 0.2  # two independent draws at 0.4 disagree on about half the labels


def _target_vs_feature(clean, noisy, feature) -> float:
    """p-value of independence between the flip target and a feature of the image: per true class,
    the flipped images split into feature tertiles against their noisy label; the chi-square
    statistics of the ten (independent) tables add up."""
    stat = dof = 0
    for c in np.unique(clean):
        flipped = (clean == c) & (noisy != c)
        tertile = np.digitize(feature[flipped], np.quantile(feature[flipped], [1 / 3, 2 / 3]))
        table = np.zeros((3, 10))
        np.add.at(table, (tertile, noisy[flipped]), 1)
        s, _, d, _ = chi2_contingency(table[:, table.sum(axis=0) > 0])
        stat, dof = stat + s, dof + d
    return float(chi2.sf(stat, dof))


@needs_real
def test_flip_target_depends_on_the_image(cifar10):
    """Where a flipped image goes depends on its pixels (here: its mean brightness) under instance
    noise (p ~ 1e-100 measured), and not under symmetric noise (the control, p ~ 0.07 for this seed)."""
    brightness = cifar10.images.reshape(len(cifar10.labels), -1).mean(axis=1)
    assert _target_vs_feature(cifar10.labels, realise(cifar10).labels, brightness) < 1e-30
    assert _target_vs_feature(cifar10.labels, realise(cifar10, noise="symmetric").labels, brightness) > 1e-3


@needs_real
def test_flip_target_is_the_projection_argmax(cifar10):
    """Refit: on raw 0-255 pixels (as the published code feeds them) softmax(x . W[y]) is nearly
    one-hot, so a flipped image lands on argmax_{j != y} x . W[y] almost always; a constant guess
    per class (each class's most common target) does far worse."""
    clean, noisy = cifar10.labels, realise(cifar10).labels
    x = cifar10.images.reshape(len(clean), -1).astype(np.float64)
    hits = best_constant = flips = 0
    for c in range(10):
        flipped = np.flatnonzero((clean == c) & (noisy != c))
        a = x[flipped] @ instance_projection(0, c, x.shape[1], 10)
        a[:, c] = -np.inf
        hits += int(np.sum(a.argmax(axis=1) == noisy[flipped]))
        best_constant += int(np.bincount(noisy[flipped], minlength=10).max())
        flips += flipped.size
    assert hits / flips > 0.99
    assert best_constant / flips < 0.8


def test_rate_zero_is_clean_and_images_are_required():
    y = np.repeat(np.arange(4), 5)
    x = np.random.default_rng(0).integers(0, 256, (len(y), 4, 4, 3), dtype=np.uint8)
    assert np.array_equal(make_noisy_labels("toy", y, 4, NoiseSpec("instance", 0.0, 0), images=x).labels, y)
    with pytest.raises(ConfigError, match="images"):
        make_noisy_labels("toy", y, 4, NoiseSpec("instance", 0.4, 0))
    with pytest.raises(ConfigError, match="no fixed transition matrix"):
        transition_matrix("instance", 0.4, 4)
    assert NoiseSpec.create("instance").rate == 0.4 and NoiseSpec("instance", 0.2, 1).slug == "instance-0.2-s1"


def test_saved_realisation_is_reloaded(tmp_path):
    from ddlnl.experiment import load_saved_noise, prepare_data, save_noise
    from ddlnl.presets import load_preset

    write_cifar10_npz(tmp_path, n_train_per_class=12, n_test_per_class=2)
    spec, preset = NoiseSpec("instance", 0.4, 5), load_preset("smoke")
    data = prepare_data("cifar10", spec, preset, data_root=tmp_path)
    save_noise(tmp_path, data)
    got = load_saved_noise(tmp_path, spec, data.realised_clean)
    assert got is not None and np.array_equal(got.labels, data.realised.labels)
    again = prepare_data("cifar10", spec, preset, data_root=tmp_path, saved_noise=tmp_path)
    assert np.array_equal(again.noisy.labels, data.noisy.labels)
    assert load_saved_noise(tmp_path, NoiseSpec("instance", 0.2, 5), data.realised_clean) is None


def test_cli_prints_rate_and_transition(tmp_path):
    write_cifar10_npz(tmp_path, n_train_per_class=12, n_test_per_class=4)
    r = subprocess.run([sys.executable, "-m", "ddlnl.cli", "noise", "--dataset", "cifar10", "--noise", "instance", "--rate", "0.4",
                        "--json", "--data-root", str(tmp_path)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["type"] == "instance" and out["nominal_rate"] == 0.4 and 0.0 < out["actual_rate"] < 1.0
    assert np.array(out["transition"]).shape == (10, 10)
