"""Fairness controls and cost accounting in result.json: hard labels, cross-architecture, init-only."""

import json
from dataclasses import dataclass

import pytest
import torch

from ddlnl.distill import base as distill_base
from ddlnl.distill.base import Capabilities, DistillContext, Distiller
from ddlnl.synset import SyntheticSet
from ddlnl.utils.runtime import generator


class SoftWithInit(Distiller):
    """A stand-in for DATM: soft labels, and an init-only control (its initialisation, undistilled)."""

    name = "dummy_soft"
    capabilities = Capabilities(init_only=True, soft_labels=True, checkpoints=False)
    init_calls = 0

    @dataclass(frozen=True)
    class Options:
        sharpness: float = 3.0

    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        images, labels = ctx.random_real(ipc, generator(ctx.seed))
        ctx.images_processed += 123
        soft = torch.nn.functional.one_hot(labels, ctx.num_classes).float() * self.options.sharpness
        return SyntheticSet(images + 0.01, soft, ctx.preprocess)

    def init_only(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        type(self).init_calls += 1
        images, labels = ctx.random_real(ipc, generator(ctx.seed + 1))
        ctx.images_processed += 7
        return SyntheticSet(images, labels, ctx.preprocess)


@pytest.fixture
def root(tmp_path):
    from tests.data.fixtures import write_cifar10_npz

    write_cifar10_npz(tmp_path, n_train_per_class=12, n_test_per_class=4)
    return tmp_path


def stand_in_run(root, monkeypatch, distiller, out, *overrides, baselines=("ce",)):
    """A smoke run of a stand-in distiller, with the cross-architecture control on."""
    from ddlnl.run import RunConfig

    monkeypatch.setitem(distill_base._REGISTRY, distiller.name, distiller)
    return RunConfig(method=distiller.name, ipc=2, preset="smoke", out=str(out), data_root=str(root), progress=False,
                     overrides=[f"methods.{distiller.name}={{}}", "evaluation.train.epochs=2", "baseline.train.epochs=1",
                                "evaluation.cross_arch={name: convnet, width: 8, depth: 1}", *overrides],
                     baselines=list(baselines))


def test_controls_and_costs_appear_in_result_json(root, monkeypatch):
    from ddlnl.results import format_result_table
    from ddlnl.run import run_experiment

    out = root / "run"
    cfg = stand_in_run(root, monkeypatch, SoftWithInit, out, baselines=("ce", "gce"))
    res = run_experiment(cfg, log=lambda m: None)
    on_disk = json.loads((out / "result.json").read_text())
    assert on_disk["results"]["controls"].keys() == res["results"]["controls"].keys()
    r, c = on_disk["results"], on_disk["results"]["controls"]
    # hard-label control of a soft-label set: argmax labels, same images
    assert r["distilled"]["label_kind"] == "soft" and c["hard_labels"]["label_kind"] == "hard"
    assert 0 <= c["hard_labels"]["acc_mean"] <= 1 and c["hard_labels"]["runs"] == 1
    # cross-architecture control on both the random and the distilled set
    assert c["cross_arch"]["model"] == {"name": "convnet", "width": 8, "depth": 1}
    for role in ("random", "distilled"):
        assert c["cross_arch"][role]["model"]["width"] == 8 and 0 <= c["cross_arch"][role]["acc_mean"] <= 1
    # init-only hook, evaluated with the common protocol
    assert SoftWithInit.init_calls == 1 and (out / "init_only.safetensors").exists()
    assert c["init_only"]["label_kind"] == "hard" and c["init_only"]["cost"]["breakdown"]["distill_images_processed"] == 7
    # costs: wall time, images processed and device on every row
    for row in (r["full_noisy"], r["baselines"]["gce"], r["random"], r["distilled"], c["hard_labels"], c["init_only"]):
        assert set(row["cost"]) >= {"device", "seconds", "images_processed"} and row["cost"]["device"] == "cpu"
        assert row["cost"]["seconds"] > 0 and row["cost"]["images_processed"] > 0
    assert r["distilled"]["cost"]["breakdown"]["distill_images_processed"] == 123
    assert r["baselines"]["ce"]["accs"] == r["full_noisy"]["accs"] and r["baselines"]["gce"]["train"]["loss"] == "gce"
    table = format_result_table(on_disk)
    for row in ("full noisy set (GCE)", "hard labels (control)", "init only", "convnet (control)"):
        assert row in table
    # a rerun reuses every stage, controls included
    res2 = run_experiment(cfg, log=lambda m: None)
    assert SoftWithInit.init_calls == 1 and res2["results"]["controls"]["hard_labels"]["accs"] == c["hard_labels"]["accs"]


class LearnedLr(SoftWithInit):
    """A stand-in for MTT/DATM's sets: a learned training lr, 8x the recipe's."""

    name = "dummy_lr"
    capabilities = Capabilities(init_only=True, soft_labels=True, learned_lr=True, checkpoints=False)

    def distill(self, ctx: DistillContext, ipc: int) -> SyntheticSet:
        synset = super().distill(ctx, ipc)
        synset.lr = 0.08
        return synset


def test_controls_train_at_the_lr_of_the_set_they_control(root, monkeypatch):
    from ddlnl.results import evaluated_rows, format_result_table
    from ddlnl.run import run_experiment

    out = root / "lr"
    cfg = stand_in_run(root, monkeypatch, LearnedLr, out, "evaluation.train.lr=0.01")
    r = run_experiment(cfg, log=lambda m: None)["results"]
    c = r["controls"]
    lr = {row.role: row.value["train"]["lr"] for row in evaluated_rows({"method": "dummy_lr", "ipc": 2, "results": r})
          if row.skipped is None and row.role != "full_noisy"}
    assert lr.pop("controls.random_recipe_lr") == 0.01  # the random control also at the recipe's lr, a named row
    assert lr and set(lr.values()) == {0.08}, lr  # every other row: the distilled set's learned lr
    assert {"random", "distilled", "controls.init_only", "controls.hard_labels", "controls.cross_arch.random"} <= set(lr)
    assert r["random"]["accs"] != c["random_recipe_lr"]["accs"] or r["random"]["train"] != c["random_recipe_lr"]["train"]
    table = format_result_table(json.loads((out / "result.json").read_text()))
    assert "| random real, IPC 2, at the recipe's lr (control) |" in table and "| 0.08 |" in table


def test_cli_baselines_flag_and_skipped_controls(root, capsys):
    """`ddlnl run --baselines`: rows per baseline, cleanlab skipped cleanly, controls recorded as skipped for DM."""
    from ddlnl.cli import main

    out = root / "cli"
    rc = main(["run", "--method", "dm", "--preset", "smoke", "--ipc", "2", "--data-root", str(root), "--out", str(out), "--no-progress",
               "--baselines", "sce,cleanlab", "--set", "evaluation.train.epochs=2", "--set", "methods.dm.iterations=2",
               "--set", "baseline.train.epochs=1"])
    stdout = capsys.readouterr().out
    assert rc == 0
    res = json.loads((out / "result.json").read_text())
    b = res["results"]["baselines"]
    assert list(b) == ["ce", "sce", "cleanlab"] and "full_noisy" in res["results"]
    assert b["sce"]["train"]["loss"] == "sce" and 0 <= b["sce"]["acc_mean"] <= 1
    try:
        import cleanlab  # noqa: F401
    except ImportError:
        assert "not installed" in b["cleanlab"]["skipped"] and "| cleanlab-pruned set (CE) | skipped |" in stdout
    assert "| full noisy set (SCE) |" in stdout and "| full noisy set (CE) |" in stdout
    c = res["results"]["controls"]
    assert "hard labels" in c["hard_labels"]["skipped"] and "cross_arch" in c["cross_arch"]["skipped"]
    assert "no init-only" in c["init_only"]["skipped"]
    assert res["results"]["distilled"]["cost"]["breakdown"]["distill_images_processed"] > 0  # DM's real + synthetic batches
    rc = main(["run", "--preset", "smoke", "--data-root", str(root), "--out", str(out), "--baselines", "ce,mixup"])
    err = capsys.readouterr().err
    assert rc == 2 and "mixup" in err and "Traceback" not in err
