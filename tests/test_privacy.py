"""The privacy audit (docs/privacy.md): metrics on known scores, the stable confidence, the keep
matrix, LiRA on a network that memorised its members and on one that never saw them, the DP-SGD
baseline, and `ddlnl privacy` on a smoke run folder."""

import json
import sys
import types

import numpy as np
import pytest
import torch

from ddlnl.errors import ConfigError
from ddlnl.privacy.attacks import all_scores, keep_matrix, logit_confidence
from ddlnl.privacy.metrics import attack_metrics, fast_metrics, with_intervals
from ddlnl.privacy.shadows import AuditPool, FullNoisy, ScoreCache, shadow_outputs, target_outputs


def test_metrics_on_known_scores():
    m = attack_metrics(np.array([0.9, 0.8, 0.7, 0.2]), np.array([0.6, 0.5, 0.1, 0.05]))
    assert m["auc"] == pytest.approx(14 / 16)
    assert m["balanced_accuracy"] == pytest.approx((0.75 + 1.0) / 2)  # threshold 0.7: TPR 3/4, FPR 0
    assert m["tpr_at_0.1%_fpr"] == pytest.approx(0.75) and m["tpr_at_1%_fpr"] == pytest.approx(0.75)


def test_tpr_at_fpr_counts_an_fpr_equal_to_the_bound():
    non_members = np.r_[np.linspace(0, 1, 99), 1.8]  # one non-member above two of the three members
    m = attack_metrics(np.array([2.0, 1.5, 0.5]), non_members)
    assert m["tpr_at_0.1%_fpr"] == pytest.approx(1 / 3)  # no false positive allowed: only the 2.0
    assert m["tpr_at_1%_fpr"] == pytest.approx(2 / 3)  # FPR exactly 1 %: 1.5 counts


def test_fast_metrics_agree_with_scikit_learn():
    rng = np.random.default_rng(0)
    for i in range(50):
        m, o = rng.normal(0.5, 1, rng.integers(1, 200)), rng.normal(0, 1, rng.integers(1, 200))
        if i % 2:  # ties
            m, o = np.round(m, 1), np.round(o, 1)
        assert np.allclose(fast_metrics(m, o), list(attack_metrics(m, o).values()))


def test_bootstrap_intervals_are_seeded():
    rng = np.random.default_rng(1)
    m, o = rng.normal(1, 1, 100), rng.normal(0, 1, 100)
    a, b = with_intervals(m, o, bootstrap=50, seed=3), with_intervals(m, o, bootstrap=50, seed=3)
    assert a == b
    assert a["auc"]["low"] <= a["auc"]["value"] <= a["auc"]["high"]
    assert a["fpr_resolution"] == pytest.approx(0.01)
    assert "low" not in with_intervals(m, o, bootstrap=0)["auc"]
    with pytest.raises(ConfigError):
        with_intervals(m, o, bootstrap=-1)
    with pytest.raises(ConfigError):
        with_intervals(m, np.array([np.nan]))


def test_confidence_is_finite_for_extreme_probabilities():
    logits = torch.tensor([[1000.0, -1000.0, 0.0], [1000.0, -1000.0, 0.0], [0.3, -0.2, 0.1]])
    phi = logit_confidence(logits, torch.tensor([0, 1, 2]))
    assert torch.isfinite(phi).all()
    assert phi[0].item() == pytest.approx(1000.0) and phi[1].item() == pytest.approx(-2000.0)
    p = torch.softmax(logits[2].double(), 0)[2]
    assert phi[2].item() == pytest.approx(float(torch.log(p) - torch.log1p(-p)))


def test_keep_matrix_puts_each_example_in_half_of_the_shadows():
    keep = keep_matrix(8, 30, seed=0)
    assert (keep.sum(axis=0) == 4).all() and (keep.sum(axis=1) == 15).all()
    assert (keep == keep_matrix(8, 30, seed=0)).all() and not (keep == keep_matrix(8, 30, seed=1)).all()
    assert (keep_matrix(4, 30, seed=0) == keep[:4]).all()  # more shadows later: the trained ones stay valid
    for bad in (3, 0, True):
        with pytest.raises(ConfigError, match="even"):
            keep_matrix(bad, 30, seed=0)


