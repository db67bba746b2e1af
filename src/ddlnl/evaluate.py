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

import time
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


def evaluate_set(
    images: torch.Tensor,
    labels: torch.Tensor,
    *,
    test_images: torch.Tensor,
    test_labels: torch.Tensor,
    num_classes: int,
    model: dict,
    train: TrainConfig,
    runs: int = 1,
    seed: int = 0,
    device: torch.device | str = "cpu",
    progress: bool = False,
    desc: str = "eval",
    validation=None,
    checkpoint_every: int | None = None,
) -> EvalResult:
    """Train ``runs`` fresh networks on (images, labels) and test each on the clean test set (and
    on ``validation``'s noisy labels, when given). ``checkpoint_every``: also test each network
    every that many epochs (and at the last), recorded beside the final-epoch accuracy."""
    every = check_checkpoint_every(checkpoint_every)
    tested = None if every is None else checkpoint_epochs(train.epochs, every)
    curves: list[list[float]] = []

    def train_runs(run_seeds: list[int]):
        """Every run's fresh network, trained side by side where the recipe's batch_networks allows."""
        trainings, hooks = [], []
        for run_seed in run_seeds:
            torch.manual_seed(run_seed)
            net = build_model(model, num_classes, images.shape[-1]).to(device)
            hooks.append(None if tested is None else CheckpointTests(test_images, test_labels, tested))
            trainings.append(Training(net, images, labels, make_generator(run_seed), hooks[-1]))
        stats = train_networks(trainings, train, progress=progress, desc=f"{desc} ({len(run_seeds)} runs)")
        curves.extend(h.accs for h in hooks if h is not None)
        return [(t.net, st.images_processed) for t, st in zip(trainings, stats, strict=True)]

    result = evaluate_runs(train_runs, runs=runs, seed=seed, test_images=test_images, test_labels=test_labels,
                           num_classes=num_classes, train=train, model=model, validation=validation)
    if tested is not None:  # the last checkpoint is the final epoch: the protocol's own test of the run
        result.checkpoint_epochs = tested
        result.checkpoint_accs = [curve + [final] for curve, final in zip(curves, result.accs, strict=True)]
    return result


def learned_lr(synset, evaluation: dict) -> float | None:
    """The lr a set trains at when it carries a learned one and the recipe uses it (``use_learned_lr``);
    None: the recipe's own lr."""
    return float(synset.lr) if evaluation.get("use_learned_lr", True) and synset.lr is not None else None


def evaluate_synthetic_set(synset, preset: dict, *, test_images: torch.Tensor, test_labels: torch.Tensor, num_classes: int,
                           runs: int, seed: int = 0, device: torch.device | str = "cpu", progress: bool = False,
                           desc: str = "eval", model: dict | None = None, labels: torch.Tensor | None = None,
                           lr: float | None = None, validation=None) -> EvalResult:
    """``preset["evaluation"]`` applied to a SyntheticSet: its decoded training data, its learned lr
    (when ``use_learned_lr``) and the evaluation network. ``model`` / ``labels`` replace the network
    (cross-architecture control) and the set's labels (hard-label control); ``lr`` the learning
    rate (a control trains at the lr of the set it controls). ``evaluation.checkpoint_every`` turns
    on the checkpoint tests (:func:`evaluate_set`)."""
    ev = preset["evaluation"]
    lr = lr if lr is not None else learned_lr(synset, ev)
    lr_override = {"lr": float(lr)} if lr is not None else {}
    images, labels = synset.training_data(labels, loss=ev["train"].get("loss", "ce"))
    return evaluate_set(images, labels, test_images=test_images, test_labels=test_labels, num_classes=num_classes,
                        model=model or model_spec(ev.get("model")) or preset["model"],
                        train=TrainConfig.from_dict(ev["train"], **lr_override), runs=runs, seed=seed, device=device,
                        progress=progress, desc=desc, validation=validation, checkpoint_every=ev.get("checkpoint_every"))


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
