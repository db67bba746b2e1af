"""Clean test accuracy per class of every training set a run evaluated, beside each class's size.

On a long-tailed training set (``--imbalance RHO``) a network trained on all of it tends to
lose its tail classes, while a distilled or random set holds the same IPC for every class;
the seed paper's finding is that distillation keeps the tail's few clean images only lossily.
This script puts those per-class figures side by side. It reads each run's ``result.json`` and
the noisy labels saved beside it (``noisy_labels.npy``: the class sizes the distillers saw).

    python scripts/per_class.py runs/lt/cells/*-ipc10/result.json
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ddlnl.errors import DdlnlError
from ddlnl.results import evaluated_rows, read_result


def head_tail(per_class, sizes, k: int = 3) -> tuple[float, float]:
    """Mean accuracy of the ``k`` largest and of the ``k`` smallest classes (by ``sizes``)."""
    order = np.argsort(-np.asarray(sizes), kind="stable")
    acc = np.asarray(per_class, dtype=float)
    return float(acc[order[:k]].mean()), float(acc[order[-k:]].mean())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", nargs="+", type=Path, help="result.json files of runs or study cells")
    args = ap.parse_args()
    runs = []
    for path in args.results:
        try:
            result = read_result(path)
        except DdlnlError as e:
            raise SystemExit(str(e)) from None
        labels = path.parent / "noisy_labels.npy"
        try:
            sizes = np.bincount(np.load(labels, allow_pickle=False))
        except (OSError, ValueError) as e:
            raise SystemExit(f"{path}: cannot read {labels.name} beside it ({e}); "
                             "pass the result.json of a finished run, in its run folder") from None
        runs.append((path, result, sizes))
    for path, result, sizes in runs:
        names = result.get("classes") or [str(c) for c in range(len(sizes))]
        print(f"\n{path.parent.name}: {result.get('dataset')}, imbalance {result.get('imbalance')}, "
              f"noise {(result.get('noise') or {}).get('type')} {(result.get('noise') or {}).get('nominal_rate')}")
        print("| training set | " + " | ".join(f"{n} ({s})" for n, s in zip(names, sizes)) + " | 3 largest | 3 smallest |")
        print("|---" * (len(sizes) + 3) + "|")
        for row in evaluated_rows(result):
            name, ev = row.label, row.value
            if "per_class" not in ev:
                continue  # a skipped stage
            per_class = ev["per_class"]
            head, tail = head_tail(per_class, sizes)
            print(f"| {name} | " + " | ".join(f"{100 * a:.1f}" for a in per_class) + f" | {100 * head:.1f} | {100 * tail:.1f} |")


if __name__ == "__main__":
    main()
