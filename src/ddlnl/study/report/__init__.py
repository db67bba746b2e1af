"""``ddlnl report DIR``: tables and figures from a study's results database.

Writes into ``DIR/report/``:

- ``report.md``: per dataset and noise family, a table of test accuracy (mean ± std, %)
  of the full-noisy baseline, the random control and every method at every IPC, then the
  differences a finding rests on, paired by seed with their interval (:func:`paired_table`), the
  noise-absorption tables, for cells audited by the study's ``privacy`` stage a membership-inference
  table (:func:`privacy_table`), and links to every figure;
- ``results.csv`` (aggregated: per dataset, imbalance, noise, rate, method, IPC; all
  evaluation runs of all seeds pooled), ``cells.csv`` (one row per cell, with timings) and
  ``paired.csv`` (the paired differences, as fractions);
- ``figures/*.png`` (at ``dpi``; with ``svg`` also a ``.svg`` beside each). A method has one colour
  in every figure (:func:`method_colour`), the full noisy set is black and the random control grey;
  every mark has a legend entry; titles name the setting in words, file names keep the slugs:
  ``acc_vs_ipc-*``: accuracy against IPC for one method, a panel per noise level, the random
  control dotted, the full noisy set a dashed line;
  ``acc_vs_rate-*``: accuracy against (realised) noise rate, a panel per IPC, a line per method;
  ``per_class-*``: per-class accuracy (a flip source's tick reads ``source → target`` for
  asymmetric noise; classes in index order, which is head to tail for long-tailed sets);
  ``synset-*``: the distilled images, one row per class (at most 20 rows, 10 columns);
  ``absorption-*``: for asymmetric noise, row-normalised confusion matrices of networks
  trained on the full noisy set, the random control and the distilled set, flip cells
  outlined, and for soft-label sets the mean label mass on each flip target.

Error bars are the spread of the evaluation runs; a point from a single run has none, and the
tables print it as ``(1 run)``, never as ``± 0.00``.

The parts: :mod:`~ddlnl.study.report.rows` (cells read, named and pooled over seeds),
:mod:`~ddlnl.study.report.tables` and :mod:`~ddlnl.study.report.figures`; this module writes them.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from ddlnl.errors import ConfigError
from ddlnl.study.report.figures import (
    FULL_NOISY_COLOUR,
    FULL_NOISY_LABEL,
    RANDOM_COLOUR,
    RANDOM_LABEL,
    Render,
    fig_absorption,
    fig_acc_vs_ipc,
    fig_acc_vs_rate,
    fig_histories,
    fig_per_class,
    fig_synsets,
    method_colour,
)
from ddlnl.study.report.rows import aggregate, load_rows, method_name, seed_interval
from ddlnl.study.report.tables import (
    CONTROL_NAMES,
    _num,
    markdown_tables,
    other_rows_table,
    paired_differences,
    paired_table,
    privacy_table,
    selection_table,
    write_csv,
)

__all__ = ["CONTROL_NAMES", "FULL_NOISY_COLOUR", "FULL_NOISY_LABEL", "RANDOM_COLOUR", "RANDOM_LABEL", "Render", "aggregate",
           "load_rows", "method_colour", "method_name", "other_rows_table", "paired_differences", "paired_table", "seed_interval",
           "write_report"]


def sittings_table(runs: list[dict]) -> list[str]:
    """Each `ddlnl study` invocation (meta ``runs``) and the study's wall time over all of them. A driver that was
    killed is ``interrupted``: its cells and wall time count up to the last cell it finished."""
    lines = ["Study sittings (each `ddlnl study` invocation; an interrupted one was killed, and its wall time runs to the "
             "last cell it finished, a lower bound):", "",
             "| started (UTC) | executor | status | cells finished | skipped | failed | wall (s) | runner overhead per cell (s) |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        when = r.get("at", "") if "started" in r else f"{r.get('at', '')} (its end)"  # entries before 2026-12-07 kept their end
        lines.append(f"| {when} | {r.get('executor')} | {r.get('status', 'finished')} | {_num(r.get('ran'), 'd')} | "
                     f"{_num(r.get('skipped'), 'd')} | {_num(r.get('failed'), 'd')} | {_num(r.get('wall_s'), '.1f')} | "
                     f"{_num(r.get('overhead_s_mean'))} |")
    timed = [r["wall_s"] for r in runs if r.get("wall_s") is not None]
    interrupted = sum(r.get("status") == "interrupted" for r in runs)
    lines += ["", f"Wall time over {len(timed)} sitting{'s' if len(timed) != 1 else ''}: {sum(timed) / 3600:.2f} h"
                  + (f" ({interrupted} interrupted, counted to their last finished cell)" if interrupted else "") + ".", ""]
    return lines


# -- the report ---------------------------------------------------------------------------

def write_report(study_dir: str | Path, out: str | Path | None = None, *, dpi: int = 200, svg: bool = False) -> dict:
    """Tables and figures of ``study_dir`` in ``out`` (default ``study_dir/report``); figures as PNG at ``dpi``
    and, with ``svg``, also as SVG. Returns the paths written (``figures``: the PNGs; ``svg``: their copies)."""
    if dpi <= 0:
        raise ConfigError(f"dpi must be a positive number of dots per inch, got {dpi}", "pass e.g. --dpi 200 (screen) or 300 (print)")
    render = Render(dpi, svg)
    study_dir = Path(study_dir)
    folder = Path(out) if out else study_dir / "report"
    figdir = folder / "figures"
    rows, meta = load_rows(study_dir)
    all_cells = meta.pop("all_cells")
    folder.mkdir(parents=True, exist_ok=True)
    agg = aggregate(rows)
    paired = paired_differences(rows)
    ipc_notes: list[str] = []
    csvs = write_csv(agg, paired, all_cells, folder)
    figures = []
    if agg:
        ipc_figures, ipc_notes = fig_acc_vs_ipc(agg, figdir, render)
        figures += ipc_figures
        figures += fig_acc_vs_rate(agg, figdir, render)
        figures += fig_per_class(agg, figdir, render)
    figures += fig_synsets(rows, figdir, render)
    figures += fig_histories(rows, figdir, render)
    absorption, absorption_md = fig_absorption(rows, figdir, render)
    figures += absorption

    study = meta.get("study", {})
    counts = defaultdict(int)
    for c in all_cells:
        counts[c["status"]] += 1
    runs = meta.get("runs", [])
    ov = [c["overhead_s"] for c in rows if c.get("overhead_s") is not None]
    tt = defaultdict(float)
    for c in rows:
        for k, v in (c.get("timings") or {}).items():
            tt[k] += v or 0.0
    lines = [f"# Study report: {study.get('name', study_dir.name)}", ""]
    if study.get("description"):
        lines += [study["description"], ""]
    lines += [f"Cells: {len(all_cells)} ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}).", ""]
    if runs:
        lines += sittings_table(runs)
    if ov:
        lines += [(f"Runner overhead (cell wall time minus `run_experiment`'s own time: process start, imports, copying shared "
                   f"stages, database writes): mean {np.mean(ov):.2f} s, max {np.max(ov):.2f} s per cell."), ""]
    if tt:
        lines += ["Compute recorded in the cells' result.json (s; a shared baseline is counted in every cell that reuses it): "
                  + ", ".join(f"{k} {v:.1f}" for k, v in tt.items()), ""]
    failed = [c for c in all_cells if c["status"] == "failed"]
    if failed:
        lines += ["## Failed cells", "", "| cell | error |", "|---|---|"]
        lines += [f"| {c['id']} | {(c['error'] or '').splitlines()[0][:200] if c['error'] else ''} |" for c in failed] + [""]
    lines += ["## Accuracy", ""] + markdown_tables(agg)
    lines += paired_table(paired)
    lines += other_rows_table(rows)
    lines += selection_table(rows)
    lines += privacy_table(rows)
    lines += ["Tables: [results.csv](results.csv) (aggregated), [cells.csv](cells.csv) (one row per cell), "
              "[paired.csv](paired.csv) (the paired differences).", ""]
    if absorption_md:
        lines += ["## Noise absorption (asymmetric noise)", ""] + absorption_md
    lines += ["## Figures", ""] + [f"- {n}" for n in ipc_notes] + ([""] if ipc_notes else [])
    for f in figures:
        rel = f.relative_to(folder)
        lines += [f"**{f.stem}**", "", f"![{f.stem}]({rel.as_posix()})", ""]
    from ddlnl.utils.io import atomic_path

    md = folder / "report.md"
    with atomic_path(md) as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    return {"folder": folder, "markdown": md, "csv": csvs, "figures": figures,
            "svg": [f.with_suffix(".svg") for f in figures] if svg else []}
