"""The validation split: training images held out with their noisy labels, never overlapping
the training or the test images, and never changing anyone's noisy label."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest

from ddlnl.run import run_experiment
from ddlnl.spec import ExperimentSpec


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path_factory.mktemp("data")
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    return root


def _spec(data_root, *overrides):
    return ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method="dm", ipc=1, preset="smoke",
                                 overrides=("data.train_per_class=null", *overrides), data_root=str(data_root))


def _digests(x) -> set[str]:
    return {hashlib.sha256(np.ascontiguousarray(img).tobytes()).hexdigest() for img in x.numpy()}


def test_validation_is_held_out_with_its_noisy_labels(data_root):
    full = _spec(data_root).prepare_data()
    data = _spec(data_root, "data.validation=3").prepare_data()
    val = data.validation
    assert full.validation is None and val is not None
    # 3 per noisy class, disjoint from the training images; together they are the whole training split
    assert np.bincount(val.y_noisy.numpy(), minlength=10).tolist() == [3] * 10
    assert not set(val.index) & set(data.splits.train_index)
    assert sorted(set(val.index) | set(data.splits.train_index)) == sorted(full.splits.train_index)
    # the labels are the realisation's (noisy, not clean), and holding out changes no one's label
    position = {int(i): k for k, i in enumerate(full.splits.train_index)}
    assert val.y_noisy.tolist() == [int(full.noisy.labels[position[int(i)]]) for i in val.index]
    assert data.noisy.labels.tolist() == [int(full.noisy.labels[position[int(i)]]) for i in data.splits.train_index]
    clean = [int(full.splits.train.labels[position[int(i)]]) for i in val.index]
    assert val.y_noisy.tolist() != clean  # 40 % noise: some held-out labels are wrong, as a practitioner's are
    # no validation image is a test image
    assert not _digests(val.x) & _digests(data.x_test)
    assert val.x.shape[1:] == data.x_train.shape[1:]


def test_a_run_with_a_validation_split_saves_the_whole_realisation(data_root, tmp_path):
    spec = _spec(data_root, "data.validation=2", "evaluation.train.epochs=1", "baseline.train.epochs=1", "methods.dm.iterations=1")
    result = run_experiment(spec, tmp_path / "run", log=lambda m: None, progress=False)
    assert result["num_validation"] == 20 and result["num_train"] == 100
    saved = np.load(tmp_path / "run" / "noisy_labels.npy")
    assert saved.shape == (120,)  # the realisation over the whole training split, reused by a rerun
    again = run_experiment(spec, tmp_path / "run", log=lambda m: None, progress=False)
    assert again["results"]["distilled"]["accs"] == result["results"]["distilled"]["accs"]


def test_every_row_is_scored_on_the_validation_split(data_root, tmp_path):
    """Each evaluated row carries its accuracy on the held-out noisy labels, which the table shows;
    a network that predicts the held-out labels exactly would score 1, so the score is recomputable."""
    from ddlnl.results import evaluated_rows, format_result_table

    spec = _spec(data_root, "data.validation=2", "evaluation.train.epochs=1", "baseline.train.epochs=1", "methods.dm.iterations=1")
    result = run_experiment(spec, tmp_path / "run", log=lambda m: None, progress=False)
    rows = evaluated_rows(result, include_skipped=False)
    assert rows and all(len(r.value["val_accs"]) == r.value["runs"] for r in rows)
    for r in rows:
        assert r.value["val_acc_mean"] == pytest.approx(np.mean(r.value["val_accs"]))
        # 20 held-out images: every score is a multiple of 1/20
        assert all(abs(20 * a - round(20 * a)) < 1e-6 for a in r.value["val_accs"])
    assert "val acc, noisy labels (%)" in format_result_table(result)
    without = run_experiment(_spec(data_root, "evaluation.train.epochs=1", "baseline.train.epochs=1", "methods.dm.iterations=1"),
                             tmp_path / "plain", log=lambda m: None, progress=False)
    assert all("val_acc_mean" not in r.value for r in evaluated_rows(without, include_skipped=False))
    assert "val acc" not in format_result_table(without)
