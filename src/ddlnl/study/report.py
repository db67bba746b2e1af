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
"""

from __future__ import annotations

import csv
import json
import zlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ddlnl.data.noise import HUMAN_NOISE, NoiseSpec, takes_rate
from ddlnl.errors import ConfigError
from ddlnl.results import MAIN_ROLES as ROLES

MAX_GRID_ROWS, MAX_GRID_COLS = 20, 10


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- loading ------------------------------------------------------------------------------

def load_rows(folder: Path) -> tuple[list[dict], dict]:
    """Finished cells, each with its evaluations under ``evals[role]``, and the study meta."""
    from ddlnl.study.store import DB_NAME, read_study

    if not (folder / DB_NAME).exists():
        raise ConfigError(f"{folder} has no {DB_NAME}", "pass a folder written by `ddlnl study STUDY.yaml --out DIR`")
    meta, cells, evaluations = read_study(folder)
    evals = defaultdict(dict)
    for e in evaluations:
        evals[e["cell_id"]][e["role"]] = e
    for c in cells:
        c["evals"] = evals.get(c["id"], {})
        c["method"] = method_name(c)
    meta["all_cells"] = cells
    return [c for c in cells if c["status"] == "finished" and c["evals"]], meta


def method_name(c: dict) -> str:
    """The method as the report names it: a cell that distils after a cleaner (``clean_first``) is
    ``datm-clean-loss_gmm``, as in its id, so it is never pooled with the plain method's cells."""
    cleaner = json.loads(c.get("config") or "{}").get("clean_first")
    return f"{c['method']}-clean-{cleaner}" if cleaner else c["method"]


def _noise(c) -> NoiseSpec:
    return NoiseSpec(c["noise"], c["rate"])


def _family(c) -> str:
    return "human" if _noise(c).is_human else c["noise"]


def _level(c) -> str:
    """The noise level within its family: ``0.4``, or the label set's name."""
    n = _noise(c)
    return f"{n.rate:g}" if n.takes_rate else n.type


def _noise_name(c) -> str:
    return _noise(c).name


def _x_rate(cells) -> float:
    rates = [c["actual_rate"] for c in cells if c.get("actual_rate") is not None]
    return float(np.mean(rates)) if rates else float(cells[0]["rate"])


def _setting(c) -> tuple:
    return (c["dataset"], c["imbalance"], c["preset"])


def _setting_name(s) -> str:
    ds, imb, preset = s
    return f"{ds}{f'-lt{imb:g}' if imb is not None else ''}-{Path(preset).stem}"


def seed_interval(means: list[float]) -> float | None:
    """Half-width of the 95 % t-interval of the mean over seeds (one value per seed); None for one seed."""
    from scipy.stats import t  # scipy comes with scikit-learn; imported here to keep `ddlnl` start-up light

    k = len(means)
    if k < 2:
        return None
    return float(t.ppf(0.975, k - 1) * np.std(means, ddof=1) / np.sqrt(k))


def _pool(evals: list[dict]) -> dict:
    """Every evaluation run of ``evals`` (one per seed) pooled: mean, std and count of runs, and
    the 95 % interval of the mean over seeds (each seed's mean, so seeds weigh equally)."""
    accs = [a for e in evals for a in (e["accs"] or [e["acc_mean"]])]
    if not accs:
        return None
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "n": len(accs), "seeds": len(evals),
            "ci95": seed_interval([float(e["acc_mean"]) for e in evals])}


RECIPE_LR_RANDOM = "controls.random_recipe_lr"


def recipe_lr_random(c: dict) -> dict | None:
    """The random control at the recipe's lr: the same for every method of a setting, so the tables'
    one "random" column. A method with a learned lr also has its random control at that lr (the
    cell's ``random`` row); the report lists it under the other rows."""
    return c["evals"].get(RECIPE_LR_RANDOM) or c["evals"].get("random")


