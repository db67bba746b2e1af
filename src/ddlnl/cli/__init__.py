"""The ``ddlnl`` command line: one module per command, one error handler for all of them.

Every error a user can fix prints one paragraph (problem and fix) and exits with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from ddlnl.cli import data, distill, evaluate, methods, noise, report, run, study
from ddlnl.cli.common import check_paths
from ddlnl.errors import DdlnlError

COMMANDS = {m.__name__.rsplit(".", 1)[-1]: m for m in (run, noise, distill, evaluate, data, methods, study, report)}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddlnl", description="Dataset distillation as a label denoiser: measured.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    if not argv:
        argv = ["run"]  # the README's main job: the default experiment
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run"])
    args.debug = debug
    try:
        check_paths(args)
        return COMMANDS[args.command].main(args)
    except DdlnlError as e:
        if args.debug:
            raise
        print(f"ddlnl {args.command}: error: {e.problem}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; finished stages are saved and a rerun resumes from them", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as e:
        if args.debug:
            raise
        print(f"ddlnl {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        print("  fix: check the paths, permissions and free disk/memory, then rerun (rerun with --debug for details)", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:  # a damaged study.sqlite (study, report)
        if args.debug:
            raise
        print(f"ddlnl {args.command}: error: the study database is damaged or not a SQLite file ({e})", file=sys.stderr)
        print("  fix: restore study.sqlite from a copy, or run the study into a new --out folder", file=sys.stderr)
        return 2
    except Exception as e:  # the last resort: one paragraph, no traceback unless --debug
        if args.debug:
            raise
        print(f"ddlnl {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("  fix: this is a bug or an input ddlnl does not check yet; rerun with --debug for the traceback and report it",
              file=sys.stderr)
        return 1
