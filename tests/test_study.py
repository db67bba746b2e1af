"""Studies: grid expansion and validation, the results database (skip, resume after a kill),
the three executors, the report, and SLURM on a real one-node cluster (when it starts)."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from ddlnl.errors import ConfigError
from ddlnl.study.executors import run_study
from ddlnl.study.spec import Cell, load_study, parse_study

REPO = Path(__file__).resolve().parents[1]
# a smoke preset made faster still: the tests check plumbing, not accuracy
FAST = ["evaluation.train.epochs=3", "baseline.train.epochs=1", "methods.dm.iterations=2"]


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A small CIFAR-10 (12 training and 4 test images per class) with a CIFAR-10N label file."""
    from tests.data.fixtures import write_cifar10_npz, write_cifar10n_npz

    root = tmp_path_factory.mktemp("data")
    labels = write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    write_cifar10n_npz(root, labels)
    return root


def study(data_root, noise, ipc=(1,), name="t", grid_extra=None, **extra):
    doc = {"name": name, "preset": "smoke", "overrides": FAST, "data_root": str(data_root),
           "grid": {"datasets": ["cifar10"], "noise": noise, "methods": ["dm"], "ipc": list(ipc), "seeds": [0]} | (grid_extra or {})}
    doc.update(extra)
    return parse_study(doc)


def write_study(path: Path, data_root, noise, ipc=(1,)) -> Path:
    doc = {"name": "t", "preset": "smoke", "overrides": FAST, "data_root": str(data_root),
           "grid": {"datasets": ["cifar10"], "noise": noise, "methods": ["dm"], "ipc": list(ipc), "seeds": [0]}}
    path.write_text(yaml.safe_dump(doc))
    return path


def db_rows(folder: Path) -> dict[str, dict]:
    conn = sqlite3.connect(folder / "study.sqlite")
    conn.row_factory = sqlite3.Row
    try:
        return {r["id"]: dict(r) for r in conn.execute("SELECT * FROM cells")}
    finally:
        conn.close()


# -- spec -----------------------------------------------------------------------------------

def test_grid_expansion_and_groups():
    spec = parse_study({
        "name": "g", "preset": "smoke",
        "slurm": {"partition": "gpu", "gpus": 1, "time_min": 30, "by_method": {"datm": {"time_min": 600}}},
        "grid": [
            {"datasets": ["cifar10"], "noise": [{"type": "symmetric", "rates": [0.2, 0.4]}, "aggre"],
             "methods": ["dm", "datm"], "ipc": [1, 10], "seeds": [0, 1]},
            {"dataset": "cifar10", "noise": [{"type": "symmetric", "rate": 0.2}], "methods": ["dm"], "ipc": 1, "seeds": [0]},  # duplicate
            {"dataset": "cifar10", "noise": [{"type": "asymmetric", "rate": 0.4}], "methods": ["dm"], "ipc": [10], "imbalance": [None, 100]},
        ],
    })
    assert len(spec.cells) == 3 * 2 * 2 * 2 + 2  # the duplicate cell is run once
    assert len({c.id for c in spec.cells}) == len(spec.cells)
    aggre = [c for c in spec.cells if c.noise == "aggre"]
    assert aggre and all(c.rate == 0.0 for c in aggre)
    # cells that differ only in method/IPC share a group (noise realisation + baseline); seeds do not
    groups = {}
    for c in spec.cells:
        groups.setdefault(c.group, set()).add((c.method, c.ipc))
    assert len(groups) == 3 * 2 + 2 and all(len(v) == 4 for k, v in groups.items() if "asymmetric" not in k)
    lt = [c for c in spec.cells if c.imbalance == 100]
    assert len(lt) == 1 and "lt100" in lt[0].id
    datm = next(c for c in spec.cells if c.method == "datm")
    assert spec.slurm_for(datm) == {"partition": "gpu", "gpus": 1, "time_min": 600}
    assert spec.slurm_for(aggre[0])["time_min"] in (30, 600)
    # siblings wait for their group's first cell, the first of their IPC and the first of their method
    from ddlnl.study.executors import dependencies

    deps = dependencies(spec.cells)
    ids = {(c.noise, c.rate, c.seed, c.method, c.ipc): c.id for c in spec.cells if c.imbalance is None}
    lead = ids[("symmetric", 0.2, 0, "dm", 1)]
    assert deps[lead] == set() and deps[ids[("symmetric", 0.2, 0, "dm", 10)]] == {lead}
    assert deps[ids[("symmetric", 0.2, 0, "datm", 1)]] == {lead}
    assert deps[ids[("symmetric", 0.2, 0, "datm", 10)]] == {lead, ids[("symmetric", 0.2, 0, "dm", 10)], ids[("symmetric", 0.2, 0, "datm", 1)]}
    assert deps[ids[("symmetric", 0.4, 0, "dm", 1)]] == set()  # another group: no waiting
    # identity ignores where the data lives
    c = spec.cells[0]
    import dataclasses

    assert dataclasses.replace(c, data_root="/elsewhere").config_hash() == c.config_hash()
    assert dataclasses.replace(c, ipc=50).config_hash() != c.config_hash()


