"""The report's figures read the same way everywhere: a method keeps its colour from figure to figure
(full noisy set black, random control grey), every drawn mark is in a legend, titles are words rather
than slugs, PNGs come at --dpi and SVGs with --svg; a single run is printed as such, never as "± 0.00"."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from matplotlib.colors import to_rgba

from ddlnl.study import report as rp
from ddlnl.study.report.tables import _pct
from tests.test_study import _fixture_db

METHODS = ("dm", "datm")  # the fixture study's methods


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> Path:
    """The report tests' fixture study: symmetric, asymmetric (soft labels), human and long-tailed cells."""
    folder = tmp_path_factory.mktemp("report") / "study"
    _fixture_db(folder)
    return folder


@pytest.fixture(scope="module")
def figures(study) -> dict[str, object]:
    """Every figure of the report as matplotlib drew it, by file name (saving replaced by keeping)."""
    import matplotlib.pyplot as plt

    kept = {}

    def keep(self, fig, path):
        kept[path.name] = fig
        plt.close(fig)  # out of pyplot's list; its artists stay readable
        return path

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(rp.Render, "save", keep)
        rp.write_report(study, study.parent / "kept")
    return kept


@pytest.fixture(scope="module")
def written(study) -> dict:
    """The report as `ddlnl report DIR` writes it by default (PNG at 200 dpi, no SVG)."""
    return rp.write_report(study, study.parent / "default")


def _rgba(handle) -> tuple:
    """A legend handle's colour: a line's, a bar's face, an error bar's (a LineCollection)."""
    if hasattr(handle, "get_linestyle") and type(handle).__name__ == "Line2D":
        return to_rgba(handle.get_color())
    if type(handle).__name__ == "Rectangle":
        return to_rgba(handle.get_facecolor())
    return to_rgba(np.asarray(handle.get_color())[0])


def legend_entries(fig) -> dict[str, tuple]:
    """Label -> colour of every entry of every legend of ``fig`` (figure legends and axes legends)."""
    legends = list(fig.legends) + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    return {t.get_text(): _rgba(h) for lg in legends for h, t in zip(lg.legend_handles, lg.get_texts())}


def drawn_colours(fig) -> set[tuple]:
    """The colours of the data marks (lines with points, bars) on ``fig``'s axes; grid and frames are no marks."""
    out = set()
    for ax in fig.axes:
        out |= {to_rgba(line.get_color()) for line in ax.lines if len(line.get_xdata())}
        out |= {to_rgba(p.get_facecolor()) for p in ax.patches if type(p).__name__ == "Rectangle" and p.get_fill()}
    return out


def titles(fig) -> list[str]:
    return [t for t in [fig.get_suptitle(), *(ax.get_title() for ax in fig.axes)] if t]


def plots(figures):
    """The accuracy figures (the ones with methods, the random control and the full noisy set)."""
    return {n: f for n, f in figures.items() if n.split("-")[0] in ("acc_vs_ipc", "acc_vs_rate", "per_class")}


def test_a_method_keeps_its_colour_across_figures(figures):
    seen = {m: set() for m in METHODS}
    kinds = {m: set() for m in METHODS}
    for name, fig in plots(figures).items():
        for label, colour in legend_entries(fig).items():
            if label.split()[0] in seen:
                seen[label.split()[0]].add(colour)
                kinds[label.split()[0]].add(name.split("-")[0])
            if label.startswith(rp.RANDOM_LABEL):
                assert colour == to_rgba(rp.RANDOM_COLOUR), (name, label)
            if label == rp.FULL_NOISY_LABEL:
                assert colour == to_rgba(rp.FULL_NOISY_COLOUR), (name, label)
    for m in METHODS:
        assert seen[m] == {to_rgba(rp.method_colour(m))}, (m, seen[m])
        assert kinds[m] >= {"acc_vs_rate", "per_class"}, kinds[m]
    assert "acc_vs_ipc" in kinds["dm"]  # the one method run at several IPCs (a single IPC gets no curve)
    assert rp.method_colour("dm") != rp.method_colour("datm")
    colours = {rp.method_colour(m) for m in ("dm", "mtt", "datm", "dance", "rcig", "a-new-method")}
    assert len(colours) == 6 and not colours & {rp.RANDOM_COLOUR, rp.FULL_NOISY_COLOUR, "tab:gray"}
    assert rp.method_colour("a-new-method") == rp.method_colour("a-new-method")


