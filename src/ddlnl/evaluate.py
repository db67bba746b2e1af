"""The one evaluation protocol: train fresh networks on a set, test on the clean test set.

Final-epoch accuracy, mean ± std over ``runs`` freshly initialised networks, plus
per-class accuracy and the confusion matrix (needed to see where asymmetric noise and
long-tailed classes go): the headline. When the preset holds out a validation split
(``data.validation``), each network is also scored on it against the *noisy* labels: the
number every choice is made on, so that the test set serves only the final one.

``evaluation.checkpoint_every: k`` (off when absent or null) also tests each network at every
k-th epoch and the last, and records the best of those test accuracies beside the headline:
the number DANCE and DD_LNL publish (it picks the epoch on the test set, so it is a secondary
column, named as such, never the headline).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ddlnl.errors import ConfigError
from ddlnl.models import create_model, model_spec
from ddlnl.train import TrainConfig, TrainHook, TrainRun, Training, train_networks
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import SCHEME as SEED_SCHEME
from ddlnl.utils.seeds import stream_seed


@dataclass
class EvalResult:
    acc_mean: float
    acc_std: float
    accs: list[float]
    per_class: list[float]  # mean over runs, one entry per class
    confusion: list[list[int]]  # summed over runs; rows true class, columns prediction
    runs: int
    seconds: float
    images_processed: int = 0
    train: dict = field(default_factory=dict)
    model: dict = field(default_factory=dict)
    seed_stream: dict = field(default_factory=dict)  # {"scheme", "seed", "purpose", "run_seeds"}: where each run's seed came from
    val_accs: list[float] | None = None  # accuracy on the validation split's noisy labels, per run (None: no split)
    # checkpoint_every: the 1-based epochs each run was tested at (the last is the final epoch) and, per
    # run, the clean test accuracy at each of them (the last equals accs[r]); None: off
    checkpoint_epochs: list[int] | None = None
    checkpoint_accs: list[list[float]] | None = None

    @property
    def val_acc_mean(self) -> float | None:
        return None if self.val_accs is None else float(np.mean(self.val_accs))

    def best_checkpoint(self) -> dict:
        """The published protocol's number, when checkpoints were tested: per run the best clean test
        accuracy over the tested epochs (chosen on the test set) and its epoch; {} when off."""
        if self.checkpoint_accs is None:
            return {}
        best = [int(np.argmax(accs)) for accs in self.checkpoint_accs]  # the first of equal maxima
        accs = [float(c[i]) for c, i in zip(self.checkpoint_accs, best, strict=True)]
        return {"best_checkpoint_acc_mean": float(np.mean(accs)), "best_checkpoint_acc_std": float(np.std(accs)),
                "best_checkpoint_accs": accs, "best_checkpoint_epochs": [self.checkpoint_epochs[i] for i in best],
                "checkpoint_epochs": list(self.checkpoint_epochs), "checkpoint_accs": [list(c) for c in self.checkpoint_accs]}

    def to_dict(self) -> dict:
        d = asdict(self)
        del d["checkpoint_epochs"], d["checkpoint_accs"]  # in best_checkpoint(), with the best, when on
        return d | self.best_checkpoint()


@torch.no_grad()
def predict_logits(net: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Logits of ``net`` (in eval mode, on its own device, in batches) on preprocessed images ``x``, on the CPU."""
    net.eval()
    device = next(net.parameters()).device
    out = [net(x[i : i + batch_size].to(device)).cpu() for i in range(0, x.shape[0], batch_size)]
    net.train()
    return torch.cat(out)


def test_predictions(net: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes of ``net`` on preprocessed images ``x``."""
    return predict_logits(net, x, batch_size=batch_size).argmax(dim=1)


def accuracy_on(net: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of ``x`` that ``net`` predicts as ``y`` (clean test labels, or a validation split's noisy ones)."""
    return float((test_predictions(net, x) == y.cpu()).float().mean())


def accuracy_report(pred: torch.Tensor, target: torch.Tensor, num_classes: int) -> tuple[float, np.ndarray, np.ndarray]:
    """Overall accuracy, per-class accuracy (recall) and the confusion matrix."""
    t, p = target.cpu().numpy().astype(np.int64), pred.cpu().numpy().astype(np.int64)
    confusion = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(confusion, (t, p), 1)
    per_class = np.diag(confusion) / np.maximum(confusion.sum(axis=1), 1)
    return float((t == p).mean()), per_class, confusion


def build_model(model_cfg: dict, num_classes: int, image_size: int) -> nn.Module:
    cfg = dict(model_cfg)
    return create_model(cfg.pop("name"), num_classes, image_size=image_size, **cfg)


def check_checkpoint_every(value, where: str = "evaluation.checkpoint_every") -> int | None:
    """``checkpoint_every``: a positive number of epochs, or None (off)."""
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where} must be a positive integer (epochs) or null, got {value!r}",
                          "set it to null (off) or e.g. 250 (DANCE tests every 250 of its 1,500 epochs)")
    return value


