"""The results database: ``study.sqlite`` in the study folder.

Tables
------
``cells``        one row per cell: status (pending / running / finished / failed), the full
                 config (JSON) and its hash, timings, the executor and job id, artefact paths.
``evaluations``  one row per cell and evaluated training set: every row
                 :func:`ddlnl.results.evaluated_rows` finds in the cell's result.json
                 (``full_noisy``, ``random``, ``distilled``, ``baselines.<name>``,
                 ``controls.<name>`` and nested ones such as ``controls.cross_arch.random``):
                 its label, mean/std accuracy, per-run accuracies, per-class accuracy,
                 confusion matrix, label kind and the synthetic-set file.
``meta``         the study name, the parsed study file and bookkeeping (key/value JSON).

Only the study driver writes, each change in one transaction (``with conn:``), in WAL
mode, so a driver killed at any moment leaves the database at the last finished change.
A finished cell is recorded (row + evaluations) in one transaction after its
``result.json`` exists, so nothing is half-recorded. Every SQL statement of the package is
in this module; readers (``ddlnl study --list``, the report) use :func:`read_cells` and
:func:`read_study`, which open the database read-only.
"""

from __future__ import annotations

import json
import sqlite3
import time
from pathlib import Path

from ddlnl.results import evaluated_rows

DB_NAME = "study.sqlite"
SCHEMA_VERSION = 3  # 2: evaluations.label; 3: evaluations.val_acc_mean

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS cells (
    id TEXT PRIMARY KEY,
    study TEXT,
    config TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    cell_group TEXT,
    dataset TEXT, noise TEXT, rate REAL, seed INTEGER, method TEXT, ipc INTEGER, preset TEXT, imbalance REAL,
    status TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    executor TEXT, job_id TEXT,
    submitted_at REAL, started_at REAL, finished_at REAL,
    wall_s REAL,           -- driver: submitted -> recorded
    worker_s REAL,         -- worker: the cell function, start to end
    experiment_s REAL,     -- run_experiment's own wall time
    overhead_s REAL,       -- wall_s - experiment_s - the privacy audit's time: what the study runner adds
    shared TEXT,           -- JSON: which stages came from a sibling cell
    timings TEXT,          -- JSON: result.json's timings_s (and "privacy": the audit's wall time)
    out_dir TEXT, result_path TEXT, log_path TEXT,
    actual_rate REAL,      -- realised noise rate of the cell's training labels
    classes TEXT,          -- JSON list of class names
    error TEXT
);
CREATE TABLE IF NOT EXISTS evaluations (
    cell_id TEXT NOT NULL REFERENCES cells(id),
    role TEXT NOT NULL,
    acc_mean REAL, acc_std REAL, runs INTEGER,
    accs TEXT, per_class TEXT, confusion TEXT,
    label_kind TEXT, synset_path TEXT, seconds REAL, label TEXT,
    val_acc_mean REAL,     -- accuracy on the validation split's noisy labels (NULL: no split)
    PRIMARY KEY (cell_id, role)
);
"""



class Store:
    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.path = self.folder / DB_NAME
        self.conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        for stmt in SCHEMA.strip().split(";"):
            if stmt.strip():
                self.conn.execute(stmt)
        columns = {r[1] for r in self.conn.execute("PRAGMA table_info(evaluations)")}
        if "label" not in columns:  # a version-1 database: its rows get their labels when their cells are recorded again
            self.conn.execute("ALTER TABLE evaluations ADD COLUMN label TEXT")
        if "val_acc_mean" not in columns:  # version 1 or 2
            self.conn.execute("ALTER TABLE evaluations ADD COLUMN val_acc_mean REAL")
        self.set_meta("schema_version", SCHEMA_VERSION)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _tx(self, fn):
        """Run ``fn(conn)`` in one IMMEDIATE transaction."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            out = fn(self.conn)
            self.conn.execute("COMMIT")
            return out
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise

    # -- meta ------------------------------------------------------------------------------
    def set_meta(self, key: str, value) -> None:
        self._tx(lambda c: c.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, json.dumps(value, default=str))))

    def get_meta(self, key: str, default=None):
        row = self.conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else default

    # -- sittings: one entry per `ddlnl study` invocation ----------------------------------
    def begin_sitting(self, executor: str) -> dict:
        """Record a driver's start in meta ``runs``; an earlier entry still ``running`` is a driver that was killed:
        it becomes ``interrupted``, with the cells that finished while it ran and its wall time up to the last of
        them (a lower bound). Returns the new entry (:meth:`end_sitting` completes it)."""
        runs, now = self.get_meta("runs", []), time.time()
        for i, r in enumerate(runs):
            if r.get("status") == "running":
                until = runs[i + 1].get("started", now) if i + 1 < len(runs) else now
                done = [t for (t,) in self.conn.execute(
                    "SELECT finished_at FROM cells WHERE status = 'finished' AND finished_at >= ? AND finished_at < ?",
                    (r["started"], until))]
                r.update(status="interrupted", ran=len(done), wall_s=(max(done) - r["started"]) if done else 0.0)
        entry = {"started": now, "at": _utc(now), "executor": executor, "status": "running"}
        self.set_meta("runs", runs + [entry])
        return entry

    def end_sitting(self, entry: dict, summary: dict) -> None:
        """Complete the entry :meth:`begin_sitting` made with the driver's summary."""
        runs = self.get_meta("runs", [])
        for r in runs:
            if r.get("started") == entry["started"]:
                r.update(summary, status="finished", ended=_utc(time.time()))
        self.set_meta("runs", runs)

    # -- cells -----------------------------------------------------------------------------
    def sync_cells(self, study: str, cells, out_dirs: dict[str, Path]) -> None:
        """Insert new cells as pending; a cell whose config changed goes back to pending."""
        def fn(c):
            for cell in cells:
                cfg, h = cell.full_config(), cell.config_hash()
                row = c.execute("SELECT config_hash FROM cells WHERE id = ?", (cell.id,)).fetchone()
                if row is None:
                    c.execute(
                        "INSERT INTO cells (id, study, config, config_hash, cell_group, dataset, noise, rate, seed, method, ipc, preset,"
                        " imbalance, status, out_dir) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,'pending',?)",
                        (cell.id, study, json.dumps(cfg), h, cell.group, cell.dataset, cell.noise, cell.rate, cell.seed, cell.method,
                         cell.ipc, cell.preset, cell.imbalance, str(out_dirs[cell.id])))
                elif row[0] != h:
                    c.execute("UPDATE cells SET config = ?, config_hash = ?, status = 'pending', error = NULL WHERE id = ?",
                              (json.dumps(cfg), h, cell.id))
                    c.execute("DELETE FROM evaluations WHERE cell_id = ?", (cell.id,))
        self._tx(fn)

    def cell(self, cell_id: str) -> dict | None:
        row = self.conn.execute("SELECT * FROM cells WHERE id = ?", (cell_id,)).fetchone()
        return dict(row) if row else None

    def cells(self, status: str | None = None) -> list[dict]:
        q, args = "SELECT * FROM cells", ()
        if status:
            q, args = q + " WHERE status = ?", (status,)
        return [dict(r) for r in self.conn.execute(q + " ORDER BY rowid", args)]

    def status_counts(self) -> dict[str, int]:
        return {r[0]: r[1] for r in self.conn.execute("SELECT status, COUNT(*) FROM cells GROUP BY status")}

    def mark_submitted(self, cell_id: str, executor: str, job_id: str | None = None) -> None:
        self._tx(lambda c: c.execute(
            "UPDATE cells SET status = 'running', attempts = attempts + 1, executor = ?, job_id = ?, submitted_at = ?,"
            " error = NULL WHERE id = ?", (executor, job_id, time.time(), cell_id)))

    def set_job_id(self, cell_id: str, job_id: str) -> None:
        self._tx(lambda c: c.execute("UPDATE cells SET job_id = ? WHERE id = ?", (job_id, cell_id)))

    def mark_failed(self, cell_id: str, error: str, outcome: dict | None = None) -> None:
        outcome = outcome or {}
        self._tx(lambda c: c.execute(
            "UPDATE cells SET status = 'failed', error = ?, started_at = ?, finished_at = ?, worker_s = ?, log_path = ? WHERE id = ?",
            (error, outcome.get("started_at"), time.time(), outcome.get("worker_s"), outcome.get("log_path"), cell_id)))

    def reset_unfinished(self, keep: set[str] = frozenset()) -> int:
        """After a killed driver: cells left 'running' (or failed) are pending again, except ``keep``
        (jobs re-attached on the cluster)."""
        def fn(c):
            n = 0
            for (cid,) in c.execute("SELECT id FROM cells WHERE status IN ('running', 'failed')").fetchall():
                if cid not in keep:
                    n += c.execute("UPDATE cells SET status = 'pending' WHERE id = ?", (cid,)).rowcount
            return n
        return self._tx(fn)

    def record_finished(self, cell_id: str, result: dict, outcome: dict) -> None:
        """Cell row and its three evaluation rows, in one transaction."""
        now = time.time()

        def fn(c):
            row = c.execute("SELECT submitted_at FROM cells WHERE id = ?", (cell_id,)).fetchone()
            submitted = row[0] if row and row[0] else outcome.get("started_at", now)
            wall = now - submitted if outcome.get("adopted") is not True else None
            exp_s = result.get("timings_s", {}).get("total")
            audit_s = outcome.get("privacy_s") or 0.0  # the cell's privacy audit: work, not overhead
            overhead = (wall - exp_s - audit_s) if (wall is not None and exp_s is not None and not outcome.get("adopted")) else None
            timings = result.get("timings_s", {}) | ({"privacy": outcome["privacy_s"]} if outcome.get("privacy_s") is not None else {})
            c.execute(
                "UPDATE cells SET status = 'finished', started_at = ?, finished_at = ?, wall_s = ?, worker_s = ?, experiment_s = ?,"
                " overhead_s = ?, shared = ?, timings = ?, result_path = ?, log_path = ?, actual_rate = ?, classes = ?,"
                " error = NULL WHERE id = ?",
                (outcome.get("started_at"), now, wall, outcome.get("worker_s"), exp_s, overhead,
                 json.dumps(outcome.get("shared", {})), json.dumps(timings), outcome.get("result_path"),
                 outcome.get("log_path"), result.get("noise", {}).get("actual_rate"), json.dumps(result.get("classes")), cell_id))
            c.execute("DELETE FROM evaluations WHERE cell_id = ?", (cell_id,))
            out_dir = Path(outcome.get("result_path", "")).parent
            for row in evaluated_rows(result, include_skipped=False):
                r, synset = row.value, row.value.get("synset")
                c.execute(
                    "INSERT INTO evaluations (cell_id, role, acc_mean, acc_std, runs, accs, per_class, confusion, label_kind,"
                    " synset_path, seconds, label, val_acc_mean) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                    (cell_id, row.role, r.get("acc_mean"), r.get("acc_std"), r.get("runs"), json.dumps(r.get("accs")),
                     json.dumps(r.get("per_class")), json.dumps(r.get("confusion")), r.get("label_kind", "hard"),
                     str(out_dir / synset) if synset else None, r.get("seconds"), row.label, r.get("val_acc_mean")))
        self._tx(fn)

    def evaluations(self) -> list[dict]:
        return [dict(r) for r in self.conn.execute("SELECT * FROM evaluations ORDER BY rowid")]