def test_few_shadows_give_only_the_fixed_variance_variants():
    rng = np.random.default_rng(0)
    keep = keep_matrix(2, 10, seed=0)
    scores = all_scores(rng.normal(size=(10, 2)), rng.random(10), rng.normal(size=(2, 10, 2)), keep)
    assert set(scores) == {"loss", "global_threshold", "lira_online_fixed_variance", "lira_offline_fixed_variance"}


# A tiny memorisation fixture: random images with random labels, so that only memorising fits them.
N, CLASSES, SIZE = 64, 4, 8
PRESET = {"model": {"name": "convnet", "width": 16, "depth": 1, "norm": "instance"},
          "baseline": {"train": {"epochs": 40, "batch_size": 16, "lr": 0.05, "schedule": "constant", "augment": "none",
                                 "weight_decay": 0.0}}}


def lira_fixture(tmp_path, saw_members: bool):
    g = torch.Generator().manual_seed(0)

    def images(k):
        return torch.randn(k, 3, SIZE, SIZE, generator=g)

    def labels(k):
        return torch.randint(0, CLASSES, (k,), generator=g)

    pool_x, pool_y = images(2 * N), labels(2 * N)
    member = np.r_[np.ones(N, bool), np.zeros(N, bool)]
    if saw_members:  # the target trains on the members alone
        x, y, index = pool_x[:N], pool_y[:N], np.arange(N)
    else:  # the target trains on other images: it never saw the members
        x, y, index = images(N), labels(N), np.arange(0)
    data = types.SimpleNamespace(x_train=x, y_train_noisy=y, x_test=images(16), y_test=labels(16), num_classes=CLASSES)
    pool = AuditPool(pool_x, pool_y, member, index)
    pipe = FullNoisy(data, PRESET, device="cpu", seed=0, log=lambda _m: None)
    keep = keep_matrix(8, 2 * N, seed=1)
    cache = ScoreCache(tmp_path, {"fixture": saw_members})
    target = target_outputs(pipe, pool, cache)
    shadows = shadow_outputs(pipe, pool, keep, cache)
    return all_scores(target.phi, target.loss, shadows, keep), member, (pipe, pool, keep, cache, shadows)


def test_lira_finds_the_members_a_network_memorised(tmp_path):
    scores, member, (pipe, pool, keep, cache, shadows) = lira_fixture(tmp_path, saw_members=True)
    m = attack_metrics(scores["lira_online_fixed_variance"][member], scores["lira_online_fixed_variance"][~member])
    assert m["auc"] > 0.9 and m["tpr_at_1%_fpr"] > 0.1, m
    assert attack_metrics(scores["lira_online"][member], scores["lira_online"][~member])["auc"] > 0.9
    assert attack_metrics(scores["loss"][member], scores["loss"][~member])["auc"] > 0.9
    # every shadow's scores are saved: a rerun trains nothing
    pipe.train_shadows = lambda *a: pytest.fail("a saved shadow was trained again")
    assert np.array_equal(shadow_outputs(pipe, pool, keep, cache), shadows)


def test_attacks_are_at_chance_on_a_network_that_never_saw_the_members(tmp_path):
    scores, member, _ = lira_fixture(tmp_path, saw_members=False)
    for name, s in scores.items():  # 64 + 64 points: the AUC's standard error is about 0.05; 0.15 is three of them
        assert abs(attack_metrics(s[member], s[~member])["auc"] - 0.5) < 0.15, name


def test_heldout_labels_follow_the_noise_transition():
    from ddlnl.privacy.audit import heldout_labels

    clean = torch.arange(4).repeat(2500)
    flip = np.full((4, 4), 0.1) + 0.6 * np.eye(4)  # 30 % flipped, evenly
    data = types.SimpleNamespace(y_test=clean, noisy=types.SimpleNamespace(transition=flip))
    drawn, _ = heldout_labels(data, seed=0)
    assert np.mean(drawn != clean.numpy()) == pytest.approx(0.3, abs=0.02)
    data.noisy.transition = np.eye(4)
    assert np.array_equal(heldout_labels(data, seed=0)[0], clean.numpy())


