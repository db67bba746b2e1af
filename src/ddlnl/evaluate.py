"""The one evaluation protocol: train fresh networks on a set, test on the clean test set.

Final-epoch accuracy, mean ± std over ``runs`` freshly initialised networks, plus
per-class accuracy and the confusion matrix (needed to see where asymmetric noise and
long-tailed classes go). Best-of-test numbers are never reported. When the preset holds out a
validation split (``data.validation``), each network is also scored on it against the *noisy*
labels: the number every choice is made on, so that the test set serves only the final one.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

from ddlnl.models import create_model, model_spec
from ddlnl.train import TrainConfig, train_network
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

    @property
    def val_acc_mean(self) -> float | None:
        return None if self.val_accs is None else float(np.mean(self.val_accs))

    def to_dict(self) -> dict:
        return asdict(self)


@torch.no_grad()
def test_predictions(net: nn.Module, x: torch.Tensor, *, batch_size: int = 1000) -> torch.Tensor:
    """Predicted classes of ``net`` on preprocessed images ``x``."""
    net.eval()
    device = next(net.parameters()).device
    preds = [net(x[i : i + batch_size].to(device)).argmax(dim=1).cpu() for i in range(0, x.shape[0], batch_size)]
    net.train()
    return torch.cat(preds)


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
) -> EvalResult:
    """Train ``runs`` fresh networks on (images, labels) and test each on the clean test set (and
    on ``validation``'s noisy labels, when given)."""

    def train_one(r: int, run_seed: int):
        torch.manual_seed(run_seed)
        net = build_model(model, num_classes, images.shape[-1]).to(device)
        stats = train_network(net, images, labels, train, generator=make_generator(run_seed), progress=progress,
                              desc=f"{desc} {r + 1}/{runs}")
        return net, stats.images_processed

    return evaluate_runs(train_one, runs=runs, seed=seed, test_images=test_images, test_labels=test_labels,
                         num_classes=num_classes, train=train, model=model, validation=validation)


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
    rate (a control trains at the lr of the set it controls)."""
    ev = preset["evaluation"]
    lr = lr if lr is not None else learned_lr(synset, ev)
    lr_override = {"lr": float(lr)} if lr is not None else {}
    images, labels = synset.training_data(labels, loss=ev["train"].get("loss", "ce"))
    return evaluate_set(images, labels, test_images=test_images, test_labels=test_labels, num_classes=num_classes,
                        model=model or model_spec(ev.get("model")) or preset["model"],
                        train=TrainConfig.from_dict(ev["train"], **lr_override), runs=runs, seed=seed, device=device,
                        progress=progress, desc=desc, validation=validation)


def evaluate_runs(train_one, *, runs: int, seed: int, test_images: torch.Tensor, test_labels: torch.Tensor,
                  num_classes: int, train: TrainConfig, model: dict, purpose: str = "evaluation",
                  validation=None) -> EvalResult:
    """The protocol's loop: ``train_one(r, run_seed) -> (net, images_processed)`` per run, each net tested.

    Run r's seed is ``stream_seed(seed, purpose, r)``: evaluation networks (and baselines, whose
    purpose is ``baseline``) draw from their own stream, never an expert's or a distiller's.
    ``validation`` (an :class:`ddlnl.experiment.Validation`, or None) scores each net on the held-out
    noisy labels too."""
    start = time.perf_counter()
    accs, per_class, confusion, processed = [], [], np.zeros((num_classes, num_classes), dtype=np.int64), 0
    val_accs = None if validation is None else []
    run_seeds = [stream_seed(seed, purpose, r) for r in range(runs)]
    for r in range(runs):
        net, n_images = train_one(r, run_seeds[r])
        processed += n_images
        acc, pc, conf = accuracy_report(test_predictions(net, test_images), test_labels, num_classes)
        if validation is not None:
            val_accs.append(float((test_predictions(net, validation.x) == validation.y_noisy).float().mean()))
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