def checkpoint_epochs(epochs: int, every: int) -> list[int]:
    """The 1-based epochs tested when testing every ``every`` epochs: its multiples and the last
    epoch (DANCE/IDC: ``epoch % interval == 0 or epoch == epochs``)."""
    out = list(range(every, epochs + 1, every))
    return out if out and out[-1] == epochs else out + [epochs]


class CheckpointTests(TrainHook):
    """Plain training that also tests network 0 on (x, y) after each of the 1-based ``epochs``, the
    last one only with ``last`` (the protocol tests it itself, after training); ``accs`` in epoch order."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, epochs: list[int], *, last: bool = False):
        self.x, self.y, self.at = x, y.cpu(), set(epochs if last else epochs[:-1])
        self.accs: list[float] = []

    def end_epoch(self, epoch: int, run: TrainRun) -> None:
        if epoch + 1 in self.at:
            self.accs.append(accuracy_on(run.nets[0], self.x, self.y))
            self.tested(epoch + 1, run)

    def tested(self, epoch: int, run: TrainRun) -> None:
        """Called after the test at 1-based ``epoch`` (its accuracy is ``accs[-1]``). Here: nothing."""

    def state_dict(self) -> dict:
        return {"accs": list(self.accs)}

    def load_state_dict(self, state: dict) -> None:
        self.accs = [float(a) for a in state["accs"]]


@dataclass
class SetToEvaluate:
    """One set for :func:`evaluate_sets`: its training data, network recipe and training recipe."""

    images: torch.Tensor
    labels: torch.Tensor
    model: dict
    train: TrainConfig
    desc: str = "eval"


def evaluate_sets(sets: list[SetToEvaluate], *, test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                  runs: int = 1, seed: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                  validation=None, checkpoint_every: int | None = None,
                  on_result: Callable[[int, EvalResult], None] | None = None) -> list[EvalResult]:
    """Train ``runs`` fresh networks on each set and test each on the clean test set (and on
    ``validation``'s noisy labels, when given); one :class:`EvalResult` per set, in order.

    Run r of every set starts from the same weights (``stream_seed(seed, "evaluation", r)``): the
    sets are compared on paired networks. Sets that share a training recipe and a network (a
    distilled set and the controls at its lr) train in one :func:`ddlnl.train.train_networks` call,
    so ``batch_networks`` can put all their runs side by side; one at a time, a set's runs train
    one after another. ``on_result(i, result)`` is called as soon as set i's runs are trained and
    tested. ``checkpoint_every``: also test each network every that many epochs (and at the last),
    recorded beside the final-epoch accuracy.
    """
    every = check_checkpoint_every(checkpoint_every)
    run_seeds = [stream_seed(seed, "evaluation", r) for r in range(runs)]
    trained: list[list] = [[] for _ in sets]  # per set, per run: (net, TrainStats, CheckpointTests | None)
    results: list[EvalResult | None] = [None] * len(sets)

    def score(i: int) -> None:
        s, nets = sets[i], trained[i]
        result = evaluate_runs(lambda seeds: [(net, st.images_processed) for net, st, _ in nets], runs=runs, seed=seed,
                               test_images=test_images, test_labels=test_labels, num_classes=num_classes, train=s.train,
                               model=s.model, validation=validation)
        result.seconds += sum(st.seconds for _, st, _ in nets)  # the runs' share of their training
        if every is not None:  # the last checkpoint is the final epoch: the protocol's own test of the run
            result.checkpoint_epochs = checkpoint_epochs(s.train.epochs, every)
            result.checkpoint_accs = [hook.accs + [final] for (_, _, hook), final in zip(nets, result.accs, strict=True)]
        results[i] = result
        if on_result is not None:
            on_result(i, result)

    groups: dict[str, list[int]] = {}
    for i, s in enumerate(sets):
        groups.setdefault(json.dumps([s.train.to_dict(), s.model], sort_keys=True, default=str), []).append(i)
    for members in groups.values():
        trainings, owners = [], []
        for i in members:
            s = sets[i]
            tested = None if every is None else checkpoint_epochs(s.train.epochs, every)
            for run_seed in run_seeds:
                torch.manual_seed(run_seed)
                net = build_model(s.model, num_classes, s.images.shape[-1]).to(device)
                hook = None if tested is None else CheckpointTests(test_images, test_labels, tested)
                trainings.append(Training(net, s.images, s.labels, make_generator(run_seed), hook))
                owners.append(i)

        def done(j: int, stats, trainings=trainings, owners=owners) -> None:
            i = owners[j]
            trained[i].append((trainings[j].net, stats, trainings[j].hook))
            if len(trained[i]) == runs:
                score(i)

        desc = " + ".join(sets[i].desc for i in members)
        train_networks(trainings, sets[members[0]].train, progress=progress, desc=f"{desc} ({runs} runs)", on_done=done)
    return results


def evaluate_set(images: torch.Tensor, labels: torch.Tensor, *, test_images: torch.Tensor, test_labels: torch.Tensor,
                 num_classes: int, model: dict, train: TrainConfig, runs: int = 1, seed: int = 0,
                 device: torch.device | str = "cpu", progress: bool = False, desc: str = "eval", validation=None,
                 checkpoint_every: int | None = None) -> EvalResult:
    """:func:`evaluate_sets` for one set (images, labels)."""
    return evaluate_sets([SetToEvaluate(images, labels, model, train, desc)], test_images=test_images, test_labels=test_labels,
                         num_classes=num_classes, runs=runs, seed=seed, device=device, progress=progress,
                         validation=validation, checkpoint_every=checkpoint_every)[0]


def learned_lr(synset, evaluation: dict) -> float | None:
    """The lr a set trains at when it carries a learned one and the recipe uses it (``use_learned_lr``);
    None: the recipe's own lr."""
    return float(synset.lr) if evaluation.get("use_learned_lr", True) and synset.lr is not None else None


def synthetic_set_to_evaluate(synset, preset: dict, *, desc: str = "eval", model: dict | None = None,
                              labels: torch.Tensor | None = None, lr: float | None = None) -> SetToEvaluate:
    """``preset["evaluation"]`` applied to a SyntheticSet: its decoded training data, its learned lr
    (when ``use_learned_lr``) and the evaluation network. ``model`` / ``labels`` replace the network
    (cross-architecture control) and the set's labels (hard-label control); ``lr`` the learning
    rate (a control trains at the lr of the set it controls)."""
    ev = preset["evaluation"]
    lr = lr if lr is not None else learned_lr(synset, ev)
    lr_override = {"lr": float(lr)} if lr is not None else {}
    images, labels = synset.training_data(labels, loss=ev["train"].get("loss", "ce"))
    return SetToEvaluate(images, labels, model or model_spec(ev.get("model")) or preset["model"],
                         TrainConfig.from_dict(ev["train"], **lr_override), desc)


def evaluate_synthetic_set(synset, preset: dict, *, test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                           runs: int, seed: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                           desc: str = "eval", model: dict | None = None, labels: torch.Tensor | None = None,
                           lr: float | None = None, validation=None) -> EvalResult:
    """One SyntheticSet under the preset's evaluation (:func:`synthetic_set_to_evaluate`);
    ``evaluation.checkpoint_every`` turns on the checkpoint tests (:func:`evaluate_sets`)."""
    one = synthetic_set_to_evaluate(synset, preset, desc=desc, model=model, labels=labels, lr=lr)
    return evaluate_sets([one], test_images=test_images, test_labels=test_labels, num_classes=num_classes, runs=runs,
                         seed=seed, device=device, progress=progress, validation=validation,
                         checkpoint_every=preset["evaluation"].get("checkpoint_every"))[0]


def evaluate_runs(train_runs, *, runs: int, seed: int, test_images: torch.Tensor, test_labels: torch.Tensor,
                  num_classes: int, train: TrainConfig, model: dict, purpose: str = "evaluation",
                  validation=None) -> EvalResult:
    """The protocol: ``train_runs(run_seeds) -> [(net, images_processed), ...]`` trains one network per
    run (side by side, or one after another), and each is tested.

    Run r's seed is ``stream_seed(seed, purpose, r)``: evaluation networks (and baselines, whose
    purpose is ``baseline``) draw from their own stream, never an expert's or a distiller's.
    ``validation`` (an :class:`ddlnl.experiment.Validation`, or None) scores each net on the held-out
    noisy labels too."""
    start = time.perf_counter()
    accs, per_class, confusion, processed = [], [], np.zeros((num_classes, num_classes), dtype=np.int64), 0
    val_accs = None if validation is None else []
    run_seeds = [stream_seed(seed, purpose, r) for r in range(runs)]
    for net, n_images in train_runs(run_seeds):
        processed += n_images
        acc, pc, conf = accuracy_report(test_predictions(net, test_images), test_labels, num_classes)
        if validation is not None:
            val_accs.append(accuracy_on(net, validation.x, validation.y_noisy))
        accs.append(acc)
        per_class.append(pc)
        confusion += conf
    return EvalResult(
        acc_mean=float(np.mean(accs)),
        acc_std=float(np.std(accs)),
        accs=[float(a) for a in accs],
        per_class=[float(v) for v in np.mean(per_class, axis=0)],
        confusion=confusion.tolist(),
        runs=runs,
        seconds=time.perf_counter() - start,
        images_processed=processed,
        train=train.to_dict(),
        model=dict(model),
        seed_stream={"scheme": SEED_SCHEME, "seed": int(seed), "purpose": purpose, "run_seeds": run_seeds},
        val_accs=val_accs,
    )