def test_kept_slots_are_the_training_images_a_set_holds():
    from ddlnl.privacy.audit import direct_leaks, kept_slots

    train = torch.randn(20, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    synset = types.SimpleNamespace(images=torch.stack([train[3], train[7] + 1e-6, torch.randn(3, 4, 4)]))
    slots = kept_slots(synset, train)
    assert slots == [3, 7, None]
    leaks = direct_leaks(slots, np.array([i != 7 for i in range(20)]))
    assert leaks["kept_images"] == 2 and leaks["mislabelled"] == 1 and leaks["train_index"] == [3, 7]


def test_dp_sgd_needs_opacus(monkeypatch):
    from ddlnl.privacy.dp import require_opacus

    monkeypatch.setitem(sys.modules, "opacus", None)
    with pytest.raises(ConfigError, match="privacy"):
        require_opacus()


def test_dp_sgd_spends_its_epsilon():
    pytest.importorskip("opacus")
    from ddlnl.evaluate import SetToEvaluate
    from ddlnl.privacy.dp import dp_train
    from ddlnl.train import TrainConfig

    g = torch.Generator().manual_seed(0)
    item = SetToEvaluate(torch.randn(256, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (256,), generator=g),
                         PRESET["model"], TrainConfig(epochs=2, batch_size=32, lr=0.05, augment="none"))
    net, spent = dp_train(item, 0, num_classes=CLASSES, epsilon=4.0, delta=1e-3, device="cpu")
    assert 3.5 < spent <= 4.0 + 1e-6
    assert net(torch.zeros(1, 3, SIZE, SIZE)).shape == (1, CLASSES)


def test_privacy_cli_on_a_smoke_run(tmp_path, capsys):
    from ddlnl.cli import main
    from tests.data.fixtures import write_cifar10_npz
    from tests.test_cli import ddlnl

    root = tmp_path / "data"
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    out = tmp_path / "run"
    r = ddlnl("run", "--preset", "smoke", "--method", "dm", "--ipc", "2", "--set", "evaluation.train.epochs=3",
              "--set", "methods.dm.iterations=2", "--data-root", str(root), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    args = ["privacy", str(out), "--data-root", str(root), "--shadows", "2", "--audit-points", "12", "--bootstrap", "20",
            "--no-progress"]
    capsys.readouterr()
    assert main(args + ["--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((out / "privacy.json").read_text())
    assert (out / "privacy_roc.png").stat().st_size > 0
    assert set(result["targets"]) == {"full_noisy", "random", "distilled"}
    for t in result["targets"].values():
        assert 0 <= t["test_acc"] <= 1 and t["members_are"]
        assert set(t["attacks"]) == {"loss", "global_threshold", "lira_online_fixed_variance", "lira_offline_fixed_variance"}
        for m in t["attacks"].values():
            assert set(m) >= {"auc", "balanced_accuracy", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr", "fpr_resolution"}
            assert m["members"] == m["non_members"] == 12 and m["auc"]["low"] <= m["auc"]["high"]
    full = result["targets"]["full_noisy"]  # retrained with the run's recipe and seed (thread counts may round differently)
    assert full["test_acc"] == pytest.approx(full["run_test_acc"], abs=0.05)
    random = result["direct_leaks"]["random"]
    assert random["kept_images"] == random["slots"] == 20  # the random control is nothing but training images
    kept = {i for leak in result["direct_leaks"].values() for i in leak["train_index"]}
    assert len(result["pool"]["member_index"]) == 12 and not kept & set(result["pool"]["member_index"])
    assert main(args) == 0  # resumed: every network's scores are saved, nothing is trained
    printed = capsys.readouterr()
    assert "to train" not in printed.out + printed.err and "| distilled |" in printed.out
    for bad, needle in ((["--shadows", "3"], "even"), (["--targets", "teacher"], "teacher"), (["--audit-points", "0"], "positive"),
                        (["--bootstrap", "-1"], "bootstrap"), (["--targets", "dp_sgd", "--dp-epsilon", "0"], "epsilon")):
        assert main(args + bad) == 2 and needle in capsys.readouterr().err
    assert main(["privacy", str(tmp_path), "--data-root", str(root)]) == 2
    assert "not a finished run folder" in capsys.readouterr().err
