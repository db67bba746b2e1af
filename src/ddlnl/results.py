"""What ``result.json`` holds, and the one reader of its evaluated rows.

A result is a JSON object written by ``ddlnl run`` (and by every study cell)::

    {"schema_version": 2, "dataset", "noise": {type, nominal_rate, actual_rate, seed}, "method", "ipc",
     "preset", "preset_version", "overrides", "seed", "imbalance", "num_train", "num_test", "classes",
     "results": {"full_noisy": ROW, "baselines": {NAME: ROW}, "random": ROW, "distilled": ROW,
                 "controls": {NAME: ROW | {"model": ..., "random": ROW, "distilled": ROW} | SKIPPED}},
     "dd_ranking", "notes", "timings_s", "device", "machine", "versions"}

A ROW is an evaluation (``acc_mean``, ``acc_std``, ``accs``, ``runs``, ``per_class``,
``confusion``, ``cost`` ...); SKIPPED is ``{"skipped": why}``. Sections nest: any mapping
under ``baselines`` or ``controls`` that holds ``acc_mean`` is a row, one that holds
``skipped`` a skipped row, and any other mapping is a group whose members are read the same
way (the cross-architecture control is such a group). ``actual_rate`` and ``nominal_rate`` are
null, and ``notes`` says why, when a user's own labels come without clean ones. So a new control needs no change here,
in the CLI table, in the study database or in the report: :func:`evaluated_rows` finds it.

Version 1 (no ``schema_version``) had the same shape; version 2 added the version field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ddlnl.errors import DataError

SCHEMA_VERSION = 2
MAIN_ROLES = ("full_noisy", "random", "distilled")  # every result has these three evaluated rows

BASELINE_LABELS = {"gce": "full noisy set (GCE)", "sce": "full noisy set (SCE)", "coteaching": "full noisy set (Co-teaching)",
                   "dividemix": "full noisy set (DivideMix)", "cleanlab": "cleanlab-pruned set (CE)",
                   "ce_converged": "full noisy set (CE, converged)",
                   "ce_selected": "full noisy set (CE, selected on noisy validation)"}
# evaluation.checkpoint_every: the best clean test accuracy over the tested epochs, as DANCE and DD_LNL report it
BEST_CHECKPOINT_COLUMN = "best of checkpoints (test-selected, as published) (%)"


@dataclass(frozen=True)
class Row:
    """One training set a result evaluated (or skipped).

    ``role`` is a stable dotted key (``full_noisy``, ``baselines.gce``, ``controls.cross_arch.random``)
    used by the study database; ``label`` is what tables show."""

    role: str
    label: str
    value: dict

    @property
    def skipped(self) -> str | None:
        return self.value.get("skipped") if "acc_mean" not in self.value else None


def evaluated_rows(result: dict, *, include_skipped: bool = True) -> list[Row]:
    """Every evaluated row of a result, in table order: the full-noisy baseline, the other
    baselines, the random control, the distilled set, then every control (nested ones included)."""
    res, method, ipc = result["results"], result["method"], result["ipc"]
    rows = [Row("full_noisy", "full noisy set (CE)", res["full_noisy"])]
    for name, r in (res.get("baselines") or {}).items():
        if name != "ce" and isinstance(r, dict):  # 'ce' is full_noisy
            rows += [Row(role, BASELINE_LABELS.get(name, f"baseline {name}"), v) for role, v, _ in _walk(f"baselines.{name}", r)]
    rows += [Row("random", f"random real, IPC {ipc}", res["random"]), Row("distilled", f"{method}, IPC {ipc}", res["distilled"])]
    for name, r in (res.get("controls") or {}).items():
        if isinstance(r, dict) and "see" not in r:  # {"see": "results.random"} points at a main row
            rows += [Row(role, _control_label(method, ipc, role, model), v) for role, v, model in _walk(f"controls.{name}", r)]
    if not include_skipped:
        rows = [r for r in rows if r.skipped is None]
    return rows


def _walk(role: str, node: dict, model: str | None = None) -> list[tuple[str, dict, str | None]]:
    """(role, row, model name of the enclosing group) of every row under ``node``."""
    if "acc_mean" in node or "skipped" in node:
        return [(role, node, model)]
    group_model = node.get("model")
    model = group_model.get("name") if isinstance(group_model, dict) else model
    return [found for key, child in node.items() if isinstance(child, dict) and key != "model"
            for found in _walk(f"{role}.{key}", child, model)]


CONTROL_NAMES = {"hard_labels": "hard labels"}


def _control_label(method: str, ipc: int, role: str, model: str | None) -> str:
    """``datm, IPC 10, hard labels (control)``, ``datm init only, IPC 10 (control)``; a member of a
    group with a model (the cross-architecture control) reads ``random real, IPC 10, resnet18 (control)``."""
    parts = role.split(".")[1:]
    if parts == ["init_only"]:
        return f"{method} init only, IPC {ipc} (control)"
    if parts == ["random_recipe_lr"]:
        return f"random real, IPC {ipc}, at the recipe's lr (control)"
    if len(parts) == 1:
        return f"{method}, IPC {ipc}, {CONTROL_NAMES.get(parts[0], parts[0].replace('_', ' '))} (control)"
    who = {"random": "random real", "distilled": method}.get(parts[-1], parts[-1].replace("_", " "))
    return f"{who}, IPC {ipc}, {model or ' '.join(parts[:-1]).replace('_', ' ')} (control)"


# DD-Ranking's weight between improvement over random and hard-label recovery (its leaderboard's default)
LRS_WEIGHT = 0.5


def dd_ranking_scores(result: dict, w: float = LRS_WEIGHT) -> dict | None:
    """DD-Ranking's label-robust scores (arXiv:2505.13300) from the rows a run has, accuracies as fractions:

    * hard-label recovery ``HLR = acc(full training set, hard labels) - acc(distilled set, hard labels)``:
      here the full *noisy* set under CE, and the distilled set's hard-label control (its main row when
      its labels are hard);
    * improvement over random ``IOR = acc(distilled set) - acc(random real images)``, both under the
      same protocol (the random control at the set's lr);
    * ``LRS = 100 (e^a - e^-1) / (e - e^-1)`` with ``a = w IOR - (1 - w) HLR``.

    None when a row is missing (a skipped hard-label control)."""
    import math

    res = result["results"]
    distilled, random, full = res.get("distilled"), res.get("random"), res.get("full_noisy")
    hard = distilled if (distilled or {}).get("label_kind") == "hard" else (res.get("controls") or {}).get("hard_labels")
    if not all(r and "acc_mean" in r for r in (distilled, random, full, hard)):
        return None
    hlr = full["acc_mean"] - hard["acc_mean"]
    ior = distilled["acc_mean"] - random["acc_mean"]
    a = w * ior - (1 - w) * hlr
    return {"hard_label_recovery": hlr, "improvement_over_random": ior, "label_robust_score": 100 * (math.exp(a) - math.exp(-1)) / (math.e - math.exp(-1)),
            "weight": w, "definition": "DD-Ranking (arXiv:2505.13300); real-hard = the full noisy set under CE"}


def _pct(v) -> str:
    return "–" if v is None else f"{100 * v:.1f} %"


def read_result(path: str | Path) -> dict:
    """A finished run's ``result.json`` (parsed as JSON, never executed), checked to have what
    :func:`evaluated_rows` reads; a DataError that names the file and the fix otherwise."""
    fix = "pass the result.json of a finished run (ddlnl run, or a study cell's folder)"
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as JSON ({e})", fix) from None
    check_result(result, str(path), fix)
    return result


def write_result(path: str | Path, result: dict) -> None:
    """Write a result (atomically), after checking that :func:`read_result` will take it back."""
    from ddlnl.utils.io import write_json

    check_result(result, str(path), "this is a bug in the code that built the result; report it")
    write_json(path, result)


def check_result(result, where: str = "result", fix: str = "pass the result of a finished ddlnl run") -> None:
    missing = [k for k in ("method", "ipc", "results") if not isinstance(result, dict) or k not in result]
    if not missing:
        res = result["results"]
        missing = [f"results.{k}" for k in MAIN_ROLES if not isinstance(res, dict) or not isinstance(res.get(k), dict)]
    if missing:
        raise DataError(f"{where}: not a ddlnl result.json (no {', '.join(missing)})", fix)
    version = result.get("schema_version", 1)
    if not isinstance(version, int) or version > SCHEMA_VERSION:
        raise DataError(f"{where}: result schema version {version!r} is newer than this ddlnl reads ({SCHEMA_VERSION})",
                        "upgrade ddlnl (pip install -U ddlnl) to read it")


def format_count(n: int) -> str:
    """``150.0k``, ``2.50M``: a count of images for a table."""
    n = int(n)
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


def _network(model) -> str:
    """``convnet-64`` (name and width, when it has one): which network a row trained."""
    if not isinstance(model, dict) or "name" not in model:
        return "–"
    return f"{model['name']}-{model['width']}" if "width" in model else str(model["name"])


def format_accuracy(r: dict) -> str:
    """``48.90 ± 1.37`` over several runs; one run has no spread to show (``61.20 (1 run)``)."""
    if r.get("runs", 1) == 1:
        return f"{100 * r['acc_mean']:.2f} (1 run)"
    return f"{100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f}"


def _best_checkpoint_cell(r: dict) -> str:
    """The best-of-checkpoints accuracy of a row (``–`` for rows without checkpoint tests)."""
    if "best_checkpoint_acc_mean" not in r:
        return "–"
    if r.get("runs", 1) == 1:
        return f"{100 * r['best_checkpoint_acc_mean']:.2f}"
    return f"{100 * r['best_checkpoint_acc_mean']:.2f} ± {100 * r['best_checkpoint_acc_std']:.2f}"


def format_result_table(result: dict) -> str:
    """A Markdown table: baselines, the random control, the distilled set and its controls, with their cost.

    The test accuracy is the final epoch's; with ``evaluation.checkpoint_every`` a second column,
    named for what it is, holds the best over the tested epochs (the published protocol)."""
    n = result["noise"]
    rates = "rate unknown: no clean labels" if n["actual_rate"] is None else f"nominal {n['nominal_rate']:.2f}, actual {n['actual_rate']:.4f}"
    head = (f"{result['dataset']} | noise {n['type']} ({rates}, "
            f"seed {n['seed']}) | {result['method']} IPC {result['ipc']} | preset {result['preset']}")
    rows = evaluated_rows(result)
    # With a validation split (data.validation), the held-out noisy labels' score: what choices are made on.
    val = any("val_acc_mean" in row.value for row in rows)
    best = any("best_checkpoint_acc_mean" in row.value for row in rows)
    lines = [head, "", "| training set | test acc (%) |" + (" val acc, noisy labels (%) |" if val else "")
             + (f" {BEST_CHECKPOINT_COLUMN} |" if best else "") + " runs | network | lr | cost (s) | images processed |",
             "|---|---|" + ("---|" if val else "") + ("---|" if best else "") + "---|---|---|---|---|"]
    for row in rows:
        r = row.value
        if row.skipped is not None:
            if row.role.startswith("baselines."):  # a skipped control is said in result.json; a skipped baseline in the table
                lines.append(f"| {row.label} | skipped |" + (" – |" if val else "") + (" – |" if best else "") + " – | – | – | – | – |")
            continue
        c = r.get("cost") or {"seconds": r.get("seconds", 0.0), "images_processed": r.get("images_processed", 0)}
        lr = (r.get("train") or {}).get("lr")
        v = r.get("val_acc_mean")
        val_cell = (" – |" if v is None else f" {100 * v:.2f} |") if val else ""
        best_cell = f" {_best_checkpoint_cell(r)} |" if best else ""
        lines.append(f"| {row.label} | {format_accuracy(r)} |{val_cell}{best_cell} {r['runs']} | {_network(r.get('model'))} | "
                     f"{'–' if lr is None else f'{lr:.4g}'} | {c['seconds']:.1f} | {format_count(c['images_processed'])} |")
    t = result["timings_s"]
    lines.append("")
    sel = [(row.label, name, s) for row in rows if row.skipped is None for name, s in (row.value.get("selection") or {}).items()
           if "precision" in s]
    if sel:
        lines.append("selections scored against the clean labels (precision: share kept whose label is correct; recall: share "
                     "of the correctly labelled kept; pseudo-labels: share of the labels a method gave that are the clean ones): "
                     + "; ".join(f"{label} {name}: {_pct(s['precision'])} / {_pct(s['recall'])}"
                                 + ("" if s.get("label_accuracy") is None else f", pseudo-labels {_pct(s['label_accuracy'])}")
                                 for label, name, s in sel))
    scores = result.get("dd_ranking")
    if scores:
        lines.append(f"DD-Ranking (w = {scores['weight']:g}): hard-label recovery {100 * scores['hard_label_recovery']:+.2f} points, "
                     f"improvement over random {100 * scores['improvement_over_random']:+.2f} points, "
                     f"label-robust score {scores['label_robust_score']:.2f}")
    for note in result.get("notes") or []:
        lines.append(f"note: {note}")
    if best:
        lines.append("test acc: final epoch (the headline). Best of checkpoints: the highest clean test accuracy over the "
                     "epochs tested (every evaluation.checkpoint_every epochs and the last), the epoch chosen on the test set "
                     "as DANCE and DD_LNL report it, so optimistic by construction.")
    keys = [k for k in ("baselines", "clean_first", "experts", "distill", "evaluate", "controls", "total") if k in t]
    lines.append("time (s): " + ", ".join(f"{k} {t[k]:.1f}" for k in keys) + f" | device {result.get('device', '?')}")
    return "\n".join(lines)
