"""``ExperimentSpec``: one frozen, validated description of an experiment.

Every entry point builds one — ``ddlnl run`` / ``distill`` / ``evaluate`` from flags, a study
cell from its grid, a user from Python — and everything downstream reads it: the noise to
realise, the resolved preset (after ``--set`` overrides), the method's options, the
evaluation recipe, the baselines, the keys that name stages and caches. It is checked once,
when it is made, with errors that say what to fix; nothing later re-derives or re-checks it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from ddlnl.baselines import BaselineContext, baseline_class, create_baseline, parse_baselines
from ddlnl.baselines.cleaners import Cleaned, Cleaner, create_cleaner
from ddlnl.data.noise import NoiseSpec
from ddlnl.data.registry import check_dataset_name
from ddlnl.data.types import check_ipc_value
from ddlnl.distill import DistillContext, create_distiller, distiller_class
from ddlnl.errors import ConfigError
from ddlnl.experiment import PreparedData, prepare_data
from ddlnl.presets import (
    PROTOCOLS,
    apply_overrides,
    cell_preprocess,
    evaluation_for,
    load_preset,
    method_options,
)
from ddlnl.train import recipe_key
from ddlnl.utils.runtime import versions
from ddlnl.utils.seeds import SCHEME as SEED_SCHEME

SEED_MAX = 2**32  # numpy's RandomState (the noise realisation) takes seeds in [0, 2**32)


@dataclass(frozen=True)
class ResolvedPreset:
    """The preset after overrides, its evaluation section set for the protocol, and the method's options."""

    preset: dict  # its top-level preprocess is the cell's: methods.<method>.preprocess when set
    applied: dict  # the overrides that were applied, key -> parsed value
    options: dict  # the distiller's options (methods.<method> without native_eval and preprocess)

    @property
    def evaluation(self) -> dict:
        return self.preset["evaluation"]


