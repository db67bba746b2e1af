"""scripts/noise_rate_estimate.py: the confident-joint estimate, and the script end to end on fixture data."""

import re

import numpy as np
import pytest

from tests.scripts_loader import load_script

nre = load_script("noise_rate_estimate")


def test_confident_joint_recovers_the_flips_a_perfect_network_sees():
    rng = np.random.default_rng(0)
    clean = np.repeat(np.arange(4), 50)
    noisy = clean.copy()
    flip = rng.random(clean.size) < 0.3
    noisy[flip] = (clean[flip] + 1) % 4
    probs = np.full((clean.size, 4), 0.02)
    probs[np.arange(clean.size), clean] = 0.94  # a network that knows the true classes
    assert nre.confident_joint_rate(probs, noisy, 4) == pytest.approx(flip.mean(), abs=0.02)
    probs_noisy = np.full((clean.size, 4), 0.02)
    probs_noisy[np.arange(clean.size), noisy] = 0.94  # one that memorised the noisy labels
    assert nre.confident_joint_rate(probs_noisy, noisy, 4) == pytest.approx(0.0, abs=1e-9)


def test_the_script_runs_on_a_small_dataset(tmp_path, monkeypatch, capsys):
    from tests.data.fixtures import write_cifar10_npz

    write_cifar10_npz(tmp_path, n_train_per_class=12, n_test_per_class=4)
    monkeypatch.setenv("DDLNL_DATA", str(tmp_path))
    saved = tmp_path / "probs.npz"
    monkeypatch.setattr("sys.argv", ["noise_rate_estimate.py", "--preset", "smoke", "--train-per-class", "12",
                                     "--validation", "2", "--epochs", "1", "--save", str(saved)])
    nre.main()
    out = capsys.readouterr().out
    rates = re.findall(r"(realised|low-score|joint|anchor|small-loss) (\d\.\d+)", out)
    assert out.startswith("symmetric 0.4: realised") and len(rates) == 5 and all(0 <= float(r) <= 1 for _, r in rates)
    monkeypatch.setattr("sys.argv", ["noise_rate_estimate.py", "--probs", str(saved)])
    nre.main()  # the same estimates from the saved probabilities, nothing trained
    again = capsys.readouterr().out
    assert re.findall(r"(realised|low-score|joint|anchor|small-loss) (\d\.\d+)", again) == rates
