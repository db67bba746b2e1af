"""The ``ddlnl`` command line: one module per command, one error handler for all of them.

Every error a user can fix prints one paragraph (problem and fix) and exits with status 2;
``--debug`` shows the traceback instead. Bare ``ddlnl`` prints the help; every option's help
ends with its default.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys

from ddlnl import __version__
from ddlnl.cli import (
    data,
    distill,
    evaluate,
    export,
    methods,
    noise,
    preset,
    privacy,
    report,
    run,
    study,
)
from ddlnl.cli.common import add_verbosity_args, check_paths
from ddlnl.errors import DdlnlError

COMMANDS = {m.__name__.rsplit(".", 1)[-1]: m for m in (run, noise, distill, evaluate, export, data, methods, preset, study, report, privacy)}


class HelpFormatter(argparse.HelpFormatter):
    """Every option's help ends with its default (unless it names one already, or there is none)."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (not action.option_strings or "default" in text or action.default is None or action.default is False
                or action.default == argparse.SUPPRESS):
            return text
        return f"{text} (default: %(default)s)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddlnl", description="Dataset distillation as a label denoiser: measured.",
                                     formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"ddlnl {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add = sub.add_parser

    def add_command(*a, **kw) -> argparse.ArgumentParser:  # every command: defaults in its help, -q / -v
        p = add(*a, **({"formatter_class": HelpFormatter} | kw))
        add_verbosity_args(p)
        return p

    sub.add_parser = add_command
    for module in COMMANDS.values():
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:  # bare `ddlnl`: what it can do (the main job is `ddlnl run`)
        parser.print_help()
        return 0
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