def test_every_mark_has_a_legend_entry_random_control_and_full_noisy_included(figures):
    for name, fig in plots(figures).items():
        entries = legend_entries(fig)
        assert any(label.startswith(rp.RANDOM_LABEL) for label in entries), (name, entries)
        assert rp.FULL_NOISY_LABEL in entries, (name, entries)
        assert drawn_colours(fig) <= set(entries.values()), name


def test_titles_are_words_and_file_names_keep_slugs(figures):
    every = [t for fig in figures.values() for t in titles(fig)]
    for t in every:
        assert "cifar10" not in t and "smoke-" not in t and "-lt" not in t, t  # no setting or cell slugs
        assert not re.search(r"\b0\.\d", t), t  # rates in per cent, not 0.4
    assert "CIFAR-10, smoke preset, asymmetric 40 %\nper-class accuracy; a flip source reads 'class → flip target'" in every
    assert "CIFAR-10, long-tailed (ρ = 10), smoke preset\nsymmetric noise" in every
    assert "CIFAR-10N worst (realised 17 %)" in every and "symmetric 60 %" in every
    assert {"acc_vs_ipc-cifar10-smoke-symmetric-dm.png", "acc_vs_rate-cifar10-lt10-smoke-symmetric.png",
            "per_class-cifar10-smoke-asymmetric-0.4.png"} <= set(figures)
    ticks = [t.get_text() for t in figures["per_class-cifar10-smoke-asymmetric-0.4.png"].axes[0].get_xticklabels()]
    assert "truck → automobile" in ticks and "automobile" in ticks


def test_single_run_reads_1_run_never_plus_minus_zero(written):
    md = written["markdown"].read_text()
    assert "(1 run)" in md and "± 0.00" not in md  # every full-noisy baseline of the fixture is one run
    assert "### CIFAR-10, smoke preset: asymmetric noise" in md
    assert _pct({"mean": 0.5, "std": 0.0, "n": 1, "seeds": 1, "ci95": None}) == "50.00 (1 run)"
    assert _pct({"mean": 0.5, "std": 0.01, "n": 2, "seeds": 1, "ci95": None}) == "50.00 ± 1.00"
    import csv

    with open(written["folder"] / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["full_noisy_n"] == "1" and r["full_noisy_std"] == "" for r in rows)


def test_png_at_dpi_and_svg_when_asked(study, written, capsys):
    from PIL import Image

    from ddlnl.cli import main

    low = study.parent / "low"
    assert main(["report", str(study), "--out", str(low), "--dpi", "60", "--svg"]) == 0
    assert "SVG" in capsys.readouterr().out
    assert written["svg"] == [] and not list((written["folder"] / "figures").glob("*.svg"))
    pngs = sorted((low / "figures").glob("*.png"))
    assert pngs and len(pngs) == len(written["figures"])
    for png in pngs:
        svg = png.with_suffix(".svg")
        assert svg.exists() and "<svg" in svg.read_text()[:1000], svg
        with Image.open(png) as a, Image.open(written["folder"] / "figures" / png.name) as b:
            assert a.info["dpi"] == pytest.approx((60, 60), abs=0.1) and b.info["dpi"] == pytest.approx((200, 200), abs=0.1)
            assert b.size[0] / a.size[0] == pytest.approx(200 / 60, rel=0.05), png.name
    assert main(["report", str(study), "--out", str(low), "--dpi", "0"]) == 2
    assert "dpi must be a positive number" in capsys.readouterr().err
