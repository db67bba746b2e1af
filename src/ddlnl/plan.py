"""What a run will cost, before it runs: ``ddlnl run --dry-run``.

:func:`plan` counts, from an :class:`~ddlnl.spec.ExperimentSpec` alone, the work of every stage
``ddlnl run`` would execute (:mod:`ddlnl.run`): the noisy-label baselines, the experts, the
distillation, and each evaluation (the distilled set, the random control, and the controls the
method's capabilities ask for). Work is counted in *images processed*: one image through the
network, forward and backward, for a training step, forward only for the real images a
distribution matcher embeds. Nothing is trained, and the image data is not read: the training
set's size comes from the known sizes of the built-in datasets (:data:`KNOWN_DATASETS`), after
the preset's ``train_per_class``, the long tail of ``--imbalance`` and ``data.validation``.

Times: images processed divided by a throughput that was **measured** and is written in the
docs (:data:`FIGURES`; each entry cites its page, section and date). A stage without a figure
for its network and recipe says ``not measured``; no figure is invented. A figure measured at
another configuration of the same network and recipe (another IPC, number of steps, batch) is
scaled by images processed and marked ``~`` with what differs. The totals add the stages that
have a time and say how many have none.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, is_dataclass

import numpy as np

from ddlnl.distill.datm import DATM
from ddlnl.data.imagefolder import IMAGE_EXTENSIONS, folder_path
from ddlnl.data.longtail import longtail_counts
from ddlnl.data.registry import resolve_data_root
from ddlnl.errors import ConfigError
from ddlnl.models import model_spec
from ddlnl.presets import cross_arch_model
from ddlnl.results import format_count
from ddlnl.spec import ExperimentSpec

# Built-in datasets: (training images per class, classes, image side in pixels) of the official
# training splits (ddlnl.data.cifar, ddlnl.data.tiny). A dry run needs no file for these.
KNOWN_DATASETS: dict[str, tuple[int, int, int]] = {
    "cifar10": (5000, 10, 32),
    "cifar100": (500, 100, 32),
    "cifar100_coarse": (2500, 20, 32),
    "tinyimagenet": (500, 200, 64),
}

DEVICES = {"h100": "one NVIDIA H100", "cpu": "2-core CPU"}
NOT_MEASURED = "not measured"

# Baselines that train two networks per run (each image passes through both).
NETWORKS_PER_RUN = {"coteaching": 2, "dividemix": 2}


# --------------------------------------------------------------------------- measured figures


@dataclass(frozen=True)
class Figure:
    """One measured throughput: ``images`` processed (counted as :func:`plan` counts them) in ``seconds``.

    ``match``: what must equal the cell's values for the figure to apply at all (the network,
    the kind of step). ``shape``: the configuration it was measured at; a cell that differs is
    scaled by images processed and marked as extrapolated."""

    device: str  # "h100" | "cpu"
    stage: str  # "baseline" | "experts" | "distill" | "evaluate"
    methods: tuple  # distill: the methods it was measured with; () for the other stages
    match: dict
    shape: dict
    images: float
    seconds: float
    source: str  # the docs page, section and date it was written from
    note: str = ""

    @property
    def images_per_s(self) -> float:
        return self.images / self.seconds


W128 = ("convnet", 128, 3, "instance")  # the paper preset's ConvNet-3
W64 = ("convnet", 64, 3, "instance")  # the quick preset's
GPU3 = "docs/gpu.md §3 (paper preset, one H100, 2026-11-25)"
GPU2 = "docs/gpu.md §2 (quick preset version 1, one H100, 2026-11-25)"
BENCH_MODELS = "docs/benchmarks.md, bench_models.py (2-core CPU, 2026-11-25)"
BENCH_EVAL = "docs/benchmarks.md, bench_evaluation.py (2-core CPU, 2026-12-01)"
BENCH_MATCH = "docs/benchmarks.md, bench_matching.py (2-core CPU, 2026-12-01)"
BENCH_COMPONENTS = "docs/benchmarks.md, components of the quick preset (2-core CPU; undated there)"


def _eval_shape(set_size, compile_, batch=256, augment="dsa"):
    return {"set_size": set_size, "batch": batch, "augment": augment, "compile": compile_}


FIGURES: tuple[Figure, ...] = (
    # ---- one H100, paper preset (CIFAR-10, 40 % symmetric, IPC 10); docs/gpu.md §3, 2026-11-25
    Figure("h100", "baseline", (), {"baseline": "ce", "net": W128, "px": 32},
           {"batch": 128, "augment": "crop_flip", "compile": True}, 100 * 50_000, 234.0, GPU3,
           "CE, 100 epochs, 1 run; a second CE job shared the GPU"),
    Figure("h100", "evaluate", (), {"net": W128, "px": 32}, _eval_shape(100, False), 5 * 1000 * 100, 26.6, GPU3,
           "random control, 5 runs x 1,000 epochs; a second CE job shared the GPU"),
    Figure("h100", "experts", (), {"recipe": "trajectory-gsam", "net": W128, "px": 32}, {"batch": 256, "compile": False},
           22 * 50_000, 66.6, GPU3, "one 22-epoch GSAM expert; a CE job and DANCE experts shared the GPU"),
    Figure("h100", "experts", (), {"recipe": "trajectory-sgd", "net": W128, "px": 32}, {"batch": 256, "compile": False},
           22 * 50_000, 39.1, GPU3, "one 22-epoch SGD expert; DANCE experts and a DM run shared the GPU"),
    Figure("h100", "experts", (), {"recipe": "dance", "net": W128, "px": 32}, {"batch": 64, "compile": False},
           60 * 50_000, 352.0, GPU3, "one 60-epoch DANCE expert; a CE job and timing jobs shared the GPU"),
    Figure("h100", "distill", ("dance",), {"net": W128, "px": 32},
           {"ipc": 10, "classes": 10, "batch_real": 128, "batch_syn_max": 200, "factor": 2, "iter_calib": 1},
           100 * 10 * (128 + 2 * 40), 20.8, GPU3, "100 iterations in 20.8 s (0.21 s/it), alone on the GPU"),
    Figure("h100", "distill", ("dm",), {"net": W128, "px": 32}, {"ipc": 10, "classes": 10, "batch_real": 256},
           300 * (100 + 10 * 256), 102.4, GPU3, "300 iterations in 102.4 s (0.34 s/it); a second DM run shared the GPU"),
    Figure("h100", "distill", ("rcig",), {"rcig_net": (128, None, True), "px": 32, "formulation": "jvp", "solvers": ("adam", "adam")},
           {"ipc": 10, "classes": 10, "inner_steps": 20, "hinv_steps": 20, "batch_real": 1024, "use_flip": True, "pool_size": 30},
           40 * (20 * 200 + 1024), 40 * 0.59, GPU3,
           "0.46-0.59 s/it over 40 iterations, the upper end used; a CE job and DANCE experts shared the GPU"),
    Figure("h100", "distill", ("datm",), {"net": W128, "px": 32, "mode": "exact", "compile": False},
           {"ipc": 10, "classes": 10, "syn_steps": 80, "batch_syn": 100},
           40 * 80 * 100, 79.6, GPU3, "40 iterations in 79.6 s with set-up (<= 2 s/it); DANCE experts shared the GPU"),
    Figure("h100", "distill", ("mtt",), {"net": W128, "px": 32, "mode": "exact", "compile": False},
           {"ipc": 10, "classes": 10, "syn_steps": 30, "batch_syn": 100},
           40 * 30 * 100, 31.9, GPU3, "40 iterations in 31.9 s; DANCE experts and a DM run shared the GPU"),
    # ---- one H100, quick preset version 1 (DM main job, alone on the GPU); docs/gpu.md §2, 2026-11-25
    Figure("h100", "baseline", (), {"baseline": "ce", "net": W64, "px": 32},
           {"batch": 128, "augment": "crop_flip", "compile": True}, 3 * 50_000, 27.2, GPU2,
           "CE, 3 epochs, 1 run, compile and test included; alone on the GPU"),
    Figure("h100", "evaluate", (), {"net": W64, "px": 32}, _eval_shape(100, False), 3 * 500 * 100, 6.8, GPU2,
           "random control, 3 runs x 500 epochs, eager (quick version 1); alone on the GPU"),
    Figure("h100", "distill", ("dm",), {"net": W64, "px": 32}, {"ipc": 10, "classes": 10, "batch_real": 64},
           400 * (100 + 10 * 64), 17.9, GPU2, "400 iterations in 17.9 s; alone on the GPU"),
    # ---- the project's 2-core CPU (AMD EPYC Zen 4, idle)
    *(Figure("cpu", stage, (), {"net": W128, "px": 32} | extra, {"batch": 256, "augment": "none", "compile": comp},
             256, secs, BENCH_MODELS, f"ConvNet-3 w128 train step without augmentation, {'compiled' if comp else 'eager'}, "
                                      f"{secs * 1000:.0f} ms per 256-image step")
      for stage, extra in (("evaluate", {}), ("baseline", {"baseline": "ce"})) for comp, secs in ((False, 0.919), (True, 0.514))),
    Figure("cpu", "baseline", (), {"baseline": "ce", "net": W64, "px": 32}, {"batch": 128, "augment": "crop_flip", "compile": True},
           3 * 50_000, 111.0, "docs/benchmarks.md, bench_models.py section (2-core CPU, 2026-11-25)",
           "the quick main job's CE baseline, 3 epochs, compile and test included"),
    Figure("cpu", "baseline", (), {"baseline": "ce", "net": W64, "px": 32}, {"batch": 128, "augment": "crop_flip", "compile": False},
           10_000, 13.6, BENCH_COMPONENTS, "10,000 training images, eager"),
    # bench_evaluation.py: seconds per epoch (steady) by set size, width-64 ConvNet-3, batch 256, DSA
    *(Figure("cpu", "evaluate", (), {"net": W64, "px": 32}, _eval_shape(n, comp), n, s, BENCH_EVAL,
             f"{s} s per epoch over {n} images, {'compiled' if comp else 'eager'}")
      for comp, rows in ((False, ((10, 0.013), (100, 0.075), (400, 0.395), (500, 0.507))),
                         (True, ((10, 0.009), (100, 0.054), (400, 0.196), (500, 0.256))))
      for n, s in rows),
    Figure("cpu", "distill", ("mtt", "datm"), {"net": W128, "px": 32, "mode": "exact", "compile": False},
           {"ipc": 10, "classes": 10, "syn_steps": 20, "batch_syn": 100}, 20 * 100, 22.84, BENCH_MATCH,
           "22.84 s per iteration, eager, soft labels off"),
    Figure("cpu", "distill", ("mtt", "datm"), {"net": W128, "px": 32, "mode": "exact", "compile": True},
           {"ipc": 10, "classes": 10, "syn_steps": 20, "batch_syn": 100}, 20 * 100, 13.08, BENCH_MATCH,
           "13.08 s per iteration, compiled steps, soft labels off"),
    Figure("cpu", "distill", ("mtt", "datm"), {"net": W128, "px": 32, "mode": "exact", "compile": True},
           {"ipc": 10, "classes": 10, "syn_steps": 40, "batch_syn": 100}, 40 * 100, 23.86, BENCH_MATCH,
           "23.86 s per iteration, compiled steps, soft labels off"),
    Figure("cpu", "distill", ("datm",), {"net": W64, "px": 32, "mode": "exact", "compile": True},
           {"ipc": 10, "classes": 10, "syn_steps": 10, "batch_syn": 50}, 300 * 10 * 50, 240.1,
           "docs/datm.md, current figures: quick preset version 5 (2-core CPU, 2026-12-01)",
           "300 iterations in 240.1 s (0.8 s/it), compile included"),
    Figure("cpu", "experts", (), {"recipe": "trajectory-sgd", "net": W64, "px": 32}, {"batch": 256, "compile": True},
           3 * 50_000, 79.0, "docs/results.md, main job, quick preset version 5 (2-core CPU, 2026-12-01)",
           "one 3-epoch expert, compiled"),
    Figure("cpu", "experts", (), {"recipe": "dance", "net": W64, "px": 32}, {"batch": 64, "compile": True},
           2 * 2 * 50_000, 41.6 + 35.9, "docs/dance.md, current figures (2-core CPU, 2026-12-01)",
           "two 2-epoch experts in 41.6 s and 35.9 s, compiled"),
    Figure("cpu", "distill", ("dance",), {"net": W64, "px": 32},
           {"ipc": 10, "classes": 10, "batch_real": 64, "batch_syn_max": 200, "factor": 2, "iter_calib": 1},
           150 * 10 * (64 + 2 * 40), 72.7, "docs/dance.md, current figures (2-core CPU, 2026-12-01)",
           "150 iterations in 72.7 s (0.48 s/it)"),
    Figure("cpu", "distill", ("rcig",), {"rcig_net": (16, None, True), "px": 32, "formulation": "vjp", "solvers": ("adam", "cg")},
           {"ipc": 10, "classes": 10, "inner_steps": 10, "hinv_steps": 10, "batch_real": 256, "use_flip": True, "pool_size": 10},
           80 * (10 * 200 + 256), 137.6, "docs/rcig.md, current figures: quick preset version 5 (2-core CPU, 2026-12-01)",
           "80 iterations in 137.6 s (1.7 s/it)"),
    Figure("cpu", "distill", ("dm",), {"net": W64, "px": 32}, {"ipc": 10, "classes": 10, "batch_real": 64},
           10 * (100 + 10 * 64), 5.6, BENCH_COMPONENTS, "10 iterations in 5.6 s"),
    Figure("cpu", "distill", ("dm",), {"net": W64, "px": 32}, {"ipc": 10, "classes": 10, "batch_real": 128},
           10 * (100 + 10 * 128), 10.6, BENCH_COMPONENTS, "10 iterations in 10.6 s"),
)


def _distance(shape: dict, measured: dict) -> tuple[float, list[str]]:
    """How far a cell's configuration is from a figure's: 1 per differing key plus |log ratio| of numbers."""
    d, differs = 0.0, []
    for k, v in measured.items():
        mine = shape.get(k)
        if mine == v:
            continue
        differs.append(f"{k} {v}->{mine}")
        d += 1.0
        if isinstance(mine, (int, float)) and isinstance(v, (int, float)) and not isinstance(mine, bool) and mine > 0 and v > 0:
            d += abs(math.log(mine / v))
    return d, differs


def find_figure(device: str, stage: str, method: str | None, match: dict, shape: dict) -> tuple[Figure | None, list[str]]:
    """The closest measured figure for a stage (None: not measured), and how the cell differs from it."""
    best, best_d, best_diff = None, math.inf, []
    for f in FIGURES:
        if f.device != device or f.stage != stage or (f.methods and method not in f.methods):
            continue
        if any(match.get(k) != v for k, v in f.match.items()) or set(match) - set(f.match):
            continue
        d, differs = _distance(shape, f.shape)
        if d < best_d:
            best, best_d, best_diff = f, d, differs
    return best, best_diff


# --------------------------------------------------------------------------- the plan


@dataclass
class TrainingSet:
    """The training set's size as a run would see it, without reading the images (when possible)."""

    images: int | None
    per_class: list[int] | None
    classes: int | None
    image_size: int | None
    how: str  # where the size came from, or why it is unknown