def open_readonly(folder: str | Path) -> sqlite3.Connection:
    path = Path(folder) / DB_NAME
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    conn.row_factory = sqlite3.Row
    return conn


def read_cells(folder: str | Path) -> list[dict]:
    """Every cell row of a study folder's database (empty when it has none yet), read-only."""
    if not (Path(folder) / DB_NAME).exists():
        return []
    conn = open_readonly(folder)
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM cells ORDER BY rowid")]
    finally:
        conn.close()


def read_study(folder: str | Path) -> tuple[dict, list[dict], list[dict]]:
    """(meta, cells, evaluations) of a study folder's database, read-only; JSON columns decoded."""
    conn = open_readonly(folder)
    try:
        meta = {r["key"]: json.loads(r["value"]) for r in conn.execute("SELECT key, value FROM meta")}
        cells = [dict(r) for r in conn.execute("SELECT * FROM cells ORDER BY rowid")]
        evals = [dict(r) for r in conn.execute("SELECT * FROM evaluations ORDER BY rowid")]
    finally:
        conn.close()
    for c in cells:
        c["classes"] = json.loads(c["classes"]) if c.get("classes") else None
        c["timings"] = json.loads(c["timings"]) if c.get("timings") else {}
    for e in evals:
        for k in ("accs", "per_class", "confusion"):
            e[k] = json.loads(e[k]) if e[k] else None
    return meta, cells, evals


def _utc(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