@dataclass(frozen=True)
class ExperimentSpec:
    """What to run. ``data_root`` and ``device`` say where, not what: no stage or cache key holds them."""

    dataset: str = "cifar10"
    noise: NoiseSpec = field(default_factory=lambda: NoiseSpec.create("symmetric"))
    method: str | None = "datm"  # None: no method (``ddlnl evaluate`` of a set made elsewhere)
    ipc: int = 10
    preset: str = "quick"
    overrides: tuple[str, ...] = ()
    seed: int = 0
    imbalance: float | None = None
    baselines: tuple[str, ...] = ("ce",)  # 'ce' (results.full_noisy) always runs, first
    eval_protocol: str = "common"  # or "native": the method's own recipe (methods.<name>.native_eval)
    device: str | None = None
    data_root: str | None = None
    labels: str | None = None  # under noise 'given': the training labels' file (keys hold its sha256, not its path)
    clean_labels: str | None = None  # under noise 'given': the clean labels' file, for the clean-label analyses
    clean_first: str | None = None  # a cleaner (ddlnl.baselines.cleaners): the method distils the samples it keeps
    clean_options: tuple[str, ...] = ()  # the cleaner's options as KEY=VALUE strings (values parsed as YAML)

    def __post_init__(self):
        set_ = object.__setattr__
        if not isinstance(self.noise, NoiseSpec):
            raise ConfigError(f"noise must be a NoiseSpec, got {self.noise!r}",
                              "build the spec with ExperimentSpec.create(noise='symmetric', rate=0.4)")
        check_dataset_name(self.dataset)
        check_ipc_value(self.ipc)
        check_seed(self.seed)
        if self.imbalance is not None:
            set_(self, "imbalance", check_imbalance(self.imbalance))
        if self.eval_protocol not in PROTOCOLS:
            raise ConfigError(f"unknown evaluation protocol {self.eval_protocol!r}", f"use one of: {', '.join(PROTOCOLS)}")
        if isinstance(self.overrides, str):
            raise ConfigError(f"overrides must be a list of KEY=VALUE strings, got the string {self.overrides!r}",
                              "pass a list, e.g. ['evaluation.runs=5']")
        set_(self, "overrides", tuple(self.overrides))
        if isinstance(self.clean_options, str):
            raise ConfigError(f"clean_options must be a list of KEY=VALUE strings, got the string {self.clean_options!r}",
                              "pass a list, e.g. ['threshold=0.6']")
        set_(self, "clean_options", tuple(self.clean_options))
        if self.clean_options and self.clean_first is None:
            raise ConfigError("cleaner options were given without a cleaner", "add --clean-first loss_gmm (or drop --clean-option)")
        names = parse_baselines(list(self.baselines))
        set_(self, "baselines", tuple(["ce"] + [n for n in names if n != "ce"]))
        self.label_files  # noqa: B018 - label files exist and fit the noise
        self.resolved  # noqa: B018 - the preset, overrides, method options and recipe are checked now
        if self.clean_first is not None:
            cleaner = self.cleaner()  # an unknown cleaner, a bad option, recipe or a missing package fails now
            cleaner.check()
            cleaner.train_config(self.resolved.preset)

    @classmethod
    def create(cls, *, noise: str | NoiseSpec = "symmetric", rate: float | None = None, noise_seed: int | None = None,
               seed: int = 0, **kwargs) -> ExperimentSpec:
        """Build a spec from flat values (CLI flags, a study cell, a Python call): ``rate`` None
        takes the noise's default (none for human label sets), ``noise_seed`` None the run seed."""
        if not isinstance(noise, NoiseSpec):
            noise = NoiseSpec.create(noise, rate, seed if noise_seed is None else noise_seed)
        return cls(noise=noise, seed=seed, **kwargs)

    # -- what the spec resolves to --------------------------------------------------------
    @property
    def stage_suffix(self) -> str:
        """Appended to every evaluation stage's name: a native-protocol stage sits beside the common one, never over it."""
        return "_native" if self.eval_protocol == "native" else ""

    @cached_property
    def resolved(self) -> ResolvedPreset:
        preset, applied = apply_overrides(self._own_blocks(load_preset(self.preset)), list(self.overrides))
        options = {}
        if self.method is not None:
            options = method_options(preset, self.method)
            own = cell_preprocess(preset, self.method)
            if "preprocess" in applied and applied["preprocess"] != own:
                raise ConfigError(f"preprocess={applied['preprocess']} was set, but methods.{self.method}.preprocess "
                                  f"({own}) decides the preprocessing of a {self.method} cell",
                                  f"set methods.{self.method}.preprocess={applied['preprocess']} instead")
            preset["preprocess"] = own  # the whole cell's: experts, distillation, controls, baselines, evaluation
            create_distiller(self.method, **options)  # unknown options and bad values fail here, before any data is read
        elif self.eval_protocol != "common":
            raise ConfigError("the native evaluation protocol is the recipe of a method, and no method was given",
                              "use --eval common, or evaluate a set that records the method that made it")
        preset["evaluation"] = evaluation_for(preset, self.method or "", self.eval_protocol)
        for name in self.baselines[1:]:
            if name not in (preset.get("baselines") or {}):
                raise ConfigError(f"preset {preset['name']!r} has no settings for baseline {name!r}",
                                  f"add baselines.{name} to the preset, or use one of: "
                                  f"{', '.join(sorted(preset.get('baselines') or {})) or 'ce'}")
        return ResolvedPreset(preset, applied, options)

    def _own_blocks(self, preset: dict) -> dict:
        """``preset`` with a block for the method and each baseline of another package (a user's own)
        that it has none for: the component's ``preset_options`` for this preset, else ``{}`` (its Options
        defaults). A built-in one without a block stays an error: its defaults are paper-scale, and a preset
        that lacks it is more likely a mistake than a wish for hours of work."""
        wanted = [("methods", distiller_class(self.method))] if self.method is not None else []
        wanted += [("baselines", baseline_class(name)) for name in self.baselines[1:]]
        for section, cls in wanted:
            if cls.__module__.startswith("ddlnl."):
                continue
            preset[section] = preset.get(section) or {}
            preset[section].setdefault(cls.name, cls.preset_options.get(preset["name"], {}))
        return preset

    def distiller(self):
        if self.method is None:
            raise ConfigError("this experiment names no method", "pass --method, e.g. --method datm")
        return create_distiller(self.method, **self.resolved.options)

    def cleaner(self) -> Cleaner | None:
        """The ``--clean-first`` cleaner with its options, or None."""
        if self.clean_first is None:
            return None
        import yaml

        from ddlnl.utils.yamlio import load_yaml

        options = {}
        for item in self.clean_options:
            if "=" not in item:
                raise ConfigError(f"cleaner option {item!r} has no '='", "write it as KEY=VALUE, e.g. threshold=0.6")
            key, raw = item.split("=", 1)
            try:
                options[key.strip()] = load_yaml(raw)  # as --set parses its values
            except yaml.YAMLError:
                options[key.strip()] = raw
        return create_cleaner(self.clean_first, **options)

    def clean_key(self) -> dict | None:
        """What the kept subset depends on beyond the data (cleaner, options, recipe, network); None without one."""
        cleaner = self.cleaner()
        return None if cleaner is None else cleaner.key(self.resolved.preset)

    def clean(self, data: PreparedData, device, *, log=print, progress: bool = False) -> Cleaned:
        """Run the cleaner on the noisy training set (it never reads the clean labels)."""
        cleaner = self.cleaner()
        log(f"[ddlnl] cleaning first with {cleaner.name} ({cleaner.recipe(self.resolved.preset)['epochs']} epochs)")
        return cleaner.clean(BaselineContext(data, self.resolved.preset, device=device, seed=self.seed, progress=progress, log=log))

    def random_control(self):
        methods = self.resolved.preset["methods"]
        return create_distiller("random", **(method_options(self.resolved.preset, "random") if "random" in methods else {}))

    def extra_baselines(self) -> list:
        """The requested baselines other than CE, configured from the preset's ``baselines:`` section."""
        section = self.resolved.preset.get("baselines") or {}
        return [create_baseline(name, **(section[name] or {})) for name in self.baselines[1:]]

    @cached_property
    def label_files(self) -> dict:
        """``{"labels": sha256, "clean_labels": sha256}`` of the files given (only those), checked against the noise."""
        return label_file_digests(self.dataset, self.noise, self.labels, self.clean_labels)

    # -- identity and keys ----------------------------------------------------------------
    def config(self) -> dict:
        """``config.json`` of a run folder (without the resolved preset)."""
        p = self.resolved.preset
        return {"dataset": self.dataset, "noise": self.noise.__dict__, "method": self.method, "ipc": self.ipc, "preset": p["name"],
                "preset_version": p.get("version"), "overrides": self.resolved.applied, "seed": self.seed,
                "imbalance": self.imbalance, "baselines": list(self.baselines), "eval_protocol": self.eval_protocol,
                **{k: {"path": str(getattr(self, k)), "sha256": v} for k, v in self.label_files.items()},
                **({"clean_first": self.clean_key()} if self.clean_first is not None else {})}

    def data_key(self) -> dict:
        """What the prepared data (and so every stage trained on it) depends on."""
        p = self.resolved.preset
        return {"dataset": self.dataset, "noise": self.noise.__dict__, "seed": self.seed, "imbalance": self.imbalance,
                "data": p["data"], "preprocess": p["preprocess"], "model": p["model"], "seed_scheme": SEED_SCHEME,
                **self.label_files}  # only when files are given: the keys of every other run stay as they were

    def evaluation_key(self) -> dict:
        """The evaluation section as a stage key, without the control switches (toggling them reruns only the
        controls) and speed-only recipe keys (``batch_networks``)."""
        return recipe_key({k: v for k, v in self.resolved.evaluation.items() if k != "cross_arch"})

    # -- what the spec builds -------------------------------------------------------------
    def prepare_data(self, saved_noise: Path | None = None) -> PreparedData:
        return prepare_data(self.dataset, self.noise, self.resolved.preset, data_root=self.data_root, imbalance=self.imbalance,
                            seed=self.seed, saved_noise=saved_noise, labels=self.labels, clean_labels=self.clean_labels)

    def distill_context(self, data: PreparedData, device, *, log=print, progress: bool = True, checkpoint: Path | None = None,
                        checkpoint_every_s: float = 300.0, keep: np.ndarray | None = None) -> DistillContext:
        """The distiller's view: noisy labels, the network recipe, and the noise setting (for per-setting hyper-parameters).
        ``keep``: only these training positions (a cleaner's kept subset); what the method records is mapped back."""
        images, labels = data.x_train, data.noisy.labels
        if keep is not None:
            keep = np.asarray(keep, dtype=np.int64)
            images, labels = images[torch.as_tensor(keep)], np.asarray(labels)[keep]
        return DistillContext(self.dataset, images, labels, data.num_classes, data.preprocess,
                              self.resolved.preset["model"], device, self.seed, progress=progress, log=log, noise=self.noise,
                              checkpoint=checkpoint, checkpoint_every_s=checkpoint_every_s, positions=keep)

    def synset_meta(self, data: PreparedData) -> dict:
        """What a saved set records about the experiment that made it."""
        p = self.resolved.preset
        return {"dataset": self.dataset, "num_classes": data.num_classes, "classes": list(data.splits.train.classes),
                "image_size": int(data.x_train.shape[-1]), "noise": data.noisy.summary() | {"transition": None},
                "preset": p["name"], "preset_version": p.get("version"), "overrides": self.resolved.applied, "seed": self.seed,
                "imbalance": self.imbalance, "model": p["model"], "versions": versions()}