def aggregate(rows: list[dict]) -> list[dict]:
    """One row per (dataset, imbalance, preset, noise, rate, method, IPC); seeds and runs pooled.

    The full-noisy baseline is counted once per group (it is shared by the group's cells).
    """
    groups = defaultdict(list)
    for c in rows:
        groups[_setting(c) + (c["noise"], c["rate"], c["method"], c["ipc"])].append(c)
    baseline_by_noise = defaultdict(dict)
    for c in rows:
        if "full_noisy" in c["evals"]:
            baseline_by_noise[_setting(c) + (c["noise"], c["rate"])].setdefault(c["cell_group"], c["evals"]["full_noisy"])
    out = []
    for key, cells in groups.items():
        ds, imb, preset, noise, rate, method, ipc = key
        row = {"dataset": ds, "imbalance": imb, "preset": preset, "noise": noise, "rate": rate, "actual_rate": _x_rate(cells),
               "method": method, "ipc": ipc, "seeds": len({c["seed"] for c in cells}), "cells": cells}
        pools = {"full_noisy": _pool(list(baseline_by_noise[key[:5]].values())),
                 "random": _pool([e for c in cells if (e := recipe_lr_random(c)) is not None]),
                 "distilled": _pool([c["evals"]["distilled"] for c in cells if "distilled" in c["evals"]])}
        for role, p in pools.items():
            row[role] = p
        out.append(row)
    out.sort(key=lambda r: (r["dataset"], r["imbalance"] or 0, r["preset"], _family(r), r["rate"], r["noise"], r["method"], r["ipc"]))
    return out


# -- names in words ------------------------------------------------------------------------

DATASET_TITLES = {"cifar10": "CIFAR-10", "cifar100": "CIFAR-100", "cifar100_coarse": "CIFAR-100 (20 superclasses)",
                  "tinyimagenet": "Tiny-ImageNet"}
HUMAN_SET_TITLES = {"cifar10": "CIFAR-10N", "cifar100": "CIFAR-100N", "cifar100_coarse": "CIFAR-100N"}
HUMAN_LEVEL_TITLES = {"aggre": "aggregate", "random1": "random 1", "random2": "random 2", "random3": "random 3",
                      "worst": "worst", "noisy100": "noisy"}
NOISE_TITLES = {"symmetric": "symmetric", "symmetric_inclusive": "symmetric (true class included)",
                "asymmetric": "asymmetric", "pairflip": "pair-flip", "instance": "instance-dependent"}


def dataset_title(dataset: str) -> str:
    """``CIFAR-100 (20 superclasses)``; a folder dataset's name as it is."""
    return DATASET_TITLES.get(dataset, dataset)


def setting_title(setting: tuple) -> str:
    """The setting as a reader says it (``CIFAR-10, long-tailed (ρ = 10), quick preset``); file names
    keep :func:`_setting_name`'s slug."""
    ds, imb, preset = setting
    lt = f", long-tailed (ρ = {imb:g})" if imb is not None else ""
    return f"{dataset_title(ds)}{lt}, {Path(preset).stem} preset"


def noise_title(dataset: str, noise: str, rate: float) -> str:
    """One noise level in words: ``symmetric 40 %``, ``CIFAR-10N worst``, ``clean labels``."""
    if noise == "clean":
        return "clean labels"
    if noise in HUMAN_NOISE:
        return f"{HUMAN_SET_TITLES.get(dataset, 'CIFAR-N')} {HUMAN_LEVEL_TITLES.get(noise, noise)}"
    return f"{NOISE_TITLES.get(noise, noise)} {100 * rate:g} %" if takes_rate(noise) else f"{noise} labels"


def _cell_title(c: dict) -> str:
    """A cell in words on two lines, for figures of one cell: ``CIFAR-10, quick preset, symmetric 40 %`` / ``dm IPC 10``."""
    return f"{setting_title(_setting(c))}, {noise_title(c['dataset'], c['noise'], c['rate'])}\n{c['method']} IPC {c['ipc']}"


def family_title(dataset: str, family: str) -> str:
    """A noise family in words: ``symmetric noise``, ``CIFAR-10N human labels``."""
    if family == "human":
        return f"{HUMAN_SET_TITLES.get(dataset, 'CIFAR-N')} human labels"
    return "clean labels" if family == "clean" else f"{NOISE_TITLES.get(family, family)} noise"


# -- tables -------------------------------------------------------------------------------

def _num(v, fmt: str = ".2f") -> str:
    return "–" if v is None else format(v, fmt)


def _pct(p) -> str:
    """``48.90 ± 1.37`` (spread of the evaluation runs), ``61.20 (1 run)``, and with several seeds
    ``[± 2.10 over 3 seeds]``: the 95 % interval of the mean over seeds."""
    if p is None:
        return "–"
    out = f"{100 * p['mean']:.2f} (1 run)" if p["n"] == 1 else f"{100 * p['mean']:.2f} ± {100 * p['std']:.2f}"
    if p.get("ci95") is not None:
        out += f" [± {100 * p['ci95']:.2f} over {p['seeds']} seeds]"
    return out


