"""A study report's rows: finished cells read from the results database, named in words, and pooled
over seeds (:func:`aggregate`); the one place that says how a cell is grouped and named."""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path

import numpy as np

from ddlnl.data.noise import HUMAN_NOISE, NoiseSpec, takes_rate
from ddlnl.errors import ConfigError

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


def noise_of(c) -> NoiseSpec:
    return NoiseSpec(c["noise"], c["rate"])


def noise_family(c) -> str:
    return "human" if noise_of(c).is_human else c["noise"]


def noise_level(c) -> str:
    """The noise level within its family: ``0.4``, or the label set's name."""
    n = noise_of(c)
    return f"{n.rate:g}" if n.takes_rate else n.type


def noise_slug(c) -> str:
    return noise_of(c).name


def realised_rate(cells) -> float:
    rates = [c["actual_rate"] for c in cells if c.get("actual_rate") is not None]
    return float(np.mean(rates)) if rates else float(cells[0]["rate"])


def setting_of(c) -> tuple:
    return (c["dataset"], c["imbalance"], c["preset"])


def setting_slug(s) -> str:
    ds, imb, preset = s
    return f"{ds}{f'-lt{imb:g}' if imb is not None else ''}-{Path(preset).stem}"


def seed_interval(means: list[float]) -> float | None:
    """Half-width of the 95 % t-interval of the mean over seeds (one value per seed); None for one seed."""
    from scipy.stats import t  # scipy comes with scikit-learn; imported here to keep `ddlnl` start-up light

    k = len(means)
    if k < 2:
        return None
    return float(t.ppf(0.975, k - 1) * np.std(means, ddof=1) / np.sqrt(k))


def pool_runs(evals: list[dict]) -> dict:
    """Every evaluation run of ``evals`` (one per seed) pooled: mean, std and count of runs, and
    the 95 % interval of the mean over seeds (each seed's mean, so seeds weigh equally)."""
    accs = [a for e in evals for a in (e["accs"] or [e["acc_mean"]])]
    if not accs:
        return None
    return {"mean": float(np.mean(accs)), "std": float(np.std(accs)), "n": len(accs), "seeds": len(evals),
            "ci95": seed_interval([float(e["acc_mean"]) for e in evals])}


def cell_result(c: dict) -> dict | None:
    """A finished cell's result.json (what the database does not hold: selections, histories), or None."""
    path = c.get("result_path")
    if "_result" not in c:
        try:
            c["_result"] = json.loads(Path(path).read_text()) if path else None
        except (OSError, ValueError):
            c["_result"] = None
    return c["_result"]


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
        groups[setting_of(c) + (c["noise"], c["rate"], c["method"], c["ipc"])].append(c)
    baseline_by_noise = defaultdict(dict)
    for c in rows:
        if "full_noisy" in c["evals"]:
            baseline_by_noise[setting_of(c) + (c["noise"], c["rate"])].setdefault(c["cell_group"], c["evals"]["full_noisy"])
    out = []
    for key, cells in groups.items():
        ds, imb, preset, noise, rate, method, ipc = key
        row = {"dataset": ds, "imbalance": imb, "preset": preset, "noise": noise, "rate": rate, "actual_rate": realised_rate(cells),
               "method": method, "ipc": ipc, "seeds": len({c["seed"] for c in cells}), "cells": cells}
        pools = {"full_noisy": pool_runs(list(baseline_by_noise[key[:5]].values())),
                 "random": pool_runs([e for c in cells if (e := recipe_lr_random(c)) is not None]),
                 "distilled": pool_runs([c["evals"]["distilled"] for c in cells if "distilled" in c["evals"]])}
        for role, p in pools.items():
            row[role] = p
        out.append(row)
    out.sort(key=lambda r: (r["dataset"], r["imbalance"] or 0, r["preset"], noise_family(r), r["rate"], r["noise"], r["method"], r["ipc"]))
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
    keep :func:`setting_slug`'s slug."""
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


def cell_title(c: dict) -> str:
    """A cell in words on two lines, for figures of one cell: ``CIFAR-10, quick preset, symmetric 40 %`` / ``dm IPC 10``."""
    return f"{setting_title(setting_of(c))}, {noise_title(c['dataset'], c['noise'], c['rate'])}\n{c['method']} IPC {c['ipc']}"


def family_title(dataset: str, family: str) -> str:
    """A noise family in words: ``symmetric noise``, ``CIFAR-10N human labels``."""
    if family == "human":
        return f"{HUMAN_SET_TITLES.get(dataset, 'CIFAR-N')} human labels"
    return "clean labels" if family == "clean" else f"{NOISE_TITLES.get(family, family)} noise"


