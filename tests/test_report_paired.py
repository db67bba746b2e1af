"""The report's paired differences: each comparison a finding rests on is taken seed by seed (same noise
realisation, same full-noisy baseline) and summarised by its mean and 95 % t-interval over seeds; a
baseline shared by a seed's cells counts once per seed, never once for the whole setting."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t

from ddlnl.study import report as rp
from ddlnl.study.report.tables import _verdict
from ddlnl.study.spec import parse_study
from ddlnl.study.store import Store

# per seed: test accuracy of each row (chosen so each comparison has a known sign, or none)
FULL = {0: 0.50, 1: 0.52, 2: 0.48}
DISTILLED = {"datm": {0: 0.40, 1: 0.41, 2: 0.42}, "dm": {0: 0.30, 1: 0.32, 2: 0.34}}
RANDOM = {"datm": {0: 0.20, 1: 0.21, 2: 0.19}, "dm": {0: 0.28, 1: 0.34, 2: 0.33}}  # dm − random: +2, −2, +1
HARD = {0: 0.35, 1: 0.37, 2: 0.36}
INIT = {0: 0.33, 1: 0.32, 2: 0.34}  # datm's init only − its random control: +13, +11, +15 points
GCE = {0: 0.55, 1: 0.60, 2: 0.65}


def _ev(acc: float) -> dict:
    return {"acc_mean": acc, "acc_std": 0.0, "runs": 1, "accs": [acc], "per_class": [acc] * 10}


def _result(cell) -> dict:
    s, m = cell.seed, cell.method
    controls = {"hard_labels": _ev(HARD[s]), "init_only": _ev(INIT[s])} if m == "datm" else {}
    return {"dataset": cell.dataset, "method": m, "ipc": cell.ipc,
            "noise": {"type": cell.noise, "nominal_rate": cell.rate, "actual_rate": cell.rate, "seed": s},
            "results": {"full_noisy": _ev(FULL[s]), "baselines": {"ce": _ev(FULL[s]), "gce": _ev(GCE[s])},
                        "controls": controls, "random": _ev(RANDOM[m][s]), "distilled": _ev(DISTILLED[m][s])},
            "timings_s": {"total": 1.0}}


@pytest.fixture(scope="module")
def rows(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("paired") / "study"
    spec = parse_study({"name": "paired", "preset": "smoke", "grid": [
        {"noise": [{"type": "symmetric", "rate": 0.4}], "methods": ["datm", "dm"], "ipc": [2], "seeds": [0, 1, 2]}]})
    with Store(folder) as store:
        dirs = {c.id: folder / "cells" / c.id for c in spec.cells}
        store.sync_cells(spec.name, spec.cells, dirs)
        for c in spec.cells:
            store.mark_submitted(c.id, "local")
            store.record_finished(c.id, _result(c), {"result_path": str(dirs[c.id] / "result.json"), "started_at": time.time()})
    return rp.load_rows(folder)[0]


def _find(diffs, a, b) -> dict:
    (d,) = [d for d in diffs if d["a"] == a and d["b"] == b]
    return d


def test_differences_are_paired_by_seed_with_a_t_interval(rows):
    diffs = rp.paired_differences(rows)
    d = _find(diffs, "datm", "dm")
    want = [DISTILLED["datm"][s] - DISTILLED["dm"][s] for s in range(3)]  # +10, +9, +8
    assert list(d["per_seed"]) == [0, 1, 2] and np.allclose(list(d["per_seed"].values()), want)
    half = t.ppf(0.975, 2) * np.std(want, ddof=1) / np.sqrt(3)
    assert d["mean"] == pytest.approx(np.mean(want)) and d["ci95"] == pytest.approx(half)
    assert _verdict(d) == "above"
    assert _verdict(_find(diffs, "datm", "full noisy")) == "below"
    noisy = _find(diffs, "dm", rp.CONTROL_NAMES["random"])  # +2, -2, +1 points
    assert np.allclose(list(noisy["per_seed"].values()), [0.02, -0.02, 0.01])
    assert _verdict(noisy).startswith("not settled")
    # a method is compared only with the controls its cells have
    assert _find(diffs, "datm", rp.CONTROL_NAMES["controls.hard_labels"])["mean"] == pytest.approx(0.05)
    assert not [d for d in diffs if d["a"] == "dm" and d["b"] == rp.CONTROL_NAMES["controls.hard_labels"]]
    # the selection alone: the init-only control against the random control, both the cell's own
    selection = _find(diffs, f"datm {rp.CONTROL_NAMES['controls.init_only']}", rp.CONTROL_NAMES["random"])
    assert np.allclose(list(selection["per_seed"].values()), [0.13, 0.11, 0.15]) and _verdict(selection) == "above"
    assert not [d for d in diffs if d["a"].startswith("dm ")]  # dm's cells have no init-only control


def test_one_seed_gives_no_interval(rows):
    one = [c for c in rows if c["seed"] == 0]
    d = _find(rp.paired_differences(one), "datm", "dm")
    assert d["ci95"] is None and d["interval"] is None and _verdict(d) == "one seed: no interval"
    assert "one seed: no interval" in "\n".join(rp.paired_table(rp.paired_differences(one)))


def test_table_prints_points_and_the_interval(rows):
    md = "\n".join(rp.paired_table(rp.paired_differences(rows)))
    d = _find(rp.paired_differences(rows), "datm", "dm")
    lo, hi = d["interval"]
    assert f"| datm − dm | s0: +10.00, s1: +9.00, s2: +8.00 | +9.00 [{100 * lo:+.2f}, {100 * hi:+.2f}] | 3 | above |" in md


def test_a_shared_baseline_counts_once_per_seed(rows):
    """GCE is trained once per seed and shared by that seed's two cells: its row pools the three seeds."""
    (line,) = [ln for ln in rp.other_rows_table(rows) if "baselines.gce" in ln]
    assert f"{100 * np.mean(list(GCE.values())):.2f} ± {100 * np.std(list(GCE.values())):.2f}" in line
    assert "over 3 seeds" in line


