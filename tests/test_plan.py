"""``ddlnl run --dry-run`` and ddlnl.plan: the work of each stage from the spec alone, times from measured figures."""

import json
import re
from pathlib import Path

import pytest

from ddlnl import plan as P
from ddlnl.spec import ExperimentSpec

ROOT = Path(__file__).resolve().parents[1]


def paper_datm(*overrides, **kw):
    return ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method="datm", ipc=10, preset="paper",
                                 overrides=tuple(overrides), data_root="/nonexistent/ddlnl-data", **kw)


def stage(pl, name):
    (s,) = [s for s in pl.stages if s.name == name]
    return s


def test_datm_paper_expert_and_distill_work_follow_the_resolved_options():
    spec = paper_datm()
    pl = P.plan(spec)
    opts, messages = P.resolved_method_options(spec, 10)
    assert any("paper setting for cifar10 IPC 10 noise symmetric 0.4" in m for m in messages)  # the table row was applied
    epochs = opts.get("train_epochs") or opts["max_start_epoch"] + opts["expert_epochs"]
    assert pl.data.images == 50_000
    assert stage(pl, "experts (datm)").images == opts["num_experts"] * epochs * 50_000
    assert stage(pl, "distill (datm)").images == opts["iterations"] * opts["syn_steps"] * opts["batch_syn"]
    assert opts["syn_steps"] == 80 and opts["batch_syn"] == 100  # the §2.7 row for CIFAR-10 IPC 10
    # the measured H100 figure for exactly this configuration: not an extrapolation
    t = stage(pl, "distill (datm)").times["h100"]
    assert not t["extrapolated"] and t["seconds"] == pytest.approx(opts["iterations"] * 79.6 / 40)


def test_iterations_override_scales_the_distillation():
    base = stage(P.plan(paper_datm()), "distill (datm)")
    half = stage(P.plan(paper_datm("methods.datm.iterations=5000")), "distill (datm)")
    assert half.images * 2 == base.images
    assert half.times["h100"]["seconds"] * 2 == pytest.approx(base.times["h100"]["seconds"])


def test_evaluations_are_the_runs_rows():
    pl = P.plan(paper_datm())
    names = [s.name for s in pl.stages]
    # DATM: learned lr (random control again at it), soft labels (hard-label control), init-only; paper: resnet18 cross-arch
    for name in ("random control", "distilled set (datm)", "random control at the set's learned lr", "control: hard labels",
                 "control: resnet18 on the random set", "control: resnet18 on the distilled set", "control: datm init only"):
        assert name in names
    assert stage(pl, "random control").images == 5 * 1000 * 100
    assert stage(pl, "control: resnet18 on the random set").times["h100"] is None  # nobody measured ResNet-18
    dm = [s.name for s in P.plan(ExperimentSpec.create(method="dm", preset="paper")).stages]
    assert "control: hard labels" not in dm and "random control at the set's learned lr" not in dm
    dance = P.plan(ExperimentSpec.create(method="dance", preset="quick"))
    assert stage(dance, "distilled set (dance)").images == 3 * 500 * 400  # multi-formation: 4 images per stored one


def test_training_set_size_without_the_data(monkeypatch):
    import ddlnl.data.registry as registry

    monkeypatch.setattr(registry, "load_dataset", lambda *a, **k: pytest.fail("a dry run read the data"))
    assert P.training_set(paper_datm("data.train_per_class=100")).images == 1000
    lt = P.training_set(paper_datm(imbalance=100.0))
    assert lt.per_class[0] == 5000 and lt.per_class[-1] == 50 and lt.images == sum(lt.per_class)
    assert P.training_set(ExperimentSpec.create(dataset="tinyimagenet", preset="quick", method="dm")).images == 100_000


def test_baselines_count_their_networks():
    spec = ExperimentSpec.create(method="dm", preset="quick", baselines=("ce", "coteaching", "gce"))
    pl = P.plan(spec)
    assert stage(pl, "baseline ce").images == 3 * 50_000
    assert stage(pl, "baseline gce").images == 3 * 50_000
    assert stage(pl, "baseline coteaching").images >= 2 * 3 * 50_000
    assert stage(pl, "baseline gce").times["h100"] is None  # only CE was measured


def test_clean_first_plans_the_cleaners_warm_up():
    """quick: loss_gmm warms one network up for the CE recipe's 3 epochs, then one loss pass; dividemix two."""
    pl = P.plan(ExperimentSpec.create(method="dm", preset="quick", clean_first="loss_gmm"))
    assert stage(pl, "clean first (loss_gmm)").images == (3 + 1) * 50_000
    pl = P.plan(ExperimentSpec.create(method="dm", preset="quick", clean_first="dividemix", clean_options=("epochs=2",)))
    assert stage(pl, "clean first (dividemix)").images == 2 * (2 + 1) * 50_000
    assert not [s for s in P.plan(ExperimentSpec.create(method="dm", preset="quick")).stages if s.name.startswith("clean")]