@dataclass
class Stage:
    stage: str  # baseline | experts | distill | evaluate | control
    name: str
    work: str
    images: int | None
    match: dict = field(default_factory=dict)
    shape: dict = field(default_factory=dict)
    method: str | None = None
    kind: str = ""  # the figure kind: baseline | experts | distill | evaluate
    note: str = ""
    breakdown: dict = field(default_factory=dict)
    skipped: bool = False  # the run would skip it (a missing optional package, data it needs)
    times: dict = field(default_factory=dict)  # device -> {"seconds", "extrapolated", "figure", "differs"} or None
    # experts: their cache key less the data (ddlnl.experts.expert_key) and how many the run asks for; runs on the
    # same data with equal keys train them once (a study plan counts them once)
    expert_cache: dict | None = None
    # the run's stage (``stages/<saved_as>.json`` in its folder, ddlnl.run) that holds this work once done; None:
    # nothing in the folder does (experts live in the shared cache)
    saved_as: str | None = None


@dataclass
class Plan:
    settings: dict
    data: TrainingSet
    stages: list[Stage]

    def totals(self) -> dict:
        out = {"images": sum(s.images or 0 for s in self.stages)}
        for dev in DEVICES:
            timed = [s.times[dev]["seconds"] for s in self.stages if s.times.get(dev)]
            missing = [s.name for s in self.stages if not s.times.get(dev) and not s.skipped]
            out[dev] = {"seconds": sum(timed), "hours": sum(timed) / 3600, "stages_not_measured": missing,
                        "extrapolated": any(s.times[dev]["extrapolated"] for s in self.stages if s.times.get(dev))}
        return out

    def to_dict(self) -> dict:
        stages = []
        for s in self.stages:
            d = {"stage": s.stage, "name": s.name, "work": s.work, "images_processed": s.images}
            if s.breakdown:
                d["images_breakdown"] = s.breakdown
            if s.note:
                d["note"] = s.note
            d["estimate"] = {DEVICES[dev]: (("skipped" if s.skipped else NOT_MEASURED) if t is None else {
                "seconds": round(t["seconds"], 1), "extrapolated": t["extrapolated"], "differs_from_measured": t["differs"],
                "figure": {"source": t["figure"].source, "note": t["figure"].note,
                           "images_per_second": round(t["figure"].images_per_s, 1)}}) for dev, t in s.times.items()}
            stages.append(d)
        tot = self.totals()
        totals = {"images_processed": tot["images"]}
        for dev, name in DEVICES.items():
            totals[name] = {"hours": round(tot[dev]["hours"], 3), "stages_not_measured": tot[dev]["stages_not_measured"],
                            "includes_extrapolations": tot[dev]["extrapolated"]}
        return {"dry_run": True, "settings": self.settings, "training_set": asdict(self.data), "stages": stages,
                "totals": totals}


