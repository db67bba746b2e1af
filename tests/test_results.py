"""One result schema: every evaluated row of a result.json reaches the CLI table, the study
database and the report through :func:`ddlnl.results.evaluated_rows`, nested controls included."""

from __future__ import annotations

import copy
import json
import sqlite3
from pathlib import Path

import pytest

from ddlnl.errors import DataError
from ddlnl.results import SCHEMA_VERSION, evaluated_rows, format_result_table, read_result, write_result
from ddlnl.study.report import write_report
from ddlnl.study.spec import Cell
from ddlnl.study.store import DB_NAME, Store

REPO = Path(__file__).resolve().parents[1]
FIXTURE = REPO / "docs" / "results" / "gpu-h100" / "quick-main.result.json"  # a real result.json (schema version 1)


def _row(acc: float) -> dict:
    return {"acc_mean": acc, "acc_std": 0.01, "runs": 2, "accs": [acc - 0.01, acc + 0.01], "per_class": [acc] * 10,
            "confusion": [[10 if i == j else 0 for j in range(10)] for i in range(10)], "seconds": 1.5, "images_processed": 1000}


@pytest.fixture
def result() -> dict:
    r = json.loads(FIXTURE.read_text())
    ctrl = r["results"]["controls"]
    ctrl["cross_arch"] = {"model": {"name": "resnet18"}, "random": _row(0.21), "distilled": _row(0.43)}
    ctrl["label_smoothing"] = _row(0.377)  # a control no reader knows by name
    return r


def record_cell(study_dir: Path, result: dict) -> list[dict]:
    """One finished study cell holding ``result``, recorded as the study driver records it; its evaluation rows."""
    cell = Cell("cifar10", "symmetric", 0.4, 0, "dm", 10, "smoke")
    cell_dir = study_dir / "cells" / cell.id
    cell_dir.mkdir(parents=True)
    write_result(cell_dir / "result.json", result)
    with Store(study_dir) as store:
        store.sync_cells("fixture", [cell], {cell.id: cell_dir})
        store.mark_submitted(cell.id, "local")
        store.record_finished(cell.id, read_result(cell_dir / "result.json"), {"result_path": str(cell_dir / "result.json")})
        return store.evaluations()


def test_report_random_column_is_the_recipe_lr_random_control(result, tmp_path):
    """A method with a learned lr has two random rows: the table's random column is the one at the
    recipe's lr (the same for every method); the one at the method's lr is listed with the other rows."""
    result["results"]["controls"]["random_recipe_lr"] = _row(0.19)
    record_cell(tmp_path, result)
    report = write_report(tmp_path)["markdown"].read_text()
    random = 100 * result["results"]["random"]["acc_mean"]
    assert "| 19.00 ± 1.00 |" in report.split("## Other rows")[0]  # the main table's random column
    assert f"| random | random real, IPC 10, at dm's learned lr | dm, 10 | {random:.2f} ±" in report
    assert "| controls.random_recipe_lr |" not in report


def test_rows_find_nested_and_new_controls(result):
    rows = {r.role: r for r in evaluated_rows(result)}
    assert {"full_noisy", "random", "distilled", "controls.cross_arch.random", "controls.cross_arch.distilled",
            "controls.label_smoothing"} <= set(rows)
    assert rows["controls.cross_arch.random"].label == "random real, IPC 10, resnet18 (control)"
    assert rows["controls.cross_arch.distilled"].label == "dm, IPC 10, resnet18 (control)"
    assert rows["controls.label_smoothing"].label == "dm, IPC 10, label smoothing (control)"
    assert rows["controls.hard_labels"].skipped and rows["controls.init_only"].skipped
    assert "controls.random_real" not in rows  # a pointer at results.random, not a row of its own
    kept = {r.role for r in evaluated_rows(result, include_skipped=False)}
    assert "controls.hard_labels" not in kept and "controls.label_smoothing" in kept


def test_new_control_reaches_table_database_and_report(result, tmp_path):
    table = format_result_table(result)
    assert "| random real, IPC 10, resnet18 (control) | 21.00 ± 1.00 |" in table
    assert "| dm, IPC 10, label smoothing (control) | 37.70 ± 1.00 |" in table

    roles = {e["role"]: e for e in record_cell(tmp_path, result)}
    assert roles["controls.cross_arch.distilled"]["acc_mean"] == pytest.approx(0.43)
    assert roles["controls.cross_arch.distilled"]["label"] == "dm, IPC 10, resnet18 (control)"
    assert roles["controls.label_smoothing"]["acc_mean"] == pytest.approx(0.377)
    assert "controls.hard_labels" not in roles  # skipped rows are said in result.json, not stored

    report = (write_report(tmp_path)["markdown"]).read_text()
    assert "| controls.cross_arch.random | random real, IPC 10, resnet18 (control) | dm, 10 | 21.00 ± 1.00 |" in report
    assert "| controls.label_smoothing | dm, IPC 10, label smoothing (control) | dm, 10 | 37.70 ± 1.00 |" in report


def test_version_1_database_gets_the_later_columns(tmp_path):
    conn = sqlite3.connect(tmp_path / DB_NAME)
    conn.execute("CREATE TABLE evaluations (cell_id TEXT NOT NULL, role TEXT NOT NULL, acc_mean REAL, acc_std REAL, runs INTEGER,"
                 " accs TEXT, per_class TEXT, confusion TEXT, label_kind TEXT, synset_path TEXT, seconds REAL,"
                 " PRIMARY KEY (cell_id, role))")
    conn.close()
    with Store(tmp_path) as store:
        assert {"label", "val_acc_mean"} <= {r[1] for r in store.conn.execute("PRAGMA table_info(evaluations)")}
        assert store.get_meta("schema_version") == 3


def test_reader_refuses_what_it_cannot_read(result, tmp_path):
    newer = copy.deepcopy(result) | {"schema_version": SCHEMA_VERSION + 1}
    (tmp_path / "newer.json").write_text(json.dumps(newer))
    with pytest.raises(DataError, match="newer than this ddlnl reads"):
        read_result(tmp_path / "newer.json")
    broken = copy.deepcopy(result)
    del broken["results"]["distilled"]
    with pytest.raises(DataError, match="no results.distilled"):
        write_result(tmp_path / "broken.json", broken)
    assert not (tmp_path / "broken.json").exists()
    assert read_result(FIXTURE)["method"] == "dm"  # version 1 (no schema_version) still reads