def _csv_std(p: dict) -> str:
    """The runs' std, empty for a single run: one run has no spread, and 0 would read as a measured one."""
    return f"{p['std']:.6f}" if p["n"] > 1 else ""


def write_csv(agg: list[dict], paired: list[dict], all_cells: list[dict], folder: Path) -> list[Path]:
    from ddlnl.utils.io import atomic_path

    paths = []
    p = folder / "results.csv"
    with atomic_path(p) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "imbalance", "preset", "noise", "rate", "actual_rate", "method", "ipc", "seeds",
                    *[f"{r}_{s}" for r in ROLES for s in ("mean", "std", "n", "ci95")]])
        for r in agg:
            w.writerow([r["dataset"], r["imbalance"], r["preset"], r["noise"], r["rate"], f"{r['actual_rate']:.6f}", r["method"], r["ipc"],
                        r["seeds"], *[x for role in ROLES for x in ((f"{r[role]['mean']:.6f}", _csv_std(r[role]), r[role]["n"],
                                                                      "" if r[role]["ci95"] is None else f"{r[role]['ci95']:.6f}")
                                                                     if r[role] else ("", "", 0, ""))]])
    paths.append(p)
    p = folder / "cells.csv"
    with atomic_path(p) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["id", "status", "dataset", "imbalance", "preset", "noise", "rate", "actual_rate", "seed", "method", "ipc",
                    *[f"{r}_acc_mean" for r in ROLES], "wall_s", "experiment_s", "overhead_s", "baselines_s", "experts_s",
                    "distill_s", "evaluate_s", "shared", "attempts", "executor", "job_id", "out_dir", "error"])
        for c in all_cells:
            ev, t = c.get("evals", {}), c.get("timings") or {}
            w.writerow([c["id"], c["status"], c["dataset"], c["imbalance"], c["preset"], c["noise"], c["rate"], c["actual_rate"], c["seed"],
                        c["method"], c["ipc"], *[ev[r]["acc_mean"] if r in ev else "" for r in ROLES],
                        c["wall_s"], c["experiment_s"], c["overhead_s"], *[t.get(k, "") for k in ("baselines", "experts", "distill", "evaluate")],
                        c["shared"], c["attempts"], c["executor"], c["job_id"], c["out_dir"], c["error"]])
    paths.append(p)
    p = folder / "paired.csv"
    with atomic_path(p) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["dataset", "imbalance", "preset", "noise", "rate", "ipc", "first", "second", "seeds", "per_seed",
                    "mean_diff", "ci95", "low", "high"])
        for d in paired:
            lo, hi = d["interval"] or ("", "")
            w.writerow([*d["setting"], d["noise"], d["rate"], d["ipc"], d["a"], d["b"], len(d["per_seed"]),
                        " ".join(f"{s}:{v:.6f}" for s, v in d["per_seed"].items()), f"{d['mean']:.6f}",
                        "" if d["ci95"] is None else f"{d['ci95']:.6f}", lo if lo == "" else f"{lo:.6f}",
                        hi if hi == "" else f"{hi:.6f}"])
    paths.append(p)
    return paths


