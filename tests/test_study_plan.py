"""``ddlnl study --dry-run``: each cell's single-run plan, shared parts counted once, finished cells as 0.

Every expected number is computed here from :func:`ddlnl.plan.plan` of each cell, the per-run plan
``ddlnl run --dry-run`` prints; nothing is trained and no image is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ddlnl import cli
from ddlnl import plan as P
from ddlnl.errors import ConfigError
from ddlnl.stages import SHARED_PARTS
from ddlnl.study.plan import format_study_plan, plan_study, shared_part
from ddlnl.study.spec import parse_study

NO_DATA = "/nonexistent/ddlnl-data"  # the built-in datasets' sizes are known: nothing is read
# quick preset: every stage of DM has a CPU figure; DATM's experts are cached by key, shared across IPC here
QUICK = {"name": "q", "preset": "quick", "data_root": NO_DATA, "max_workers": 2,
         "grid": {"datasets": ["cifar10"], "noise": [{"type": "symmetric", "rate": 0.4}], "methods": ["dm", "datm"], "ipc": [1, 10]}}


def quick_study(**changes):
    return parse_study(QUICK | changes)


def seconds(stage, dev="cpu") -> float:
    t = stage.times.get(dev)
    return t["seconds"] if t else 0.0


def run_plan(cell):
    return {s.name: s for s in P.plan(cell.spec()).stages if not s.skipped}


def cell_seconds(cell, dev="cpu", without=()) -> float:
    return sum(seconds(s, dev) for name, s in run_plan(cell).items() if name not in without)


def finish(out: Path, cell, config_hash: str | None = None) -> None:
    """A cell folder as a finished worker leaves it: done.json (with the config hash) and a readable result.json."""
    d = out / "cells" / cell.id
    d.mkdir(parents=True)
    row = {"acc_mean": 0.5, "acc_std": 0.0, "runs": 1, "accs": [0.5]}
    result = {"dataset": cell.dataset, "method": cell.method, "ipc": cell.ipc,
              "results": {"full_noisy": row, "random": row, "distilled": row}, "timings_s": {"total": 1.0}}
    (d / "result.json").write_text(json.dumps(result))
    (d / "done.json").write_text(json.dumps({"status": "finished", "config_hash": config_hash or cell.config_hash()}))


def test_shared_parts_are_counted_once_per_group():
    spec = quick_study()
    dm1, dm10, datm1, datm10 = spec.cells
    sp = plan_study(spec)
    by_id = {c.cell.id: c for c in sp.cells}
    assert by_id[dm1.id].from_siblings == {}
    assert by_id[dm10.id].from_siblings == {"baseline ce": dm1.id}
    assert by_id[datm1.id].from_siblings == {"baseline ce": dm1.id, "random control": dm1.id}
    assert by_id[datm10.id].from_siblings == {"baseline ce": dm1.id, "experts (datm)": datm1.id, "random control": dm10.id}
    for dev in ("cpu", "h100"):
        expected = (cell_seconds(dm1, dev) + cell_seconds(dm10, dev, {"baseline ce"})
                    + cell_seconds(datm1, dev, {"baseline ce", "random control"})
                    + cell_seconds(datm10, dev, {"baseline ce", "random control", "experts (datm)"}))
        assert sp.totals()[dev]["seconds"] == pytest.approx(expected)
        for c in sp.cells:  # each cell: its run plan minus what another cell makes
            assert c.seconds(dev) == pytest.approx(cell_seconds(c.cell, dev, set(c.from_siblings)))
    assert sp.totals()["cpu"]["seconds"] > 0 and sp.totals()["cpu"]["not_measured"] == {}
    images = sum(s.images for c in spec.cells for s in run_plan(c).values())
    shared = sum(run_plan(c)[name].images for c, taken in zip(spec.cells, [x.from_siblings for x in sp.cells]) for name in taken)
    assert sp.totals()["images"] == images - shared


def test_groups_do_not_share_and_experts_follow_their_cache_key():
    two_noises = quick_study(grid=QUICK["grid"] | {"noise": [{"type": "symmetric", "rates": [0.2, 0.4]}], "methods": ["dm"], "ipc": [1]})
    assert [c.from_siblings for c in plan_study(two_noises).cells] == [{}, {}]
    # DATM's paper rows store other epochs at IPC 1 and 10: other cache keys, so both cells train experts
    paper = parse_study({"preset": "paper", "data_root": NO_DATA, "grid": {"methods": ["datm"], "ipc": [1, 10]}})
    first, second = plan_study(paper).cells
    assert "experts (datm)" not in second.from_siblings and any(s.stage == "experts" for s in second.stages)
    assert second.from_siblings == {"baseline ce": first.cell.id}


def test_a_cell_asking_for_more_experts_pays_for_the_missing_ones():
    spec = quick_study(grid=[QUICK["grid"] | {"methods": ["datm"], "ipc": [1]},
                             QUICK["grid"] | {"methods": ["datm"], "ipc": [10], "preset": "quick"}],
                       overrides=["methods.datm.num_experts={ipc}"])  # 1 expert at IPC 1, 10 at IPC 10
    few, many = plan_study(spec).cells
    full = run_plan(many.cell)["experts (datm)"]
    (paid,) = [s for s in many.stages if s.stage == "experts"]
    assert paid.images == full.images * 9 // 10
    assert seconds(paid) == pytest.approx(seconds(full) * 0.9)
    assert many.from_siblings["1 of the 10 experts (datm)"] == few.cell.id


def test_finished_cells_cost_nothing_and_keep_what_they_made(tmp_path):
    spec = quick_study()
    dm1, dm10, datm1, datm10 = spec.cells
    finish(tmp_path, dm1)
    finish(tmp_path, datm1, config_hash="another-config")  # changed since it ran: to run again
    sp = plan_study(spec, tmp_path)
    by_id = {c.cell.id: c for c in sp.cells}
    assert by_id[dm1.id].finished and by_id[dm1.id].stages == [] and by_id[dm1.id].seconds("cpu") == 0
    assert not by_id[datm1.id].finished
    # the finished cell's baseline and random control are there: nobody pays them again
    assert by_id[datm1.id].from_siblings == {"baseline ce": dm1.id, "random control": dm1.id}
    expected = (cell_seconds(dm10, without={"baseline ce"}) + cell_seconds(datm1, without={"baseline ce", "random control"})
                + cell_seconds(datm10, without={"baseline ce", "random control", "experts (datm)"}))
    assert sp.totals()["cpu"]["seconds"] == pytest.approx(expected)
    assert sp.totals()["finished"] == 1 and sp.totals()["to_run"] == 3


def test_only_is_respected_and_finished_cells_outside_it_still_count(tmp_path):
    spec = quick_study()
    dm1, dm10, datm1, datm10 = spec.cells
    finish(tmp_path, dm1)
    sp = plan_study(spec, tmp_path, only=["*-datm-*"])
    assert [c.cell.id for c in sp.cells] == [datm1.id, datm10.id]
    assert sp.finished_elsewhere == {dm1.id}
    assert sp.cells[0].from_siblings == {"baseline ce": dm1.id, "random control": dm1.id}
    # dm-ipc10 is not selected: it runs nothing, so datm-ipc10 makes its own random control
    assert sp.cells[1].from_siblings == {"baseline ce": dm1.id, "experts (datm)": datm1.id}
    with pytest.raises(ConfigError, match="no cell id matches") as e:
        plan_study(spec, tmp_path, only=["*-mtt-*"])
    assert "ids look like" in e.value.fix


def test_wall_clock_is_the_larger_of_total_over_workers_and_the_longest_chain():
    sp = plan_study(quick_study(), max_workers=3)
    t = sp.totals()["cpu"]
    cost = {c.cell.id: c.seconds("cpu") for c in sp.cells}
    dm1, dm10, datm1, datm10 = (c.cell.id for c in sp.cells)
    # datm-ipc10 waits for dm-ipc1 (group), dm-ipc10 (IPC) and datm-ipc1 (method), which waits for dm-ipc1
    chains = [cost[dm1] + cost[dm10] + cost[datm10], cost[dm1] + cost[datm1] + cost[datm10]]
    assert t["wall"]["longest_chain_s"] == pytest.approx(max(chains))
    assert t["wall"]["workers"] == 3 and t["wall"]["total_over_workers_s"] == pytest.approx(t["seconds"] / 3)
    assert t["wall"]["at_least_s"] == pytest.approx(max(t["seconds"] / 3, max(chains)))
    assert plan_study(quick_study()).workers == 2  # the study's max_workers


def test_privacy_audit_is_planned_per_cell_from_its_own_stages():
    spec = quick_study(privacy={"shadows": 4, "targets": ["full_noisy", "random", "distilled", "dp_sgd"]},
                       grid=QUICK["grid"] | {"methods": ["dm"]})
    first, second = plan_study(spec).cells
    plan = run_plan(second.cell)
    audit = {s.name: s for s in second.stages if s.stage == "privacy"}
    # the audit shares nothing: the second cell retrains the CE baseline K + 1 times though a sibling made its own
    assert "baseline ce" in second.from_siblings
    assert seconds(audit["privacy audit: full_noisy"]) == pytest.approx(5 * seconds(plan["baseline ce"]))  # quick: 1 baseline run
    assert seconds(audit["privacy audit: random"]) == pytest.approx(5 * seconds(plan["random control"]) / 3)  # 3 evaluation runs
    assert seconds(audit["privacy audit: distilled"]) == pytest.approx(
        4 * seconds(plan["distill (dm)"]) + 5 * seconds(plan["distilled set (dm)"]) / 3)
    assert audit["privacy audit: dp_sgd"].times == {"h100": None, "cpu": None}  # no figure: not measured
    t = plan_study(spec).totals()["cpu"]
    assert t["privacy_seconds"] == pytest.approx(sum(c.privacy_seconds("cpu") for c in (first, second)))
    assert t["privacy_seconds"] > 0 and "privacy audit: dp_sgd" in t["not_measured"][first.cell.id]
    # the second cell waits for the first one's run, not for its audit (the driver starts it on published.json)
    assert t["wall"]["longest_chain_s"] == pytest.approx(
        first.seconds("cpu") - first.privacy_seconds("cpu") + second.seconds("cpu"))


def test_every_shared_part_is_planned():
    """A new entry in ddlnl.stages.SHARED_PARTS must be planned too (the noise realisation costs nothing)."""
    planned = {shared_part(P.Stage("baseline", "baseline ce", "", 0)), shared_part(P.Stage("baseline", "baseline gce", "", 0)),
               shared_part(P.Stage("evaluate", "random control", "", 0))}
    assert {p.name for p in SHARED_PARTS} - {"noise"} == {"full_noisy", "baseline_{name}", "random"}
    assert planned == {"full_noisy", "baseline_gce", "random"}


def test_cli_dry_run_reads_no_data_and_writes_nothing(tmp_path, capsys, monkeypatch):
    from ddlnl.data import registry

    def no_reading(*args, **kwargs):
        raise AssertionError("a dry run read a dataset")

    monkeypatch.setattr(registry, "_load_uncached", no_reading)
    monkeypatch.setenv("DDLNL_DATA", NO_DATA)
    path = tmp_path / "q.yaml"
    path.write_text(json.dumps(QUICK))  # JSON is YAML
    out = tmp_path / "study"
    assert cli.main(["study", str(path), "--dry-run", "--out", str(out), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert not out.exists()
    assert doc["dry_run"] and [c["status"] for c in doc["cells"]] == ["to run"] * 4
    assert doc["totals"]["2-core CPU"]["seconds"] == pytest.approx(round(plan_study(quick_study()).totals()["cpu"]["seconds"], 1))
    assert cli.main(["study", str(path), "--dry-run", "--device", "cpu", "--only", "*-dm-*"]) == 0
    text = capsys.readouterr().out
    assert "| # | cell | status | images processed | time, 2-core CPU | made by another cell, or saved |" in text
    assert "baseline ce (#1)" in text and "-datm-" not in text and "H100" not in text
    assert "wall clock with --executor processes, 2 workers" in text and "privacy audit: not planned" in text
    assert cli.main(["study", str(path), "--dry-run", "--only", "*-mtt-*"]) == 2
    assert "no cell id matches --only" in capsys.readouterr().err
    assert cli.main(["study", str(tmp_path / "missing.yaml"), "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert cli.main(["study", str(path), "--json", "--out", str(out)]) == 2
    assert "only to --dry-run" in capsys.readouterr().err and not out.exists()


def _save_stages(root: Path, cell, *names: str) -> None:
    """Stage files as an interrupted run leaves them in its cell folder (their content is not read)."""
    d = root / "cells" / cell.id / "stages"
    d.mkdir(parents=True, exist_ok=True)
    for n in names:
        (d / f"{n}.json").write_text("{}")


def test_stages_saved_in_a_cell_folder_or_the_reuse_source_are_not_paid(tmp_path):
    spec = quick_study()
    dm1, dm10, datm1, datm10 = spec.cells
    # dm-ipc1 was interrupted after its baseline and distillation; datm-ipc1's cell of another study is complete
    _save_stages(tmp_path / "out", dm1, "full_noisy", "distilled_set")
    _save_stages(tmp_path / "other", datm1, "distilled_set", "distilled", "control_hard_labels")
    sp = plan_study(spec, tmp_path / "out", reuse_from=tmp_path / "other")
    by_id = {c.cell.id: c for c in sp.cells}
    assert by_id[dm1.id].saved == ["baseline ce", "distill (dm)"]
    assert by_id[dm1.id].seconds("cpu") == pytest.approx(cell_seconds(dm1, without={"baseline ce", "distill (dm)"}))
    assert by_id[dm10.id].from_siblings == {"baseline ce": dm1.id}  # the saved baseline is still published by dm-ipc1
    assert by_id[datm1.id].saved == ["distill (datm)", "distilled set (datm)", "control: hard labels"]
    text = format_study_plan(sp)
    assert f"| {dm1.id} | to resume |" in text and f"| {dm10.id} | to run |" in text
    assert "baseline ce (saved), distill (dm) (saved)" in text and "saved: the stage's file is in the cell's folder" in text
    assert plan_study(spec, tmp_path / "out").cells[2].saved == []  # without --reuse-from the other study is not read
    with pytest.raises(ConfigError, match="no cells/ folder"):  # the check `ddlnl study --reuse-from` makes
        plan_study(spec, tmp_path / "out", reuse_from=tmp_path / "nowhere")
