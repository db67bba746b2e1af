"""``ddlnl report``: Markdown and CSV tables and PNG figures of a study folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables (Markdown, CSV) and PNG figures from a study folder")
    p.add_argument("dir", help="study folder written by `ddlnl study`")
    p.add_argument("--out", default=None, help="report folder (default: DIR/report)")


def main(args) -> int:
    from ddlnl.study.report import write_report

    report = write_report(args.dir, args.out)
    print(f"wrote {report['markdown']}, {len(report['csv'])} CSV table(s) and {len(report['figures'])} figure(s) in {report['folder']}")
    return 0
