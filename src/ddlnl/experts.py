"""Expert trajectories for trajectory matching (MTT/DATM), trained on the noisy set and cached.

An expert is a network trained from a random initialisation on the (preprocessed, noisily
labelled) training set with plain SGD (lr 0.01, no momentum, no weight decay, batch 256,
DSA), as in MTT's and DATM's buffer scripts. Its parameters are saved before training and
after every epoch, as one float32 tensor of shape (epochs + 1, P) in the flat layout of
:mod:`ddlnl.models.functional`. With ``keep_until`` set (an expert trained longer than
matching reads, as DD_LNL's 100-epoch buffers), only epochs 0..keep_until, ``keep_also`` and
the last epoch are kept, in that order (:meth:`ExpertConfig.stored_epochs`,
:meth:`ExpertConfig.row`), so a 100-epoch cache costs what matching and labelling use.
With ``gsam: true`` each step is DATM's flat-trajectory (FTD) GSAM step instead of plain SGD.

Training goes through :func:`ddlnl.train.train_networks` (GSAM as the trainer's ``sam: gsam``
update), ``batch_networks`` experts side by side.

Cache: ``<cache>/experts/<key>/expert_<k>.safetensors`` (+ ``.sha256`` sidecar, ``.lock``), where ``key`` hashes everything
that determines a trajectory (dataset, the training images, the noisy labels' digest, the
network, the preprocessing, the hyper-parameters, the seed and the number of epochs) and,
when not every epoch is kept, the kept epochs. The
number of experts is not in the key: asking for more experts trains only the missing ones.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable, Protocol

import numpy as np
import torch

from ddlnl.data.noise import labels_digest
from ddlnl.errors import ConfigError, DataError
from ddlnl.evaluate import build_model
from ddlnl.models.functional import flatten_params
from ddlnl.train import TrainConfig, TrainHook, Training, networks_at_once, train_networks
from ddlnl.utils.io import atomic_path, write_json
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed

CACHE_VERSION = 2  # 2: expert k seeded from the 'expert' stream (1: seed*1000 + k, coupled to evaluation run k)
# ExpertConfig fields added for DANCE enter the cache key only when they differ from MTT's recipe,
# so the keys (and cached trajectories) of MTT/DATM experts stay what they were before they existed.
_KEY_ONLY_IF_SET = {"schedule": "constant", "milestones": (), "gamma": 0.1, "cutmix_prob": 0.0}


@dataclass
class ExpertConfig:
    """How experts are trained. ``epochs`` is the training length: MTT's/DATM's ``train_epochs``,
    by default max_start_epoch + expert_epochs.

    The defaults are MTT's/DATM's buffer recipe (plain SGD, constant lr, DSA). DANCE's
    pre-training (docs/methods/dance.md §3.1) sets momentum 0.9, weight decay 5e-4, batch 64,
    ``schedule: multistep`` with milestones (2/3, 5/6) and gamma 0.2, CutMix with p 0.5, and
    the ``dance:color_crop`` augmentation; see :func:`ddlnl.distill.dance.expert_config`.
    """

    num_experts: int = 1
    epochs: int = 4
    lr: float = 0.01
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 256
    dsa_strategy: str = "color_crop_cutout_flip_scale_rotate"
    gsam: bool = False  # DATM's flat-trajectory (FTD) buffers: GSAM rho 0.01, alpha 0.3, adaptive
    rho: float = 0.01
    alpha: float = 0.3
    compile: bool = False  # speed only: torch.compile full batches
    batch_networks: int | str = "auto"  # speed only: experts trained side by side (train.TrainConfig)
    # DANCE's recipe (train.TrainConfig's fields of the same names); the defaults are MTT's.
    schedule: str = "constant"
    milestones: tuple = ()
    gamma: float = 0.1
    cutmix_prob: float = 0.0
    # Stored epochs (None: all). Not in recipe(): training is the same; expert_key adds them when set.
    keep_until: int | None = None  # keep epochs 0..keep_until (what matching reads) ...
    keep_also: tuple = ()  # ... and these later ones (a label epoch); the last epoch is always kept
    # A TrainHook for expert k (``hook(ctx, k)``, ctx the ExpertSource) that changes what it trains on (TAD's
    # trusted split), and what the hook does as data: ``hook_key`` enters the cache key (only when set, so
    # plain experts keep theirs).
    hook: Callable[..., TrainHook] | None = None
    hook_key: dict | None = None

    def __post_init__(self):
        if self.num_experts < 1 or self.epochs < 1:
            raise ConfigError(
                f"experts need num_experts >= 1 and epochs >= 1 (got {self.num_experts}, {self.epochs})",
                "set num_experts: 1 or more, and max_start_epoch + expert_epochs >= 1",
            )
        self.milestones = tuple(self.milestones)
        if self.keep_until is not None and not 0 <= self.keep_until:
            raise ConfigError(f"keep_until must be >= 0, got {self.keep_until}", "keep max_start_epoch + expert_epochs epochs")
        bad = [e for e in self.keep_also if not 0 <= e <= self.epochs]
        if bad:
            raise ConfigError(f"keep_also epochs {bad} are outside the expert's 0..{self.epochs}", "keep epochs the expert trains")
        # normalised so that keeping everything is the default config (and so the default cache key)
        if self.keep_until is None or self.keep_until >= self.epochs:
            self.keep_until, self.keep_also = None, ()
        else:
            self.keep_also = tuple(sorted({int(e) for e in self.keep_also} - set(range(self.keep_until + 1)) - {self.epochs}))
        if self.hook is not None and not self.hook_key:
            raise ConfigError("experts trained with a hook need a hook_key (what the hook does, for the cache key)",
                              "pass hook_key: the options of the hook's method, so its experts never mix with plain ones")
        self.train_config()  # range checks of the training recipe

    def train_config(self) -> TrainConfig:
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, schedule=self.schedule, augment="dsa",
                           milestones=self.milestones or (0.5, 0.75), gamma=self.gamma, cutmix_prob=self.cutmix_prob,
                           dsa_strategy=self.dsa_strategy, compile=self.compile, sam="gsam" if self.gsam else "none",
                           gsam_rho=self.rho, gsam_alpha=self.alpha, batch_networks=self.batch_networks)

    def recipe(self) -> dict:
        """The hyper-parameters that determine a trajectory (not num_experts, not compile)."""
        hp = {f.name: getattr(self, f.name) for f in fields(self)}
        hp.pop("hook")  # a function; hook_key says what it does
        if self.hook_key is None:
            hp.pop("hook_key")
        hp.pop("num_experts")
        hp.pop("compile")  # speed only
        hp.pop("batch_networks")  # speed only
        hp.pop("keep_until")  # what is stored, not how it trains (expert_key adds it)
        hp.pop("keep_also")
        hp["milestones"] = list(self.milestones)
        for name, default in _KEY_ONLY_IF_SET.items():
            if getattr(self, name) == default or (name in ("milestones", "gamma") and self.schedule != "multistep"):
                hp.pop(name)
        return hp

    def stored_epochs(self) -> list[int]:
        """The epochs a cached trajectory holds, in row order."""
        return stored_epochs(self.epochs, self.keep_until, self.keep_also)

    def row(self, epoch: int) -> int:
        """The trajectory row that holds ``epoch``'s parameters."""
        stored = self.stored_epochs()
        if epoch not in stored:
            raise ConfigError(f"expert epoch {epoch} is not stored (stored: 0..{self.keep_until}, {self.keep_also}, {self.epochs})",
                              "add it to keep_also")
        return stored.index(epoch)


