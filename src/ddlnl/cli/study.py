"""``ddlnl study``: run a study file (a grid of experiments) into a folder with a results database."""

from __future__ import annotations

from pathlib import Path

from ddlnl.cli.common import progress_log
from ddlnl.errors import ConfigError


def add_parser(sub) -> None:
    p = sub.add_parser("study", help="run a study (a YAML grid of experiments) into a folder with a results database")
    p.add_argument("study", help="study YAML file, a built-in study's name (e.g. smoke), or 'list' for the built-in studies")
    p.add_argument("--out", help="study folder (study.sqlite, cells/, noise/, baseline/); rerun to resume")
    p.add_argument("--executor", default="local", choices=["local", "processes", "slurm"],
                   help="local: in this process, one cell at a time; processes: parallel subprocesses; slurm: one submitit job per cell")
    p.add_argument("--max-workers", type=int, default=None,
                   help="cells at once (processes default 2, slurm default 64; the study file's max_workers if set)")
    p.add_argument("--data-root", default=None, help="data folder for cells whose study sets none (default: $DDLNL_DATA, else ./data)")
    p.add_argument("--report", action="store_true", help="write the report (ddlnl report) when the study finishes")
    p.add_argument("--list", action="store_true", help="list the study's cells and their status in DIR; run nothing")
    p.add_argument("--only", action="append", default=None, metavar="GLOB",
                   help="run (or list) only the cells whose id matches this shell pattern, e.g. '*-dance-*' "
                        "or 'cifar10-worst-*'; repeat to select more; the other cells are left untouched")
    p.add_argument("--dry-run", action="store_true",
                   help="print what the study would cost (each cell's `ddlnl run --dry-run` plan, shared parts once, "
                        "finished cells and saved stages in --out (and --reuse-from) as 0, the wall clock of --executor "
                        "processes); train, load and write nothing")
    p.add_argument("--reuse-from", metavar="DIR", default=None,
                   help="another study's folder: each cell to run first takes the saved stages, checkpoints, sets and noise "
                        "of the cell with its id there (never its result); a stage is reused only if its key matches, so "
                        "a study that adds rows to another's cells computes only the new rows")
    p.add_argument("--json", action="store_true", help="with --dry-run: the plan as JSON")
    p.add_argument("--device", choices=["cpu", "cuda"], default=None,
                   help="with --dry-run: only this device's times (cuda: the one-H100 figures; default: both)")


def list_builtin_studies() -> int:
    from ddlnl.study.spec import BUILTIN_STUDIES, list_studies
    from ddlnl.utils.yamlio import leading_comment

    for name in list_studies():
        print(f"{name:32s} {leading_comment(BUILTIN_STUDIES / f'{name}.yaml')}")
    print("\nrun one with: ddlnl study NAME --out DIR")
    return 0


def main(args) -> int:
    from ddlnl.study.executors import run_study
    from ddlnl.study.spec import load_study

    if args.study == "list" and not Path("list").exists():
        return list_builtin_studies()
    if args.max_workers is not None and args.max_workers < 1:
        raise ConfigError(f"--max-workers must be >= 1, got {args.max_workers}", "pass --max-workers 1 or more")
    if args.dry_run:
        return dry_run(args)
    if args.json or args.device:
        raise ConfigError(f"{'--json' if args.json else '--device'} applies only to --dry-run",
                          "add --dry-run to see the plan (a study file's device: key sets where its cells run)")
    if args.out is None:
        raise ConfigError("ddlnl study needs --out DIR", "pass the folder to run the study into, e.g. --out runs/smoke-study")
    spec = load_study(args.study)
    if args.only:
        spec = spec.select(args.only)
    if args.data_root:
        spec = spec.with_data_root(str(Path(args.data_root).resolve()))
    spec.check()
    if args.list:
        return list_cells(spec, Path(args.out))
    summary = run_study(spec, args.out, args.executor, args.max_workers, log=progress_log(args), reuse_from=args.reuse_from)
    if args.report:
        from ddlnl.study.report import write_report

        report = write_report(args.out)
        print(f"[study] report: {report['markdown']}")
    return 0 if summary["failed"] == 0 else 1


def dry_run(args) -> int:
    """Print the study's cost plan (``--dry-run``); ``--out`` is read, when given, for the cells already finished."""
    from ddlnl.study.plan import format_study_plan, plan_study, write_json_text
    from ddlnl.study.spec import load_study

    spec = load_study(args.study)
    if args.data_root:
        spec = spec.with_data_root(str(Path(args.data_root).resolve()))
    spec.check()
    sp = plan_study(spec, args.out, only=args.only, max_workers=args.max_workers, device=args.device, reuse_from=args.reuse_from)
    print(write_json_text(sp) if args.json else format_study_plan(sp))
    return 0


def list_cells(spec, out: Path) -> int:
    """Print each cell's status in ``out`` (new, changed, pending, running, finished, failed)."""
    from ddlnl.study.executors import dependencies
    from ddlnl.study.store import read_cells

    rows = {r["id"]: r for r in read_cells(out)}
    deps = dependencies(spec.cells)
    counts: dict[str, int] = {}
    print(f"{spec.name}: {len(spec.cells)} cells in {len({c.group for c in spec.cells})} groups")
    for c in spec.cells:
        r = rows.get(c.id)
        status = "new" if r is None else ("changed" if r["config_hash"] != c.config_hash() else r["status"])
        counts[status] = counts.get(status, 0) + 1
        waiting = sorted(d for d in deps[c.id] if (rows.get(d) or {}).get("status") != "finished")
        after = f"  (after {', '.join(waiting)})" if waiting and status not in ("finished", "running") else ""
        wall = f"  {r['wall_s']:.0f} s" if r and r.get("wall_s") else ""
        now = f"  | {last_log_line(out / 'cells' / c.id / 'log.txt')}" if status == "running" else ""
        print(f"  {status:9s} {c.id}{wall}{after}{now}")
    print("  " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


def last_log_line(path: Path, width: int = 100) -> str:
    """The last line a running cell logged (what it is doing now), cut to ``width`` characters."""
    try:
        with open(path, "rb") as f:
            f.seek(max(0, f.seek(0, 2) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log yet"
    if not lines:
        return "no log yet"
    line = lines[-1].replace("[ddlnl] ", "")
    return line if len(line) <= width else line[: width - 1] + "…"
