"""Running a study: one cell function, three executors, one driver.

:func:`execute_cell` is the only code that runs a cell, whatever the executor:

1. take an exclusive lock on the cell folder (a second worker on the same cell waits, then
   finds every stage saved and finishes in seconds);
2. import what sibling cells of its group already made (:meth:`ddlnl.stages.RunFolder.import_shared`:
   the noise realisation, the full-noisy baseline, every other baseline and the random control of the same IPC).
   Each carries the key it was made under and ``run_experiment`` recomputes on any mismatch,
   so sharing can never give a cell a result made under another configuration;
3. ``run_experiment(cell.spec(), folder)`` (resuming whatever stages the cell folder holds);
4. publish the cell's shareable parts for its siblings (:meth:`~ddlnl.stages.RunFolder.export_shared`,
   first writer wins; atomic), then write ``published.json``: the siblings may start from here on;
5. when the study turns ``privacy`` on, audit the finished run in the cell folder
   (:func:`ddlnl.privacy.audit_run`, as ``ddlnl privacy``: ``privacy.json``; every trained
   shadow's scores are kept, so a rerun trains only what is missing), and write ``done.json``.
   The audit's options are part of the cell's identity, so a cell is finished only with its
   audit, and a study without ``privacy`` keeps the identities it had.

A *group* is (dataset, imbalance, noise realisation, seed, preset, overrides): every cell
of a group differs only in method and IPC. The driver runs the first cell of each group
(and of each group and IPC, and of each group and method) before the others of that group,
so the baselines are trained once per group, the random control once per group and IPC, and a
method's cached work (MTT/DATM expert trajectories in ``$DDLNL_CACHE``, keyed by the noisy
labels) once per group and method; cells of different groups run in parallel from the start.
A sibling waits for the first cell's run only, not for its privacy audit: it starts once the
first cell is finished or failed or its folder holds ``published.json`` for the same config.

Executors: ``local`` (in this process, one at a time), ``processes`` (one
``python -m ddlnl.study.executors JOB`` subprocess per cell, at most ``max_workers`` at
once, each with ``cpu_count // max_workers`` torch threads) and ``slurm`` (one submitit job
per cell through ``submitit.AutoExecutor``; resources per cell from the study's ``slurm``
section; ``cluster="local"`` gives submitit's local executor, used by the tests).

The driver is the only writer of the results database. It records a cell when its worker
returns. If the driver is killed, the next run resets cells left ``running`` to pending,
adopts any whose ``done.json`` matches (the worker finished after the driver died), and
runs the rest; finished stages inside a cell folder are reused.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

from ddlnl.errors import ConfigError, DdlnlError
from ddlnl.results import read_result
from ddlnl.stages import RunFolder
from ddlnl.study.spec import Cell, StudySpec
from ddlnl.study.store import Store, read_cells
from ddlnl.utils.io import write_json

EXECUTORS = ("local", "processes", "slurm")
PUBLISHED = "published.json"  # in a cell folder: its run is done and its shared parts exported (an audit may follow)


# == the cell function ======================================================================

def execute_cell(job: dict) -> dict:
    """Run one cell (see the module docstring). Never raises for a failing experiment: returns an outcome."""
    started = time.time()
    t0 = time.perf_counter()
    out = Path(job["out_dir"])
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "log.txt"
    outcome = {"cell_id": job["cell_id"], "started_at": started, "log_path": str(log_path), "pid": os.getpid(),
               "host": os.uname().nodename, "result_path": str(out / "result.json")}
    if job.get("threads"):
        import torch

        torch.set_num_threads(int(job["threads"]))
    with open(out / ".lock", "a") as lock, open(log_path, "a", buffering=1) as logf:
        fcntl.flock(lock, fcntl.LOCK_EX)

        def log(msg: str) -> None:
            logf.write(f"{time.strftime('%H:%M:%S')} {msg}\n")

        try:
            cell = Cell.from_config(job["cell"])
            folder, shared = RunFolder(out), Path(job["study_dir"])
            imported = folder.import_shared(shared, cell.group, cell.ipc)
            log(f"[study] cell {cell.id} (pid {os.getpid()} on {outcome['host']}); from siblings: {sorted(imported) or 'nothing'}")
            from ddlnl.run import run_experiment

            result = run_experiment(cell.spec(), out, log=log, progress=False)
            used = {part: folder.used_unchanged(part, digest) for part, digest in imported.items()}
            folder.export_shared(shared, cell.group, cell.ipc)
            write_json(out / PUBLISHED, {"config_hash": job["config_hash"], "at": time.time()})
            if cell.privacy is not None:
                outcome["privacy_s"] = audit_cell(cell, out, log)
            outcome.update(status="finished", shared=used, experiment_s=result["timings_s"]["total"])
        except Exception as e:  # noqa: BLE001 - a failed cell is recorded, the study goes on
            log(traceback.format_exc())
            msg = f"{e.problem} (fix: {e.fix})" if isinstance(e, DdlnlError) and e.fix else f"{type(e).__name__}: {e}"
            outcome.update(status="failed", error=msg)
        outcome["worker_s"] = time.perf_counter() - t0
        outcome["ended_at"] = time.time()
        if outcome["status"] == "finished":
            write_json(out / "done.json", outcome | {"config_hash": job["config_hash"]})
    return outcome


def audit_cell(cell: Cell, out: Path, log) -> float:
    """The membership-inference audit of the cell's finished run, into its folder; returns its wall time."""
    from ddlnl.privacy import audit_run

    t0 = time.perf_counter()
    log(f"[study] privacy audit of {cell.id}: {cell.privacy.to_dict()}")
    try:
        audit_run(out, **cell.privacy.to_dict(), data_root=cell.data_root, device=cell.device, progress=False, log=log)
    except DdlnlError as e:  # the run is finished and kept; the cell is not, until its audit is
        raise type(e)(f"privacy audit: {e.problem}", e.fix) from e
    return time.perf_counter() - t0


