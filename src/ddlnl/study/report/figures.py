"""A study report's figures: accuracy against IPC and noise rate, per-class accuracy, the distilled
images, distillation histories and noise absorption. A method keeps one colour in every figure."""

from __future__ import annotations

import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddlnl.errors import ConfigError
from ddlnl.results import MAIN_ROLES as ROLES
from ddlnl.study.report.rows import (
    HUMAN_LEVEL_TITLES,
    cell_result,
    cell_title,
    family_title,
    noise_family,
    noise_of,
    noise_slug,
    noise_title,
    recipe_lr_random,
    setting_of,
    setting_slug,
    setting_title,
)

MAX_GRID_ROWS, MAX_GRID_COLS = 20, 10


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- figures ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Render:
    """How figures are written: PNG at ``dpi``, and with ``svg`` a vector copy beside each (for papers)."""

    dpi: int = 200
    svg: bool = False

    def save(self, fig, path: Path) -> Path:
        """Write ``fig`` atomically as ``path`` (PNG) and, with ``svg``, ``path.svg``; return the PNG's path."""
        from ddlnl.utils.io import atomic_path

        for fmt in ("png", "svg") if self.svg else ("png",):
            with atomic_path(path.with_suffix(f".{fmt}")) as tmp:
                fig.savefig(tmp, format=fmt, dpi=self.dpi, bbox_inches="tight")
        _plt().close(fig)
        return path


