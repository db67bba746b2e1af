"""A study's `privacy` stage (docs/studies.md, docs/privacy.md): the study key and its checks, the
identity of cells without it, and a tiny study whose cell is audited, reported and not audited again."""

from __future__ import annotations

import json
import sqlite3

import pytest

from ddlnl.errors import ConfigError
from ddlnl.privacy.options import AuditOptions
from ddlnl.study.executors import run_study
from ddlnl.study.spec import Cell, parse_study

# the smallest audit that runs every attack of the default targets: 2 shadows, 8 + 8 audit points
TINY = {"shadows": 2, "audit_points": 8, "bootstrap": 5}
FAST = ["evaluation.train.epochs=2", "baseline.train.epochs=1", "methods.dm.iterations=2"]


def doc(privacy=None, grid_extra=None, data_root=None) -> dict:
    d = {"name": "p", "preset": "smoke", "overrides": FAST,
         "grid": {"noise": [{"type": "symmetric", "rate": 0.4}], "methods": ["dm"], "ipc": [1]} | (grid_extra or {})}
    if privacy is not None:
        d["privacy"] = privacy
    if data_root is not None:
        d["data_root"] = str(data_root)
    return d


# -- the study key --------------------------------------------------------------------------

def test_privacy_true_gives_the_cli_defaults_and_a_grid_entry_may_change_it():
    assert parse_study(doc(True)).cells[0].privacy == AuditOptions()
    assert parse_study(doc(False)).cells[0].privacy is None
    spec = parse_study(doc(TINY | {"targets": "full_noisy, random, full_noisy"}))
    assert spec.cells[0].privacy == AuditOptions(2, 8, ("full_noisy", "random"), 8.0, 5)
    two = parse_study({"preset": "smoke", "privacy": TINY, "grid": [{"ipc": [1]}, {"ipc": [2], "privacy": False},
                                                                     {"ipc": [3], "privacy": {"targets": ["distilled"]}}]})
    assert [c.privacy for c in two.cells] == [AuditOptions(**TINY), None, AuditOptions(targets=("distilled",))]


BAD = [
    ({"shadow": 8}, "privacy: unknown key(s) shadow"),
    ({"shadows": 3}, "privacy.shadows"),
    ({"shadows": "8"}, "privacy.shadows"),
    ({"audit_points": 0}, "privacy.audit_points"),
    ({"bootstrap": -1}, "privacy.bootstrap"),
    ({"targets": ["teacher"]}, "teacher"),
    ({"targets": []}, "privacy.targets"),
    ({"dp_epsilon": 0}, "privacy.dp_epsilon"),
    ("yes", "privacy must be a mapping"),
]


@pytest.mark.parametrize("privacy,needle", BAD, ids=[n for _, n in BAD])
def test_bad_privacy_section_names_the_key(privacy, needle):
    with pytest.raises(ConfigError) as e:
        parse_study(doc(privacy))
    assert needle in e.value.problem and e.value.fix, (e.value.problem, e.value.fix)
    with pytest.raises(ConfigError, match="grid: privacy"):  # in a grid entry too
        parse_study(doc(grid_extra={"privacy": privacy}))


def test_the_command_line_checks_the_same_options():
    with pytest.raises(ConfigError, match="--shadows"):
        AuditOptions(shadows=3).checked()
    with pytest.raises(ConfigError, match="--targets"):
        AuditOptions(targets=("teacher",)).checked()


def test_a_cell_without_privacy_keeps_its_identity():
    """Finished studies that never asked for an audit are still adopted: no key, the same hash."""
    plain, off = parse_study(doc()).cells[0], parse_study(doc(False)).cells[0]
    assert "privacy" not in plain.config() and "privacy" not in plain.full_config()
    assert set(plain.config()) == {"dataset", "noise", "rate", "seed", "method", "ipc", "preset", "imbalance", "overrides",
                                   "data_root", "device"}  # the keys hashed before the stage existed
    assert off.config_hash() == plain.config_hash()
    audited = parse_study(doc(TINY)).cells[0]
    assert audited.id == plain.id and audited.group == plain.group  # the same folder, the same siblings
    assert audited.config_hash() != plain.config_hash()  # done only when audited
    assert parse_study(doc(TINY | {"shadows": 4})).cells[0].config_hash() != audited.config_hash()
    assert Cell.from_config(json.loads(json.dumps(audited.config()))) == audited  # what a worker receives


# -- running --------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    """A small CIFAR-10: 12 training and 4 test images per class."""
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path_factory.mktemp("data")
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    return root


