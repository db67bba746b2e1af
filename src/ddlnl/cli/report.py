"""``ddlnl report``: Markdown and CSV tables and PNG (optionally SVG) figures of a study folder."""

from __future__ import annotations


def add_parser(sub) -> None:
    p = sub.add_parser("report", help="tables (Markdown, CSV) and figures (PNG, optionally SVG) from a study folder")
    p.add_argument("dir", help="study folder written by `ddlnl study`")
    p.add_argument("--out", default=None, help="report folder (default: DIR/report)")
    p.add_argument("--dpi", type=int, default=200, help="resolution of the PNG figures, in dots per inch")
    p.add_argument("--svg", action="store_true", help="also write every figure as SVG beside its PNG")


def main(args) -> int:
    from ddlnl.study.report import write_report

    report = write_report(args.dir, args.out, dpi=args.dpi, svg=args.svg)
    svg = f" (and {len(report['svg'])} SVG)" if report["svg"] else ""
    print(f"wrote {report['markdown']}, {len(report['csv'])} CSV table(s) and {len(report['figures'])} figure(s){svg} in {report['folder']}")
    return 0