def test_cell_identity_follows_the_resolved_preset(tmp_path):
    from ddlnl.presets import PRESET_DIR

    preset = tmp_path / "mine.yaml"
    doc = yaml.safe_load((PRESET_DIR / "smoke.yaml").read_text())
    preset.write_text(yaml.safe_dump(doc))
    spec = parse_study({"preset": str(preset), "grid": {"methods": ["dm", "datm"], "noise": [{"type": "symmetric", "rate": 0.4}]}})
    dm, datm = spec.cells
    h_dm, h_datm = dm.config_hash(), datm.config_hash()
    assert dm.full_config()["resolved_preset"]["methods"].keys() == {"dm", "random"}
    # a change to one method's options re-runs that method's cells only; an evaluation change re-runs all
    doc["methods"]["dm"]["iterations"] += 1
    time.sleep(0.01)
    preset.write_text(yaml.safe_dump(doc))
    assert dm.config_hash() != h_dm and datm.config_hash() == h_datm
    doc["evaluation"]["train"]["epochs"] += 1
    time.sleep(0.01)
    preset.write_text(yaml.safe_dump(doc))
    assert dm.config_hash() != h_dm and datm.config_hash() != h_datm


BAD = [
    ({"grid": {"ipcs": [1]}}, "ipcs"),
    ({"grid": {"ipc": ["ten"]}}, "ipc[0]"),
    ({"grid": {"ipc": [0]}}, "ipc[0]"),
    ({"grid": {"seeds": [0.5]}}, "seeds[0]"),
    ({"grid": {"noise": [{"type": "symmetric", "rates": ["high"]}]}}, "rates[0]"),
    ({"grid": {"noise": [{"type": "symmetric", "rat": 0.2}]}}, "rat"),
    ({"grid": {"noise": [{"type": "symmetric", "rate": 1.5}]}}, "noise[0]"),
    ({"grid": {"noise": ["loud"]}}, "noise[0]"),
    ({"grid": {"noise": {"type": "symmetric", "ratez": [0.2]}}}, "ratez"),
    ({"grid": {"methods": "dm", "datasets": {"a": 1}}}, "datasets"),
    ({"grid": {"methods": ["random"]}}, "methods"),
    ({"grid": {}, "max_worker": 2}, "max_worker"),
    ({"grid": {}, "max_workers": "two"}, "max_workers"),
    ({"grid": {}, "slurm": {"time_min": "1h"}}, "time_min"),
    ({"grid": {}, "slurm": {"by_method": {"datm": {"gpu": 1}}}}, "gpu"),
    ({"grid": {}, "preset": 3}, "preset"),
    ({"grid": [{"ipc": [1]}, {"imbalance": ["x"]}]}, "grid[1]: imbalance[0]"),
    ({"name": "no grid"}, "grid"),
]


@pytest.mark.parametrize("doc,key", BAD, ids=[k for _, k in BAD])
def test_bad_study_names_the_key(doc, key):
    with pytest.raises(ConfigError) as e:
        parse_study(doc)
    assert key in e.value.problem, e.value.problem


