"""The networks an audit attacks and the shadow networks LiRA compares them with.

A pipeline turns training data into a trained network, the way a run did: ``full_noisy`` trains
the baseline recipe on the data itself; a set pipeline (``random``, ``distilled``) first makes a
set from the data with its method, then trains the evaluation recipe on that set. The target is
the run's own network (its recipe and seed; for a set, the run's saved set). Shadow k runs the
same pipeline on the training data without the audited members plus the half of the audit pool
that ``keep[k]`` marks, from its own seed (stream ``privacy.shadow``). Every network trains
through :func:`ddlnl.train.train_networks`, so shadows of one recipe train side by side where
``batch_networks`` allows. Each shadow's scores are saved as soon as it is trained, so an
interrupted audit resumes without retraining it.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ddlnl.baselines import BaselineContext, create_baseline
from ddlnl.distill import DistillContext
from ddlnl.evaluate import SetToEvaluate, accuracy_on, build_model, synthetic_set_to_evaluate
from ddlnl.privacy.attacks import query_outputs
from ddlnl.stages import stage_key
from ddlnl.train import Training, train_networks
from ddlnl.utils.io import atomic_path, write_npy
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed


@dataclass
class AuditPool:
    """The audited examples: members first (training images), then as many non-members (held out)."""

    images: torch.Tensor  # preprocessed like the training images
    labels: torch.Tensor  # the label each example is trained and queried with
    member: np.ndarray  # bool
    member_index: np.ndarray  # positions of the members in the training set
    nonmember_index: np.ndarray | None = None  # positions of the non-members in the test split
    mislabelled: np.ndarray | None = None  # bool, where clean labels are known
    source: dict = field(default_factory=dict)  # how the pool was drawn, for privacy.json

    def shadow_data(self, x_train: torch.Tensor, y_train: torch.Tensor, keep_row: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The training data without the members, plus the pool examples ``keep_row`` marks."""
        rest = np.setdiff1d(np.arange(x_train.shape[0]), self.member_index)
        take = torch.as_tensor(np.flatnonzero(keep_row))
        return (torch.cat([x_train[torch.as_tensor(rest)], self.images[take]]),
                torch.cat([y_train[torch.as_tensor(rest)], self.labels[take]]))


@dataclass
class Outputs:
    """One network's answers on the pool: ``phi`` (n, 2), ``loss`` (n,), and its clean test accuracy."""

    phi: np.ndarray
    loss: np.ndarray
    test_acc: float | None = None
    extra: dict = field(default_factory=dict)  # what the target's training reported (DP-SGD: the epsilon spent)


def train_items(items: list[SetToEvaluate], seeds: list[int], *, num_classes: int, device, progress: bool = False,
                desc: str = "shadows", on_done: Callable[[int, torch.nn.Module], None]) -> None:
    """Train one fresh network per item (``torch.manual_seed(seed)`` weights, its own generator),
    items of one recipe and network together; ``on_done(i, net)`` as soon as item i is trained."""
    groups: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        groups.setdefault(json.dumps([item.train.to_dict(), item.model], sort_keys=True, default=str), []).append(i)
    for members in groups.values():
        trainings = []
        for i in members:
            torch.manual_seed(seeds[i])
            net = build_model(items[i].model, num_classes, items[i].images.shape[-1]).to(device)
            trainings.append(Training(net, items[i].images, items[i].labels, make_generator(seeds[i])))
        train_networks(trainings, items[members[0]].train, progress=progress, desc=f"{desc} ({len(members)} networks)",
                       on_done=lambda j, _stats, trainings=trainings, members=members: on_done(members[j], trainings[j].net))


