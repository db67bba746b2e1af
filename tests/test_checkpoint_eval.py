"""``evaluation.checkpoint_every``: the published best-of-checkpoints number as a secondary column.

The headline stays the final epoch's accuracy (unchanged by testing in between); the best over
the tested epochs (every k-th and the last, chosen on the test set as DANCE and DD_LNL report it)
is recorded beside it and shown in its own, plainly named column only when some row has it."""

from __future__ import annotations

import pytest

import ddlnl.presets
from ddlnl.errors import ConfigError
from ddlnl.evaluate import checkpoint_epochs, evaluate_set
from ddlnl.results import BEST_CHECKPOINT_COLUMN, evaluated_rows, format_result_table
from ddlnl.run import run_experiment
from ddlnl.spec import ExperimentSpec
from ddlnl.train import TrainConfig
from tests.test_baselines import tiny_data

KEYS = ("best_checkpoint_acc_mean", "best_checkpoint_accs", "best_checkpoint_epochs", "checkpoint_epochs", "checkpoint_accs")


def test_checkpoint_epochs_are_the_multiples_and_the_last():
    assert checkpoint_epochs(1500, 250) == [250, 500, 750, 1000, 1250, 1500]
    assert checkpoint_epochs(5, 2) == [2, 4, 5]
    assert checkpoint_epochs(3, 10) == [3]


def test_evaluate_set_tests_every_k_epochs_and_keeps_the_final_epoch_headline():
    data = tiny_data()
    cfg = TrainConfig(epochs=6, batch_size=16, lr=0.05, schedule="step", augment="none")
    common = dict(test_images=data.x_test, test_labels=data.y_test, num_classes=3,
                  model={"name": "convnet", "width": 8, "depth": 1, "norm": "instance"}, train=cfg, runs=2, seed=1)
    off = evaluate_set(data.x_train, data.y_train_noisy, **common)
    on = evaluate_set(data.x_train, data.y_train_noisy, checkpoint_every=2, **common)
    assert on.accs == off.accs and on.acc_mean == off.acc_mean  # testing in between changes no number
    assert on.checkpoint_epochs == [2, 4, 6] and all(len(c) == 3 for c in on.checkpoint_accs)
    best = on.best_checkpoint()
    for r in range(2):
        assert on.checkpoint_accs[r][-1] == on.accs[r]  # the last checkpoint is the final epoch
        assert best["best_checkpoint_accs"][r] == max(on.checkpoint_accs[r]) >= on.accs[r]
        assert best["best_checkpoint_epochs"][r] in (2, 4, 6)
    assert off.best_checkpoint() == {} and not set(KEYS) & set(off.to_dict())
    assert set(KEYS) <= set(on.to_dict())
    with pytest.raises(ConfigError, match="checkpoint_every"):
        evaluate_set(data.x_train, data.y_train_noisy, checkpoint_every=0, **common)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path_factory.mktemp("data")
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    return root


@pytest.fixture
def checkpoint_key(monkeypatch):
    """The preset validator's list of evaluation keys, with checkpoint_every (a no-op once it lists it)."""
    monkeypatch.setattr(ddlnl.presets, "EVALUATION_KEYS", ddlnl.presets.EVALUATION_KEYS | {"checkpoint_every"})


def _spec(data_root, *overrides, baselines=("ce",)):
    return ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method="dm", ipc=1, preset="smoke",
                                 overrides=("data.train_per_class=null", "evaluation.train.epochs=4", "baseline.train.epochs=1",
                                            "methods.dm.iterations=1", *overrides),
                                 baselines=baselines, data_root=str(data_root))


def test_a_run_records_the_best_checkpoint_beside_the_final_epoch(data_root, tmp_path, checkpoint_key):
    baselines = ("ce", "ce_converged", "ce_selected")
    small = ("data.validation=2", "baselines.ce_converged.train={epochs: 2}", "baselines.ce_selected.train={epochs: 2}")
    on = run_experiment(_spec(data_root, "evaluation.checkpoint_every=2", *small, baselines=baselines), tmp_path / "run",
                        log=lambda m: None, progress=False)
    rows = {r.role: r.value for r in evaluated_rows(on, include_skipped=False)}
    for role in ("random", "distilled"):  # the evaluation rows
        r = rows[role]
        assert r["checkpoint_epochs"] == [2, 4] and len(r["best_checkpoint_accs"]) == r["runs"]
        for best, final, accs in zip(r["best_checkpoint_accs"], r["accs"], r["checkpoint_accs"], strict=True):
            assert best >= final and accs[-1] == final and best == max(accs)
    for role in ("full_noisy", "baselines.ce_converged", "baselines.ce_selected"):  # baselines: their own recipes
        assert not set(KEYS) & set(rows[role])
    table = format_result_table(on)
    assert BEST_CHECKPOINT_COLUMN in table and "best of checkpoints (test-selected, as published)" in table
    assert "full noisy set (CE, converged)" in table and "full noisy set (CE, selected on noisy validation)" in table
    assert on["results"]["baselines"]["ce_converged"]["train"]["epochs"] == 2
    assert on["results"]["baselines"]["ce_selected"]["details"]["runs"][0]["epochs_tested"] == [1, 2]

    # off (the default): no keys, no column, and the final-epoch headline is the same number
    off = run_experiment(_spec(data_root, *small, baselines=baselines), tmp_path / "run", log=lambda m: None, progress=False)
    assert all(not set(KEYS) & set(r.value) for r in evaluated_rows(off, include_skipped=False))
    assert "best of checkpoints" not in format_result_table(off)
    for role in ("random", "distilled"):
        assert off["results"][role]["accs"] == on["results"][role]["accs"]


def test_ce_selected_is_skipped_in_a_run_without_a_validation_split(data_root, tmp_path):
    result = run_experiment(_spec(data_root, "evaluation.train.epochs=1", baselines=("ce", "ce_selected")), tmp_path / "run",
                            log=lambda m: None, progress=False)
    skipped = result["results"]["baselines"]["ce_selected"]
    assert "data.validation" in skipped["skipped"] and skipped["fix"]
    assert "| full noisy set (CE, selected on noisy validation) | skipped |" in format_result_table(result)
