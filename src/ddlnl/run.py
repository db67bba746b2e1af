"""``ddlnl run``: one experiment, from noisy labels to ``result.json``, as named stages.

The stages, in order (:data:`STAGES`):

``noise``      realise the noise (``noisy_labels.npy`` + ``noise.json``; reused when it matches);
``baselines``  CE on the full noisy set (``results.full_noisy``) and each requested noisy-label baseline;
``distill``    distil with the method (experts, where it has them, come from the shared expert cache); with
               ``clean_first`` a cleaner first picks the samples to keep (stage ``clean_first``) and the
               method distils those only;
``random``     draw the random real control and evaluate it;
``evaluate``   evaluate the distilled set with the preset's protocol;
``controls``   hard labels, cross-architecture, the method's initialisation alone.

The evaluations (``random``, ``evaluate``, ``controls``) are one step: every set not yet
evaluated goes to :func:`ddlnl.evaluate.evaluate_sets` together, so the sets that share a
recipe (the distilled set and its controls at its lr) can train side by side
(``batch_networks``), and each row is saved as soon as its runs are done.

Each finished step is saved in the run folder (:class:`ddlnl.stages.RunFolder`) under a key
of everything it depends on (:class:`ddlnl.spec.ExperimentSpec` makes the keys), so an
interrupted run resumes and a rerun with a change recomputes only what the change touches.
Every row records its cost: wall time, images processed (forward passes) and the device.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ddlnl.baselines import BaselineContext, BaselineUnavailable, train_full_noisy
from ddlnl.baselines.cleaners import Cleaned, check_kept
from ddlnl.data.given import NO_CLEAN_LABELS_NOTE
from ddlnl.data.noise import selection_scores
from ddlnl.data.types import check_ipc
from ddlnl.errors import ConfigError
from ddlnl.evaluate import EvalResult, SetToEvaluate, evaluate_sets, learned_lr, synthetic_set_to_evaluate
from ddlnl.experiment import PreparedData, save_noise
from ddlnl.export import class_grid_png
from ddlnl.models import model_spec
from ddlnl.presets import cross_arch_model
from ddlnl.monitor import RunMonitor, check_eval_every, tensorboard_writer
from ddlnl.results import SCHEMA_VERSION, dd_ranking_scores, evaluated_rows, write_result
from ddlnl.spec import ExperimentSpec
from ddlnl.stages import RunFolder, stage_key
from ddlnl.synset import SyntheticSet
from ddlnl.train import recipe_key
from ddlnl.utils.io import write_json
from ddlnl.utils.runtime import (
    machine,
    remove_broken_compiled_kernels,
    resolve_device,
    seed_everything,
    versions,
)
from ddlnl.utils.seeds import SCHEME as SEED_SCHEME

STAGES = ("noise", "baselines", "distill", "random", "evaluate", "controls")
# The sets made from the cleaner's kept samples under clean_first; the random control stays random
# real images of the whole noisy set (the same row as without cleaning).
FROM_KEPT = ("distilled", "random_cleaned")


@dataclass
class RunConfig:
    """The flat form of a run for Python callers (the README's API): an :class:`ExperimentSpec`
    plus where to write it and how to report progress."""

    dataset: str = "cifar10"
    noise: str = "symmetric"
    rate: float | None = None  # None: the noise's default (0.4; human label sets and clean take none)
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

    def spec(self) -> ExperimentSpec:
        return ExperimentSpec.create(dataset=self.dataset, noise=self.noise, rate=self.rate, noise_seed=self.noise_seed,
                                     seed=self.seed, method=self.method, ipc=self.ipc, preset=self.preset,
                                     overrides=tuple(self.overrides), imbalance=self.imbalance, baselines=tuple(self.baselines),
                                     eval_protocol=self.eval_protocol, device=self.device, data_root=self.data_root)


def run_experiment(spec: ExperimentSpec | RunConfig, out: str | Path | None = None, *, log=print, progress: bool | None = None,
                   checkpoint_every_s: float | None = None, eval_every: int = 0, log_dir: str | Path | None = None) -> dict:
    """Run one experiment into the folder ``out`` and return its result (also ``out/result.json``).

    ``eval_every``: a quick evaluation of the set being distilled every that many iterations, in
    the distilled row's ``history`` (:mod:`ddlnl.monitor`); ``log_dir``: TensorBoard scalars there.

    One run at a time per folder: a second run on the same folder is refused (its stages would
    be computed twice), whereas a rerun after the first ends resumes from its stages."""
    if isinstance(spec, RunConfig):
        cfg = spec
        spec, out = cfg.spec(), cfg.out if out is None else out
        progress = cfg.progress if progress is None else progress
        checkpoint_every_s = cfg.checkpoint_every_s if checkpoint_every_s is None else checkpoint_every_s
    if out is None:
        raise ConfigError("run_experiment needs a run folder", "pass out='runs/NAME'")
    if spec.method == "random":
        raise ConfigError("'random' is the control shown beside every method", "choose a distillation method such as --method dm")
    folder = RunFolder(out)
    remove_broken_compiled_kernels(log=log)  # an interrupted sitting may have left one; this run would fail on it

    def busy():
        raise ConfigError(f"another ddlnl run is using the run folder {folder.path}",
                          "wait for it to finish (a rerun then resumes from its stages), or pass a different --out")

    check_eval_every(eval_every)
    writer = tensorboard_writer(log_dir) if log_dir is not None else None
    try:
        with folder.lock(on_wait=busy):
            return _Pipeline(spec, folder, log, True if progress is None else progress,
                             300.0 if checkpoint_every_s is None else checkpoint_every_s, watch=(eval_every, writer)).run()
    finally:
        if writer is not None:
            writer.close()


class _Pipeline:
    """The stages of one run over one prepared dataset (see the module docstring)."""

    def __init__(self, spec: ExperimentSpec, folder: RunFolder, log, progress: bool, checkpoint_every_s: float,
                 watch: tuple[int, object] = (0, None)):
        self.spec, self.folder, self.log, self.progress = spec, folder, log, progress
        self.checkpoint_every_s = checkpoint_every_s
        self.preset = spec.resolved.preset
        self.device = resolve_device(spec.device)
        self.sets: dict[str, SyntheticSet] = {}
        self.watch = watch  # (quick evaluation every N iterations, TensorBoard writer or None)
        self.timings = {"experts": 0.0, "distill": 0.0, "evaluate": 0.0, "baselines": 0.0}

    def run(self) -> dict:
        t0 = time.perf_counter()
        spec = self.spec
        distiller, random_ctrl, baselines = spec.distiller(), spec.random_control(), spec.extra_baselines()
        seed_everything(spec.seed)
        write_json(self.folder.file("config.json"), spec.config() | {"resolved_preset": self.preset, "device": str(self.device)})
        self.data = self.stage_noise()
        results = self.stage_baselines(baselines)
        self.make_set("distilled", distiller)  # its learned lr sets the controls' lr, so it comes first
        # one lr per comparison: the controls train at the lr of the set they control (its learned lr, if any)
        self.set_lr = learned_lr(self.load_set("distilled"), self.preset["evaluation"])
        sets = [self.set_evaluation("random", random_ctrl), self.set_evaluation("distilled", distiller)]
        if self.set_lr is not None:
            sets.append(self.set_evaluation("random", random_ctrl, lr=self.set_lr, stage="random_at_set_lr"))
        controls, control_items = self.control_evaluations(distiller)
        rows = self.evaluate_together(sets + [item for _, item in control_items])
        for row in rows[: len(sets)]:
            self.timings["evaluate"] += row["seconds"]
        recipe_random, distilled = rows[0], rows[1]
        self.timings["experts"] += distilled["timings"]["experts"]
        self.timings["distill"] += distilled["timings"]["distill"]
        results["random"], results["distilled"] = (rows[2] if self.set_lr is not None else recipe_random), distilled
        for (path, _), row in zip(control_items, rows[len(sets):], strict=True):
            target = controls
            for part in path[:-1]:
                target = target.setdefault(part, {})
            target[path[-1]] = row
        self.timings["controls"] = sum(row.get("seconds", 0.0) for row in rows[len(sets):])
        results["controls"] = controls
        if self.set_lr is not None:
            results["controls"]["random_recipe_lr"] = recipe_random
        self.write_set_picture()
        if spec.clean_first is not None:
            self.timings["clean_first"] = self.cleaned().seconds
        self.timings["total"] = time.perf_counter() - t0
        data = self.data
        result = {
            "schema_version": SCHEMA_VERSION,
            "dataset": spec.dataset,
            "noise": {"type": spec.noise.type, "nominal_rate": data.noisy.nominal_rate, "actual_rate": data.noisy.actual_rate,
                      "seed": spec.noise.seed},
            "method": spec.method, "ipc": spec.ipc, "preset": self.preset["name"], "preset_version": self.preset.get("version"),
            "overrides": spec.resolved.applied, "seed": spec.seed, "imbalance": spec.imbalance,
            "num_train": len(data.splits.train), "num_test": len(data.splits.test),
            "num_validation": 0 if data.validation is None else len(data.validation.index), "classes": list(data.splits.train.classes),
            "seed_scheme": SEED_SCHEME, "results": results, "notes": [] if data.noisy.clean_known else [NO_CLEAN_LABELS_NOTE], "timings_s": self.timings, "device": str(self.device), "machine": machine(), "versions": versions(),
        }
        if spec.clean_first is not None:  # the distilled set (and its controls) came from the cleaner's kept samples
            result["clean_first"] = self.clean_summary()
        result["dd_ranking"] = dd_ranking_scores(result)
        write_result(self.folder.file("result.json"), result)
        if self.watch[1] is not None:  # the final accuracies beside the curves
            for row in evaluated_rows(result, include_skipped=False):
                self.watch[1].add_scalar(f"result/{row.role}", row.value["acc_mean"], 0)
        return result

    # -- stages ---------------------------------------------------------------------------
    def stage_noise(self) -> PreparedData:
        spec = self.spec
        self.log(f"[ddlnl] loading {spec.dataset} and realising {spec.noise.slug} noise")
        data = spec.prepare_data(saved_noise=self.folder.path)
        save_noise(self.folder.path, data)
        check_ipc(data.noisy.labels, data.num_classes, spec.ipc)  # before any training
        held = "" if data.validation is None else f", {len(data.validation.index)} held out for validation (noisy labels)"
        self.log(f"[ddlnl] {len(data.splits.train)} training images{held}, {len(data.splits.test)} test images, "
                 f"noise {spec.noise.type}: {data.noisy.rates_text()}")
        if not data.noisy.clean_known:
            self.log(f"[ddlnl] note: {NO_CLEAN_LABELS_NOTE}")
        return data

    def stage_baselines(self, baselines: list) -> dict:
        """CE on the full noisy set (``full_noisy``), then each other baseline on the same backbone and recipe.

        Under every protocol the baselines train the network the sets are evaluated on (the
        protocol's ``model`` when it names one, e.g. RCIG's under ``--eval native``)."""
        network = model_spec(self.preset["evaluation"].get("model")) or self.preset["model"]
        preset = self.preset | {"model": network}
        base_key = self.spec.data_key() | {"baseline": recipe_key(self.preset["baseline"]), "network": network}

        def train_ce():
            self.log("[ddlnl] training on the full noisy set")
            ev = train_full_noisy(self.data, preset, device=self.device, seed=self.spec.seed, progress=self.progress)
            return self.row(ev)

        full = self.folder.stage("full_noisy", base_key, train_ce)
        full.setdefault("cost", _cost(self.device, full["seconds"], full["images_processed"]))
        self.timings["baselines"] += full["seconds"]
        results = {"full_noisy": full, "baselines": {"ce": full}}
        for b in baselines:
            try:
                b.check()
                b.check_data(self.data)
            except BaselineUnavailable as e:
                self.log(f"[ddlnl] skipping baseline {b.name}: {e.problem}; {e.fix}")
                results["baselines"][b.name] = {"skipped": e.problem, "fix": e.fix}
                continue

            def train(b=b):
                self.log(f"[ddlnl] training baseline {b.name} on the full noisy set")
                ev = b.run(BaselineContext(self.data, preset, device=self.device, seed=self.spec.seed, progress=self.progress,
                                           log=self.log))
                return self.row(ev, options=b.options_dict(), details=b.details, **({"selection": b.selection} if b.selection else {}))

            saved = self.folder.stage(f"baseline_{b.name}", base_key | {"name": b.name, "options": b.options_dict()}, train)
            results["baselines"][b.name] = saved
            self.timings["baselines"] += saved["seconds"]
        return results

    def set_key(self, dist, *, cleaned: bool = False) -> dict:
        """The key of a set made by ``dist``; ``cleaned``: from the cleaner's kept samples (when the run cleans
        first), so toggling ``clean_first`` remakes only the sets made from them and what depends on those."""
        key = self.spec.data_key() | {"method": dist.name, "options": dist.options_dict(), "ipc": self.spec.ipc}
        if cleaned and self.spec.clean_first is not None:
            key["clean_first"] = self.spec.clean_key()
        return key

    def cleaned(self) -> Cleaned:
        """The ``clean_first`` stage: the samples the cleaner keeps (computed once, then loaded)."""
        if not hasattr(self, "_cleaned"):
            def clean():
                c = self.spec.clean(self.data, self.device, log=self.log, progress=self.progress)
                self.log(f"[ddlnl] {self.spec.clean_first} kept {c.kept.size} of {len(self.data.noisy.labels)} training images "
                         f"({c.seconds:.1f} s)")
                return {"kept": c.kept.tolist(), "seconds": c.seconds, "images_processed": c.images_processed, "details": c.details}

            saved = self.folder.stage("clean_first", self.spec.data_key() | {"clean_first": self.spec.clean_key()}, clean)
            self._cleaned = Cleaned(np.asarray(saved["kept"], dtype=np.int64), saved["seconds"], saved["images_processed"],
                                    saved["details"])
        return self._cleaned

    def clean_summary(self) -> dict:
        """``result.json``'s ``clean_first``: the cleaner, its options, what it kept and cost, and (where clean
        labels exist) how well the kept samples pick the correctly labelled ones."""
        c, correct = self.cleaned(), self.data.label_correct
        out = {"cleaner": self.spec.clean_first, "key": self.spec.clean_key(), "kept": int(c.kept.size),
               "of": len(self.data.noisy.labels), "details": c.details,
               "cost": _cost(self.device, c.seconds, c.images_processed)}
        if correct is not None:
            out["selection"] = selection_scores(c.kept, correct) | {"what": f"the samples {self.spec.clean_first} kept"}
        return out

    def make_set(self, role: str, dist) -> dict:
        """The ``random`` or ``distill`` stage: the set made once and saved as ``<role>.safetensors``; a role of
        :data:`FROM_KEPT` is made from the cleaner's kept samples under ``clean_first``, its cost and selection included."""
        from_kept = role in FROM_KEPT and self.spec.clean_first is not None
        key = self.set_key(dist, cleaned=from_kept)
        made = self.folder.load(f"{role}_set", key)
        if made is not None and self.folder.file(made["synset"]).exists():
            return made
        keep = c = None
        if from_kept:
            c = self.cleaned()
            check_kept(c, self.data.noisy.labels, self.data.num_classes, self.spec.ipc, self.spec.clean_first)
            keep = c.kept
        what = f"distilling with {dist.name}" if role == "distilled" else "drawing the random control"
        self.log(f"[ddlnl] {what} (IPC {self.spec.ipc}){'' if keep is None else f' from the {keep.size} kept samples'}")
        ctx = self.spec.distill_context(self.data, self.device, log=self.log, progress=self.progress,
                                        checkpoint=self.folder.file(f"checkpoints/{role}-{stage_key(key)}.pt"),
                                        checkpoint_every_s=self.checkpoint_every_s, keep=keep)
        every, writer = self.watch
        if role == "distilled" and (every or writer is not None):
            ctx.monitor = RunMonitor(every, self.preset, self.data, self.device, self.spec.seed, writer)
        synset = dist.run(ctx, self.spec.ipc)
        synset.meta.update(self.spec.synset_meta(self.data))
        timings = {"experts": ctx.timings.get("experts", 0.0), "distill": ctx.timings.get("distill", 0.0)}
        selection = self.selection(ctx)
        if c is not None:
            synset.meta["clean_first"] = {"cleaner": self.spec.clean_first, "key": self.spec.clean_key(), "kept": int(keep.size)}
            timings["clean_first"] = c.seconds
            if self.data.label_correct is not None:
                selection.setdefault("selection", {})["clean_first"] = self.clean_summary()["selection"]
        synset.save(self.folder.file(f"{role}.safetensors"))
        self.sets[role] = synset
        made = {"timings": timings, "label_kind": synset.label_kind, "synset": f"{role}.safetensors",
                "distill_images_processed": ctx.images_processed,
                **({"clean_first_images_processed": c.images_processed} if c is not None else {}),
                **selection, **({"history": ctx.history} if ctx.history else {})}
        self.folder.save(f"{role}_set", key, made)
        if ctx.checkpoint is not None:
            ctx.checkpoint.unlink(missing_ok=True)
        return made

    def set_evaluation(self, role: str, dist, *, lr: float | None = None, stage: str | None = None) -> "_Evaluation":
        """The ``random`` / ``distilled`` row (stage ``role``, or ``stage``): the set made (its own
        stage), then evaluated at ``lr`` when given (a control at the lr of the set it controls)."""
        def prepare():
            made = self.make_set(role, dist)
            at = "" if lr is None else f" at lr {lr:.4g}"
            self.log(f"[ddlnl] evaluating the {role} set{at} ({self.preset['evaluation'].get('runs', 1)} runs, "
                     f"{self.spec.eval_protocol} protocol)")

            def finish(ev: EvalResult) -> dict:
                return self.row(ev, **{k: made[k] for k in ("timings", "label_kind", "synset", "distill_images_processed",
                                                          "clean_first_images_processed", "selection", "history")
                                       if k in made},
                                protocol=self.spec.eval_protocol, cost=_set_cost(self.device, made, ev))

            return self.to_evaluate(self.load_set(role), role, lr=lr), finish

        key = self.set_key(dist, cleaned=role in FROM_KEPT) | {"evaluation": self.spec.evaluation_key()} | ({} if lr is None else {"lr": lr})
        return _Evaluation((stage or role) + self.spec.stage_suffix, key, prepare)

    def control_evaluations(self, distiller) -> tuple[dict, list[tuple[tuple[str, ...], "_Evaluation"]]]:
        """Hard-label, cross-architecture and init-only controls of the distilled set: the skipped ones
        as rows, and the others as (where in ``results.controls``, evaluation) pairs."""
        controls: dict = {"random_real": {"see": "results.random"}}
        items: list[tuple[tuple[str, ...], _Evaluation]] = []
        key = self.set_key(distiller, cleaned=True) | {"evaluation": self.spec.evaluation_key(), "control_lr": "the distilled set's"}

        def control(path: tuple[str, ...], name: str, extra_key: dict, prepare) -> None:
            items.append((path, _Evaluation(f"control_{name}{self.spec.stage_suffix}", key | extra_key, prepare)))
            place = controls
            for part in path[:-1]:
                place = place.setdefault(part, {})
            place[path[-1]] = None  # its row, once evaluated (keeps the controls in this order)

        # hard labels: soft-label sets evaluated with their argmax labels
        distilled = self.load_set("distilled")
        if distilled.label_kind == "soft":
            def hard():
                self.log("[ddlnl] control: evaluating the distilled set with hard (argmax) labels")
                return (self.to_evaluate(distilled, "hard labels", labels=distilled.hard_labels()),
                        lambda ev: self.row(ev, label_kind="hard"))
            control(("hard_labels",), "hard_labels", {}, hard)
        else:
            controls["hard_labels"] = {"skipped": "the distilled set has hard labels: its main row is the hard-label evaluation"}

        # cross-architecture: the same sets trained on another network
        model = cross_arch_model(self.preset["evaluation"])
        if model is None:
            controls["cross_arch"] = {"skipped": "evaluation.cross_arch is null in this preset (set it to e.g. resnet18)"}
        else:
            controls["cross_arch"] = {"model": model}
            for role in ("random", "distilled"):
                def cross(role=role):
                    self.log(f"[ddlnl] control: training {model['name']} on the {role} set")
                    return (self.to_evaluate(self.load_set(role), f"{role} {model['name']}", model=model,
                                             lr=self.set_lr if role == "random" else None), self.row)
                control(("cross_arch", role), f"cross_arch_{role}", {"cross_model": model, "role": role}, cross)

        # init-only: the method's own initialisation (e.g. DATM's correctly-predicted real images), no distillation
        if distiller.capabilities.init_only:
            def init():
                self.log(f"[ddlnl] control: {distiller.name}'s initialisation alone (no distillation)")
                keep = None if self.spec.clean_first is None else self.cleaned().kept  # the data the method distilled
                ctx = self.spec.distill_context(self.data, self.device, log=self.log, progress=self.progress, keep=keep)
                start = time.perf_counter()
                synset = distiller.init_only(ctx, self.spec.ipc)
                ctx.stamp_init_index(synset)
                build_s = time.perf_counter() - start
                synset.meta.update(self.spec.synset_meta(self.data) | {"method": f"{distiller.name}:init_only", "ipc": self.spec.ipc})
                synset.save(self.folder.file("init_only.safetensors"))

                def finish(ev: EvalResult) -> dict:
                    return self.row(ev, label_kind=synset.label_kind, synset="init_only.safetensors", build_seconds=build_s,
                                    **self.selection(ctx),
                                    build_images_processed=ctx.images_processed,
                                    cost=_cost(self.device, build_s + ev.seconds, ctx.images_processed + ev.images_processed,
                                               distill_seconds=build_s, distill_images_processed=ctx.images_processed,
                                               eval_seconds=ev.seconds, eval_images_processed=ev.images_processed))

                return self.to_evaluate(synset, "init only", lr=self.set_lr), finish
            control(("init_only",), "init_only", {}, init)
        else:
            controls["init_only"] = {"skipped": f"method {distiller.name!r} has no init-only control"}

        # clean first: random real images of the cleaned subset, beside the set distilled from it
        if self.spec.clean_first is not None:
            def random_cleaned():
                self.log(f"[ddlnl] control: random real images of the samples {self.spec.clean_first} kept")
                made = self.make_set("random_cleaned", self.spec.random_control())
                return (self.to_evaluate(self.load_set("random_cleaned"), "random cleaned", lr=self.set_lr),
                        lambda ev: self.row(ev, **{k: made[k] for k in ("timings", "selection", "clean_first_images_processed")
                                                   if k in made}, cost=_set_cost(self.device, made, ev)))
            control(("clean_first", "random"), "clean_first_random", {}, random_cleaned)
        return controls, items

    def evaluate_together(self, items: list["_Evaluation"]) -> list[dict]:
        """Each item's saved row, or, for those not yet saved, their sets evaluated together (sets that
        share a recipe train side by side under ``batch_networks``), each row saved as soon as it is done."""
        rows = [self.folder.load(item.stage, item.key) for item in items]
        todo = [i for i, row in enumerate(rows) if row is None]
        if not todo:
            return rows
        prepared = [items[i].prepare() for i in todo]
        data = self.data

        def save(j: int, ev: EvalResult) -> None:  # as soon as a set's runs are done: a kill loses no finished row
            i = todo[j]
            rows[i] = prepared[j][1](ev)
            self.folder.save(items[i].stage, items[i].key, rows[i])
            self.log(f"[ddlnl] evaluated {items[i].stage}: {100 * ev.acc_mean:.2f} ± {100 * ev.acc_std:.2f} % "
                     f"({ev.runs} run{'s' if ev.runs != 1 else ''}, {ev.seconds:.0f} s)")

        evaluate_sets([p[0] for p in prepared], test_images=data.x_test, test_labels=data.y_test, num_classes=data.num_classes,
                      runs=self.preset["evaluation"].get("runs", 1), seed=self.spec.seed, device=self.device,
                      progress=self.progress, validation=data.validation,
                      checkpoint_every=self.preset["evaluation"].get("checkpoint_every"), on_result=save)
        return rows

    def write_set_picture(self) -> None:
        """``distilled.png``: the distilled set, a row per class; slots that started from a real image
        whose noisy label is wrong are framed in red (where clean labels and the slots' sources are known)."""
        distilled, correct = self.load_set("distilled"), self.data.label_correct
        init = distilled.meta.get("init_index")
        wrong = None if correct is None or init is None else ~correct[np.asarray(init, dtype=np.int64)]
        class_grid_png(distilled, self.folder.file("distilled.png"), wrong=wrong)

    # -- helpers --------------------------------------------------------------------------
    def selection(self, ctx) -> dict:
        """``{"selection": {name: scores}}`` of the training samples the method selected (its initial
        images, DATM's filter), scored against the clean labels; empty when there are none to score."""
        correct = self.data.label_correct
        if correct is None or not ctx.selections:
            return {}
        clean = np.asarray(self.data.splits.train.labels)
        return {"selection": {name: selection_scores(s["kept"], correct, s["among"], assigned=s.get("labels"), clean=clean)
                              | {"what": s["what"]} for name, s in ctx.selections.items()}}

    def load_set(self, role: str) -> SyntheticSet:
        if role not in self.sets:
            self.sets[role] = SyntheticSet.load(self.folder.file(f"{role}.safetensors"))
        return self.sets[role]

    def to_evaluate(self, synset: SyntheticSet, desc: str, *, model: dict | None = None,
                    labels: torch.Tensor | None = None, lr: float | None = None) -> SetToEvaluate:
        """The preset's evaluation protocol for a set. ``model`` replaces the evaluation network
        (cross-architecture control); ``labels`` the set's labels (hard-label control); ``lr`` the
        learning rate (else the set's learned lr, else the recipe's)."""
        return synthetic_set_to_evaluate(synset, self.preset, desc=desc, model=model, labels=labels, lr=lr)

    def row(self, ev: EvalResult, **extra) -> dict:
        """An evaluation as a result row (see :mod:`ddlnl.results`), with its cost unless ``extra`` gives one."""
        d = ev.to_dict()
        row = {k: d[k] for k in ("acc_mean", "acc_std", "runs", "per_class", "accs", "confusion", "seconds", "images_processed",
                                 "train", "model", "seed_stream")}
        if ev.val_accs is not None:  # the held-out noisy labels' score: what choices are made on
            row |= {"val_acc_mean": ev.val_acc_mean, "val_accs": ev.val_accs}
        row |= ev.best_checkpoint()  # evaluation.checkpoint_every: the published best-of-checkpoints, beside the headline
        return row | {"cost": _cost(self.device, ev.seconds, ev.images_processed)} | extra