class Pipeline:
    """How a target network is made from data; subclasses say what (``key``, ``target``, ``shadow_item``)."""

    name: str
    number: int  # index of the pipeline in the shadow seed stream

    def __init__(self, data, preset: dict, *, device, seed: int, progress: bool = False, log=print):
        self.data, self.preset, self.device, self.seed, self.progress, self.log = data, preset, device, seed, progress, log

    def key(self) -> dict:
        raise NotImplementedError

    def trained_details(self) -> dict:
        """What training the target reported, kept with its cached outputs. Here: nothing."""
        return {}

    def details(self) -> dict:
        """What privacy.json says about this target beside its numbers (who its members are)."""
        return {"members_are": "the training images it was trained on"}

    def target(self) -> torch.nn.Module:
        raise NotImplementedError

    def shadow_item(self, images: torch.Tensor, labels: torch.Tensor, seed: int) -> SetToEvaluate:
        raise NotImplementedError

    def train_shadows(self, items: list[SetToEvaluate], seeds: list[int], on_done: Callable[[int, torch.nn.Module], None]) -> None:
        """Train the shadows' networks: through the batched trainer (:func:`train_items`)."""
        train_items(items, seeds, num_classes=self.data.num_classes, device=self.device, progress=self.progress,
                    desc=f"{self.name} shadows", on_done=on_done)

    def outputs(self, net: torch.nn.Module, pool: AuditPool, *, test: bool = False) -> Outputs:
        phi, loss = query_outputs(net, pool.images, pool.labels)
        acc = accuracy_on(net, self.data.x_test, self.data.y_test) if test else None
        return Outputs(phi, loss, acc)

    def at_once(self) -> int | None:
        """How many shadows to prepare before training them (None: all; their training data is small)."""
        return None

    def shadow_seed(self, k: int) -> int:
        return stream_seed(self.seed, "privacy.shadow", self.number, k)


class FullNoisy(Pipeline):
    """CE on the full noisy training set: the run's ``results.full_noisy`` network (run 0)."""

    name, number = "full_noisy", 0

    def key(self) -> dict:
        return {"pipeline": self.name, "baseline": self.preset["baseline"], "model": self.preset["model"]}

    def target(self) -> torch.nn.Module:
        ctx = BaselineContext(self.data, self.preset, device=self.device, seed=self.seed, progress=self.progress, log=self.log)
        return create_baseline("ce").train(ctx, stream_seed(self.seed, "baseline", 0)).net

    def at_once(self) -> int:
        """Each shadow trains on a copy of the whole training set: as many at once as may stack
        (``batch_networks``; under ``auto`` 1 on a CPU, 8 on a GPU, where the trainer may stack fewer)."""
        n = create_baseline("ce").train_config(self.preset).batch_networks
        return n if isinstance(n, int) else (8 if torch.device(self.device).type == "cuda" else 1)

    def shadow_item(self, images, labels, seed) -> SetToEvaluate:
        return SetToEvaluate(images, labels, self.preset["model"], create_baseline("ce").train_config(self.preset), "full noisy")


class FromSet(Pipeline):
    """A set made by ``distiller`` (the run's: ``saved``), then the evaluation recipe trained on it
    (run 0's seed); ``lr``: the lr the run trained this set at (the random control: the distilled set's)."""

    def __init__(self, name: str, number: int, distiller, saved, ipc: int, lr: float | None, data, preset: dict, *, noise,
                 dataset: str, **kw):
        super().__init__(data, preset, **kw)
        self.name, self.number, self.distiller, self.saved, self.ipc, self.lr = name, number, distiller, saved, ipc, lr
        self.noise, self.dataset = noise, dataset

    def details(self) -> dict:
        made = "drawn" if self.distiller.name == "random" else "distilled"
        return {"members_are": f"the training images the set was {made} from (those it keeps are direct leaks, not audited)",
                "method": self.distiller.name, "lr": self.lr}

    def key(self) -> dict:
        return {"pipeline": self.name, "method": self.distiller.name, "options": self.distiller.options_dict(), "ipc": self.ipc,
                "evaluation": {k: v for k, v in self.preset["evaluation"].items() if k != "cross_arch"}, "lr": self.lr,
                "model": self.preset["model"]}

    def target(self) -> torch.nn.Module:
        item = synthetic_set_to_evaluate(self.saved, self.preset, desc=self.name, lr=self.lr)
        nets = []
        train_items([item], [stream_seed(self.seed, "evaluation", 0)], num_classes=self.data.num_classes, device=self.device,
                    progress=self.progress, desc=self.name, on_done=lambda _i, net: nets.append(net))
        return nets[0]

    def shadow_item(self, images, labels, seed) -> SetToEvaluate:
        d = self.data
        ctx = DistillContext(self.dataset, images, labels.numpy(), d.num_classes, d.preprocess, self.preset["model"], self.device,
                             seed, progress=self.progress, log=self.log, noise=self.noise)
        synset = self.distiller.run(ctx, self.ipc)
        lr = self.lr if self.distiller.name == "random" else None  # a shadow set keeps its own learned lr
        return synthetic_set_to_evaluate(synset, self.preset, desc=f"{self.name} shadow", lr=lr)