def stored_epochs(epochs: int, keep_until: int | None, keep_also=()) -> list[int]:
    """Row order of a trajectory: every epoch, or 0..keep_until, then ``keep_also``, then the last
    (``key.json``'s ``stored_epochs`` holds the three, so readers of the cache map rows to epochs)."""
    if keep_until is None:
        return list(range(epochs + 1))
    return list(range(keep_until + 1)) + list(keep_also) + [epochs]


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$DDLNL_CACHE``, else ``~/.cache/ddlnl``."""
    import os

    if cache_dir is not None:
        return Path(cache_dir)
    return Path(os.environ.get("DDLNL_CACHE") or Path.home() / ".cache" / "ddlnl")


def images_digest(images: torch.Tensor) -> str:
    h = hashlib.sha256(str(tuple(images.shape)).encode())
    h.update(images.detach().cpu().contiguous().float().numpy().data)
    return h.hexdigest()[:16]


def expert_key(dataset: str, images: torch.Tensor, labels: np.ndarray, model: dict, preprocess_meta: dict,
               cfg: ExpertConfig, seed: int) -> dict:
    """Everything that determines a trajectory (the dict whose hash names the cache folder)."""
    hp = cfg.recipe()
    key = {"version": CACHE_VERSION, "dataset": dataset, "images": images_digest(images),
           "labels": labels_digest(labels), "model": model, "preprocess": preprocess_meta, "train": hp, "seed": seed}
    if cfg.keep_until is not None:  # only then: keys of experts that keep every epoch stay as they were
        key["stored_epochs"] = {"until": cfg.keep_until, "also": list(cfg.keep_also), "last": cfg.epochs}
    return key


def key_hash(key: dict) -> str:
    return hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:20]


# --------------------------------------------------------------------------- training and cache


def train_experts(images: torch.Tensor, labels: torch.Tensor, model: dict, num_classes: int, cfg: ExpertConfig,
                  seeds: list[int], *, device="cpu", progress: bool = False, partials: list[Path | None] | None = None,
                  partial_every_s: float = 60.0, log=print, on_done: Callable[[int, torch.Tensor], None] | None = None,
                  hooks: list[TrainHook | None] | None = None, stats: list | None = None) -> list[torch.Tensor]:
    """One trajectory per seed, trained side by side (``cfg.batch_networks`` at once): float32
    (epochs + 1, P), row 0 the initialisation, row e after epoch e (with ``cfg.keep_until``: only
    the rows of ``cfg.stored_epochs()``). Expert i starts from ``seeds[i]``'s weights and draws its
    batches from its own generator, so it is the same trajectory however many train at once.

    With ``partials[i]``, expert i's progress (the trajectory so far and the training state) is
    saved there atomically at most every ``partial_every_s`` seconds, and a later call with the
    same file continues from it — exactly, on CPU — instead of starting over. ``on_done(i, traj)``
    is called as soon as expert i has trained its last epoch (e.g. to cache it). ``hooks[i]`` trains
    expert i (its state is saved with the partial file); ``stats`` (a list) receives each training's TrainStats."""
    partials = partials if partials is not None else [None] * len(seeds)
    hooks = hooks if hooks is not None else [None] * len(seeds)
    keep = set(cfg.stored_epochs())
    trajs: list[torch.Tensor | None] = [None] * len(seeds)
    trainings = []
    for i, (seed, partial) in enumerate(zip(seeds, partials, strict=True)):
        torch.manual_seed(seed)
        net = build_model(model, num_classes, images.shape[-1]).to(device)
        snaps = [flatten_params(net).detach().clone().cpu()]
        resume = _load_partial(partial, log)
        if resume is not None:
            snaps = list(resume.pop("trajectory"))
            log(f"[ddlnl] resuming expert training from {partial} after epoch {resume['epoch'] + 1}/{cfg.epochs}")
        last_save = [time.monotonic()]

        def snapshot(epoch, net_, state, i=i, snaps=snaps, partial=partial, last_save=last_save):
            # flatten_params concatenates (a new tensor); clone anyway: on CPU .cpu() shares storage.
            if epoch + 1 in keep:
                snaps.append(flatten_params(net_).detach().clone().cpu())
            if epoch + 1 == cfg.epochs:
                trajs[i] = torch.stack(snaps).float()
                snaps.clear()
                if on_done is not None:
                    on_done(i, trajs[i])
            elif partial is not None and time.monotonic() - last_save[0] >= partial_every_s:
                with atomic_path(partial) as tmp:
                    torch.save(state() | {"trajectory": torch.stack(snaps)}, tmp)
                last_save[0] = time.monotonic()

        trainings.append(Training(net, images, labels, make_generator(seed), hook=hooks[i], epoch_callback=snapshot, resume=resume))
    which = f"seed {seeds[0]}" if len(seeds) == 1 else f"{len(seeds)} experts"
    done = train_networks(trainings, cfg.train_config(), progress=progress, desc=f"expert {which}")
    if stats is not None:
        stats.extend(done)
    return trajs