def test_datm_variants_are_planned_as_datm():
    """tad and datm_trusted do DATM's work (experts, matching): planned and timed as DATM, named as themselves."""
    datm = P.plan(ExperimentSpec.create(method="datm", preset="quick"))
    for m in ("tad", "datm_trusted"):
        pl = P.plan(ExperimentSpec.create(method=m, preset="quick"))
        assert stage(pl, f"experts ({m})").images == stage(datm, "experts (datm)").images
        assert stage(pl, f"distill ({m})").images == stage(datm, "distill (datm)").images
        assert stage(pl, f"distilled set ({m})").times == stage(datm, "distilled set (datm)").times


def test_figures_cite_existing_docs_with_a_date():
    for f in P.FIGURES:
        page = re.match(r"(docs/[\w./-]+\.md)", f.source)
        assert page and (ROOT / page.group(1)).exists(), f.source
        assert re.search(r"20\d\d-\d\d-\d\d|undated", f.source), f.source
        assert f.images > 0 and f.seconds > 0


def test_cli_dry_run_trains_and_writes_nothing(tmp_path, capsys):
    from ddlnl.cli import main

    out = tmp_path / "run"
    args = ["run", "--dry-run", "--preset", "paper", "--noise", "symmetric", "--rate", "0.4", "--method", "datm", "--ipc", "10",
            "--data-root", str(tmp_path / "no-data"), "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert not out.exists() and list(tmp_path.iterdir()) == []
    assert "paper (version" in text and "datm paper setting for cifar10 IPC 10" in text
    assert "not measured" in text  # the ResNet-18 controls
    assert "GPU-hours" in text and "| distill (datm) | 10,000 iterations x 80 steps x 100 synthetic images" in text

    out.mkdir()
    assert main(args + ["--json", "--set", "methods.datm.iterations=100"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert list(out.iterdir()) == []
    rows = {s["name"]: s for s in d["stages"]}
    assert rows["distill (datm)"]["images_processed"] == 100 * 80 * 100
    assert rows["control: resnet18 on the random set"]["estimate"]["one NVIDIA H100"] == "not measured"
    assert d["settings"]["overrides"] == {"methods.datm.iterations": 100}
    assert d["totals"]["one NVIDIA H100"]["hours"] > 0


def test_a_baseline_the_run_would_skip_is_shown_as_skipped():
    import importlib.util

    pl = P.plan(ExperimentSpec.create(method="dm", preset="quick", baselines=("ce", "cleanlab")))
    row = stage(pl, "baseline cleanlab")
    if importlib.util.find_spec("cleanlab") is None:  # an optional package: the run records the baseline as skipped
        assert row.skipped and row.images == 0 and "not installed" in row.work
        assert "baseline cleanlab" not in pl.totals()["h100"]["stages_not_measured"]
        assert "| baseline cleanlab |" in P.format_plan(pl) and "| 0 | skipped | skipped |" in P.format_plan(pl)
    else:
        assert not row.skipped and row.images >= 3 * 50_000


def test_each_planned_stage_names_the_stage_file_the_run_saves(tmp_path, monkeypatch):
    """The plan's ``saved_as`` and run.py's stage files are one naming: a real smoke run (DATM after a cleaner,
    with an extra baseline: every kind of stage) saves exactly the stages the plan names, apart from the
    drawn sets that cost nothing to plan."""
    from ddlnl.run import run_experiment
    from tests.data.fixtures import write_cifar10_npz

    monkeypatch.setenv("DDLNL_CACHE", str(tmp_path / "cache"))
    write_cifar10_npz(tmp_path / "data", n_train_per_class=12, n_test_per_class=4)
    spec = ExperimentSpec.create(method="datm", ipc=2, preset="smoke", data_root=str(tmp_path / "data"), rate=0.2,
                                 clean_first="loss_gmm", clean_options=("threshold=0.3",), baselines=("ce", "gce"),
                                 overrides=("evaluation.train.epochs=2", "baseline.train.epochs=1", "methods.datm.iterations=2"))
    run_experiment(spec, tmp_path / "run", log=lambda m: None, progress=False)
    saved = {p.stem for p in (tmp_path / "run" / "stages").glob("*.json")}
    planned = {s.saved_as for s in P.plan(spec).stages if s.saved_as}
    drawn = {"random_set", "random_cleaned_set"}  # a draw of real images: no training to plan
    assert planned == saved - drawn, (planned, saved)
    assert {"full_noisy", "baseline_gce", "clean_first", "distilled_set", "distilled", "control_init_only",
            "control_clean_first_random"} <= planned
