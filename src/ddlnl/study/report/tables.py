"""A study report's tables (Markdown and CSV): accuracy per setting, the paired differences over seeds,
the other rows (baselines, controls), selections scored against clean labels, and privacy audits."""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ddlnl.results import MAIN_ROLES as ROLES
from ddlnl.study.report.rows import (
    RECIPE_LR_RANDOM,
    cell_result,
    family_title,
    noise_family,
    noise_level,
    noise_slug,
    noise_title,
    pool_runs,
    realised_rate,
    seed_interval,
    setting_of,
    setting_slug,
    setting_title,
)

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
        by_family[(r["dataset"], r["imbalance"], r["preset"], noise_family(r))].append(r)
    for (ds, imb, preset, fam), rs in by_family.items():
        ipcs = sorted({r["ipc"] for r in rs})
        methods_at = {i: sorted({r["method"] for r in rs if r["ipc"] == i}) for i in ipcs}  # only columns with cells
        levels = sorted({(r["rate"], r["noise"]) for r in rs})
        title = f"{setting_title((ds, imb, preset))}: {family_title(ds, fam)}"
        cols = ["noise", "realised rate", "full noisy"] + [f"{name} IPC {i}" for i in ipcs for name in ["random", *methods_at[i]]]
        lines += [f"### {title}", "", ("Test accuracy (%): mean ± std over all evaluation runs of all seeds; with several seeds, "
                                            "[± the 95 % t-interval of the mean over seeds]. The random column trains at the recipe's lr; "
                                            "a method's random control at its set's learned lr is under the other rows."), "",
                  "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for rate, noise in levels:
            sub = [r for r in rs if r["rate"] == rate and r["noise"] == noise]
            lab = noise_level(sub[0])
            cells = [lab, f"{100 * realised_rate([c for r in sub for c in r['cells']]):.1f}%", _pct(sub[0]["full_noisy"])]
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
        vals = by[setting_of(c) + (c["noise"], c["rate"], c["ipc"])][c["seed"]]
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
    seeds have in common. For each method: minus the full noisy set, minus each of its controls, and its
    init-only control minus its random control (what the starting set's selection alone adds); for each
    pair of methods at one IPC: their difference. Mean over seeds and its 95 % t-interval (seeds with both
    rows only)."""
    out = []
    for key, seeds in sorted(_seed_values(rows).items(), key=lambda kv: tuple(map(str, kv[0]))):
        ds, imb, preset, noise, rate, ipc = key
        methods = sorted({m for v in seeds.values() for m in v if isinstance(m, str) and m != "full noisy"})
        pairs = [(m, "full noisy") for m in methods]
        pairs += [(m, (m, name)) for m in methods for name in CONTROL_NAMES.values()]
        # what the starting set alone adds over real images drawn at random, both at the set's lr
        pairs += [((m, CONTROL_NAMES["controls.init_only"]), (m, CONTROL_NAMES["random"])) for m in methods]
        pairs += [(a, b) for i, a in enumerate(methods) for b in methods[i + 1:]]
        for a, b in pairs:
            per_seed = {s: v[a] - v[b] for s, v in sorted(seeds.items()) if a in v and b in v}
            if not per_seed:
                continue
            diffs = list(per_seed.values())
            ci = seed_interval(diffs)
            mean = float(np.mean(diffs))
            out.append({"setting": (ds, imb, preset), "noise": noise, "rate": rate, "ipc": ipc,
                        "a": a if isinstance(a, str) else f"{a[0]} {a[1]}",
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
            key = (setting_slug(setting_of(c)), noise_slug(c), role, key_ipc)
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
                     f"{_pct(pool_runs(evs))} |")
    return lines + [""]


def selection_table(rows: list[dict]) -> list[str]:
    """Precision and recall of every selection of training samples (scored against the clean labels), per
    setting, noise, row and selection, pooled over seeds: mean, and [± the 95 % t-interval] with several."""
    from ddlnl.results import evaluated_rows

    pooled = defaultdict(list)
    for c in rows:
        result = cell_result(c)
        if result is None:
            continue
        for row in evaluated_rows(result, include_skipped=False):
            for name, s in (row.value.get("selection") or {}).items():
                if s.get("precision") is not None:
                    ipc = None if row.role.startswith(("full_noisy", "baselines.")) else (c["method"], c["ipc"])
                    pooled[(setting_slug(setting_of(c)), noise_slug(c), row.label if ipc is None else row.role, ipc, name)].append(s)
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


