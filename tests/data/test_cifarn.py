"""CIFAR-10N / CIFAR-100N label files: formats, safe loading, order check."""

from __future__ import annotations

import os

import numpy as np
import pytest

from ddlnl.data import cifarn
from ddlnl.data.cifar import CIFAR100_SUPERCLASS_OF_FINE
from ddlnl.data.cifarn import HUMAN_LABEL_SETS, load_human_labels, read_human_label_file
from ddlnl.data.registry import load_dataset
from ddlnl.errors import ConfigError, DataError
from tests.data import fixtures as fx

REAL = fx.real_data_root()
realdata = pytest.mark.skipif(REAL is None, reason="set DDLNL_DATA to the shared data folder")

CLEAN10 = np.random.default_rng(0).integers(0, 10, 40)
CLEAN100 = np.random.default_rng(1).integers(0, 100, 40)
SET_KEYS = dict(zip(("aggre", "random1", "random2", "random3", "worst"), fx.CIFAR10N_KEYS))


def test_label_set_names():
    assert HUMAN_LABEL_SETS == {"cifar10": ("aggre", "random1", "random2", "random3", "worst"),
                                "cifar100": ("noisy100",), "cifar100_coarse": ("noisy100",)}


@pytest.mark.parametrize("fmt", ["npz", "pt", "pt_list", "pt_tensor", "pt_numpy_core"])
def test_cifar10n_formats(tmp_path, fmt):
    labels = fx.human_label_arrays("cifar10", CLEAN10)
    fx.write_human_labels(tmp_path, "cifar10", labels, fmt=fmt)
    for label_set, key in SET_KEYS.items():
        got = load_human_labels("cifar10", label_set, tmp_path, CLEAN10)
        assert got.dtype == np.int64
        assert got.tolist() == labels[key].tolist()
    # worst flips every 6th label, starting at 0
    worst = load_human_labels("cifar10", "worst", tmp_path, CLEAN10)
    assert np.flatnonzero(worst != CLEAN10).tolist() == list(range(0, 40, 6))


def test_pt_with_numpy_scalars_in_lists(tmp_path):
    import torch

    labels = fx.human_label_arrays("cifar10", CLEAN10)
    path = tmp_path / "cifar10n" / "CIFAR-10_human.pt"
    path.parent.mkdir()
    torch.save({k: list(v) for k, v in labels.items()}, path)  # lists of np.int64
    assert load_human_labels("cifar10", "aggre", tmp_path, CLEAN10).tolist() == labels["aggre_label"].tolist()


@pytest.mark.parametrize("fmt", ["npz", "pt"])
def test_cifar100n_fine_and_coarse(tmp_path, fmt):
    labels = fx.human_label_arrays("cifar100", CLEAN100)
    fx.write_human_labels(tmp_path, "cifar100", labels, fmt=fmt)
    fine = load_human_labels("cifar100", "noisy100", tmp_path, CLEAN100)
    assert fine.tolist() == labels["noisy_label"].tolist()
    coarse = load_human_labels("cifar100_coarse", "noisy100", tmp_path, CIFAR100_SUPERCLASS_OF_FINE[CLEAN100])
    assert coarse.tolist() == labels["noisy_coarse_label"].tolist()


def test_search_order_and_top_level_location(tmp_path):
    labels = fx.human_label_arrays("cifar10", CLEAN10)
    top = fx.write_human_labels(tmp_path, "cifar10", labels, fmt="pt", top_level=True)
    assert top == tmp_path / "CIFAR-10_human.pt"
    assert cifarn.find_human_label_file("cifar10", tmp_path) == top
    other = dict(labels, aggre_label=(labels["aggre_label"] + 5) % 10)
    sub = fx.write_human_labels(tmp_path, "cifar10", other, fmt="npz")
    assert cifarn.find_human_label_file("cifar10", tmp_path) == sub
    got = load_human_labels("cifar10", "aggre", tmp_path, CLEAN10)
    assert got.tolist() == other["aggre_label"].tolist()


def test_clean_labels_must_match(tmp_path):
    path = fx.write_human_labels(tmp_path, "cifar10", fx.human_label_arrays("cifar10", CLEAN10))
    changed = CLEAN10.copy()
    changed[[3, 17]] = (changed[[3, 17]] + 1) % 10
    with pytest.raises(DataError) as err:
        load_human_labels("cifar10", "aggre", tmp_path, changed)
    msg = str(err.value)
    assert str(path) in msg and "at 2 of 40 positions" in msg
    assert "official train order of cifar10" in err.value.fix


def test_clean_label_count_must_match(tmp_path):
    fx.write_human_labels(tmp_path, "cifar10", fx.human_label_arrays("cifar10", CLEAN10))
    with pytest.raises(DataError, match="clean_label has 40 labels but the cifar10 training set has 39"):
        load_human_labels("cifar10", "aggre", tmp_path, CLEAN10[:39])