class ScoreCache:
    """``privacy/<pipeline>/<key>/``: the target's outputs and each shadow's phi, saved atomically."""

    def __init__(self, root: Path, key: dict):
        self.folder = Path(root) / stage_key(key)[:20]
        self.key = key

    def target(self) -> Outputs | None:
        path = self.folder / "target.npz"
        if not path.exists():
            return None
        with np.load(path, allow_pickle=False) as f:
            return Outputs(f["phi"], f["loss"], float(f["test_acc"]), json.loads(str(f["extra"])))

    def save_target(self, out: Outputs) -> None:
        with atomic_path(self.folder / "target.npz") as tmp, open(tmp, "wb") as f:
            np.savez(f, phi=out.phi, loss=out.loss, test_acc=np.float64(out.test_acc), extra=np.array(json.dumps(out.extra)))

    def shadow(self, k: int) -> np.ndarray | None:
        path = self.folder / f"shadow_{k:04d}.npy"
        return np.load(path, allow_pickle=False) if path.exists() else None

    def save_shadow(self, k: int, phi: np.ndarray) -> None:
        write_npy(self.folder / f"shadow_{k:04d}.npy", phi)


def target_outputs(pipe: Pipeline, pool: AuditPool, cache: ScoreCache) -> Outputs:
    """The target network trained (or its saved outputs) and asked about the pool; its test accuracy."""
    out = cache.target()
    if out is None:
        pipe.log(f"[ddlnl] privacy: training the {pipe.name} target")
        out = pipe.outputs(pipe.target(), pool, test=True)
        out.extra = pipe.trained_details()
        cache.save_target(out)
    return out


def shadow_outputs(pipe: Pipeline, pool: AuditPool, keep: np.ndarray, cache: ScoreCache) -> np.ndarray:
    """(K, n, 2) phi of the K shadow networks on the pool; only the shadows not saved yet are trained,
    :meth:`Pipeline.at_once` of them at a time (each holds a copy of its training data until trained)."""
    phi = [cache.shadow(k) for k in range(keep.shape[0])]
    todo = [k for k, p in enumerate(phi) if p is None]
    if todo:
        pipe.log(f"[ddlnl] privacy: {len(todo)} {pipe.name} shadow network(s) to train ({keep.shape[0] - len(todo)} saved)")
    d, step = pipe.data, pipe.at_once() or len(todo) or 1
    for start in range(0, len(todo), step):
        chunk = todo[start : start + step]
        items = [pipe.shadow_item(*pool.shadow_data(d.x_train, d.y_train_noisy, keep[k]), pipe.shadow_seed(k)) for k in chunk]

        def done(j: int, net: torch.nn.Module, chunk=chunk) -> None:
            phi[chunk[j]] = pipe.outputs(net, pool).phi
            cache.save_shadow(chunk[j], phi[chunk[j]])

        pipe.train_shadows(items, [pipe.shadow_seed(k) for k in chunk], done)
    return np.stack(phi)