# == executors ==============================================================================

class _Done:
    def __init__(self, outcome: dict):
        self.outcome = outcome
        self.job_id = None

    def done(self) -> bool:
        return True

    def result(self) -> dict:
        return self.outcome

    def cancel(self) -> None:
        pass


class LocalExecutor:
    """In this process, one cell at a time (tests, debugging)."""

    name = "local"

    def __init__(self, max_workers: int | None = None, **_):
        self.max_workers = 1

    def submit(self, job: dict, resources: dict | None = None):
        return _Done(execute_cell(job))


class _Proc:
    def __init__(self, proc: subprocess.Popen, outcome_path: Path, logf):
        self.proc, self.outcome_path, self.logf = proc, outcome_path, logf
        self.job_id = str(proc.pid)

    def done(self) -> bool:
        return self.proc.poll() is not None

    def result(self) -> dict:
        self.logf.close()
        if self.outcome_path.exists():
            return json.loads(self.outcome_path.read_text())
        return {"status": "failed", "error": f"worker process exited with status {self.proc.returncode} and no outcome "
                                             f"(see {self.logf.name})"}

    def cancel(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.logf.close()


def _die_with_parent():  # runs in the child between fork and exec
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - best effort (non-Linux)
        pass


class ProcessExecutor:
    """One subprocess per cell, at most ``max_workers`` at once."""

    name = "processes"

    def __init__(self, max_workers: int | None = None, **_):
        self.max_workers = max(1, int(max_workers or 2))
        self.threads = max(1, (os.cpu_count() or 1) // self.max_workers)
        self.gpus = visible_gpus()
        self.running: list[tuple[_Proc, str | None]] = []  # each worker and the GPU it was given

    def next_gpu(self) -> str | None:
        """The visible GPU with the fewest running workers (None without GPUs): workers spread over
        every GPU instead of all landing on the first."""
        if not self.gpus:
            return None
        self.running = [(p, g) for p, g in self.running if not p.done()]
        load = {g: 0 for g in self.gpus}
        for _, g in self.running:
            load[g] = load.get(g, 0) + 1
        return min(self.gpus, key=lambda g: load[g])

    def submit(self, job: dict, resources: dict | None = None):
        out = Path(job["out_dir"])
        out.mkdir(parents=True, exist_ok=True)
        gpu = self.next_gpu()
        job = job | {"threads": job.get("threads") or self.threads} | ({} if gpu is None else {"gpu": gpu})
        job_path, outcome_path = out / "job.json", out / "outcome.json"
        outcome_path.unlink(missing_ok=True)
        write_json(job_path, job)
        env = dict(os.environ, OMP_NUM_THREADS=str(job["threads"]), MKL_NUM_THREADS=str(job["threads"]))
        if gpu is not None:
            env["CUDA_VISIBLE_DEVICES"] = gpu
        src = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        logf = open(out / "worker.log", "a")
        proc = subprocess.Popen([sys.executable, "-m", "ddlnl.study.executors", str(job_path), str(outcome_path)],
                                stdout=logf, stderr=subprocess.STDOUT, env=env, preexec_fn=_die_with_parent)
        handle = _Proc(proc, outcome_path, logf)
        self.running.append((handle, gpu))
        return handle


def visible_gpus() -> list[str]:
    """The GPUs workers may be given: the entries of ``CUDA_VISIBLE_DEVICES`` when it is set, else
    one per CUDA device torch counts (none without CUDA)."""
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed is not None:
        return [g.strip() for g in listed.split(",") if g.strip() and g.strip() != "-1"]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


class _Submitit:
    """A submitit job. Done when its result file exists, or when the cluster no longer lists it
    (clusters without accounting, where ``sacct`` cannot say that a job died)."""

    def __init__(self, job):
        self.job = job
        self.job_id = str(job.job_id)
        self._checked = time.time()
        self._gone = False

    def done(self) -> bool:
        if self.job.done():
            return True
        if time.time() - self._checked > 10 and self.job.__class__.__module__.startswith("submitit.slurm"):
            self._checked = time.time()
            r = subprocess.run(["squeue", "-h", "-j", self.job_id, "-o", "%T"], capture_output=True, text=True)
            state = r.stdout.strip()
            gone = r.returncode != 0 or state in ("", "COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY")
            if gone and self._gone:  # twice in a row: the result file would be there by now
                return True
            self._gone = gone
        return False

    def result(self) -> dict:
        if not self.job.paths.result_pickle.exists() and self._gone:
            err = self.job.paths.stderr
            tail = err.read_text()[-2000:] if err.exists() else "(no stderr file)"
            return {"status": "failed", "error": f"job {self.job_id} ended without a result; stderr tail: {tail}"}
        try:
            return self.job.result()
        except Exception as e:  # noqa: BLE001 - the job died (time limit, node failure, ...)
            return {"status": "failed", "error": f"submitit job {self.job_id} failed: {type(e).__name__}: {str(e)[-2000:]}"}

    def cancel(self) -> None:
        try:
            self.job.cancel(check=False)
        except Exception:  # noqa: BLE001
            pass


def _quiet_sacct(record) -> bool:
    """Drop submitit's per-poll warning on clusters without accounting (sacct fails; squeue is used instead)."""
    return "Bypassing sacct error" not in record.getMessage()


class SlurmExecutor:
    """One submitit job per cell (``cluster`` None: auto-detect SLURM; ``"local"``: submitit's local executor)."""

    name = "slurm"

    def __init__(self, max_workers: int | None = None, folder: str | Path = "slurm", cluster: str | None = None, **_):
        try:
            import submitit  # noqa: F401
        except ImportError:
            raise ConfigError("the slurm executor needs the 'submitit' package", "pip install submitit") from None
        self.max_workers = max(1, int(max_workers or 64))
        self.folder = Path(folder)
        self.cluster = cluster
        import logging

        logging.getLogger("submitit").addFilter(_quiet_sacct)

    def _executor(self, cell_id: str, resources: dict):
        import submitit

        ex = submitit.AutoExecutor(folder=self.folder / "%j", cluster=self.cluster)
        if self.cluster != "local" and ex.cluster != "slurm":
            raise ConfigError(f"--executor slurm found no SLURM cluster (submitit picked {ex.cluster!r})",
                              "run on a SLURM login node (sbatch on PATH), or use --executor processes")
        params = {"name": f"ddlnl-{cell_id}"[:120], "timeout_min": resources.get("time_min", 60), "nodes": 1, "tasks_per_node": 1}
        if "cpus" in resources:
            params["cpus_per_task"] = resources["cpus"]
        if "mem_gb" in resources:
            params["mem_gb"] = resources["mem_gb"]
        if resources.get("gpus"):
            params["gpus_per_node"] = resources["gpus"]
        if resources.get("partition"):
            params["slurm_partition"] = resources["partition"]
        extra = dict(resources.get("extra") or {})
        for k in ("account", "qos", "constraint"):
            if resources.get(k):
                extra[k] = resources[k]
        if extra:
            params["slurm_additional_parameters"] = extra
        if resources.get("setup"):
            params["slurm_setup"] = list(resources["setup"])
        ex.update_parameters(**params)
        return ex

    def reattach(self, job_id: str):
        """A handle on a job submitted by an earlier driver, if SLURM still runs it or it left a result."""
        if self.cluster == "local":
            return None
        import submitit

        job = submitit.SlurmJob(folder=self.folder / "%j", job_id=str(job_id))
        if job.paths.result_pickle.exists():
            return _Submitit(job)
        r = subprocess.run(["squeue", "-h", "-j", str(job_id), "-o", "%T"], capture_output=True, text=True)
        if r.returncode == 0 and r.stdout.strip() in ("PENDING", "CONFIGURING", "RUNNING", "COMPLETING", "REQUEUED", "SUSPENDED"):
            return _Submitit(job)
        return None

    def submit(self, job: dict, resources: dict | None = None):
        resources = resources or {}
        if resources.get("cpus"):
            job = job | {"threads": resources["cpus"]}
        ex = self._executor(job["cell_id"], resources)
        return _Submitit(ex.submit(execute_cell, job))


def make_executor(name: str, max_workers: int | None, folder: Path, cluster: str | None = None):
    if name == "local":
        return LocalExecutor()
    if name == "processes":
        return ProcessExecutor(max_workers)
    if name == "slurm":
        return SlurmExecutor(max_workers, folder=folder / "slurm", cluster=cluster)
    raise ConfigError(f"unknown executor {name!r}", f"use one of: {', '.join(EXECUTORS)}")


# == the driver =============================================================================

def run_study(spec: StudySpec, out: str | Path, executor: str = "local", max_workers: int | None = None, *,
              log=print, cluster: str | None = None, poll_s: float = 0.2, reuse_from: str | Path | None = None) -> dict:
    """Run every unfinished cell of ``spec`` into ``out``; return a summary. With ``reuse_from`` (another
    study folder), each cell to run first takes the resumable state of the same-id cell there
    (:func:`seed_cells`)."""
    t0 = time.perf_counter()
    out = Path(out).resolve()
    spec.check()
    source = None if reuse_from is None else reuse_source(reuse_from, out)
    ex = make_executor(executor, max_workers or spec.max_workers, out, cluster)
    out_dirs = {c.id: out / "cells" / c.id for c in spec.cells}
    out.mkdir(parents=True, exist_ok=True)
    driver_lock = open(out / ".driver.lock", "a")
    try:
        fcntl.flock(driver_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        driver_lock.close()
        raise ConfigError(f"another `ddlnl study` is running on {out}", "wait for it to end (or stop it), then rerun to resume") from None
    store = Store(out)
    try:
        store.set_meta("study", {"name": spec.name, "description": spec.description, "source": spec.source})
        store.sync_cells(spec.name, spec.cells, out_dirs)
        sitting = store.begin_sitting(ex.name)
        by_id = {c.id: c for c in spec.cells}
        running: dict[str, object] = {}
        if hasattr(ex, "reattach"):  # jobs an earlier (killed) driver submitted and the cluster still runs
            for row in store.cells("running"):
                if row["id"] in by_id and row["executor"] == ex.name and row["job_id"]:
                    handle = ex.reattach(row["job_id"])
                    if handle is not None:
                        running[row["id"]] = handle
        store.reset_unfinished(keep=set(running))
        adopted = _adopt(store, by_id, out_dirs)
        finished = {r["id"] for r in store.cells("finished")}
        todo = [c for c in spec.cells if c.id not in finished and c.id not in running]
        skipped = len(spec.cells) - len(todo) - len(running)
        log(f"[study] {spec.name}: {len(spec.cells)} cells, {skipped} already finished"
            f"{f' ({adopted} adopted from cell folders)' if adopted else ''}"
            f"{f', {len(running)} still running on the cluster (re-attached)' if running else ''}, {len(todo)} to run "
            f"with executor {ex.name} (max {ex.max_workers} at once)")
        if source is not None:
            seeded = seed_cells(todo, out_dirs, source)
            log(f"[study] reused from {source}: {sum(len(v) for v in seeded.values())} files into {len(seeded)} of the "
                f"{len(todo)} cells to run (each stage is reused only if its key matches)")
        deps = dependencies(spec.cells)
        waited_for = set().union(*deps.values())  # only these cells' published.json is ever read
        published = {c.id for c in todo if c.id in waited_for and is_published(c, out_dirs[c.id])}  # e.g. an audit cut short
        failed: set[str] = set()
        overheads: list[float] = []
        done_now = 0
        try:
            while todo or running:
                published |= {cid for cid in running if cid in waited_for and cid not in published
                              and is_published(by_id[cid], out_dirs[cid])}
                ready = ready_cells(todo, deps, finished | failed | published)
                while ready and len(running) < ex.max_workers:
                    c = ready.pop(0)
                    todo.remove(c)
                    job = {"cell": c.config(), "cell_id": c.id, "config_hash": c.config_hash(), "out_dir": str(out_dirs[c.id]),
                           "study_dir": str(out)}
                    store.mark_submitted(c.id, ex.name)
                    try:
                        handle = ex.submit(job, spec.slurm_for(c))
                    except DdlnlError:
                        raise
                    except Exception as e:  # noqa: BLE001 - e.g. sbatch refused the job: record it, go on
                        store.mark_failed(c.id, f"could not submit: {type(e).__name__}: {e}")
                        failed.add(c.id)
                        log(f"[study] FAILED to submit {c.id}: {type(e).__name__}: {e}")
                        continue
                    if handle.job_id:
                        store.set_job_id(c.id, handle.job_id)
                    running[c.id] = handle
                for cid, handle in list(running.items()):
                    if not handle.done():
                        continue
                    del running[cid]
                    outcome = handle.result()
                    result = None
                    if outcome.get("status") == "finished":
                        try:
                            result = read_result(outcome["result_path"])
                        except DdlnlError as e:
                            outcome = outcome | {"status": "failed", "error": f"{e.problem} ({e.fix})"}
                    if result is not None:
                        store.record_finished(cid, result, outcome)
                        finished.add(cid)
                        done_now += 1
                        ov = store.cell(cid)["overhead_s"]
                        if ov is not None:
                            overheads.append(ov)
                        r = result["results"]
                        log(f"[study] finished {cid} in {outcome.get('worker_s', 0):.1f} s: full-noisy "
                            f"{100 * r['full_noisy']['acc_mean']:.1f}%, random {100 * r['random']['acc_mean']:.1f}%, "
                            f"{by_id[cid].method} {100 * r['distilled']['acc_mean']:.1f}%")
                    else:
                        store.mark_failed(cid, outcome.get("error", "unknown error"), outcome)
                        failed.add(cid)
                        log(f"[study] FAILED {cid}: {outcome.get('error')} (log: {outcome.get('log_path', out_dirs[cid] / 'log.txt')})")
                if running and not any(h.done() for h in running.values()):
                    time.sleep(poll_s)
        except BaseException:
            # subprocess workers stop with the driver; SLURM jobs keep running and a rerun adopts them
            for handle in running.values():
                if isinstance(handle, _Proc):
                    handle.cancel()
            raise
        wall = time.perf_counter() - t0
        rows = [r for r in store.cells("finished") if r["id"] in by_id]
        summary = {"study": spec.name, "cells": len(spec.cells), "finished": len(rows), "failed": len(failed),
                   "skipped": skipped, "ran": done_now, "wall_s": wall, "executor": ex.name,
                   "overhead_s_mean": (sum(overheads) / len(overheads)) if overheads else None}
        store.end_sitting(sitting, summary)
        log(f"[study] {summary['finished']}/{summary['cells']} cells finished ({done_now} now, {skipped} skipped), "
            f"{len(failed)} failed, {wall:.1f} s wall"
            + (f", runner overhead {summary['overhead_s_mean']:.2f} s per cell" if overheads else ""))
        return summary
    finally:
        store.close()
        driver_lock.close()


def dependencies(cells: list[Cell]) -> dict[str, set[str]]:
    """What each cell waits for: the run (not the audit) of the first cell of its group (noise realisation,
    full-noisy baseline), of its group and IPC (random control) and of its group and method (a method's
    cached work, e.g. MTT/DATM expert trajectories, which depend on the noisy labels but not on IPC)."""
    first: dict[tuple, str] = {}
    deps = {}
    for c in cells:
        keys = [("group", c.group), ("ipc", c.group, c.ipc), ("method", c.group, c.method)]
        deps[c.id] = {first.setdefault(k, c.id) for k in keys} - {c.id}
    return deps


def reuse_source(path: str | Path, out: Path | None) -> Path:
    """``--reuse-from``'s folder, checked: a study folder (it has ``cells/``), and not ``out`` itself."""
    source = Path(path).resolve()
    if not (source / "cells").is_dir():
        raise ConfigError(f"--reuse-from {path}: no cells/ folder there", "pass a folder written by `ddlnl study ... --out DIR`")
    if out is not None and source == Path(out).resolve():
        raise ConfigError(f"--reuse-from {path} is the study's own --out folder", "pass another study's folder, or drop --reuse-from")
    return source


def seed_cells(cells: list[Cell], out_dirs: dict[str, Path], source: Path) -> dict[str, list[str]]:
    """Give each of ``cells`` the resumable state of the cell with its id under ``source/cells``
    (:meth:`ddlnl.stages.RunFolder.seed_from`): e.g. a study that adds rows to another's cells then computes
    only the new rows. Returns the files copied per cell (cells with none are left out)."""
    seeded = {}
    for c in cells:
        there = source / "cells" / c.id
        if there.is_dir():
            copied = RunFolder(out_dirs[c.id]).seed_from(RunFolder(there))
            if copied:
                seeded[c.id] = copied
    return seeded


def ready_cells(todo: list[Cell], deps: dict[str, set[str]], satisfied: set[str]) -> list[Cell]:
    """The cells of ``todo`` (in order) whose every dependency is ``satisfied``: finished, failed (the cell
    then makes what it would have taken) or published (run done and shared parts exported)."""
    return [c for c in todo if deps[c.id] <= satisfied]


def is_published(cell: Cell, out_dir: Path) -> bool:
    """Whether ``out_dir`` holds a run of this very config (its hash) whose shared parts are exported:
    its siblings need nothing more from it, though its privacy audit may still be running."""
    try:
        return json.loads((out_dir / PUBLISHED).read_text()).get("config_hash") == cell.config_hash()
    except (OSError, ValueError, AttributeError):
        return False


def _adopt(store: Store, cells: dict[str, Cell], out_dirs: dict[str, Path]) -> int:
    """Record cells whose worker finished (done.json with the same config) but were never recorded."""
    n = 0
    for row in store.cells("pending"):
        cell = cells.get(row["id"])
        if cell is None:
            continue
        found = finished_in_folder(cell, out_dirs[cell.id])
        if found is not None:
            outcome, result = found
            store.record_finished(cell.id, result, outcome | {"adopted": True})
            n += 1
    return n


def finished_in_folder(cell: Cell, out_dir: Path) -> tuple[dict, dict] | None:
    """(done.json, result.json) when the cell folder holds a finished run of this very config (its hash);
    else None. The one rule for adopting a cell: the driver's, and the dry run's."""
    done, res = out_dir / "done.json", out_dir / "result.json"
    if not (done.exists() and res.exists()):
        return None
    try:
        outcome = json.loads(done.read_text())
        result = read_result(res)
    except (OSError, ValueError, DdlnlError):
        return None
    return (outcome, result) if outcome.get("config_hash") == cell.config_hash() else None


def finished_cells(cells: list[Cell], out: Path) -> set[str]:
    """The ids of ``cells`` that a run of the study in ``out`` would skip: recorded finished under the same
    config hash, or adoptable from their folder. Reads only (no database is created)."""
    rows = {r["id"]: r for r in read_cells(out)}
    done = set()
    for c in cells:
        row = rows.get(c.id)
        if row is not None and row["status"] == "finished" and row["config_hash"] == c.config_hash():
            done.add(c.id)
        elif finished_in_folder(c, out / "cells" / c.id) is not None:
            done.add(c.id)
    return done


def _main(argv: list[str]) -> int:
    """``python -m ddlnl.study.executors JOB.json OUTCOME.json``: the processes executor's worker."""
    job = json.loads(Path(argv[0]).read_text())
    outcome = execute_cell(job)
    write_json(argv[1], outcome)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
