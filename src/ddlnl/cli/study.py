"""``ddlnl study`` and ``ddlnl report``.

Wired into ``ddlnl.cli`` with ``add_parsers(sub)`` and ``COMMANDS``; also runnable alone as
``python -m ddlnl.study_cli study STUDY.yaml --out DIR`` (same arguments).
"""

from __future__ import annotations

import sys
from pathlib import Path


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("study", help="run a study (a YAML grid of experiments) into a folder with a results database")
    p.add_argument("study", help="study YAML file, e.g. studies/smoke.yaml")
    p.add_argument("--out", required=True, help="study folder (study.sqlite, cells/, noise/, baseline/); rerun to resume")
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

    p = subparsers.add_parser("report", help="tables (Markdown, CSV) and PNG figures from a study folder")
    p.add_argument("dir", help="study folder written by `ddlnl study`")
    p.add_argument("--out", default=None, help="report folder (default: DIR/report)")


def cmd_study(args) -> int:
    import dataclasses

    from ddlnl.errors import ConfigError
    from ddlnl.study.executors import run_study
    from ddlnl.study.spec import load_study

    if args.max_workers is not None and args.max_workers < 1:
        raise ConfigError(f"--max-workers must be >= 1, got {args.max_workers}", "pass --max-workers 1 or more")
    spec = load_study(args.study)
    if args.only:
        spec.cells = select_cells(spec.cells, args.only, where=str(args.study))
    check_cells(spec.cells, where=str(args.study))
    if args.data_root:
        spec.cells = [c if c.data_root else dataclasses.replace(c, data_root=str(Path(args.data_root).resolve())) for c in spec.cells]
    if args.list:
        return _list_cells(spec, Path(args.out))
    summary = run_study(spec, args.out, args.executor, args.max_workers)
    if args.report:
        from ddlnl.study.report import write_report

        report = write_report(args.out)
        print(f"[study] report: {report['markdown']}")
    return 0 if summary["failed"] == 0 else 1


def select_cells(cells, patterns: list[str], where: str = "study") -> list:
    """The cells whose id matches any of the shell patterns, in study order: a way to run part of
    a grid (one method, one noise setting) into the same folder, or to split it across machines."""
    from fnmatch import fnmatchcase

    from ddlnl.errors import ConfigError

    chosen = [c for c in cells if any(fnmatchcase(c.id, p) for p in patterns)]
    if not chosen:
        shown = ", ".join(c.id for c in cells[:3]) + (", ..." if len(cells) > 3 else "")
        raise ConfigError(f"{where}: no cell id matches --only {' '.join(patterns)}",
                          f"use a shell pattern over the cell ids (e.g. '*-dance-*'); ids look like: {shown}")
    return chosen


def check_cells(cells, where: str = "study") -> None:
    """Refuse a study whose cells name an unknown dataset, method or baseline, or whose preset and
    overrides do not validate, before any cell runs (and before any SLURM job is submitted)."""
    from ddlnl.baselines import parse_baselines
    from ddlnl.data.imagefolder import PREFIX as FOLDER_PREFIX
    from ddlnl.data.registry import list_datasets
    from ddlnl.distill import create_distiller
    from ddlnl.errors import ConfigError
    from ddlnl.presets import apply_overrides, load_preset, method_options

    checked: set = set()
    for c in cells:
        if c.dataset not in list_datasets() and not (c.dataset.startswith(FOLDER_PREFIX) and len(c.dataset) > len(FOLDER_PREFIX)):
            raise ConfigError(f"{where}: cell {c.id}: unknown dataset {c.dataset!r}",
                              f"use one of: {', '.join(list_datasets())}, or folder:<path>")
        if c.baselines:
            parse_baselines(list(c.baselines))
        key = (c.preset, tuple(c.overrides), c.method)
        if key in checked:
            continue
        checked.add(key)
        try:
            preset, _ = apply_overrides(load_preset(c.preset), list(c.overrides))
            create_distiller(c.method, **method_options(preset, c.method))
        except ConfigError as e:
            raise ConfigError(f"{where}: cell {c.id}: {e.problem}", e.fix) from None


def _list_cells(spec, out: Path) -> int:
    from ddlnl.study.executors import _dependencies
    from ddlnl.study.store import DB_NAME, open_readonly

    rows = {}
    if (out / DB_NAME).exists():
        conn = open_readonly(out)
        try:
            rows = {r["id"]: dict(r) for r in conn.execute("SELECT id, status, config_hash, wall_s, error FROM cells")}
        finally:
            conn.close()
    deps = _dependencies(spec.cells)
    counts: dict[str, int] = {}
    print(f"{spec.name}: {len(spec.cells)} cells in {len({c.group for c in spec.cells})} groups")
    for c in spec.cells:
        r = rows.get(c.id)
        status = "new" if r is None else ("changed" if r["config_hash"] != c.config_hash() else r["status"])
        counts[status] = counts.get(status, 0) + 1
        after = f"  (after {', '.join(sorted(deps[c.id]))})" if deps[c.id] and status != "finished" else ""
        wall = f"  {r['wall_s']:.0f} s" if r and r.get("wall_s") else ""
        print(f"  {status:9s} {c.id}{wall}{after}")
    print("  " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())))
    return 0


def cmd_report(args) -> int:
    from ddlnl.study.report import write_report

    report = write_report(args.dir, args.out)
    print(f"wrote {report['markdown']}, {len(report['csv'])} CSV table(s) and {len(report['figures'])} figure(s) in {report['folder']}")
    return 0


COMMANDS = {"study": cmd_study, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    """``python -m ddlnl.study_cli ...``: the same as ``ddlnl ...`` (one error handler for every command)."""
    from ddlnl.cli import main as cli_main

    return cli_main(argv)


if __name__ == "__main__":
    sys.exit(main())
