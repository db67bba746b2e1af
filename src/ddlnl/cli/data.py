"""``ddlnl data list|check``: what the data root holds, and is it intact."""

from __future__ import annotations

import json
import sys

from ddlnl.cli.common import add_data_args
from ddlnl.errors import DataError


def add_parser(sub) -> None:
    p = sub.add_parser("data", help="what datasets are in the data root, and are they intact")
    p.add_argument("action", choices=["list", "check"])
    p.add_argument("names", nargs="*", help="datasets to check (default: all found)")
    add_data_args(p)
    p.add_argument("--json", action="store_true")


def main(args) -> int:
    from ddlnl.data.check import check_data, describe_data_root, format_table
    from ddlnl.data.registry import resolve_data_root

    root = resolve_data_root(args.data_root)
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
                        "re-obtain the named files (see the problems column), or check the others with `ddlnl data check NAME`")
    return 0
