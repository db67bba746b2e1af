"""How much of an asymmetric noise model's class flips a trained network reproduces.

Asymmetric noise relabels a share of some source classes as a fixed target class (CIFAR-10:
truck -> automobile, bird -> airplane, cat <-> dog, deer -> horse). A training set that
removes the noise leaves test images of a source class predicted as that class; one that
*absorbs* it (the seed paper's finding for distilled sets) predicts them as the target. This
script reads the confusion matrices a run stores in ``result.json`` (``ddlnl run`` or a study
cell) and prints, for each evaluated training set, its clean accuracy, its accuracy on the
source classes and on the others, and the share of source-class test images it predicts as
the flip target.

    python scripts/flip_confusion.py runs/asym/cells/*/result.json
    python scripts/flip_confusion.py --over-seeds runs/findings/cells/cifar10-asymmetric-0.4-seed*-quick-datm-ipc10/result.json

``--over-seeds`` prints one line per training set instead of one per run: each figure's mean
over the runs given (one per seed) and the half-width of its 95 % t-interval.

Only CIFAR-10's flip table is known (``ddlnl.data.noise.CIFAR10_ASYMMETRIC_FLIPS``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ddlnl.data.noise import CIFAR10_ASYMMETRIC_FLIPS
from ddlnl.errors import DdlnlError
from ddlnl.results import evaluated_rows
from ddlnl.results import read_result as load_result


def flip_profile(confusion, flips: dict[int, int]) -> dict:
    """Accuracy overall, on the flips' source classes and on the rest, and the share of
    source-class test images predicted as their flip target (rows: true class)."""
    c = np.asarray(confusion, dtype=float)
    src = sorted(flips)
    rest = [k for k in range(len(c)) if k not in flips]
    per_class = np.diag(c) / c.sum(1)
    to_target = sum(c[s, flips[s]] for s in src) / sum(c[s].sum() for s in src)
    return {"acc": float(np.trace(c) / c.sum()), "acc_source": float(per_class[src].mean()),
            "acc_rest": float(per_class[rest].mean()) if rest else float("nan"), "to_target": float(to_target)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="result.json files of runs or study cells")
    ap.add_argument("--over-seeds", action="store_true",
                    help="one line per training set: mean over the given runs (one per seed) and 95 %% t-interval")
    args = ap.parse_args()
    results = [(path, read_result(path)) for path in args.results]
    if args.over_seeds:
        print_over_seeds(results)
        return
    print("| run | noise | training set | test acc (%) | acc on flipped classes (%) | acc on the others (%) "
          "| flipped-class test images predicted as the flip target (%) |")
    print("|---|---|---|---|---|---|---|")
    for path, result in results:
        label = noise_label(result)
        for row in evaluated_rows(result):
            name, ev = row.label, row.value
            if "confusion" not in ev:
                continue  # a skipped stage
            p = flip_profile(ev["confusion"], CIFAR10_ASYMMETRIC_FLIPS)
            print(f"| {path.parent.name} | {label} | {name} | {100 * p['acc']:.2f} | {100 * p['acc_source']:.2f} "
                  f"| {100 * p['acc_rest']:.2f} | {100 * p['to_target']:.2f} |")


def print_over_seeds(results: list[tuple[Path, dict]]) -> None:
    """Each training set's flip profile, averaged over the runs that hold it (seeds of one cell)."""
    from ddlnl.study.report.rows import seed_interval

    profiles: dict[tuple[str, str, str], dict[int, dict]] = {}
    for _, result in results:
        label = noise_label(result)
        for row in evaluated_rows(result, include_skipped=False):
            per_seed = profiles.setdefault((label, result["method"], row.label), {})  # a row's lr is its cell's
            if result["seed"] in per_seed:
                raise SystemExit(f"two runs of seed {result['seed']} hold {row.label!r}: give one run per seed")
            per_seed[result["seed"]] = flip_profile(row.value["confusion"], CIFAR10_ASYMMETRIC_FLIPS)
    print("| noise | cell's method | training set | seeds | test acc (%) | acc on flipped classes (%) | acc on the others (%) "
          "| flipped-class test images predicted as the flip target (%) |")
    print("|---|---|---|---|---|---|---|---|")

    def cell(values: list[float]) -> str:
        half = seed_interval(values)
        return f"{100 * np.mean(values):.2f}" + ("" if half is None else f" ± {100 * half:.2f}")

    for (label, method, name), per_seed in profiles.items():
        seeds = sorted(per_seed)
        figures = [cell([per_seed[s][k] for s in seeds]) for k in ("acc", "acc_source", "acc_rest", "to_target")]
        print(f"| {label} | {method} | {name} | {', '.join(map(str, seeds))} | " + " | ".join(figures) + " |")


def noise_label(result: dict) -> str:
    """The run's noise as a table shows it, e.g. ``asymmetric 0.4``."""
    noise = result.get("noise") or {}
    return f"{noise.get('type')} {noise.get('nominal_rate', '')}".strip()


def read_result(path: Path) -> dict:
    """A CIFAR-10 result.json, or exit with what is wrong with the file."""
    try:
        result = load_result(path)
    except DdlnlError as e:
        raise SystemExit(str(e)) from None
    if result.get("dataset") != "cifar10":
        raise SystemExit(f"{path}: dataset {result.get('dataset')!r}; only CIFAR-10's flip table is known")
    return result


if __name__ == "__main__":
    main()