def test_report_has_the_section(rows, tmp_path):
    folder = Path(rows[0]["out_dir"]).parent.parent
    rep = rp.write_report(folder, tmp_path / "report", dpi=40)
    assert "## Paired differences over seeds" in rep["markdown"].read_text()
    import csv

    with open(rep["folder"] / "paired.csv") as f:
        (row,) = [r for r in csv.DictReader(f) if (r["first"], r["second"]) == ("datm", "dm")]
    assert row["seeds"] == "3" and float(row["mean_diff"]) == pytest.approx(0.09) and float(row["low"]) > 0


def test_a_clean_first_cell_is_its_own_method(tmp_path):
    """Plain DATM and DATM after a cleaner share a setting, seed and IPC: the report keeps them apart
    (named as in their ids) and pairs them, instead of pooling them into one "datm" column."""
    spec = parse_study({"name": "cf", "preset": "smoke", "grid": [
        {"noise": [{"type": "symmetric", "rate": 0.4}], "methods": ["datm"], "clean_first": [None, "loss_gmm"],
         "ipc": [2], "seeds": [0, 1]}]})
    folder = tmp_path / "study"
    with Store(folder) as store:
        dirs = {c.id: folder / "cells" / c.id for c in spec.cells}
        store.sync_cells(spec.name, spec.cells, dirs)
        for c in spec.cells:
            result = _result(c)
            if c.clean_first:
                result["results"]["distilled"] = _ev(DISTILLED["datm"][c.seed] + 0.05)
            store.mark_submitted(c.id, "local")
            store.record_finished(c.id, result, {"result_path": str(dirs[c.id] / "result.json"), "started_at": time.time()})
    rows = rp.load_rows(folder)[0]
    assert sorted(r["method"] for r in rp.aggregate(rows)) == ["datm", "datm-clean-loss_gmm"]
    d = _find(rp.paired_differences(rows), "datm", "datm-clean-loss_gmm")
    assert np.allclose(list(d["per_seed"].values()), [-0.05, -0.05])