@dataclass
class _Evaluation:
    """One evaluation row of a run: its stage and key, and ``prepare() -> (SetToEvaluate, finish)``,
    called only when the stage is not saved yet; ``finish(EvalResult)`` makes the row."""

    stage: str
    key: dict
    prepare: Callable[[], tuple[SetToEvaluate, Callable[[EvalResult], dict]]]


def _set_cost(device, made: dict, ev: EvalResult) -> dict:
    """A made set's row cost: cleaning (when it cleaned first), experts and distillation, and its evaluation."""
    dt, n_distill = made["timings"], made["distill_images_processed"]
    clean_s, n_clean = dt.get("clean_first", 0.0), made.get("clean_first_images_processed", 0)
    extra = {"clean_seconds": clean_s, "clean_images_processed": n_clean} if "clean_first" in dt else {}
    return _cost(device, clean_s + dt["experts"] + dt["distill"] + ev.seconds, n_clean + n_distill + ev.images_processed,
                 **extra, distill_seconds=dt["experts"] + dt["distill"], distill_images_processed=n_distill,
                 eval_seconds=ev.seconds, eval_images_processed=ev.images_processed)


def _cost(device, seconds: float, images: int, **breakdown) -> dict:
    """What a row cost: wall seconds, images processed (forward passes) and the device."""
    out = {"device": str(device), "seconds": float(seconds), "images_processed": int(images)}
    if breakdown:
        out["breakdown"] = breakdown
    return out
