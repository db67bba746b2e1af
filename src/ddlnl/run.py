"""``ddlnl run``: one experiment from noisy labels to a result table.

Stages: realise the noise (saved), train the full-noisy-set baseline (CE) and any other
requested noisy-label baselines, build the random control, distil with the chosen method,
evaluate both sets with the common protocol, run the fairness controls on the distilled set
(hard labels, cross-architecture, the method's init-only set), and write ``result.json``.
Each finished stage is saved atomically in the run folder and skipped on a rerun with the
same configuration, so an interrupted run resumes. Every row records its cost: wall time,
images processed (forward passes) and the device.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddlnl.baselines import BaselineContext, BaselineUnavailable, create_baseline, parse_baselines, train_full_noisy
from ddlnl.data.noise import NoiseSpec
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.errors import ConfigError, DataError
from ddlnl.evaluate import EvalResult, evaluate_synthetic_set
from ddlnl.experiment import PreparedData, check_ipc, prepare_data, save_noise
from ddlnl.presets import apply_overrides, cross_arch_model, evaluation_for, load_preset, method_options
from ddlnl.synset import SyntheticSet
from ddlnl.utils.io import file_lock, write_json
from ddlnl.utils.runtime import machine, resolve_device, seed_everything, versions


@dataclass
class RunConfig:
    dataset: str = "cifar10"
    noise: str = "symmetric"
    rate: float = 0.4
    method: str = "datm"
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
    baselines: list[str] = field(default_factory=lambda: ["ce"])  # 'ce' (results.full_noisy) always runs
    eval_protocol: str = "common"  # or "native": the method's own recipe (methods.<name>.native_eval)
    checkpoint_every_s: float = 300.0  # distillation checkpoints (resume after a kill)


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


def eval_synset(synset: SyntheticSet, data: PreparedData, preset: dict, device, seed: int, progress: bool, desc: str,
                *, model: dict | None = None, labels: torch.Tensor | None = None) -> EvalResult:
    """The preset's evaluation protocol applied to a synthetic (or random real) set, decoded for training.

    ``model`` replaces the evaluation network (cross-architecture control); ``labels`` replace
    the set's labels (hard-label control)."""
    return evaluate_synthetic_set(synset, preset, test_images=data.x_test, test_labels=data.y_test,
                                  num_classes=data.num_classes, runs=preset["evaluation"].get("runs", 1), seed=seed,
                                  device=device, progress=progress, desc=desc, model=model, labels=labels)


def _summary(r: EvalResult) -> dict:
    d = r.to_dict()
    return {"acc_mean": d["acc_mean"], "acc_std": d["acc_std"], "runs": d["runs"], "per_class": d["per_class"]} | {
        k: d[k] for k in ("accs", "confusion", "seconds", "images_processed", "train", "model")
    }


def _cost(device, seconds: float, images: int, **breakdown) -> dict:
    """What a row cost: wall seconds, images processed (forward passes) and the device."""
    out = {"device": str(device), "seconds": float(seconds), "images_processed": int(images)}
    if breakdown:
        out["breakdown"] = breakdown
    return out


def _eval_key(preset: dict) -> dict:
    """The evaluation section as a stage key, without the control switches (toggling them reruns only the controls)."""
    return {k: v for k, v in preset["evaluation"].items() if k != "cross_arch"}


def _stage_suffix(preset: dict) -> str:
    """Evaluation stages of the native protocol are kept beside the common ones."""
    return "_native" if preset["evaluation"].get("protocol") == "native" else ""


def _baseline_plan(names: list[str], preset: dict) -> list:
    """Create the requested baselines (other than 'ce') from the preset's ``baselines:`` section."""
    section = preset.get("baselines") or {}
    plan = []
    for name in names:
        if name == "ce":
            continue
        if name not in section:
            raise ConfigError(f"preset {preset['name']!r} has no settings for baseline {name!r}",
                              f"add baselines.{name} to the preset, or use one of: {', '.join(sorted(section)) or 'ce'}")
        plan.append(create_baseline(name, **(section[name] or {})))
    return plan


def run_experiment(cfg: RunConfig, log=print) -> dict:
    """Run one experiment and return the result dictionary (also written to ``out/result.json``).

    One run at a time per run folder: a second run on the same folder is refused (its stages
    would be computed twice), whereas a rerun after the first ends resumes from its stages."""
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)

    def busy():
        raise ConfigError(f"another ddlnl run is using the run folder {out}",
                          "wait for it to finish (a rerun then resumes from its stages), or pass a different --out")

    with file_lock(out / ".run.lock", on_wait=busy):
        return _run_experiment(cfg, log)