def training_set(spec: ExperimentSpec) -> TrainingSet:
    """The training set's size from the known dataset sizes, the preset's subsampling, the long
    tail and the validation hold-out; for a folder dataset, its image files are counted (none is read)."""
    data_cfg = spec.resolved.preset.get("data") or {}
    if spec.dataset in KNOWN_DATASETS:
        per, classes, px = KNOWN_DATASETS[spec.dataset]
        counts = np.full(classes, per, dtype=np.int64)
        how = [f"{spec.dataset}: {classes} classes x {per:,} training images (known size; no data read)"]
    else:
        path = folder_path(spec.dataset, resolve_data_root(spec.data_root)) / "train"
        if not path.is_dir():
            return TrainingSet(None, None, None, None, f"{path} is not there: the data must be read to know the training-set size")
        dirs = sorted(d for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
        counts = np.array([sum(1 for p in d.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
                               and not p.name.startswith(".")) for d in dirs], dtype=np.int64)
        if not len(counts):
            return TrainingSet(None, None, None, None, f"no class folders under {path}: the data must be read to know its size")
        classes, px = len(counts), None
        how = [f"{len(counts)} class folders under {path}, image files counted (none decoded; the image size needs the data)"]
    if spec.imbalance is not None and spec.imbalance != 1:
        counts = np.minimum(longtail_counts(int(counts[0]), classes, spec.imbalance), counts)
        how.append(f"long tail rho {spec.imbalance:g}")
    if data_cfg.get("train_per_class"):
        counts = np.minimum(counts, int(data_cfg["train_per_class"]))
        how.append(f"train_per_class {data_cfg['train_per_class']}")
    if data_cfg.get("validation"):
        counts = counts - np.minimum(counts, int(data_cfg["validation"]))
        how.append(f"{data_cfg['validation']} per class held out for validation (by noisy class: approximate)")
    return TrainingSet(int(counts.sum()), counts.tolist(), classes, px, "; ".join(how))


class _DataStandIn:
    """What :meth:`Baseline.check_data` may ask of the prepared data and a dry run knows without it."""

    def __init__(self, validation: bool):
        self.validation = object() if validation else None


def _baseline_skipped(b, spec: ExperimentSpec) -> str:
    """Why the run would skip baseline ``b`` (a missing optional package, data it needs), or ''."""
    from ddlnl.baselines import BaselineUnavailable

    if b is None:
        return ""
    try:
        b.check()
        b.check_data(_DataStandIn(bool((spec.resolved.preset.get("data") or {}).get("validation"))))
    except BaselineUnavailable as e:
        return e.problem
    except AttributeError:  # it asks for more than the stand-in knows: the run decides
        return ""
    return ""


def _net(model: dict | None):
    m = model_spec(model) or {}
    return (m.get("name"), m.get("width"), m.get("depth"), m.get("norm"))


class _OptionsContext:
    """The part of a DistillContext that per-setting option lookups read (DATM's paper table): no data."""

    def __init__(self, spec: ExperimentSpec, num_classes: int | None):
        self.dataset, self.noise, self.num_classes = spec.dataset, spec.noise, num_classes
        self.messages: list[str] = []

    def log(self, msg: str) -> None:
        self.messages.append(msg.removeprefix("[ddlnl] "))


def _resolve_options(dist, spec: ExperimentSpec, num_classes: int | None):
    """(options object the run's distiller will use, what was logged choosing them)."""
    ctx = _OptionsContext(spec, num_classes)
    resolve = getattr(dist, "resolved_options", None)
    return (resolve(ctx, spec.ipc) if resolve is not None else dist.options), ctx.messages


def resolved_method_options(spec: ExperimentSpec, num_classes: int | None = None) -> tuple[dict, list[str]]:
    """The options the run's distiller will use (DATM's ``setting: auto`` applied) and what was logged choosing them."""
    o, messages = _resolve_options(spec.distiller(), spec, num_classes)
    return (asdict(o) if is_dataclass(o) else dict(o)), messages


def decode_factor(method: str, opts: dict) -> int:
    """Training images per stored image of a set: DANCE's multi-formation, RCIG's flip copies."""
    if method == "dance":
        return int(opts.get("factor", 1)) ** 2
    if method == "rcig":
        return 2 if opts.get("use_flip") else 1
    return 1


def _mul(*parts) -> int | None:
    return None if any(p is None for p in parts) else int(np.prod([int(p) for p in parts], dtype=np.float64))


def _plural(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _n(v) -> str:
    return "?" if v is None else f"{v:,}"


def plan(spec: ExperimentSpec) -> Plan:
    """The stages ``ddlnl run`` would execute for ``spec``, their work and estimated times."""
    if spec.method is None:
        raise ConfigError("a dry run plans a whole run and needs a method", "pass --method, e.g. --method datm")
    if spec.method == "random":  # as run_experiment refuses it
        raise ConfigError("'random' is the control shown beside every method", "choose a distillation method such as --method dm")
    preset = spec.resolved.preset
    ev = spec.resolved.evaluation
    data = training_set(spec)
    N, C, px = data.images, data.classes, data.image_size
    dist = spec.distiller()
    resolved, messages = _resolve_options(dist, spec, C)
    opts = asdict(resolved) if is_dataclass(resolved) else dict(resolved)
    caps = dist.capabilities
    # a DATM variant (tad, datm_trusted) does DATM's work: planned and timed as DATM, named as itself
    method = "datm" if isinstance(dist, DATM) else spec.method
    stages: list[Stage] = []

    # -- baselines: CE on the full noisy set, then each requested one (run.py stage_baselines)
    network = model_spec(ev.get("model")) or preset["model"]
    base_runs = int(preset["baseline"].get("runs", 1))
    for name, b in zip(spec.baselines, [None] + spec.extra_baselines()):
        skipped = _baseline_skipped(b, spec)
        if skipped:
            stages.append(Stage("baseline", f"baseline {name}", f"skipped by the run: {skipped}", 0, kind="baseline", skipped=True))
            continue
        own = {} if b is None else (getattr(b.options, "train", None) or {})
        train = dict(preset["baseline"]["train"]) | dict(own)
        epochs, nets = int(train.get("epochs", 300)), NETWORKS_PER_RUN.get(name, 1)
        images = _mul(base_runs, nets, epochs, N)
        work = f"{_plural(base_runs, 'run')} x {epochs} epochs x {_n(N)} images" + (f" x {nets} networks" if nets > 1 else "")
        note, prep = "", 0
        o = {} if b is None else b.options_dict()
        if name == "cleanlab":
            folds = int(o.get("folds", 5))
            prep = _mul(folds - 1, epochs, N)  # folds networks, each on (folds-1)/folds of the set
            work += f" + {folds}-fold cross-validation ({folds} x {epochs} epochs x {folds - 1}/{folds} of the images)"
            note = "runs train on the kept samples: counted as the whole set (an upper bound)"
        elif name == "coteaching" and o.get("forget_rate") is None:
            prep = _mul(epochs, N)
            work += f" + the noise-rate estimate (cross-fitted, {epochs} epochs over the images)"
        elif name == "dividemix":
            note = "each DivideMix epoch after warm-up does more than one pass per image: a lower bound"
        stages.append(Stage("baseline", f"baseline {name}", work, None if images is None else images + (prep or 0),
                            match={"baseline": name, "net": _net(network), "px": px},
                            shape={"batch": train.get("batch_size", 256), "augment": train.get("augment", "dsa"),
                                   "compile": bool(train.get("compile", False))}, kind="baseline", note=note,
                            saved_as="full_noisy" if name == "ce" else f"baseline_{name}"))

    # -- clean first: the cleaner's warm-up networks and one loss pass each (run.py stage clean_first)
    cleaner = spec.cleaner()
    if cleaner is not None:
        train = cleaner.recipe(preset)
        nets = {"dividemix": 2, "cleanlab": int(cleaner.options_dict().get("folds", 5))}.get(cleaner.name, 1)
        epochs = int(train["epochs"])
        images = None if N is None else nets * (epochs + 1) * N
        stages.append(Stage("clean_first", f"clean first ({cleaner.name})",
                            f"{_plural(nets, 'network')} x ({epochs} warm-up epochs + 1 loss pass) x {_n(N)} images", images,
                            match={"baseline": "ce", "net": _net(network), "px": px},
                            shape={"batch": train.get("batch_size", 256), "augment": train.get("augment", "dsa"),
                                   "compile": bool(train.get("compile", False))}, kind="baseline",
                            note="timed as the CE baseline's training per image; cleanlab's folds each see part of the set (an upper bound)",
                            saved_as="clean_first"))

    # -- experts (the shared cache: 0 when they are already trained; a dry run does not look)
    net = _net(preset["model"])
    experts = expert_config(dist, method, resolved)
    if method in ("mtt", "datm"):
        epochs = experts.epochs  # the length the run trains (train_epochs, else the window)
        recipe = "trajectory-gsam" if opts.get("expert_gsam") else "trajectory-sgd"
        stages.append(Stage("experts", f"experts ({spec.method})", f"{_plural(opts['num_experts'], 'expert')} x {epochs} epochs x {_n(N)} images",
                            _mul(opts["num_experts"], epochs, N), match={"recipe": recipe, "net": net, "px": px},
                            shape={"batch": opts.get("expert_batch", 256), "compile": bool(opts.get("expert_compile"))},
                            kind="experts", note="none when the expert cache already holds them"
                            + ("; tad adds one loss pass over the images per trust refresh" if spec.method == "tad" else ""),
                            expert_cache=expert_cache(experts, preset["model"])))
    elif method == "dance":
        stages.append(Stage("experts", "experts (dance)",
                            f"{_plural(opts['num_experts'], 'expert')} x {opts['expert_epochs']} epochs x {_n(N)} images",
                            _mul(opts["num_experts"], opts["expert_epochs"], N), match={"recipe": "dance", "net": net, "px": px},
                            shape={"batch": opts.get("expert_batch", 64), "compile": bool(opts.get("expert_compile"))},
                            kind="experts", note="none when the expert cache already holds them",
                            expert_cache=expert_cache(experts, preset["model"])))

    # -- distillation
    n_syn = _mul(spec.ipc, C)
    it = int(opts.get("iterations", 0))
    base_shape = {"ipc": spec.ipc, "classes": C}
    if method in ("mtt", "datm"):
        batch = None if n_syn is None else min(opts.get("batch_syn") or n_syn, n_syn)
        syn = _mul(it, opts["syn_steps"], batch)
        stages.append(Stage("distill", f"distill ({spec.method})", f"{it:,} iterations x {opts['syn_steps']} steps x {_n(batch)} synthetic images",
                            syn, match={"net": net, "px": px, "mode": opts.get("mode"), "compile": bool(opts.get("compile"))},
                            shape=base_shape | {"syn_steps": opts["syn_steps"], "batch_syn": batch}, method=method, kind="distill",
                            breakdown={"synthetic": syn},
                            note="exact/tesla modes run each step's forward twice (recompute)" if opts.get("mode") != "naive" else ""))
    elif method == "dm":
        real_per = None if data.per_class is None else sum(min(opts["batch_real"], c) for c in data.per_class)
        syn, real = _mul(it, n_syn), _mul(it, real_per)
        stages.append(Stage("distill", "distill (dm)", f"{it:,} iterations x ({_n(n_syn)} synthetic + {_n(real_per)} real images, "
                            f"{opts['batch_real']} per class, forward only)", None if syn is None or real is None else syn + real,
                            match={"net": net, "px": px}, shape=base_shape | {"batch_real": opts["batch_real"]}, method=method,
                            kind="distill", breakdown={"synthetic": syn, "real": real}))
    elif method == "dance":
        per_class_syn = min(opts["batch_syn_max"], spec.ipc * decode_factor("dance", opts))
        real_per = None if data.per_class is None else sum(min(opts["batch_real"], c) for c in data.per_class)
        syn, real = _mul(it, C, 1 + opts["iter_calib"], per_class_syn), _mul(it, real_per)
        stages.append(Stage("distill", "distill (dance)",
                            f"{it:,} iterations x {_n(C)} classes x ({per_class_syn} decoded synthetic x {1 + opts['iter_calib']} steps"
                            f" + {opts['batch_real']} real)", None if syn is None or real is None else syn + real,
                            match={"net": net, "px": px}, shape=base_shape | {k: opts[k] for k in ("batch_real", "batch_syn_max", "factor", "iter_calib")},
                            method=method, kind="distill", breakdown={"synthetic": syn, "real": real}))
    elif method == "rcig":
        coreset = _mul(n_syn, decode_factor("rcig", opts))
        syn, real = _mul(it, opts["inner_steps"], coreset), _mul(it, opts["batch_real"])
        stages.append(Stage("distill", "distill (rcig)", f"{it:,} iterations x ({opts['inner_steps']} inner steps x {_n(coreset)} coreset images"
                            f" + {opts['batch_real']} real)", None if syn is None or real is None else syn + real,
                            match={"rcig_net": (opts["width"], opts.get("depth"), bool(opts.get("softplus_temp"))), "px": px,
                                   "formulation": opts.get("formulation"), "solvers": (opts.get("inner_solver"), opts.get("hinv_solver"))},
                            shape=base_shape | {k: opts[k] for k in ("inner_steps", "hinv_steps", "batch_real", "use_flip", "pool_size")},
                            method=method, kind="distill", breakdown={"synthetic": syn, "real": real},
                            note="a work index: the H^-1 g solve and the pool's training steps are not counted"))
    else:
        stages.append(Stage("distill", f"distill ({spec.method})", "not modelled for this method", None, method=method, kind="distill"))
    stages[-1].saved_as = "distilled_set"

    # -- evaluations (run.py: random, distilled, random at the set's lr, controls)
    runs, train = int(ev.get("runs", 1)), ev["train"]
    epochs = int(train.get("epochs", 300))
    eval_net = model_spec(ev.get("model")) or preset["model"]
    set_size = _mul(n_syn, decode_factor(method, opts))
    soft = caps.soft_labels and opts.get("soft_labels", True)
    learned = caps.learned_lr and ev.get("use_learned_lr", True)

    def evaluation(name: str, size, saved_as: str, model=eval_net, stage="evaluate", note=""):
        stages.append(Stage(stage, name, f"{_plural(runs, 'run')} x {epochs} epochs x {_n(size)} images", _mul(runs, epochs, size),
                            match={"net": _net(model), "px": px},
                            shape=_eval_shape(size, bool(train.get("compile", False)), train.get("batch_size", 256),
                                              train.get("augment", "dsa")), kind="evaluate", note=note, saved_as=saved_as + spec.stage_suffix))

    evaluation("random control", n_syn, "random")
    evaluation(f"distilled set ({spec.method})", set_size, "distilled")
    if learned:
        evaluation("random control at the set's learned lr", n_syn, "random_at_set_lr")
    if soft:
        evaluation("control: hard labels", set_size, "control_hard_labels", stage="control")
    cross = cross_arch_model(ev)
    if cross is not None:
        evaluation(f"control: {cross['name']} on the random set", n_syn, "control_cross_arch_random", model=cross, stage="control")
        evaluation(f"control: {cross['name']} on the distilled set", set_size, "control_cross_arch_distilled", model=cross,
                   stage="control")
    if caps.init_only:
        evaluation(f"control: {spec.method} init only", set_size, "control_init_only", stage="control",
                   note="building the set reuses the experts" if method in ("mtt", "datm", "dance") else "")
    if cleaner is not None:
        evaluation("control: random real images of the kept samples", n_syn, "control_clean_first_random", stage="control")

    for s in stages:
        for dev in DEVICES:
            s.times[dev] = None
            if s.images is None or px is None:
                continue
            fig, differs = find_figure(dev, s.kind, s.method, s.match, s.shape)
            if fig is not None:
                s.times[dev] = {"seconds": s.images / fig.images_per_s, "extrapolated": bool(differs), "figure": fig,
                                "differs": differs}

    return Plan(settings(spec, opts, messages), data, stages)


def expert_config(dist, method: str, resolved):
    """The ExpertConfig the run's experts train with (MTT/DATM and its variants, DANCE), or None."""
    if method in ("mtt", "datm"):
        return dist.expert_config(resolved)
    if method == "dance":
        from ddlnl.distill.dance import expert_config as dance_experts

        return dance_experts(resolved)
    return None


def expert_cache(cfg, model: dict) -> dict:
    """What names the experts' cache folder besides the data (:func:`ddlnl.experts.expert_key`), and their number
    (not in the key: a run asking for more trains only the missing ones)."""
    key = {"model": model, "train": cfg.recipe()}
    if cfg.keep_until is not None:
        key["stored_epochs"] = {"until": cfg.keep_until, "also": list(cfg.keep_also), "last": cfg.epochs}
    return {"key": key, "experts": cfg.num_experts}


def combined_stage(stage: str, name: str, work: str, terms: list[tuple[Stage, float]], note: str = "") -> Stage:
    """A stage whose work is other stages' work, each ``factor`` times (an audit's networks, the missing part of a
    cached expert set): images and times add up; a device has a time when every term has one there. Its times
    name no single figure, so it is for sums (a study plan), not for :func:`format_plan`."""
    images = None if any(s.images is None for s, _ in terms) else int(sum(s.images * f for s, f in terms))
    out = Stage(stage, name, work, images, kind=terms[0][0].kind if terms else "", note=note)
    for dev in DEVICES:
        times = [(s.times.get(dev), f) for s, f in terms]
        out.times[dev] = None if not terms or any(t is None for t, _ in times) else {
            "seconds": sum(t["seconds"] * f for t, f in times), "extrapolated": any(t["extrapolated"] for t, _ in times),
            "differs": sorted({d for t, _ in times for d in t["differs"]})}
    return out


def audit_stages(pl: Plan, shadows: int, targets) -> list[Stage]:
    """The work of ``ddlnl privacy`` on this run, per target (docs/privacy.md, "Cost"): the target network and
    ``shadows`` shadows, each costing what one network of the run's own stage costs. An estimate from the
    run's rows, not a measured audit; DP-SGD has no measured figure."""
    by_name = {s.name: s for s in pl.stages}
    base_runs = int(pl.settings["baseline_recipe"].get("runs", 1))
    eval_runs = int(pl.settings["evaluation"].get("runs", 1))
    ce, random = by_name["baseline ce"], by_name["random control"]
    distilled = by_name[f"distilled set ({pl.settings['method']})"]
    made = [s for s in pl.stages if s.stage in ("experts", "distill")]
    K = int(shadows)
    out = []
    for target in targets:
        name = f"privacy audit: {target}"
        if target == "full_noisy":
            out.append(combined_stage("privacy", name, f"{K + 1} CE baseline trainings", [(ce, (K + 1) / base_runs)]))
        elif target == "random":
            out.append(combined_stage("privacy", name, f"{K + 1} evaluation trainings on a random set", [(random, (K + 1) / eval_runs)]))
        elif target == "distilled":
            out.append(combined_stage("privacy", name, f"{K} distillations ({' + '.join(s.name for s in made)}) + "
                                      f"{K + 1} evaluation trainings", [(s, K) for s in made] + [(distilled, (K + 1) / eval_runs)],
                                      note="each shadow's data differs, so it trains its own experts"))
        else:  # dp_sgd: the CE recipe under DP-SGD, slower per image than plain SGD and never timed
            dp = combined_stage("privacy", name, f"{K + 1} DP-SGD trainings of the CE recipe", [(ce, (K + 1) / base_runs)],
                                note="DP-SGD is slower per image than plain SGD and has no measured figure")
            dp.times = {dev: None for dev in DEVICES}
            out.append(dp)
    return out


def settings(spec: ExperimentSpec, opts: dict, messages: list[str]) -> dict:
    """The resolved settings of the cell, as a dry run prints them."""
    p, r = spec.resolved.preset, spec.resolved
    configured = asdict(spec.distiller().options)  # as the preset configures them (DATM: before its paper row)
    changed = {k: v for k, v in opts.items() if k in configured and configured[k] != v}
    section = p.get("baselines") or {}
    return {
        "preset": p["name"], "preset_version": p.get("version"), "overrides": r.applied,
        "dataset": spec.dataset, "noise": spec.noise.name, "noise_seed": spec.noise.seed, "seed": spec.seed,
        "imbalance": spec.imbalance, "data": p.get("data"), "preprocess": p.get("preprocess"), "model": p["model"],
        "method": spec.method, "ipc": spec.ipc, "options": opts, "options_from_paper_table": changed, "option_messages": messages,
        "eval_protocol": spec.eval_protocol, "evaluation": r.evaluation,
        "baselines": {name: section.get(name) or {} for name in spec.baselines}, "baseline_recipe": p.get("baseline"),
    }


# --------------------------------------------------------------------------- text output


def duration(seconds: float) -> str:
    """``42 s``, ``3.5 min``, ``2.1 h``: how a dry run prints a time."""
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _count(n: int | None) -> str:
    return "unknown" if n is None else format_count(n)


def _kv(d: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in d.items())


def format_plan(pl: Plan) -> str:
    s, d = pl.settings, pl.data
    ev = s["evaluation"]
    lines = ["dry run: nothing is trained, no data is loaded and nothing is written", "",
             f"preset: {s['preset']} (version {s['preset_version']}); overrides: {_kv(s['overrides']) or 'none'}",
             f"data: {s['dataset']}, noise {s['noise']} (noise seed {s['noise_seed']}), seed {s['seed']}, "
             f"imbalance {s['imbalance'] if s['imbalance'] is not None else 'none'}; preprocess {s['preprocess']}",
             f"training set: {_n(d.images)} images ({d.how})",
             f"network: {_kv(s['model'])}",
             f"method: {s['method']}, IPC {s['ipc']}",
             f"  options: {_kv(s['options'])}"]
    for m in s["option_messages"]:
        lines.append(f"  {m}")
    if s["options_from_paper_table"]:
        lines.append(f"  paper table values applied: {_kv(s['options_from_paper_table'])}")
    lines += [f"evaluation ({s['eval_protocol']} protocol): {ev.get('runs', 1)} runs, network "
              f"{_kv(model_spec(ev.get('model')) or s['model'])}, use_learned_lr {ev.get('use_learned_lr', True)}, "
              f"cross_arch {ev.get('cross_arch')}",
              f"  train: {_kv(ev['train'])}",
              f"baselines: {', '.join(f'{k} ({_kv(v)})' if v else k for k, v in s['baselines'].items())}; "
              f"{s['baseline_recipe'].get('runs', 1)} run(s) of {_kv(s['baseline_recipe']['train'])}", ""]

    header = ("stage", "work", "images processed", f"time, {DEVICES['h100']}", f"time, {DEVICES['cpu']}")
    rows, marks, notes = [], {}, []

    def cell(t) -> str:
        if t is None:
            return NOT_MEASURED
        key = id(t["figure"])
        if key not in marks:
            marks[key] = len(marks) + 1
            notes.append(f"[{marks[key]}] {t['figure'].source}: {t['figure'].note} ({t['figure'].images_per_s:,.0f} images/s)")
        extra = f" (differs: {', '.join(t['differs'])})" if t["differs"] else ""
        return f"{'~' if t['extrapolated'] else ''}{duration(t['seconds'])} [{marks[key]}]{extra}"

    for st in pl.stages:
        if st.skipped:
            rows.append((st.name, st.work, "0", "skipped", "skipped"))
            continue
        rows.append((st.name, st.work, _count(st.images), cell(st.times.get("h100")), cell(st.times.get("cpu"))))
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|" + "---|" * len(header))
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    tot = pl.totals()
    lines.append("")
    lines.append(f"total: {_count(tot['images'])} images processed")
    for dev, name in DEVICES.items():
        t = tot[dev]
        missing = t["stages_not_measured"]
        approx = "~" if t["extrapolated"] else ""
        if len(missing) == len([st for st in pl.stages if not st.skipped]):
            lines.append(f"  {name}: no stage of this cell was measured on it")
            continue
        unit = f"{approx}{t['hours']:.2f} GPU-hours" if dev == "h100" else f"{approx}{t['hours']:.2f} hours"
        miss = f" for the measured stages; not measured, so not included: {', '.join(missing)}" if missing else ""
        lines.append(f"  {name}: {unit}{miss}")
    lines += ["", "~: scaled by images processed from a figure measured at another configuration (what differs is shown).",
              "Figures (docs, date):"] + [f"  {n}" for n in notes]
    stage_notes = [f"  {st.name}: {st.note}" for st in pl.stages if st.note]
    if stage_notes:
        lines += ["Notes:"] + stage_notes
    return "\n".join(lines)


def write_json_text(pl: Plan) -> str:
    import json

    return json.dumps(pl.to_dict(), indent=2, default=str, ensure_ascii=False)


__all__ = ["FIGURES", "KNOWN_DATASETS", "Figure", "Plan", "Stage", "TrainingSet", "audit_stages", "combined_stage", "duration",
           "expert_cache", "expert_config", "find_figure", "format_plan", "plan", "resolved_method_options", "training_set",
           "write_json_text"]