def test_study_audits_its_cells_reports_them_and_never_audits_twice(data_root, tmp_path):
    from ddlnl.study.report import write_report

    out = tmp_path / "s"
    plain = parse_study(doc(data_root=data_root))
    assert run_study(plain, out, "local", log=lambda m: None)["finished"] == 1
    cell = out / "cells" / plain.cells[0].id
    result = json.loads((cell / "result.json").read_text())["results"]
    assert not (cell / "privacy.json").exists()

    # turned on for a finished study: the cell resumes its run (nothing retrained) and is audited
    spec = parse_study(doc(TINY, data_root=data_root))
    s = run_study(spec, out, "local", log=lambda m: None)
    assert s["ran"] == 1 and s["failed"] == 0
    assert json.loads((cell / "result.json").read_text())["results"]["distilled"]["accs"] == result["distilled"]["accs"]
    audit = json.loads((cell / "privacy.json").read_text())
    assert set(audit["targets"]) == {"full_noisy", "random", "distilled"} and audit["settings"]["shadows"] == 2
    assert json.loads((cell / "done.json").read_text())["config_hash"] == spec.cells[0].config_hash()
    timings = json.loads(sqlite3.connect(out / "study.sqlite").execute("SELECT timings FROM cells").fetchone()[0])
    assert timings["privacy"] > 0

    md = write_report(out)["markdown"].read_text()
    rows = [line for line in md.splitlines() if line.startswith(f"| {spec.cells[0].id} |")]
    assert "## Privacy: membership inference" in md and [r.split(" | ")[1] for r in rows] == ["full_noisy", "random", "distilled"]
    assert all(r.endswith("| 8 + 8 | 2 |") and r.count("[") == 3 for r in rows), rows

    # a rerun audits nothing; neither does one whose database forgot the cell (adopted from done.json)
    stamp = (cell / "privacy.json").stat().st_mtime_ns
    assert run_study(spec, out, "local", log=lambda m: None)["ran"] == 0
    (out / "study.sqlite").unlink()
    assert run_study(spec, out, "local", log=lambda m: None)["ran"] == 0
    assert (cell / "privacy.json").stat().st_mtime_ns == stamp


def test_a_failed_audit_fails_the_cell_and_keeps_its_run(data_root, tmp_path, monkeypatch):
    import ddlnl.privacy.audit as audit

    def broken(*_a, **_k):
        raise ConfigError("no memory left", "use fewer shadows")

    monkeypatch.setattr(audit, "audit_run", broken)
    out = tmp_path / "f"
    spec = parse_study(doc(TINY | {"targets": ["full_noisy"]}, data_root=data_root))
    assert run_study(spec, out, "local", log=lambda m: None)["failed"] == 1
    row = sqlite3.connect(out / "study.sqlite").execute("SELECT status, error FROM cells").fetchone()
    assert row[0] == "failed" and row[1].startswith("privacy audit: no memory left")
    folder = out / "cells" / spec.cells[0].id
    assert (folder / "result.json").exists() and not (folder / "done.json").exists()


def test_siblings_wait_for_the_run_not_the_audit(data_root, tmp_path, monkeypatch):
    """The cell writes published.json (its config hash) once its shared parts are exported, before its audit;
    the driver counts such a cell as done for its siblings."""
    import ddlnl.privacy.audit as audit
    from ddlnl.study.executors import dependencies, is_published, ready_cells

    spec = parse_study(doc(TINY | {"targets": ["full_noisy"]}, data_root=data_root))
    (cell,) = spec.cells
    folder = tmp_path / "p" / "cells" / cell.id
    seen = {}

    def look(*_a, **_k):
        seen["published"], seen["done"] = is_published(cell, folder), (folder / "done.json").exists()
        raise ConfigError("stopped here", "nothing to fix")

    monkeypatch.setattr(audit, "audit_run", look)
    assert run_study(spec, tmp_path / "p", "local", log=lambda m: None)["failed"] == 1
    assert seen == {"published": True, "done": False}
    assert is_published(cell, folder)  # kept: a rerun's siblings need not wait for the audit again
    other = parse_study(doc(TINY | {"targets": ["random"]}, data_root=data_root)).cells[0]
    assert other.id == cell.id and not is_published(other, folder)  # another config's marker does not count

    two = parse_study(doc(data_root=data_root, grid_extra={"ipc": [1, 2]}))
    first, second = two.cells
    assert dependencies(two.cells)[second.id] == {first.id}
    assert ready_cells(two.cells, dependencies(two.cells), set()) == [first]
    assert ready_cells(two.cells, dependencies(two.cells), {first.id}) == two.cells