def train_expert(images: torch.Tensor, labels: torch.Tensor, model: dict, num_classes: int, cfg: ExpertConfig,
                 seed: int, device="cpu", progress: bool = False, partial: Path | None = None,
                 partial_every_s: float = 60.0, log=print) -> torch.Tensor:
    """One trajectory (:func:`train_experts` with one seed)."""
    return train_experts(images, labels, model, num_classes, cfg, [seed], device=device, progress=progress,
                         partials=[partial], partial_every_s=partial_every_s, log=log)[0]


def _load_partial(path: Path | None, log) -> dict | None:
    """A partly trained expert saved by :func:`train_expert`, or None (missing or unreadable: start over)."""
    if path is None or not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a damaged partial file only costs the epochs it held
        log(f"[ddlnl] warning: ignoring damaged partial expert {path} ({type(e).__name__}); training it from the start")
        return None


def expert_file(folder: Path, k: int) -> Path:
    return folder / f"expert_{k}.safetensors"


def load_cached_expert(path: Path, epochs: int, *, adopt_unhashed: bool = False, log=print,
                       rows: int | None = None) -> torch.Tensor | None:
    """The trajectory cached at ``path`` if it is intact, else None.

    Intact means: its ``.sha256`` sidecar matches, it loads as safetensors, and it has shape
    (rows, P), ``rows`` defaulting to epochs + 1. A damaged entry is deleted with a warning (the caller rebuilds it). An
    entry without a sidecar is used only with ``adopt_unhashed`` (the caller holds the entry's
    lock, so no writer is between its two renames): then it is checked by loading, and hashed.
    """
    from safetensors.torch import load_file

    from ddlnl.utils.io import remove_entry, verify_sidecar, write_sidecar

    if not path.is_file():
        return None
    why = verify_sidecar(path)
    unhashed = why is not None and why.startswith("no .sha256")
    if why is not None and not (unhashed and adopt_unhashed):
        if not unhashed:
            log(f"[ddlnl] warning: expert cache file {path} is damaged ({why}); rebuilding it")
            remove_entry(path)
        return None
    rows = epochs + 1 if rows is None else rows
    try:
        traj = load_file(str(path))["trajectory"]
        if traj.ndim != 2 or traj.shape[0] != rows:
            raise ValueError(f"shape {tuple(traj.shape)}, expected ({rows}, P)")
    except Exception as e:  # noqa: BLE001 - truncated, foreign or wrong-shaped: rebuild it
        log(f"[ddlnl] warning: expert cache file {path} is unreadable ({type(e).__name__}: {e}); rebuilding it")
        remove_entry(path)
        return None
    if unhashed:
        write_sidecar(path)
    return traj