def test_noisy_labels_out_of_range(tmp_path):
    labels = fx.human_label_arrays("cifar10", CLEAN10)
    labels["worse_label"][5] = 12
    fx.write_human_labels(tmp_path, "cifar10", labels, fmt="pt")
    with pytest.raises(DataError, match="worse_label has values outside 0..9"):
        load_human_labels("cifar10", "worst", tmp_path, CLEAN10)


def test_noisy_label_length(tmp_path):
    labels = fx.human_label_arrays("cifar10", CLEAN10)
    labels["random_label2"] = labels["random_label2"][:30]
    fx.write_human_labels(tmp_path, "cifar10", labels, fmt="pt")
    with pytest.raises(DataError, match="random_label2 has 30 labels, expected 40"):
        load_human_labels("cifar10", "random2", tmp_path, CLEAN10)


def test_missing_key(tmp_path):
    labels = fx.human_label_arrays("cifar10", CLEAN10)
    del labels["random_label3"]
    fx.write_human_labels(tmp_path, "cifar10", labels)
    with pytest.raises(DataError, match="no 'random_label3' entry"):
        load_human_labels("cifar10", "random3", tmp_path, CLEAN10)


def test_missing_file_lists_candidates(tmp_path):
    with pytest.raises(DataError) as err:
        load_human_labels("cifar100", "noisy100", tmp_path, CLEAN100)
    msg = str(err.value)
    for p in cifarn.human_label_candidates("cifar100", tmp_path):
        assert str(p) in msg
    assert "UCSC-REAL/cifar-10-100n" in err.value.fix
    assert str(tmp_path / "cifar100n" / "CIFAR-100_human.pt") in err.value.fix


def test_unknown_names_are_config_errors(tmp_path):
    with pytest.raises(ConfigError, match="aggre, random1, random2, random3, worst"):
        load_human_labels("cifar10", "noisy100", tmp_path, CLEAN10)
    with pytest.raises(ConfigError, match="cifar10, cifar100, cifar100_coarse"):
        load_human_labels("tinyimagenet", "aggre", tmp_path, CLEAN10)


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_malicious_pt_is_refused(tmp_path):
    import torch

    marker = tmp_path / "pwned"
    path = tmp_path / "cifar10n" / "CIFAR-10_human.pt"
    path.parent.mkdir()
    torch.save({"clean_label": _Evil(f"touch {marker}")}, path)
    with pytest.raises(DataError) as err:
        read_human_label_file(path)
    assert not marker.exists()
    assert str(path) in str(err.value) and "refused" in str(err.value)


def test_float_arrays_are_refused(tmp_path):
    path = tmp_path / "CIFAR-10_human.npz"
    np.savez(path, clean_label=np.zeros(4), aggre_label=np.zeros(4, np.int64))
    with pytest.raises(DataError, match="'clean_label' is not a 1-D integer array"):
        read_human_label_file(path)


@pytest.mark.parametrize("suffix", [".pt", ".npz"])
def test_truncated_label_file(tmp_path, suffix):
    labels = fx.human_label_arrays("cifar10", CLEAN10)
    path = fx.write_human_labels(tmp_path, "cifar10", labels, fmt=suffix.lstrip("."))
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(DataError) as err:
        load_human_labels("cifar10", "aggre", tmp_path, CLEAN10)
    assert str(path) in str(err.value) and "corrupt" in str(err.value)


# ---- real data ----------------------------------------------------------------------------------

@pytest.mark.realdata
@realdata
def test_real_cifar10n_noise_rates():
    clean = load_dataset("cifar10", REAL).train.labels
    rates = {s: round(100 * float(np.mean(load_human_labels("cifar10", s, REAL, clean) != clean)), 2)
             for s in HUMAN_LABEL_SETS["cifar10"]}
    assert rates == {"aggre": 9.01, "random1": 17.23, "random2": 18.12, "random3": 17.64, "worst": 40.21}


@pytest.mark.realdata
@realdata
def test_real_cifar10n_refuses_changed_clean_labels():
    clean = np.array(load_dataset("cifar10", REAL).train.labels)
    clean[12345] = (clean[12345] + 1) % 10
    with pytest.raises(DataError, match="at 1 of 50000 positions"):
        load_human_labels("cifar10", "aggre", REAL, clean)


@pytest.mark.realdata
@realdata
def test_real_cifar100n():
    labels = read_human_label_file(REAL / "cifar100n" / "CIFAR-100_human.npz")
    clean, coarse = labels["clean_label"], labels["clean_coarse_label"]
    assert clean[:10].tolist() == [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]
    assert np.array_equal(CIFAR100_SUPERCLASS_OF_FINE[clean], coarse)  # our superclass table is the official one
    fine = load_human_labels("cifar100", "noisy100", REAL, clean)
    assert round(100 * float(np.mean(fine != clean)), 2) == 40.20
    noisy_coarse = load_human_labels("cifar100_coarse", "noisy100", REAL, coarse)
    assert round(100 * float(np.mean(noisy_coarse != coarse)), 2) == 26.40
