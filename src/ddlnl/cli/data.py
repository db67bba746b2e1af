"""``ddlnl data list|check|fetch``: what the data root holds, is it intact, and getting what it lacks."""

from __future__ import annotations

import json
import sys

from ddlnl.cli.common import add_data_args
from ddlnl.errors import DataError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="what datasets are in the data root, are they intact; fetch one from its official source")
    p.add_argument("action", choices=["list", "check", "fetch"])
    p.add_argument("names", nargs="*", help="datasets to check (default: all found), or to fetch: "
                   "cifar10, cifar100, cifar10n, cifar100n, tinyimagenet")
    add_data_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--force", action="store_true", help="fetch: download again and replace a present or incomplete copy")


def main(args) -> int:
    from ddlnl.data.check import check_data, describe_data_root, format_table
    from ddlnl.data.registry import resolve_data_root

    root = resolve_data_root(args.data_root)
    if args.action == "fetch":
        return _fetch(args, root)
    if not root.is_dir():
        print(f"ddlnl data: note: the data root {root} does not exist; pass --data-root or set $DDLNL_DATA", file=sys.stderr)
    rows = describe_data_root(root) if args.action == "list" else check_data(root, args.names or None)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(f"data root: {root}")
        print(format_table(rows))
    bad = [r for r in rows if not r.get("ok", True)] if args.action == "check" else []
    if bad:  # the table says what is wrong with each; this paragraph says what to do (exit 2, as for any bad input)
        first = "; ".join(map(str, bad[0].get("problems") or ["see the table"]))[:300]
        raise DataError(f"{len(bad)} of {len(rows)} checked item(s) failed: {', '.join(r['name'] for r in bad)} "
                        f"({bad[0]['name']}: {first})",
                        "re-obtain the named files (see the problems column; `ddlnl data fetch NAME` downloads a missing "
                        "dataset from its official source, with --force it replaces a broken one), or check the others with `ddlnl data check NAME`")
    return 0


def _fetch(args, root) -> int:
    """Each named dataset: downloaded, verified and unpacked into ``root``, unless already there."""
    from ddlnl.cli.common import progress_log
    from ddlnl.data.fetch import FETCH_NAMES, fetch, source_for
    from ddlnl.errors import ConfigError

    if not args.names:
        raise ConfigError("`ddlnl data fetch` needs the name of a dataset", f"use one of: {', '.join(FETCH_NAMES)}")
    for name in args.names:
        source_for(name)  # unknown names fail before any download
    log = progress_log(args)
    for name in args.names:
        res = fetch(name, root, force=args.force, progress=not getattr(args, "quiet", False), log=log)
        if res.status == "present":
            log(f"{res.name}: already present at {res.path}; `ddlnl data check {res.name}` verifies it, --force fetches it again")
    return 0