def _run_experiment(cfg: RunConfig, log) -> dict:
    t0 = time.perf_counter()
    out = Path(cfg.out)
    preset, applied = apply_overrides(load_preset(cfg.preset), cfg.overrides)
    options = method_options(preset, cfg.method)
    preset["evaluation"] = evaluation_for(preset, cfg.method, cfg.eval_protocol)
    if cfg.method == "random":
        raise ConfigError("'random' is the control shown beside every method", "choose a distillation method such as --method dm")
    device = resolve_device(cfg.device)
    baseline_names = parse_baselines(cfg.baselines)
    if "ce" not in baseline_names:
        baseline_names.insert(0, "ce")
    plan = _baseline_plan(baseline_names, preset)
    distiller = create_distiller(cfg.method, **options)
    random_ctrl = create_distiller("random", **method_options(preset, "random") if "random" in preset["methods"] else {})
    noise = NoiseSpec(cfg.noise, cfg.rate, cfg.seed if cfg.noise_seed is None else cfg.noise_seed)
    seed_everything(cfg.seed)
    config = {
        "dataset": cfg.dataset, "noise": noise.__dict__, "method": cfg.method, "ipc": cfg.ipc, "preset": preset["name"],
        "preset_version": preset.get("version"), "overrides": applied, "seed": cfg.seed, "imbalance": cfg.imbalance,
        "baselines": baseline_names, "eval_protocol": cfg.eval_protocol,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", config | {"resolved_preset": preset, "device": str(device)})

    log(f"[ddlnl] loading {cfg.dataset} and realising {noise.slug} noise")
    data = prepare_data(cfg.dataset, noise, preset, data_root=cfg.data_root, imbalance=cfg.imbalance, seed=cfg.seed, saved_noise=out)
    save_noise(out, data)
    check_ipc(data.noisy.labels, data.num_classes, cfg.ipc)  # before any training
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
        full["cost"] = _cost(device, full["seconds"], full["images_processed"])
        stage.save(full)
    full.setdefault("cost", _cost(device, full["seconds"], full["images_processed"]))
    timings["baselines"] += full["seconds"]
    results = {"full_noisy": full, "baselines": {"ce": full}}

    # -- other noisy-label baselines on the same backbone and recipe ------------------------
    for b in plan:
        stage = Stage(out, f"baseline_{b.name}", base_key | {"baseline": preset["baseline"], "name": b.name, "options": b.options_dict()})
        saved = stage.load()
        if saved is None:
            try:
                b.check()
            except BaselineUnavailable as e:
                log(f"[ddlnl] skipping baseline {b.name}: {e.problem}; {e.fix}")
                results["baselines"][b.name] = {"skipped": e.problem, "fix": e.fix}
                continue
            log(f"[ddlnl] training baseline {b.name} on the full noisy set")
            bctx = BaselineContext(data, preset, device=device, seed=cfg.seed, progress=cfg.progress, log=log)
            ev = b.run(bctx)
            saved = _summary(ev) | {"options": b.options_dict(), "details": b.details,
                                    "cost": _cost(device, ev.seconds, ev.images_processed)}
            stage.save(saved)
        results["baselines"][b.name] = saved
        timings["baselines"] += saved["seconds"]

    # -- random control and distilled set: each made once (its own stage), then evaluated -----
    synsets: dict[str, SyntheticSet] = {}

    def load_set(role: str) -> SyntheticSet:
        if role not in synsets:
            synsets[role] = SyntheticSet.load(out / f"{role}.safetensors")
        return synsets[role]

    suffix = _stage_suffix(preset)
    for role, dist in (("random", random_ctrl), ("distilled", distiller)):
        set_key = base_key | {"method": dist.name, "options": dist.options_dict(), "ipc": cfg.ipc}
        stage = Stage(out, role + suffix, set_key | {"evaluation": _eval_key(preset)})
        saved = stage.load()
        if saved is None:
            made_stage = Stage(out, f"{role}_set", set_key)
            made = made_stage.load()
            if made is None or not (out / made["synset"]).exists():
                log(f"[ddlnl] {'distilling with ' + dist.name if role == 'distilled' else 'drawing the random control'} (IPC {cfg.ipc})")
                ctx = _distill_context(cfg, data, preset, device, log,
                                       checkpoint=out / "checkpoints" / f"{role}-{_key(set_key)}.pt")
                synset = dist.run(ctx, cfg.ipc)
                synset.meta.update(_synset_meta(config, data, preset))
                synset.save(out / f"{role}.safetensors")
                synsets[role] = synset
                made = {"timings": {"experts": ctx.timings.get("experts", 0.0), "distill": ctx.timings.get("distill", 0.0)},
                        "label_kind": synset.label_kind, "synset": f"{role}.safetensors",
                        "distill_images_processed": ctx.images_processed}
                made_stage.save(made)
                if ctx.checkpoint is not None:
                    ctx.checkpoint.unlink(missing_ok=True)
            synset = load_set(role)
            log(f"[ddlnl] evaluating the {role} set ({preset['evaluation'].get('runs', 1)} runs, {cfg.eval_protocol} protocol)")
            ev = eval_synset(synset, data, preset, device, cfg.seed, cfg.progress, role)
            dt, n_distill = made["timings"], made["distill_images_processed"]
            saved = _summary(ev) | {k: made[k] for k in ("timings", "label_kind", "synset", "distill_images_processed")}
            saved["protocol"] = cfg.eval_protocol
            saved["cost"] = _cost(device, dt["experts"] + dt["distill"] + ev.seconds, n_distill + ev.images_processed,
                                  distill_seconds=dt["experts"] + dt["distill"], distill_images_processed=n_distill,
                                  eval_seconds=ev.seconds, eval_images_processed=ev.images_processed)
            stage.save(saved)
        results[role] = saved
        timings["evaluate"] += saved["seconds"]
        if role == "distilled":
            timings["experts"] += saved["timings"]["experts"]
            timings["distill"] += saved["timings"]["distill"]

    # -- fairness controls on the distilled set ----------------------------------------------
    controls, seconds = _controls(cfg, config, preset, data, device, distiller, base_key, out, load_set, log)
    results["controls"] = controls
    timings["controls"] = seconds

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


def _controls(cfg: RunConfig, config: dict, preset: dict, data: PreparedData, device, distiller, base_key: dict, out: Path,
              load_set, log) -> tuple[dict, float]:
    """Hard-label, cross-architecture and init-only controls of the distilled set (each a saved stage)."""
    controls: dict = {"random_real": {"see": "results.random"}}
    seconds = 0.0
    set_key = base_key | {"method": distiller.name, "options": distiller.options_dict(), "ipc": cfg.ipc, "evaluation": _eval_key(preset)}

    def staged(name: str, key: dict, compute) -> dict:
        nonlocal seconds
        stage = Stage(out, f"control_{name}{_stage_suffix(preset)}", set_key | key)
        saved = stage.load()
        if saved is None:
            saved = compute()
            stage.save(saved)
        seconds += saved.get("seconds", 0.0)
        return saved

    def evaluated(ev: EvalResult, **extra) -> dict:
        return _summary(ev) | extra | {"cost": _cost(device, ev.seconds, ev.images_processed)}

    # hard labels: soft-label sets evaluated with their argmax labels
    distilled = load_set("distilled")
    if distilled.label_kind == "soft":
        def hard():
            log("[ddlnl] control: evaluating the distilled set with hard (argmax) labels")
            return evaluated(eval_synset(distilled, data, preset, device, cfg.seed, cfg.progress, "hard labels",
                                         labels=distilled.hard_labels()), label_kind="hard")
        controls["hard_labels"] = staged("hard_labels", {}, hard)
    else:
        controls["hard_labels"] = {"skipped": "the distilled set has hard labels: its main row is the hard-label evaluation"}

    # cross-architecture: the same sets trained on another network
    model = cross_arch_model(preset["evaluation"])
    if model is None:
        controls["cross_arch"] = {"skipped": "evaluation.cross_arch is null in this preset (set it to e.g. resnet18)"}
    else:
        cross = {"model": model}
        for role in ("random", "distilled"):
            def compute(role=role):
                log(f"[ddlnl] control: training {model['name']} on the {role} set")
                return evaluated(eval_synset(load_set(role), data, preset, device, cfg.seed, cfg.progress, f"{role} {model['name']}",
                                             model=model))
            cross[role] = staged(f"cross_arch_{role}", {"cross_model": model, "role": role}, compute)
        controls["cross_arch"] = cross

    # init-only: the method's own initialisation (e.g. DATM's correctly-predicted real images), no distillation
    init_only = getattr(distiller, "init_only", None)
    if callable(init_only):
        def compute_init():
            log(f"[ddlnl] control: {distiller.name}'s initialisation alone (no distillation)")
            ctx = _distill_context(cfg, data, preset, device, log)
            start = time.perf_counter()
            synset = init_only(ctx, cfg.ipc)
            build_s = time.perf_counter() - start
            synset.meta.update(_synset_meta(config, data, preset) | {"method": f"{distiller.name}:init_only", "ipc": cfg.ipc})
            synset.save(out / "init_only.safetensors")
            ev = eval_synset(synset, data, preset, device, cfg.seed, cfg.progress, "init only")
            row = evaluated(ev, label_kind=synset.label_kind, synset="init_only.safetensors", build_seconds=build_s,
                            build_images_processed=ctx.images_processed)
            row["cost"] = _cost(device, build_s + ev.seconds, ctx.images_processed + ev.images_processed,
                                distill_seconds=build_s, distill_images_processed=ctx.images_processed,
                                eval_seconds=ev.seconds, eval_images_processed=ev.images_processed)
            return row
        controls["init_only"] = staged("init_only", {}, compute_init)
    else:
        controls["init_only"] = {"skipped": f"method {distiller.name!r} has no init-only control"}
    return controls, seconds


def _distill_context(cfg: RunConfig, data: PreparedData, preset: dict, device, log, checkpoint: Path | None = None) -> DistillContext:
    return DistillContext(cfg.dataset, data.x_train, data.noisy.labels, data.num_classes, data.preprocess, preset["model"],
                          device, cfg.seed, progress=cfg.progress, log=log, noise={"type": cfg.noise, "rate": cfg.rate},
                          checkpoint=checkpoint, checkpoint_every_s=cfg.checkpoint_every_s)


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


def _count(n: int) -> str:
    n = int(n)
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e4 else str(n)


BASELINE_LABELS = {"gce": "full noisy set (GCE)", "sce": "full noisy set (SCE)", "coteaching": "full noisy set (Co-teaching)",
                   "dividemix": "full noisy set (DivideMix)", "cleanlab": "cleanlab-pruned set (CE)"}


def read_result(path: str | Path) -> dict:
    """A finished run's ``result.json`` (parsed as JSON, never executed), checked to have what
    :func:`result_rows` reads; a DataError that names the file otherwise."""
    fix = "pass the result.json of a finished run (ddlnl run, or a study cell's folder)"
    try:
        result = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read it as JSON ({e})", fix) from None
    missing = [k for k in ("method", "ipc", "results") if not isinstance(result, dict) or k not in result]
    if not missing:
        res = result["results"]
        missing = [f"results.{k}" for k in ("full_noisy", "random", "distilled")
                   if not isinstance(res, dict) or not isinstance(res.get(k), dict)]
    if missing:
        raise DataError(f"{path}: not a ddlnl result.json (no {', '.join(missing)})", fix)
    return result


def result_rows(result: dict) -> list[tuple[str, dict]]:
    """(label, evaluation) of every training set a result.json evaluated, in table order:
    baselines, the random control, the distilled set and its controls (skipped ones included)."""
    res, ipc = result["results"], result["ipc"]
    rows = [("full noisy set (CE)", res["full_noisy"])]
    for name, r in (res.get("baselines") or {}).items():
        if name != "ce":
            rows.append((BASELINE_LABELS.get(name, f"baseline {name}"), r))
    rows += [(f"random real, IPC {ipc}", res["random"]), (f"{result['method']}, IPC {ipc}", res["distilled"])]
    ctrl = res.get("controls") or {}
    if "skipped" not in ctrl.get("hard_labels", {"skipped": 1}):
        rows.append((f"{result['method']}, IPC {ipc}, hard labels (control)", ctrl["hard_labels"]))
    cross = ctrl.get("cross_arch") or {}
    if "skipped" not in cross and cross:
        arch = cross["model"]["name"]
        rows += [(f"random real, IPC {ipc}, {arch} (control)", cross["random"]),
                 (f"{result['method']}, IPC {ipc}, {arch} (control)", cross["distilled"])]
    if "skipped" not in ctrl.get("init_only", {"skipped": 1}):
        rows.append((f"{result['method']} init only, IPC {ipc} (control)", ctrl["init_only"]))
    return rows


def format_result_table(result: dict) -> str:
    """A Markdown table: baselines, the random control, the distilled set and its controls, with their cost."""
    n = result["noise"]
    head = (f"{result['dataset']} | noise {n['type']} (nominal {n['nominal_rate']:.2f}, actual {n['actual_rate']:.4f}, "
            f"seed {n['seed']}) | {result['method']} IPC {result['ipc']} | preset {result['preset']}")
    lines = [head, "", "| training set | test acc (%) | runs | cost (s) | images processed |", "|---|---|---|---|---|"]
    for label, r in result_rows(result):
        if "skipped" in r:
            lines.append(f"| {label} | skipped | – | – | – |")
            continue
        c = r.get("cost") or {"seconds": r.get("seconds", 0.0), "images_processed": r.get("images_processed", 0)}
        lines.append(f"| {label} | {100 * r['acc_mean']:.2f} ± {100 * r['acc_std']:.2f} | {r['runs']} | "
                     f"{c['seconds']:.1f} | {_count(c['images_processed'])} |")
    t = result["timings_s"]
    lines.append("")
    keys = [k for k in ("baselines", "experts", "distill", "evaluate", "controls", "total") if k in t]
    lines.append("time (s): " + ", ".join(f"{k} {t[k]:.1f}" for k in keys) + f" | device {result.get('device', '?')}")
    return "\n".join(lines)