def save_expert(path: Path, traj: torch.Tensor, epochs: list[int] | None = None) -> None:
    """Write one finished trajectory atomically (temp file + rename), then its sha256 sidecar.
    ``epochs``: the epoch of each row, recorded in the file's metadata for readers outside ddlnl."""
    from safetensors.torch import save_file

    from ddlnl.utils.io import write_sidecar

    meta = None if epochs is None else {"epochs": json.dumps(epochs)}
    with atomic_path(path) as tmp:
        save_file({"trajectory": traj.contiguous()}, str(tmp), metadata=meta)
    write_sidecar(path)


class ExpertSource(Protocol):
    """What :func:`load_or_train_experts` reads of its caller: the fields of a
    :class:`ddlnl.distill.DistillContext` (this module sits below ``distill``, so it names them here)."""

    dataset: str
    images: torch.Tensor
    labels: np.ndarray
    num_classes: int
    preprocess: object
    model: dict
    device: torch.device
    seed: int
    cache_dir: Path | None
    progress: bool
    log: Callable[[str], None]
    timings: dict
    images_processed: int
    checkpoint_every_s: float


def load_or_train_experts(ctx: ExpertSource, cfg: ExpertConfig) -> list[torch.Tensor]:
    """The ``cfg.num_experts`` trajectories for ``ctx``'s noisy set: from the cache, or trained and cached.

    Each expert is its own cache entry, saved atomically with a sha256 sidecar as soon as it is
    trained, so a killed run that restarts retrains only the unfinished experts. Entries are
    verified against their sidecar before use; a damaged one is rebuilt with a warning. Each
    entry is built under its own file lock (``expert_<k>.safetensors.lock``): two runs sharing
    the cache never train the same expert twice or read one half-written; the second waits and
    loads what the first wrote.

    Adds the seconds spent to ``ctx.timings['experts']`` and logs the cache hit or miss.
    """
    from ddlnl.utils.io import file_lock

    start = time.perf_counter()
    key = expert_key(ctx.dataset, ctx.images, ctx.labels, ctx.model, ctx.preprocess.meta(), cfg, ctx.seed)
    folder = cache_root(ctx.cache_dir) / "experts" / key_hash(key)
    labels = torch.as_tensor(ctx.labels, dtype=torch.long)
    stored = cfg.stored_epochs()
    trajs: list[torch.Tensor | None] = [load_cached_expert(expert_file(folder, k), cfg.epochs, log=ctx.log, rows=len(stored))
                                        for k in range(cfg.num_experts)]  # fast path: no lock for an intact entry
    missing = [k for k, t in enumerate(trajs) if t is None]
    at_once = 1
    if len(missing) > 1:
        with torch.random.fork_rng(devices=[]):  # a probe network for sizing; the run's random state stays as it was
            probe = build_model(ctx.model, ctx.num_classes, ctx.images.shape[-1]).to(ctx.device)
        at_once = networks_at_once(cfg.train_config(), probe, ctx.images.shape[1:], len(missing))
    trained = 0
    for j in range(0, len(missing), at_once):
        group = missing[j : j + at_once]
        with contextlib.ExitStack() as locks:
            for k in group:
                lock = expert_file(folder, k).with_name(f"expert_{k}.safetensors.lock")
                locks.enter_context(file_lock(lock, on_wait=lambda k=k, lock=lock: ctx.log(
                    f"[ddlnl] expert {k + 1}/{cfg.num_experts} is being trained by another run; waiting for it ({lock})")))
            for k in group:  # written meanwhile by a run that held the lock?
                trajs[k] = load_cached_expert(expert_file(folder, k), cfg.epochs, adopt_unhashed=True, log=ctx.log, rows=len(stored))
            todo = [k for k in group if trajs[k] is None]
            if not todo:
                continue
            t0 = time.perf_counter()
            partials = [expert_file(folder, k).with_name(f"expert_{k}.safetensors.partial.pt") for k in todo]

            def done(i: int, traj: torch.Tensor, todo=todo, partials=partials, t0=t0) -> None:
                k = todo[i]
                save_expert(expert_file(folder, k), traj, None if cfg.keep_until is None else stored)
                partials[i].unlink(missing_ok=True)
                if not (folder / "key.json").exists():
                    write_json(folder / "key.json", key)
                kept = "" if cfg.keep_until is None else f", {len(stored)} of them kept"
                side = "" if len(todo) == 1 else f", {len(todo)} side by side"
                ctx.log(f"[ddlnl] expert {k + 1}/{cfg.num_experts} trained and cached "
                        f"({cfg.epochs} epochs{kept}{side}, {time.perf_counter() - t0:.1f}s)")

            costs: list = []
            new = train_experts(ctx.images, labels, ctx.model, ctx.num_classes, cfg, [stream_seed(ctx.seed, "expert", k) for k in todo],
                                device=ctx.device, progress=ctx.progress, partials=partials,
                                partial_every_s=ctx.checkpoint_every_s, log=ctx.log, on_done=done,
                                hooks=None if cfg.hook is None else [cfg.hook(ctx, k) for k in todo], stats=costs)
            for k, traj in zip(todo, new, strict=True):
                trajs[k] = traj
            trained += len(todo)
            # forward passes over real images (GSAM: two per batch); a hook's sweeps and extra passes as counted
            if cfg.hook is None:
                ctx.images_processed += len(labels) * cfg.epochs * (2 if cfg.gsam else 1) * len(todo)
            else:
                ctx.images_processed += sum(st.images_processed for st in costs)
    status = "hit" if trained == 0 else ("miss" if trained == cfg.num_experts else "partial hit")
    ctx.log(f"[ddlnl] expert cache {status}: {cfg.num_experts - trained} loaded, {trained} trained ({folder})")
    shapes = {tuple(t.shape) for t in trajs}
    if len(shapes) > 1:
        raise DataError(f"cached trajectories in {folder} have different shapes {sorted(shapes)}",
                        f"delete {folder} and rerun (the experts will be retrained)")
    ctx.timings["experts"] = ctx.timings.get("experts", 0.0) + time.perf_counter() - start
    return trajs
