"""``ddlnl run``: one experiment from noisy labels to a result table.

Stages: realise the noise (saved), train the full-noisy-set baseline, build the random
control, distil with the chosen method, evaluate both sets with the common protocol, and
write ``result.json``. Each finished stage is saved atomically in the run folder and
skipped on a rerun with the same configuration, so an interrupted run resumes.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddlnl.baselines import train_full_noisy
from ddlnl.data.noise import NoiseSpec
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.errors import ConfigError
from ddlnl.evaluate import EvalResult, evaluate_set
from ddlnl.experiment import PreparedData, prepare_data, save_noise
from ddlnl.presets import apply_overrides, load_preset
from ddlnl.synset import SyntheticSet
from ddlnl.train import TrainConfig
from ddlnl.utils.io import write_json
from ddlnl.utils.runtime import machine, resolve_device, seed_everything, versions


@dataclass
class RunConfig:
    dataset: str = "cifar10"
    noise: str = "symmetric"
    rate: float = 0.4
    method: str = "dm"
    ipc: int = 10
    preset: str = "quick"
    out: str = "runs/demo"
    seed: int = 0
    noise_seed: int | None = None  # defaults to seed
    data_root: str | None = None
    imbalance: float | None = None
    device: str | None = None
    overrides: list[str] = field(default_factory=list)
    progress: bool = True


def _key(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


class Stage:
    """A saved step of a run: reused when its key matches, recomputed otherwise."""

    def __init__(self, folder: Path, name: str, key_obj):
        self.path = folder / "stages" / f"{name}.json"
        self.key = _key(key_obj)

    def load(self) -> dict | None:
        if self.path.exists():
            saved = json.loads(self.path.read_text())
            if saved.get("key") == self.key:
                return saved["value"]
        return None

    def save(self, value) -> None:
        write_json(self.path, {"key": self.key, "value": value})


def eval_synset(synset: SyntheticSet, data: PreparedData, preset: dict, device, seed: int, progress: bool, desc: str) -> EvalResult:
    """The common evaluation protocol applied to a synthetic (or random real) set."""
    ev = preset["evaluation"]
    lr_override = {"lr": synset.lr} if ev.get("use_learned_lr", True) and synset.lr is not None else {}
    return evaluate_set(
        synset.images,
        synset.labels,
        test_images=data.x_test,
        test_labels=data.y_test,
        num_classes=data.num_classes,
        model=preset["model"],
        train=TrainConfig.from_dict(ev["train"], **lr_override),
        runs=ev.get("runs", 1),
        seed=seed,
        device=device,
        progress=progress,
        desc=desc,
    )


def _summary(r: EvalResult) -> dict:
    d = r.to_dict()
    return {"acc_mean": d["acc_mean"], "acc_std": d["acc_std"], "runs": d["runs"], "per_class": d["per_class"]} | {
        k: d[k] for k in ("accs", "confusion", "seconds", "images_processed", "train", "model")
    }


def run_experiment(cfg: RunConfig, log=print) -> dict:
    """Run one experiment and return the result dictionary (also written to ``out/result.json``)."""
    t0 = time.perf_counter()
    out = Path(cfg.out)
    preset, applied = apply_overrides(load_preset(cfg.preset), cfg.overrides)
    if cfg.method not in preset["methods"]:
        raise ConfigError(
            f"preset {preset['name']!r} has no settings for method {cfg.method!r}",
            f"use one of: {', '.join(sorted(preset['methods']))}",
        )
    if cfg.method == "random":
        raise ConfigError("'random' is the control shown beside every method", "choose a distillation method such as --method dm")
    device = resolve_device(cfg.device)
    distiller = create_distiller(cfg.method, **(preset["methods"][cfg.method] or {}))
    random_ctrl = create_distiller("random", **(preset["methods"].get("random") or {}))
    noise = NoiseSpec(cfg.noise, cfg.rate, cfg.seed if cfg.noise_seed is None else cfg.noise_seed)
    seed_everything(cfg.seed)
    config = {
        "dataset": cfg.dataset, "noise": noise.__dict__, "method": cfg.method, "ipc": cfg.ipc, "preset": preset["name"],
        "preset_version": preset.get("version"), "overrides": applied, "seed": cfg.seed, "imbalance": cfg.imbalance,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config | {"resolved_preset": preset, "device": str(device)})

    log(f"[ddlnl] loading {cfg.dataset} and realising {noise.slug} noise")
    data = prepare_data(cfg.dataset, noise, preset, data_root=cfg.data_root, imbalance=cfg.imbalance, seed=cfg.seed, saved_noise=out)
    save_noise(out, data)
    log(f"[ddlnl] {len(data.splits.train)} training images, {len(data.splits.test)} test images, "
        f"noise {noise.type}: nominal {data.noisy.nominal_rate:.4f}, actual {data.noisy.actual_rate:.4f}")
    base_key = {k: config[k] for k in ("dataset", "noise", "seed", "imbalance")} | {
        "data": preset["data"], "preprocess": preset["preprocess"], "model": preset["model"]}
    timings = {"experts": 0.0, "distill": 0.0, "evaluate": 0.0, "baselines": 0.0}

    # -- full noisy baseline ---------------------------------------------------------------
    stage = Stage(out, "full_noisy", base_key | {"baseline": preset["baseline"]})
    full = stage.load()
    if full is None:
        log("[ddlnl] training on the full noisy set")
        full = _summary(train_full_noisy(data, preset, device=device, seed=cfg.seed, progress=cfg.progress))
        stage.save(full)
    timings["baselines"] += full["seconds"]

    # -- random control and distilled set --------------------------------------------------
    results = {"full_noisy": full}
    for role, dist in (("random", random_ctrl), ("distilled", distiller)):
        stage = Stage(out, role, base_key | {"method": dist.name, "options": dist.options_dict(), "ipc": cfg.ipc,
                                              "evaluation": preset["evaluation"]})
        saved = stage.load()
        if saved is None:
            log(f"[ddlnl] {'distilling with ' + dist.name if role == 'distilled' else 'drawing the random control'} (IPC {cfg.ipc})")
            ctx = DistillContext(cfg.dataset, data.x_train, data.noisy.labels, data.num_classes, data.preprocess,
                                 preset["model"], device, cfg.seed, progress=cfg.progress, log=log)
            synset = dist.run(ctx, cfg.ipc)
            synset.meta.update(_synset_meta(config, data, preset))
            synset.save(out / f"{role}.safetensors")
            log(f"[ddlnl] evaluating the {role} set ({preset['evaluation'].get('runs', 1)} runs)")
            ev = eval_synset(synset, data, preset, device, cfg.seed, cfg.progress, role)
            saved = _summary(ev) | {"timings": {"experts": ctx.timings.get("experts", 0.0), "distill": ctx.timings.get("distill", 0.0)},
                                    "label_kind": synset.label_kind, "synset": f"{role}.safetensors"}
            stage.save(saved)
        results[role] = saved
        timings["evaluate"] += saved["seconds"]
        if role == "distilled":
            timings["experts"] += saved["timings"]["experts"]
            timings["distill"] += saved["timings"]["distill"]

    timings["total"] = time.perf_counter() - t0
    result = {
        "dataset": cfg.dataset,
        "noise": {"type": noise.type, "nominal_rate": data.noisy.nominal_rate, "actual_rate": data.noisy.actual_rate, "seed": noise.seed},
        "method": cfg.method,
        "ipc": cfg.ipc,
        "preset": preset["name"],
        "preset_version": preset.get("version"),
        "overrides": applied,
        "seed": cfg.seed,
        "imbalance": cfg.imbalance,
        "num_train": len(data.splits.train),
        "num_test": len(data.splits.test),
        "classes": list(data.splits.train.classes),
        "results": results,
        "timings_s": timings,
        "device": str(device),
        "machine": machine(),
        "versions": versions(),
    }
    write_json(out / "result.json", result)
    return result


def _synset_meta(config: dict, data: PreparedData, preset: dict) -> dict:
    return {
        "dataset": config["dataset"],
        "num_classes": data.num_classes,
        "classes": list(data.splits.train.classes),
        "image_size": int(data.x_train.shape[-1]),
        "noise": data.noisy.summary() | {"transition": None},
        "preset": preset["name"],
        "preset_version": preset.get("version"),
        "overrides": config["overrides"],
        "seed": config["seed"],
        "imbalance": config["imbalance"],
        "model": preset["model"],
        "versions": versions(),
    }


def format_result_table(result: dict) -> str:
    """A Markdown table: the three rows every experiment reports."""
    n = result["noise"]
    head = (f"{result['dataset']} | noise {n['type']} (nominal {n['nominal_rate']:.2f}, actual {n['actual_rate']:.4f}, "
            f"seed {n['seed']}) | {result['method']} IPC {result['ipc']} | preset {result['preset']}")
    rows = [("full noisy set (CE)", "full_noisy"), (f"random real, IPC {result['ipc']}", "random"),
            (f"{result['method']}, IPC {result['ipc']}", "distilled")]
    lines = [head, "", "| training set | test acc (%) | runs |", "|---|---|---|"]
    for label, key in rows:
        r = result["results"][key]
        lines.append(f"| {label} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['runs']} |")
    t = result["timings_s"]
    lines.append("")
    lines.append("time (s): " + ", ".join(f"{k} {t[k]:.1f}" for k in ("baselines", "experts", "distill", "evaluate", "total")))
    return "\n".join(lines)