def label_file_digests(dataset: str, noise: NoiseSpec, labels: str | None, clean_labels: str | None) -> dict:
    """``{"labels": sha256, "clean_labels": sha256}`` of the label files given (only those), after checking
    that they exist and fit the noise: a user's labels are used as they are, under noise ``given`` only."""
    from ddlnl.data.given import label_file_digest
    from ddlnl.data.noise import GIVEN_NOISE

    given = {k: v for k, v in (("labels", labels), ("clean_labels", clean_labels)) if v is not None}
    if given and noise.type != GIVEN_NOISE:
        flags = " and ".join(f"--{k.replace('_', '-')}" for k in given)
        raise ConfigError(f"{flags} given with noise {noise.type!r}: a user's labels are used as they are, "
                          "with no synthetic noise on top", "pass --noise given (or drop the label files)")
    if noise.type == GIVEN_NOISE and labels is None and not dataset.startswith("folder:"):
        raise ConfigError(f"noise 'given' on {dataset} needs the labels to use",
                          "pass --labels FILE (.npy or .csv); for the dataset's own labels use --noise clean")
    return {k: label_file_digest(v, f"--{k.replace('_', '-')}") for k, v in given.items()}


def check_seed(v, flag: str = "--seed") -> None:
    """Seeds are integers in [0, 2**32): numpy's RandomState (the noise realisation) takes no others."""
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or not 0 <= v < SEED_MAX:
        raise ConfigError(f"{flag} must be in [0, 2**32), got {v!r}", "pass a seed such as 0, 1 or 2")


def check_imbalance(v) -> float | None:
    """A long-tail ratio rho >= 1 (None: balanced)."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)) or math.isnan(v):
        raise ConfigError(f"--imbalance is not a number ({v!r})", "pass a number for --imbalance, e.g. 10 or 100")
    if v < 1:
        raise ConfigError(f"--imbalance must be >= 1, got {v}", "use an imbalance ratio such as 10 or 100")
    return float(v)