def markdown_tables(agg: list[dict]) -> list[str]:
    lines = []
    by_family = defaultdict(list)
    for r in agg:
        by_family[(r["dataset"], r["imbalance"], r["preset"], _family(r))].append(r)
    for (ds, imb, preset, fam), rs in by_family.items():
        ipcs = sorted({r["ipc"] for r in rs})
        methods_at = {i: sorted({r["method"] for r in rs if r["ipc"] == i}) for i in ipcs}  # only columns with cells
        levels = sorted({(r["rate"], r["noise"]) for r in rs})
        title = f"{setting_title((ds, imb, preset))}: {family_title(ds, fam)}"
        cols = ["noise", "realised rate", "full noisy"] + [f"{name} IPC {i}" for i in ipcs for name in ["random", *methods_at[i]]]
        lines += [f"### {title}", "", ("Test accuracy (%): mean ± std over all evaluation runs of all seeds; with several seeds, "
                                            "[± the 95 % t-interval of the mean over seeds]."), "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for rate, noise in levels:
            sub = [r for r in rs if r["rate"] == rate and r["noise"] == noise]
            lab = _level(sub[0])
            cells = [lab, f"{100 * _x_rate([c for r in sub for c in r['cells']]):.1f}%", _pct(sub[0]["full_noisy"])]
            for i in ipcs:
                at = [r for r in sub if r["ipc"] == i]
                cells.append(_pct(at[0]["random"]) if at else "–")
                for m in methods_at[i]:
                    mm = [r for r in at if r["method"] == m]
                    cells.append(_pct(mm[0]["distilled"]) if mm else "–")
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


CONTROL_NAMES = {"random": "random control (same cell, the set's lr)", "controls.hard_labels": "hard-label control",
                 "controls.init_only": "init-only control"}


def _seed_values(rows: list[dict]) -> dict[tuple, dict[int, dict[str, float]]]:
    """Per (setting, noise, rate, IPC) and seed, the mean test accuracy of every row a comparison uses: the
    full noisy set, each method's distilled set, and each method's controls (``random`` is the cell's own
    random control, trained at the set's lr)."""
    by = defaultdict(lambda: defaultdict(dict))
    for c in rows:
        vals = by[_setting(c) + (c["noise"], c["rate"], c["ipc"])][c["seed"]]
        ev = c["evals"]
        if "full_noisy" in ev:
            vals.setdefault("full noisy", float(ev["full_noisy"]["acc_mean"]))
        if "distilled" in ev:
            vals[c["method"]] = float(ev["distilled"]["acc_mean"])
        for role, name in CONTROL_NAMES.items():
            if role in ev:
                vals[(c["method"], name)] = float(ev[role]["acc_mean"])
    return by


def paired_differences(rows: list[dict]) -> list[dict]:
    """The comparisons a finding rests on, each paired by seed: a seed fixes the noise realisation and the
    full-noisy baseline that every row of that seed shares, so the per-seed difference removes what the
    seeds have in common. For each method: minus the full noisy set, minus each of its controls; for each
    pair of methods at one IPC: their difference. Mean over seeds and its 95 % t-interval (seeds with both
    rows only)."""
    out = []
    for key, seeds in sorted(_seed_values(rows).items(), key=lambda kv: tuple(map(str, kv[0]))):
        ds, imb, preset, noise, rate, ipc = key
        methods = sorted({m for v in seeds.values() for m in v if isinstance(m, str) and m != "full noisy"})
        pairs = [(m, "full noisy") for m in methods]
        pairs += [(m, (m, name)) for m in methods for name in CONTROL_NAMES.values()]
        pairs += [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
        for a, b in pairs:
            per_seed = {s: v[a] - v[b] for s, v in sorted(seeds.items()) if a in v and b in v}
            if not per_seed:
                continue
            diffs = list(per_seed.values())
            ci = seed_interval(diffs)
            mean = float(np.mean(diffs))
            out.append({"setting": (ds, imb, preset), "noise": noise, "rate": rate, "ipc": ipc, "a": a,
                        "b": b if isinstance(b, str) else b[1], "per_seed": per_seed, "mean": mean, "ci95": ci,
                        "interval": None if ci is None else (mean - ci, mean + ci)})
    return out


def _verdict(d: dict) -> str:
    """Whether the seeds settle the sign: the interval excludes 0, or it does not, or one seed gives none."""
    if d["interval"] is None:
        return "one seed: no interval"
    lo, hi = d["interval"]
    return "above" if lo > 0 else "below" if hi < 0 else "not settled (interval holds 0)"


def paired_table(diffs: list[dict]) -> list[str]:
    """:func:`paired_differences` as a markdown table, in points of test accuracy."""
    if not diffs:
        return []
    lines = ["## Paired differences over seeds", "",
             ("Each comparison a finding rests on, paired by seed (one seed: one noise realisation, one full-noisy "
              "baseline, the experts and sets of that seed): test-accuracy points of the first row minus the second, "
              "per seed, their mean and [the 95 % t-interval of the mean]. `above`/`below`: the interval excludes 0. "
              "A control is the cell's own, trained as its set is (docs/protocol.md)."), "",
             "| setting | noise | IPC | comparison | per seed (points) | mean [95 % interval] | seeds | sign |",
             "|---|---|---|---|---|---|---|---|"]
    for d in diffs:
        per = ", ".join(f"s{s}: {100 * v:+.2f}" for s, v in d["per_seed"].items())
        interval = "" if d["interval"] is None else f" [{100 * d['interval'][0]:+.2f}, {100 * d['interval'][1]:+.2f}]"
        lines.append(f"| {setting_title(d['setting'])} | {noise_title(d['setting'][0], d['noise'], d['rate'])} | {d['ipc']} | "
                     f"{d['a']} − {d['b']} | {per} | {100 * d['mean']:+.2f}{interval} | {len(d['per_seed'])} | {_verdict(d)} |")
    return lines + [""]


def other_rows_table(rows: list[dict]) -> list[str]:
    """Noisy-label baselines and fairness controls (``baselines.*``, ``controls.*`` evaluations, and the random
    control at a method's learned lr), pooled over seeds."""
    pooled = defaultdict(list)
    labels = {}
    seen = defaultdict(set)  # a baseline row -> the groups already counted
    for c in rows:
        for role, ev in c["evals"].items():
            if role == RECIPE_LR_RANDOM:  # in the main table's random column; this cell's own random row is the other one
                role, ev = "random", c["evals"]["random"]
                ev = ev | {"label": f"{ev.get('label') or 'random real'}, at {c['method']}'s learned lr"}
            elif role in ROLES:
                continue
            key_ipc = None if role.startswith("baselines.") else (c["method"], c["ipc"])
            key = (_setting_name(_setting(c)), _noise_name(c), role, key_ipc)
            if key_ipc is None:  # a baseline is trained once per group (one seed) and shared by its cells
                if c["cell_group"] in seen[key]:
                    continue
                seen[key].add(c["cell_group"])
            pooled[key].append(ev)
            labels.setdefault(key, ev.get("label") or role)
    if not pooled:
        return []
    lines = ["## Other rows: noisy-label baselines and controls", "",
             "| setting | noise | row | what was trained on | method, IPC | test acc (%) |", "|---|---|---|---|---|---|"]
    for key, evs in sorted(pooled.items(), key=lambda kv: tuple(map(str, kv[0]))):
        setting, noise, role, mi = key
        lines.append(f"| {setting} | {noise} | {role} | {labels[key]} | {'–' if mi is None else f'{mi[0]}, {mi[1]}'} | "
                     f"{_pct(_pool(evs))} |")
    return lines + [""]


def _result(c: dict) -> dict | None:
    """A finished cell's result.json (what the database does not hold: selections, histories), or None."""
    path = c.get("result_path")
    if "_result" not in c:
        try:
            c["_result"] = json.loads(Path(path).read_text()) if path else None
        except (OSError, ValueError):
            c["_result"] = None
    return c["_result"]


def selection_table(rows: list[dict]) -> list[str]:
    """Precision and recall of every selection of training samples (scored against the clean labels), per
    setting, noise, row and selection, pooled over seeds: mean, and [± the 95 % t-interval] with several."""
    from ddlnl.results import evaluated_rows

    pooled = defaultdict(list)
    for c in rows:
        result = _result(c)
        if result is None:
            continue
        for row in evaluated_rows(result, include_skipped=False):
            for name, s in (row.value.get("selection") or {}).items():
                if s.get("precision") is not None:
                    ipc = None if row.role.startswith(("full_noisy", "baselines.")) else (c["method"], c["ipc"])
                    pooled[(_setting_name(_setting(c)), _noise_name(c), row.label if ipc is None else row.role, ipc, name)].append(s)
    if not pooled:
        return []

    def cell(values: list[float]) -> str:
        ci = seed_interval(values)
        return f"{100 * np.mean(values):.1f}" + ("" if ci is None else f" [± {100 * ci:.1f}]")

    lines = ["## Selections scored against the clean labels", "",
             "Precision: share of the kept samples whose noisy label is the clean one; recall: share of the correctly "
             "labelled samples kept (docs/protocol.md). `init`: the real images a set starts from; `filter`: DATM's "
             "expert filter on the images it judged; a baseline's row: its last epoch's selection. Pseudo-labels: for a "
             "selection the method relabels (TAD's `recalled`), the share of the labels it gave that are the clean ones.", "",
             "| setting | noise | row | method, IPC | selection | precision (%) | recall (%) | pseudo-labels correct (%) | seeds |",
             "|---|---|---|---|---|---|---|---|---|"]
    for (setting, noise, row, mi, name), ss in sorted(pooled.items(), key=lambda kv: tuple(map(str, kv[0]))):
        relabelled = [s["label_accuracy"] for s in ss if s.get("label_accuracy") is not None]
        lines.append(f"| {setting} | {noise} | {row} | {'–' if mi is None else f'{mi[0]}, {mi[1]}'} | {name} | "
                     f"{cell([s['precision'] for s in ss])} | {cell([s['recall'] for s in ss])} | "
                     f"{cell(relabelled) if relabelled else '–'} | {len(ss)} |")
    return lines + [""]


def _audit(c: dict) -> dict | None:
    """The cell's privacy.json when the cell was audited as part of the study (its config has ``privacy``,
    so the audit ran after this run and is current), or None."""
    if "privacy" not in json.loads(c.get("config") or "{}"):
        return None
    try:
        return json.loads((Path(c["out_dir"]) / "privacy.json").read_text())
    except (OSError, ValueError, TypeError):
        return None


def privacy_table(rows: list[dict]) -> list[str]:
    """Membership inference per audited cell and target (docs/privacy.md): the target network's test accuracy and
    the strongest attack's AUC and TPR at 0.1 % and 1 % FPR, with their 95 % bootstrap intervals."""
    from ddlnl.privacy.metrics import format_metric, strongest_attack

    lines = []
    for c in rows:
        audit = _audit(c)
        for name, t in ((audit or {}).get("targets") or {}).items():
            attack, m = strongest_attack(t["attacks"])
            lines.append(f"| {c['id']} | {name} | {100 * t['test_acc']:.2f} | {attack} | {format_metric(m['auc'])} | "
                         f"{format_metric(m['tpr_at_0.1%_fpr'])} | {format_metric(m['tpr_at_1%_fpr'])} | "
                         f"{m['members']} + {m['non_members']} | {audit['settings']['shadows']} |")
    if not lines:
        return []
    return ["## Privacy: membership inference", "",
            ("Per audited cell (study key `privacy`; `cells/<id>/privacy.json`, `privacy_roc.png`) and target network: its test "
             "accuracy, and the strongest attack's AUC and TPR at 0.1 % and 1 % FPR [95 % bootstrap interval]. Strongest: the "
             "highest TPR at 0.1 % FPR, then at 1 %, then AUC, picked after scoring, so the best of several attacks. Below "
             "FPR 1/(non-members) a TPR means one with no false positive (docs/privacy.md)."), "",
            "| cell | target | test acc (%) | strongest attack | AUC | TPR@0.1%FPR | TPR@1%FPR | members + non-members | shadows |",
            "|---|---|---|---|---|---|---|---|---|"] + lines + [""]


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
        groups[(_setting(r), _family(r), r["method"])].append(r)
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
        out.append(render.save(fig, folder / f"acc_vs_ipc-{_setting_name(setting)}-{fam}-{method}.png"))
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
        groups[(_setting(r), _family(r))].append(r)
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
        out.append(render.save(fig, folder / f"acc_vs_rate-{_setting_name(setting)}-{fam}.png"))
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
        groups[(_setting(r), r["noise"], r["rate"])].append(r)
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
        out.append(render.save(fig, folder / f"per_class-{_setting_name(setting)}-{_noise_name(c0).replace(' ', '-')}.png"))
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
        title = f"{_cell_title(c)} ({s.label_kind} labels)"
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
        h = ((_result(c) or {}).get("results", {}).get("distilled") or {}).get("history")
        if h and h.get("loss"):
            groups[(_setting_name(_setting(c)), _noise(c).tag, c["method"], c["ipc"])].append((c, h))
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
        ax.set_title(_cell_title(cells[0][0]) + seeds, fontsize=9)
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
        fig.suptitle(f"{_cell_title(c)}: confusion (rows normalised); red: flip source → target", fontsize=9)
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
                ax.set_title(f"{_cell_title(c)}: label mass of the synthetic images of each flip source", fontsize=8)
                ax.legend(fontsize=7)
                out.append(render.save(fig, folder / f"absorption-softlabels-{c['id']}.png"))
                md += ["Soft labels of the synthetic images of each flip source: mean mass on own class / flip target (%):", "",
                       "| flip | own class | flip target |", "|---|---|---|"]
                md += [f"| {names[s]} → {names[t]} | {100 * a:.1f} | {100 * b:.1f} |" for s, t, a, b in mass] + [""]
    return out, md


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
        lines += ["Study runs (wall time of each `ddlnl study` invocation):", "",
                  "| when (UTC) | executor | ran | skipped | failed | wall (s) | runner overhead per cell (s) |", "|---|---|---|---|---|---|---|"]
        lines += [f"| {r.get('at', '')} | {r.get('executor')} | {r.get('ran')} | {r.get('skipped')} | {r.get('failed')} | {r.get('wall_s', 0):.1f} | "
                  f"{_num(r.get('overhead_s_mean'))} |" for r in runs]
        lines.append("")
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