# A method's colour is fixed so that it reads the same in every figure and every report: tab10 in this
# order for the known methods, one of the spare slots (picked by a hash of the name) for any other.
# tab:gray is left out: grey is the random control's, black the full noisy set's.
METHOD_COLOURS = dict(zip(("dm", "mtt", "datm", "dance", "rcig", "random"),
                          ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")))
SPARE_COLOURS = ("tab:pink", "tab:olive", "tab:cyan")
FULL_NOISY_COLOUR, RANDOM_COLOUR = "black", "grey"
FULL_NOISY_LABEL, RANDOM_LABEL = "full noisy set", "random real images"


def method_colour(method: str) -> str:
    """The method's colour in every figure (stable across runs: crc32, not Python's salted hash)."""
    return METHOD_COLOURS.get(method) or SPARE_COLOURS[zlib.crc32(method.encode()) % len(SPARE_COLOURS)]


def _errorbar(ax, x, pools: list[dict], **kw):
    """Means with the runs' std as error bars; a single-run point gets no bar (NaN), not a zero-length one with caps."""
    err = [100 * p["std"] if p["n"] > 1 else np.nan for p in pools]
    return ax.errorbar(x, [100 * p["mean"] for p in pools], yerr=None if np.all(np.isnan(err)) else err, capsize=3, **kw)


def _panels(n: int):
    """``n`` panels on one accuracy axis, at most 3 a row; returns the figure and the panels in use."""
    nrows = -(-n // 3)
    ncols = -(-n // nrows)
    fig, axes = _plt().subplots(nrows, ncols, figsize=(2.6 * ncols + 1.6, 2.5 * nrows + 0.8), sharey=True,
                                squeeze=False, layout="constrained")
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("clean test accuracy (%)", fontsize=9)
    return fig, list(axes.flat[:n])


def _finish_panels(fig, handles: dict, title: str) -> None:
    """One legend for all panels (``handles``: label -> an artist drawn with it), right of them, and the title."""
    fig.legend(handles.values(), handles.keys(), loc="outside right center", fontsize=7)
    fig.suptitle(title, fontsize=10)


def fig_acc_vs_ipc(agg, folder: Path, render: Render) -> tuple[list[Path], list[str]]:
    """Per setting, noise family and method: accuracy against IPC, a panel per noise level; where the study
    ran one IPC only, no figure (a single point is not a curve) but a line saying so."""
    plt = _plt()
    out, notes = [], []
    groups = defaultdict(list)
    for r in agg:
        groups[(setting_of(r), noise_family(r), r["method"])].append(r)
    for (setting, fam, method), rs in groups.items():
        levels = sorted({(r["rate"], r["noise"]) for r in rs})
        ipcs = sorted({r["ipc"] for r in rs})
        if len(ipcs) == 1:
            notes.append(f"{setting_title(setting)}, {family_title(setting[0], fam)}, {method}: one IPC ({ipcs[0]}) only, so no "
                         "accuracy-against-IPC figure; its accuracies are in the tables and in acc_vs_rate.")
            continue
        fig, axes = _panels(len(levels))
        handles = {}
        for ax, (rate, noise) in zip(axes, levels):
            sub = sorted((r for r in rs if r["rate"] == rate and r["noise"] == noise), key=lambda r: r["ipc"])
            handles.setdefault(f"{method} (distilled)", _errorbar(ax, [r["ipc"] for r in sub], [r["distilled"] for r in sub],
                                                                  color=method_colour(method), marker="o", zorder=3))
            rnd = [r for r in sub if r["random"]]
            if rnd:
                handles.setdefault(RANDOM_LABEL, ax.plot([r["ipc"] for r in rnd], [100 * r["random"]["mean"] for r in rnd],
                                                         color=RANDOM_COLOUR, marker="x", linestyle=":")[0])
            if sub[0]["full_noisy"]:
                handles.setdefault(FULL_NOISY_LABEL, ax.axhline(100 * sub[0]["full_noisy"]["mean"], color=FULL_NOISY_COLOUR,
                                                                linestyle="--", linewidth=1.2))
            realised = f" (realised {100 * sub[0]['actual_rate']:.0f} %)" if fam == "human" else ""
            ax.set_title(noise_title(setting[0], noise, rate) + realised, fontsize=9)
            if len(ipcs) > 1:
                ax.set_xscale("log")
            ax.set_xticks(ipcs, [str(i) for i in ipcs])
            ax.xaxis.set_minor_locator(plt.NullLocator())  # ticks at the IPCs run and nowhere else
            ax.set_xlabel("images per class (IPC)", fontsize=9)
            ax.grid(alpha=0.3)
        _finish_panels(fig, handles, f"{setting_title(setting)}\n{family_title(setting[0], fam)}: {method}")
        out.append(render.save(fig, folder / f"acc_vs_ipc-{setting_slug(setting)}-{fam}-{method}.png"))
    return out, notes


def _by_rate(rs, role: str) -> tuple[list[float], list[dict]]:
    """One ``role`` pool per realised rate (the first row's: a control is shared by a level's rows), sorted by rate."""
    by = {}
    for r in rs:
        if r[role]:
            by.setdefault(r["actual_rate"], r[role])
    xs = sorted(by)
    return xs, [by[x] for x in xs]


def fig_acc_vs_rate(agg, folder: Path, render: Render) -> list[Path]:
    """Per setting and noise family: accuracy against the realised noise rate, a panel per IPC, a line per method."""
    out = []
    groups = defaultdict(list)
    for r in agg:
        groups[(setting_of(r), noise_family(r))].append(r)
    for (setting, fam), rs in groups.items():
        ipcs = sorted({r["ipc"] for r in rs})
        top = max(10.0, 110 * max(r["actual_rate"] for r in rs))
        fig, axes = _panels(len(ipcs))
        handles = {}
        for ax, ipc in zip(axes, ipcs):
            at = [r for r in rs if r["ipc"] == ipc]
            for m in sorted({r["method"] for r in at}):
                sub = sorted((r for r in at if r["method"] == m), key=lambda r: r["actual_rate"])
                handles.setdefault(f"{m} (distilled)", _errorbar(ax, [100 * r["actual_rate"] for r in sub], [r["distilled"] for r in sub],
                                                                 color=method_colour(m), marker="o", zorder=3))
            xs, pools = _by_rate(at, "random")
            if xs:
                handles.setdefault(RANDOM_LABEL, ax.plot([100 * x for x in xs], [100 * p["mean"] for p in pools], color=RANDOM_COLOUR,
                                                         marker="x", linestyle=":")[0])
            xs, base = _by_rate(at, "full_noisy")
            if xs:
                handles.setdefault(FULL_NOISY_LABEL, _errorbar(ax, [100 * x for x in xs], base, color=FULL_NOISY_COLOUR,
                                                               marker="s", linestyle="--"))
            if fam == "human":  # each label set at its realised rate, named
                for x, p in zip(xs, base):
                    noise = next(r["noise"] for r in at if r["actual_rate"] == x)
                    ax.annotate(HUMAN_LEVEL_TITLES.get(noise, noise), (100 * x, 100 * p["mean"]), textcoords="offset points", xytext=(3, 5),
                                fontsize=7)
            ax.set_xlim(-0.02 * top, top)  # from 0: a lone human label set is a point on a rate axis, not a zoom on it
            ax.set_xlabel("realised noise rate (%)", fontsize=9)
            ax.set_title(f"IPC {ipc}", fontsize=9)
            ax.grid(alpha=0.3)
        _finish_panels(fig, handles, f"{setting_title(setting)}\n{family_title(setting[0], fam)}")
        out.append(render.save(fig, folder / f"acc_vs_rate-{setting_slug(setting)}-{fam}.png"))
    return out


def _flips(c) -> list[tuple[int, int]]:
    if c["noise"] not in ("asymmetric", "pairflip"):
        return []
    from ddlnl.data.noise import transition_matrix

    C = len(c["classes"] or []) or len(c["evals"]["distilled"]["per_class"])
    try:
        P = transition_matrix(c["noise"], max(c["rate"], 0.5), C, c["dataset"])
    except ConfigError:
        return []
    return [(int(s), int(t)) for s, t in zip(*np.nonzero(P)) if s != t]


def fig_per_class(agg, folder: Path, render: Render) -> list[Path]:
    """Per noise level, at the largest IPC: each class's accuracy for the full noisy set, random and every method."""
    plt = _plt()
    out = []
    groups = defaultdict(list)
    for r in agg:
        groups[(setting_of(r), r["noise"], r["rate"])].append(r)
    for (setting, noise, rate), rs in groups.items():
        top = max(r["ipc"] for r in rs)
        at = [r for r in rs if r["ipc"] == top]
        c0 = at[0]["cells"][0]
        C = len(c0["evals"]["distilled"]["per_class"])
        names = c0["classes"] or [str(i) for i in range(C)]
        series = [(FULL_NOISY_LABEL, FULL_NOISY_COLOUR,
                   [c["evals"]["full_noisy"] for r in at for c in r["cells"] if "full_noisy" in c["evals"]][:1])]
        series.append((f"{RANDOM_LABEL}, IPC {top}", RANDOM_COLOUR,
                       [e for c in at[0]["cells"] if (e := recipe_lr_random(c)) is not None]))
        series += [(f"{r['method']} IPC {top}", method_colour(r["method"]), [c["evals"]["distilled"] for c in r["cells"]]) for r in at]
        fig, ax = plt.subplots(figsize=(max(6, 0.55 * C) if C <= 20 else 10, 4.2))
        width = 0.8 / len(series)
        for k, (label, colour, evs) in enumerate(series):
            if not evs:
                continue
            pc = 100 * np.mean([e["per_class"] for e in evs], axis=0)
            if C <= 20:
                ax.bar(np.arange(C) + (k - (len(series) - 1) / 2) * width, pc, width, label=label, color=colour)
            else:
                ax.plot(np.arange(C), pc, label=label, linewidth=1, color=colour)
        target = dict(_flips(c0))  # flip source -> its target; named in the tick label, not coloured (colours are the series')
        if C <= 20:
            ax.set_xticks(np.arange(C), [f"{n} → {names[target[i]]}" if i in target else n for i, n in enumerate(names)],
                         rotation=45, ha="right", fontsize=8)
        ax.set_ylabel("clean test accuracy (%)")
        lt = " (classes head → tail)" if setting[1] is not None else ""
        mark = "; a flip source reads 'class → flip target'" if target and C <= 20 else ""
        ax.set_title(f"{setting_title(setting)}, {noise_title(setting[0], noise, rate)}\nper-class accuracy{lt}{mark}", fontsize=9)
        ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1), borderaxespad=0, fontsize=7)
        ax.grid(alpha=0.3, axis="y")
        out.append(render.save(fig, folder / f"per_class-{setting_slug(setting)}-{noise_slug(c0).replace(' ', '-')}.png"))
    return out


def _synset_images(path: str):

    from ddlnl.synset import SyntheticSet

    s = SyntheticSet.load(path)
    imgs = s.preprocess.inverse(s.images).clamp(0, 1)
    labels = s.hard_labels()
    return imgs.permute(0, 2, 3, 1).numpy(), labels.numpy(), s


def fig_synsets(rows, folder: Path, render: Render) -> list[Path]:
    """One grid per (group, method): the cell with the largest IPC up to 10 (else the smallest IPC)."""
    plt = _plt()
    out = []
    best = {}
    for c in rows:
        ev = c["evals"].get("distilled")
        if not ev or not ev.get("synset_path") or not Path(ev["synset_path"]).exists():
            continue
        key = (c["cell_group"], c["method"])
        cur = best.get(key)
        score = (c["ipc"] <= MAX_GRID_COLS, c["ipc"] if c["ipc"] <= MAX_GRID_COLS else -c["ipc"])
        if cur is None or score > cur[0]:
            best[key] = (score, c)
    for (group, method), (_, c) in sorted(best.items()):
        imgs, labels, s = _synset_images(c["evals"]["distilled"]["synset_path"])
        C = len(c["classes"] or []) or int(labels.max()) + 1
        ipc = c["ipc"]
        per_class_order = imgs.shape[0] == C * ipc
        rows_n, cols_n = min(C, MAX_GRID_ROWS), min(ipc, MAX_GRID_COLS)
        # square cells edge to edge and the title just above them (row labels and title fall outside; saved tight)
        fig, axes = plt.subplots(rows_n, cols_n, figsize=(0.9 * cols_n, 0.9 * rows_n), squeeze=False,
                                 gridspec_kw={"left": 0, "right": 1, "bottom": 0, "top": 1, "wspace": 0.05, "hspace": 0.05})
        names = c["classes"] or [str(i) for i in range(C)]
        for r in range(rows_n):
            idx = np.arange(r * ipc, (r + 1) * ipc) if per_class_order else np.flatnonzero(labels == r)
            for k in range(cols_n):
                ax = axes[r][k]
                ax.set_xticks([])
                ax.set_yticks([])
                if k < len(idx):
                    img = imgs[idx[k]]
                    ax.imshow(img if img.shape[-1] == 3 else img[..., 0], cmap=None if img.shape[-1] == 3 else "gray")
                if k == 0:
                    ax.set_ylabel(names[r], rotation=0, ha="right", va="center", fontsize=7)
        title = f"{cell_title(c)} ({s.label_kind} labels)"
        if C > rows_n:
            title += f" — first {rows_n} of {C} classes"
        fig.suptitle(title, fontsize=8, y=1, va="bottom")
        out.append(render.save(fig, folder / f"synset-{group}-{method}-ipc{ipc}.png"))
    return out


def fig_histories(rows, folder: Path, render: Render) -> list[Path]:
    """Per setting, noise, method and IPC: the distillation loss against iterations, one line per seed, and where the run
    evaluated the set as it went (``ddlnl run --eval-every``), those quick test accuracies on a second axis."""
    plt = _plt()
    groups = defaultdict(list)
    for c in rows:
        h = ((cell_result(c) or {}).get("results", {}).get("distilled") or {}).get("history")
        if h and h.get("loss"):
            groups[(setting_slug(setting_of(c)), noise_of(c).tag, c["method"], c["ipc"])].append((c, h))
    out = []
    for (setting, noise, method, ipc), cells in sorted(groups.items()):
        fig, ax = plt.subplots(figsize=(5.2, 3.0), layout="constrained")
        colour = method_colour(method)
        acc_ax = None
        for k, (c, h) in enumerate(sorted(cells, key=lambda ch: ch[0]["seed"])):
            ax.plot(h["iteration"], h["loss"], color=colour, alpha=0.35 + 0.65 / len(cells), linewidth=0.8,
                    label=f"{method} loss" if k == 0 else None)
            if h.get("eval"):
                acc_ax = acc_ax or ax.twinx()
                acc_ax.plot([e["iteration"] for e in h["eval"]], [100 * e["test_acc"] for e in h["eval"]], color=FULL_NOISY_COLOUR,
                            marker="o", markersize=3, linewidth=1, label="quick test accuracy" if k == 0 else None)
        ax.set_xlabel("distillation iteration", fontsize=9)
        ax.xaxis.set_major_locator(plt.MaxNLocator(integer=True))
        ax.set_ylabel("matching loss", fontsize=9)
        ax.grid(alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        if acc_ax is not None:
            acc_ax.set_ylabel("clean test accuracy (%),\none quick network", fontsize=8)
            more = acc_ax.get_legend_handles_labels()
            handles, labels = handles + more[0], labels + more[1]
        ax.legend(handles, labels, fontsize=7, loc="upper right")
        seeds = f", {len(cells)} seeds" if len(cells) > 1 else ""
        ax.set_title(cell_title(cells[0][0]) + seeds, fontsize=9)
        out.append(render.save(fig, folder / f"history-{setting}-{noise}-{method}-ipc{ipc}.png"))
    return out


def _soft_mass(path: str, ipc: int, C: int, flips) -> list[tuple[int, int, float, float]] | None:
    """For a soft-label set: mean softmax mass on (own class, flip target) over the images of each flip source."""
    import torch

    from ddlnl.synset import SyntheticSet

    s = SyntheticSet.load(path)
    if s.label_kind != "soft":
        return None
    probs = torch.softmax(s.labels.float(), dim=1).numpy()
    cls = np.arange(probs.shape[0]) // ipc if probs.shape[0] == C * ipc else probs.argmax(1)
    out = []
    for src, tgt in flips:
        sel = probs[cls == src]
        if len(sel):
            out.append((src, tgt, float(sel[:, src].mean()), float(sel[:, tgt].mean())))
    return out


def fig_absorption(rows, folder: Path, render: Render) -> tuple[list[Path], list[str]]:
    """For asymmetric noise: where the flips went (confusion matrices) and, for soft labels, the label mass on them."""
    plt = _plt()
    out, md = [], []
    for c in rows:
        flips = _flips(c) if c["noise"] == "asymmetric" else []
        if not flips:
            continue
        ev = c["evals"]
        C = len(ev["distilled"]["per_class"])
        names = c["classes"] or [str(i) for i in range(C)]
        roles = [r for r in ROLES if r in ev and ev[r].get("confusion")]
        fig, axes = plt.subplots(1, len(roles), figsize=(4.8 * len(roles), 4.4), squeeze=False, layout="constrained")
        rates = {}
        for ax, role in zip(axes[0], roles):
            M = np.asarray(ev[role]["confusion"], dtype=float)
            M = M / np.maximum(M.sum(1, keepdims=True), 1)
            rates[role] = M
            im = ax.imshow(100 * M, vmin=0, vmax=100, cmap="Blues")
            for s, t in flips:
                ax.add_patch(plt.Rectangle((t - 0.5, s - 0.5), 1, 1, fill=False, edgecolor="tab:red", linewidth=1.5))
            if C <= 20:
                ax.set_xticks(range(C))
                ax.set_xticklabels(names, rotation=90, fontsize=6)
                ax.set_yticks(range(C))
                ax.set_yticklabels(names, fontsize=6)
                for i in range(C):
                    for j in range(C):
                        if M[i, j] >= 0.05:
                            ax.text(j, i, f"{100 * M[i, j]:.0f}", ha="center", va="center", fontsize=5,
                                    color="white" if M[i, j] > 0.5 else "black")
            label = {"full_noisy": FULL_NOISY_LABEL, "random": f"{RANDOM_LABEL}, IPC {c['ipc']}",
                     "distilled": f"{c['method']} IPC {c['ipc']}"}[role]
            ax.set_title(f"trained on: {label}", fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true class")
        fig.colorbar(im, ax=axes[0], shrink=0.8, label="share of the true class's test images (%)")
        fig.suptitle(f"{cell_title(c)}: confusion (rows normalised); red: flip source → target", fontsize=9)
        out.append(render.save(fig, folder / f"absorption-{c['id']}.png"))
        md += [f"#### {c['id']}", "", "Share of test images of each flip source predicted as its target (%):", "",
               "| flip | " + " | ".join(roles) + " |", "|---|" + "---|" * len(roles)]
        shown = flips if len(flips) <= 12 else flips[:12]
        for s, t in shown:
            md.append(f"| {names[s]} → {names[t]} | " + " | ".join(f"{100 * rates[r][s, t]:.1f}" for r in roles) + " |")
        if len(flips) > len(shown):
            md.append(f"| mean over all {len(flips)} flips | " + " | ".join(f"{100 * np.mean([rates[r][s, t] for s, t in flips]):.1f}" for r in roles) + " |")
        md.append("")
        path = ev["distilled"].get("synset_path")
        if ev["distilled"].get("label_kind") == "soft" and path and Path(path).exists():
            mass = _soft_mass(path, c["ipc"], C, flips)
            if mass:
                fig, ax = plt.subplots(figsize=(max(5, 0.7 * len(mass)), 3.5))
                x = np.arange(len(mass))
                colour = method_colour(c["method"])
                ax.bar(x - 0.2, [100 * m[2] for m in mass], 0.4, label="own class", color=colour)
                ax.bar(x + 0.2, [100 * m[3] for m in mass], 0.4, label="flip target", color=colour, alpha=0.5, hatch="//")
                ax.set_xticks(x)
                ax.set_xticklabels([f"{names[m[0]]}→{names[m[1]]}" for m in mass], rotation=45, ha="right", fontsize=7)
                ax.set_ylabel("mean soft-label mass (%)")
                ax.set_title(f"{cell_title(c)}: label mass of the synthetic images of each flip source", fontsize=8)
                ax.legend(fontsize=7)
                out.append(render.save(fig, folder / f"absorption-softlabels-{c['id']}.png"))
                md += ["Soft labels of the synthetic images of each flip source: mean mass on own class / flip target (%):", "",
                       "| flip | own class | flip target |", "|---|---|---|"]
                md += [f"| {names[s]} → {names[t]} | {100 * a:.1f} | {100 * b:.1f} |" for s, t, a, b in mass] + [""]
    return out, md