def test_cli_reports_bad_study_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngrid: {datasets: [cifar10], ipc: [1], methodz: [dm]}\n")
    r = subprocess.run([sys.executable, "-m", "ddlnl.cli", "study", str(bad), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "methodz" in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_only_selects_cells_by_pattern_in_study_order(tmp_path, capsys):
    from ddlnl import cli

    spec = load_study("studies/cifar10-findings-quick.yaml")
    picked = spec.select(["*-dance-*", "cifar10-worst-*"]).cells
    assert [c.id for c in picked] == [c.id for c in spec.cells if "-dance-" in c.id or c.id.startswith("cifar10-worst-")]
    assert len(picked) == 6 + 7  # six DANCE cells, and worst's DATM and DM for three seeds and RCIG
    assert cli.main(["study", "studies/cifar10-findings-quick.yaml", "--out", str(tmp_path / "o"), "--list",
                           "--only", "*-aggre-*-rcig-*"]) == 0
    out = capsys.readouterr().out
    assert "1 cells" in out and "cifar10-aggre-seed0-quick-rcig-ipc10" in out and "-dm-" not in out
    with pytest.raises(ConfigError, match="no cell id matches"):
        spec.select(["*-mtt-*"])


def test_shipped_studies_parse():
    files = sorted((REPO / "studies").glob("*.yaml"))
    assert any(f.name == "smoke.yaml" for f in files)
    for f in files:
        spec = load_study(f)
        assert spec.cells, f
    load_study(REPO / "studies" / "smoke.yaml").check()
    with pytest.raises(ConfigError, match="magic"):
        parse_study({"preset": "smoke", "grid": {"methods": ["magic"]}}).check()


# -- running --------------------------------------------------------------------------------

def test_a_group_trains_each_extra_baseline_once(data_root, tmp_path):
    """GCE on the full noisy set is the same computation in every cell of a group: the first cell trains it,
    the others import its stage (and a cell whose key differs would retrain it, as for every shared part)."""
    spec = study(data_root, [{"type": "symmetric", "rate": 0.4}], ipc=(1, 2), baselines=["gce"])
    out = tmp_path / "s"
    assert run_study(spec, out, "local", log=lambda m: None)["finished"] == 2
    first, second = (db_rows(out)[c.id] for c in spec.cells)
    assert json.loads(second["shared"]) == {"noise": True, "full_noisy": True, "baseline_gce": True}
    assert (out / "baseline" / spec.cells[0].group / "baseline_gce.json").exists()
    a, b = (json.loads(Path(r["result_path"]).read_text())["results"]["baselines"]["gce"] for r in (first, second))
    assert a["accs"] == b["accs"] and a["seconds"] == b["seconds"]  # the same row, not a second training


def test_reuse_from_another_study_computes_only_new_rows(data_root, tmp_path):
    """A study that adds a baseline to another study's cells takes their saved stages (--reuse-from) and
    trains only the new row; a stage whose key differs (another distillation setting) is recomputed."""
    base = study(data_root, [{"type": "symmetric", "rate": 0.4}])
    assert run_study(base, tmp_path / "a", "local", log=lambda m: None)["finished"] == 1
    before = json.loads(next((tmp_path / "a" / "cells").glob("*/result.json")).read_text())["results"]

    wider = study(data_root, [{"type": "symmetric", "rate": 0.4}], baselines=["gce"])
    assert wider.cells[0].id == base.cells[0].id and wider.cells[0].config_hash() != base.cells[0].config_hash()
    logs = []
    assert run_study(wider, tmp_path / "b", "local", log=logs.append, reuse_from=tmp_path / "a")["finished"] == 1
    after = json.loads(next((tmp_path / "b" / "cells").glob("*/result.json")).read_text())["results"]
    for row in ("full_noisy", "random", "distilled"):  # the same rows, not trained again
        assert after[row]["accs"] == before[row]["accs"] and after[row]["seconds"] == before[row]["seconds"], row
    assert "gce" in after["baselines"] and "gce" not in before["baselines"]
    assert any("reused from" in m and "into 1 of the 1 cells" in m for m in logs), logs

    other = study(data_root, [{"type": "symmetric", "rate": 0.4}], overrides=FAST[:2] + ["methods.dm.iterations=3"])
    run_study(other, tmp_path / "c", "local", log=lambda m: None, reuse_from=tmp_path / "a")
    changed = json.loads(next((tmp_path / "c" / "cells").glob("*/result.json")).read_text())["results"]
    assert changed["full_noisy"]["accs"] == before["full_noisy"]["accs"]  # its key does not involve DM
    assert changed["distilled"]["seconds"] != before["distilled"]["seconds"]  # distilled anew

    with pytest.raises(ConfigError, match="no cells/ folder"):
        run_study(wider, tmp_path / "d", "local", reuse_from=tmp_path / "nowhere")
    with pytest.raises(ConfigError, match="own --out"):
        run_study(wider, tmp_path / "b", "local", reuse_from=tmp_path / "b")


def test_local_study_shares_baseline_and_skips_finished(data_root, tmp_path):
    spec = study(data_root, [{"type": "symmetric", "rate": 0.4}], ipc=(1, 2))
    out = tmp_path / "s"
    s1 = run_study(spec, out, "local", log=lambda m: None)
    assert s1["finished"] == 2 and s1["ran"] == 2 and s1["failed"] == 0
    rows = db_rows(out)
    first, second = (rows[c.id] for c in spec.cells)
    assert json.loads(second["shared"]) == {"noise": True, "full_noisy": True}  # from the group's first cell
    assert (out / "noise" / spec.cells[0].group / "noisy_labels.npy").exists()
    a = json.loads(Path(first["result_path"]).read_text())["results"]["full_noisy"]
    b = json.loads(Path(second["result_path"]).read_text())["results"]["full_noisy"]
    assert a["accs"] == b["accs"]
    conn = sqlite3.connect(out / "study.sqlite")
    assert conn.execute("SELECT COUNT(*) FROM evaluations").fetchone()[0] == 6  # 2 cells x 3 evaluated sets
    conn.close()
    mtimes = {c.id: Path(rows[c.id]["result_path"]).stat().st_mtime_ns for c in spec.cells}
    # rerun: nothing runs; a grown grid runs only the new cell (and reuses the shared random control of IPC 1)
    s2 = run_study(spec, out, "local", log=lambda m: None)
    assert s2["ran"] == 0 and s2["skipped"] == 2
    spec3 = study(data_root, [{"type": "symmetric", "rate": 0.4}], ipc=(1, 2, 3))
    s3 = run_study(spec3, out, "local", log=lambda m: None)
    assert s3["ran"] == 1 and s3["skipped"] == 2
    rows = db_rows(out)
    assert all(Path(rows[k]["result_path"]).stat().st_mtime_ns == v for k, v in mtimes.items())
    assert all(r["attempts"] == 1 for r in rows.values())


def test_cross_arch_control_reaches_database_and_report(data_root, tmp_path):
    """A study with evaluation.cross_arch set: the control's two rows are in the database and the report."""
    from ddlnl.study.report import write_report

    spec = study(data_root, ["aggre"], overrides=FAST + ["evaluation.cross_arch=convnet"])
    out = tmp_path / "x"
    assert run_study(spec, out, "local", log=lambda m: None)["finished"] == 1
    conn = sqlite3.connect(out / "study.sqlite")
    roles = dict(conn.execute("SELECT role, label FROM evaluations").fetchall())
    conn.close()
    assert roles["controls.cross_arch.random"] == "random real, IPC 1, convnet (control)"
    assert roles["controls.cross_arch.distilled"] == "dm, IPC 1, convnet (control)"
    report = write_report(out)["markdown"].read_text()
    assert "| controls.cross_arch.distilled | dm, IPC 1, convnet (control) | dm, 1 |" in report


def test_multi_seed_study_reports_an_interval_over_seeds(data_root, tmp_path):
    """Cells of several seeds (noise, experts, distillation and evaluation all vary): the report
    gives the 95 % interval of the mean over seeds beside the spread of the runs."""
    import csv

    from ddlnl.study.report import write_report

    spec = parse_study({"name": "m", "preset": "smoke", "overrides": FAST, "data_root": str(data_root),
                        "grid": {"noise": [{"type": "symmetric", "rate": 0.4}], "methods": ["dm"], "ipc": [1], "seeds": [0, 1, 2]}})
    out = tmp_path / "m"
    assert run_study(spec, out, "local", log=lambda m: None)["finished"] == 3
    rows = db_rows(out)
    noise = {json.loads(r["config"])["seed"]: r["actual_rate"] for r in rows.values()}
    assert len(set(noise.values())) > 1  # each seed realises its own noise
    report = write_report(out)
    assert "over 3 seeds]" in report["markdown"].read_text()
    agg = list(csv.DictReader(open(report["folder"] / "results.csv")))
    assert len(agg) == 1 and float(agg[0]["distilled_ci95"]) > 0 and agg[0]["seeds"] == "3"
    # from the cells' result.json: the selections' precision over the 3 seeds, and the distillation's loss curves
    md = report["markdown"].read_text()
    sel = [line for line in md.splitlines() if line.startswith("| cifar10-smoke |") and "| init |" in line]
    assert {line.split(" | ")[2] for line in sel} == {"random", "distilled"} and all(line.endswith("| 3 |") for line in sel)
    assert [f.name for f in report["figures"] if f.name.startswith("history-")] == ["history-cifar10-smoke-symmetric-0.4-dm-ipc1.png"]
    assert not [f for f in report["figures"] if f.name.startswith("acc_vs_ipc")] and "one IPC (1) only" in md  # not a 1-point curve


def test_failed_cells_are_recorded_and_retried(data_root, tmp_path):
    out = tmp_path / "f"
    s = run_study(study(tmp_path / "no-data", ["aggre"]), out, "local", log=lambda m: None)
    assert s["failed"] == 1 and s["finished"] == 0
    row = next(iter(db_rows(out).values()))
    assert row["status"] == "failed" and "not found" in row["error"] and Path(row["log_path"]).exists()
    s = run_study(study(data_root, ["aggre"]), out, "local", log=lambda m: None)  # data_root is not part of the identity
    row = next(iter(db_rows(out).values()))
    assert s["ran"] == 1 and row["status"] == "finished" and row["attempts"] == 2 and row["error"] is None


def test_second_driver_on_the_same_folder_is_refused(data_root, tmp_path):
    import fcntl

    out = tmp_path / "s"
    out.mkdir()
    with open(out / ".driver.lock", "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        with pytest.raises(ConfigError, match="another `ddlnl study` is running"):
            run_study(study(data_root, ["aggre"]), out, "local", log=lambda m: None)


def test_resume_after_killed_driver(data_root, tmp_path, capsys):
    """A real driver process is SIGKILLed mid-study; the rerun keeps finished cells and finishes the rest."""
    path = write_study(tmp_path / "s.yaml", data_root, [{"type": "symmetric", "rates": [0.2, 0.4, 0.6]}])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "ddlnl.cli", "study", str(path), "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.time() + 120
        done = {}
        while time.time() < deadline and proc.poll() is None:
            if (out / "study.sqlite").exists():
                try:
                    done = {k: r for k, r in db_rows(out).items() if r["status"] == "finished"}
                except sqlite3.Error:
                    done = {}
                if done:
                    break
            time.sleep(0.05)
        assert proc.poll() is None, "the study finished before it could be killed: " + proc.stderr.read().decode()[-2000:]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert done, "no cell finished within the deadline"
    before = db_rows(out)
    assert len([r for r in before.values() if r["status"] == "finished"]) < 3
    mtimes = {k: Path(r["result_path"]).stat().st_mtime_ns for k, r in done.items()}
    spec = load_study(path)
    s = run_study(spec, out, "local", log=lambda m: None)
    after = db_rows(out)
    assert s["finished"] == 3 and all(r["status"] == "finished" for r in after.values())
    for k, m in mtimes.items():  # finished cells were neither lost nor repeated
        assert after[k]["attempts"] == 1 and Path(after[k]["result_path"]).stat().st_mtime_ns == m
    assert s["skipped"] >= len(done)
    from ddlnl import cli

    assert cli.main(["study", str(path), "--out", str(out), "--list"]) == 0
    assert "3 finished" in capsys.readouterr().out
    # the killed sitting is kept, interrupted: its cells and its wall time up to the last of them
    from ddlnl.study.store import read_study

    killed, rerun = read_study(out)[0]["runs"]
    finished_then = [r["finished_at"] for r in before.values() if r["status"] == "finished"]
    assert killed["status"] == "interrupted" and killed["ran"] == len(finished_then) >= 1
    assert killed["wall_s"] == pytest.approx(max(finished_then) - killed["started"])
    assert rerun["status"] == "finished" and rerun["ran"] == 3 - len(finished_then) and rerun["wall_s"] > 0
    from ddlnl.study.report import write_report

    md = write_report(out, tmp_path / "report", dpi=40)["markdown"].read_text()
    assert "| interrupted |" in md and "Wall time over 2 sittings:" in md and "(1 interrupted" in md


def test_processes_executor_runs_two_cells_in_parallel(data_root, tmp_path):
    spec = study(data_root, [{"type": "symmetric", "rates": [0.2, 0.4]}])  # two groups: no dependency between them
    out = tmp_path / "p"
    s = run_study(spec, out, "processes", max_workers=2, log=lambda m: None)
    assert s["finished"] == 2 and s["failed"] == 0
    rows = list(db_rows(out).values())
    windows = [(r["started_at"], r["started_at"] + r["worker_s"]) for r in rows]
    assert max(w[0] for w in windows) < min(w[1] for w in windows), windows  # the time windows overlap
    assert all(r["executor"] == "processes" and r["job_id"] for r in rows)
    assert all(r["overhead_s"] is not None and r["overhead_s"] >= 0 for r in rows)


def test_submitit_local_executor_runs_a_cell(data_root, tmp_path):
    pytest.importorskip("submitit")
    spec = study(data_root, ["aggre"], slurm={"cpus": 1, "mem_gb": 2, "time_min": 5})
    out = tmp_path / "sub"
    s = run_study(spec, out, "slurm", cluster="local", log=lambda m: None)
    assert s["finished"] == 1 and s["failed"] == 0, db_rows(out)
    row = next(iter(db_rows(out).values()))
    assert row["executor"] == "slurm" and row["job_id"]
    res = json.loads(Path(row["result_path"]).read_text())
    assert res["noise"]["type"] == "aggre" and set(res["results"]) >= {"full_noisy", "random", "distilled"}
    assert (out / "slurm").is_dir()


# -- report ---------------------------------------------------------------------------------

def _fake_result(cell: Cell, rng, C=10, soft=False):
    def ev(runs):
        accs = list(rng.uniform(0.2, 0.6, runs))
        conf = rng.integers(0, 20, (C, C)).tolist()
        return {"acc_mean": float(np.mean(accs)), "acc_std": float(np.std(accs)), "runs": runs, "accs": accs,
                "per_class": list(rng.uniform(0, 1, C)), "confusion": conf, "seconds": 1.0}
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    full = ev(1)
    return {"dataset": cell.dataset, "method": cell.method, "ipc": cell.ipc, "classes": classes,
            "noise": {"type": cell.noise, "nominal_rate": cell.rate, "actual_rate": cell.rate * 0.9 if cell.rate else 0.17, "seed": cell.seed},
            "results": {"full_noisy": full, "baselines": {"ce": full, "gce": ev(1)}, "controls": {"hard_labels": ev(1)},
                        "random": ev(2) | {"synset": "random.safetensors", "label_kind": "hard"},
                        "distilled": ev(2) | {"synset": "distilled.safetensors", "label_kind": "soft" if soft else "hard"}},
            "timings_s": {"baselines": 1.0, "experts": 0.0, "distill": 2.0, "evaluate": 3.0, "total": 6.5}}


def _fixture_db(folder: Path) -> None:
    """A study database with fabricated results: synthetic, asymmetric (soft labels), human and long-tailed cells."""
    import torch

    from ddlnl.data.preprocess import Preprocessor
    from ddlnl.study.store import Store
    from ddlnl.synset import SyntheticSet

    spec = parse_study({"name": "fixture", "preset": "smoke", "grid": [
        {"noise": [{"type": "symmetric", "rates": [0.2, 0.6]}, "worst"], "methods": ["dm"], "ipc": [1, 3]},
        {"noise": [{"type": "asymmetric", "rate": 0.4}], "methods": ["dm", "datm"], "ipc": [2]},
        {"noise": [{"type": "symmetric", "rate": 0.2}], "methods": ["dm"], "ipc": [2], "imbalance": [10]},
    ]})
    rng = np.random.default_rng(0)
    with Store(folder) as store:
        dirs = {c.id: folder / "cells" / c.id for c in spec.cells}
        store.sync_cells(spec.name, spec.cells, dirs)
        for c in spec.cells:
            soft = c.method == "datm"
            d = dirs[c.id]
            d.mkdir(parents=True)
            labels = torch.randn(10 * c.ipc, 10) if soft else torch.arange(10).repeat_interleave(c.ipc)
            SyntheticSet(torch.rand(10 * c.ipc, 3, 8, 8), labels, Preprocessor("none")).save(d / "distilled.safetensors")
            store.mark_submitted(c.id, "local")
            store.record_finished(c.id, _fake_result(c, rng, soft=soft), {"result_path": str(d / "result.json"), "started_at": time.time()})
        store.set_meta("runs", [{"executor": "local", "ran": len(spec.cells), "skipped": 0, "failed": 0, "wall_s": 1.0, "overhead_s_mean": 0.1}])


def test_report_renders_from_fixture_database(tmp_path):
    from PIL import Image

    from ddlnl.study.report import write_report

    _fixture_db(tmp_path / "study")
    rep = write_report(tmp_path / "study", dpi=72)  # resolution is tested in test_report_figures.py; 72 keeps this one quick
    names = {p.name.split("-")[0] for p in rep["figures"]}
    assert {"acc_vs_ipc", "acc_vs_rate", "per_class", "synset", "absorption"} <= names, names
    assert any("softlabels" in p.name for p in rep["figures"])
    for p in rep["figures"]:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.size[0] > 100 and im.size[1] > 100
    md = rep["markdown"].read_text()
    assert "| noise | realised rate | full noisy |" in md and "Noise absorption" in md and "truck → automobile" in md
    assert "baselines.gce" in md and "controls.hard_labels" in md
    for p in rep["figures"]:
        assert f"]({p.relative_to(rep['folder']).as_posix()})" in md
    import csv

    with open(rep["folder"] / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 * 2 + 2 + 1 and all(0 <= float(r["distilled_mean"]) <= 1 for r in rows)
    with open(rep["folder"] / "cells.csv") as f:
        assert len(list(csv.DictReader(f))) == 9


def test_report_on_missing_folder_is_a_clean_error(tmp_path):
    r = subprocess.run([sys.executable, "-m", "ddlnl.cli", "report", str(tmp_path)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "study.sqlite" in r.stderr and "Traceback" not in r.stderr


# -- SLURM ----------------------------------------------------------------------------------

@pytest.mark.slow
def test_smoke_study_on_a_real_slurm_cluster(data_root, tmp_path):
    """studies/smoke.yaml through --executor slurm on a one-node cluster started here (skipped if it
    cannot start). The driver is SIGKILLed once jobs are queued; the rerun re-attaches to the jobs
    SLURM still runs instead of submitting them again, and finishes the study."""
    from tests.slurm_cluster import SlurmCluster, SlurmUnavailable

    try:
        cluster = SlurmCluster(tmp_path / "slurm").start()
    except SlurmUnavailable as e:
        print(f"SLURM test skipped: {e}")
        pytest.skip(f"no SLURM cluster: {e}")
    try:
        real = os.environ.get("DDLNL_DATA")
        root = real if real and Path(real, "cifar10").exists() and Path(real, "cifar10n").exists() else str(data_root)
        out = tmp_path / "study"
        cmd = [sys.executable, "-m", "ddlnl.cli", "study", str(REPO / "studies" / "smoke.yaml"), "--out", str(out),
               "--executor", "slurm", "--data-root", root]
        env = cluster.env()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True)
        queued = {}
        try:
            deadline = time.time() + 120
            while time.time() < deadline and proc.poll() is None and not queued:
                try:
                    queued = {k: r["job_id"] for k, r in db_rows(out).items() if r["status"] == "running" and r["job_id"]}
                except sqlite3.Error:
                    pass
                time.sleep(0.05)
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait(30)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert queued, "no job was submitted within the deadline"
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:] + cluster.logs()
        print(r.stdout.splitlines()[0], r.stdout.splitlines()[-1], f"(resumed run {time.perf_counter() - t0:.1f} s)", sep="\n")  # summary: wall time, runner overhead
        assert "re-attached" in r.stdout or all(db_rows(out)[k]["status"] == "finished" for k in queued)
        rows = db_rows(out)
        assert len(rows) == 7 and all(x["status"] == "finished" and x["executor"] == "slurm" for x in rows.values())
        for k, job in queued.items():  # jobs queued by the killed driver were not submitted again
            assert rows[k]["job_id"] == job and rows[k]["attempts"] == 1, rows[k]
        jobs = {x["job_id"] for x in rows.values()}
        assert len(jobs) == 7 and all(j.isdigit() for j in jobs)  # real SLURM job ids
        # siblings waited for their group's first cell and took its noise realisation and baseline
        assert all(json.loads(x["shared"]).get("full_noisy") for x in rows.values() if not x["id"].endswith("dm-ipc1"))
        assert cluster.sacct_or_squeue(jobs) is not None
    finally:
        cluster.stop()


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "studies").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_study_loads_and_names_existing_methods(path):
    """The ready studies stay valid as presets and distillers change: they parse, expand, name
    only implemented methods with preset options, and paper grids run the paper's three."""
    spec = load_study(path)
    spec.check()
    assert spec.cells
    methods = {c.method for c in spec.cells}
    if path.name.endswith("-paper.yaml"):
        assert methods == {"datm", "dance", "rcig"}
        assert set(spec.slurm.get("by_method", {})) <= methods


def test_processes_executor_spreads_workers_over_the_visible_gpus(monkeypatch):
    """Each worker gets the visible GPU with the fewest running workers, not all of them GPU 0."""
    from ddlnl.study.executors import ProcessExecutor, visible_gpus

    class Worker:
        def __init__(self):
            self.finished = False

        def done(self):
            return self.finished

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,5")
    assert visible_gpus() == ["3", "5"]
    ex = ProcessExecutor(max_workers=3)
    given = []
    for _ in range(3):
        gpu = ex.next_gpu()
        ex.running.append((Worker(), gpu))
        given.append(gpu)
    assert given == ["3", "5", "3"]
    ex.running[1][0].finished = True  # the worker on GPU 5 ends: the next one goes there
    assert ex.next_gpu() == "5"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert visible_gpus() == [] and ProcessExecutor().next_gpu() is None  # no GPU: the environment is left alone


def test_clean_first_cells_in_a_grid(data_root):
    """grid clean_first: [null, loss_gmm] gives each method a plain cell and a clean-first one, in one group
    (they share the noise and the baseline); a plain cell's identity is what it was before the key existed."""
    spec = study(data_root, [{"type": "symmetric", "rate": 0.4}], grid_extra={"clean_first": [None, "loss_gmm"]})
    plain, cleaned = spec.cells
    assert plain.clean_first is None and cleaned.clean_first == "loss_gmm"
    assert cleaned.id == plain.id + "-clean-loss_gmm" and cleaned.group == plain.group
    assert "clean_first" not in plain.config() and cleaned.config()["clean_first"] == "loss_gmm"
    assert cleaned.spec().clean_first == "loss_gmm" and plain.spec().clean_first is None
    assert cleaned.config_hash() != plain.config_hash()
    with pytest.raises(ConfigError, match="nope"):  # an unknown cleaner fails when the study is read, naming the cell
        study(data_root, [{"type": "symmetric", "rate": 0.4}], grid_extra={"clean_first": ["nope"]}).check()
