"""How well can a noise rate be estimated from noisy labels alone at a given training budget?

Trains one CE network on the noisy training images (the preset's baseline recipe), then
estimates the noise rate from its probabilities on the held-out validation images
(``data.validation``; noisy labels only) and prints each estimate beside the realised rate
(which uses the clean labels):

- ``low-score``: the estimator ddlnl uses (:mod:`ddlnl.baselines.noise_rate`): per class, the
  share of images labelled j that fall where p_j is lowest among the images labelled otherwise;
- ``confident joint``: per-class confidence thresholds on the held-out probabilities
  (Northcutt et al., the estimator behind cleanlab), rows calibrated to the label counts;
- ``anchor``: 1 - mean over classes of the 97th percentile of p_j (Patrini et al. 2017's
  anchor-point transition estimate, its diagonal);
- ``small-loss``: a two-component Gaussian mixture over per-sample training losses (DivideMix's
  co-divide); the rate is the mass of the high-loss component.

``--save F.npz`` keeps the probabilities; ``--probs F.npz`` prints the estimates from saved ones
without training. An estimator that is to replace the nominal rate (Co-teaching's forget rate)
must land near the realised rate at the budget a preset can afford; this script measures that.

    DDLNL_DATA=... python scripts/noise_rate_estimate.py --noise symmetric --rate 0.4 --train-per-class 1500 --validation 500
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from ddlnl.trust import fit_loss_mixture, low_component_probability
from ddlnl.baselines.noise_rate import low_score_rate, predict_probs
from ddlnl.errors import DdlnlError
from ddlnl.evaluate import build_model
from ddlnl.spec import ExperimentSpec
from ddlnl.train import TrainConfig, train_network
from ddlnl.utils.runtime import generator


def confident_joint_rate(probs: np.ndarray, labels: np.ndarray, num_classes: int) -> float:
    """Off-diagonal mass of the calibrated confident joint of (noisy label, confident class)."""
    thresholds = np.array([probs[labels == j, j].mean() if (labels == j).any() else 1.0 for j in range(num_classes)])
    above = probs >= thresholds
    confident = np.where(above, probs, -1.0).argmax(1)
    has = above.any(1)
    joint = np.zeros((num_classes, num_classes))
    np.add.at(joint, (labels[has], confident[has]), 1)
    counts = np.bincount(labels, minlength=num_classes)
    joint = joint / np.maximum(joint.sum(1, keepdims=True), 1) * counts[:, None]
    return float(1 - np.trace(joint) / joint.sum())


def anchor_rate(probs: np.ndarray, percentile: float = 97.0) -> float:
    """1 - mean diagonal of the anchor-point transition estimate (Patrini et al. 2017): for each
    class, p(noisy = i | x) where it is highest stands for T_ii."""
    return float(1 - np.mean([np.percentile(probs[:, i], percentile) for i in range(probs.shape[1])]))


def estimates(val_probs, val_labels, train_probs, train_labels) -> dict[str, float]:
    """Every estimator's rate: the first three from held-out probabilities, small-loss from training losses."""
    losses = -np.log(np.clip(train_probs[np.arange(len(train_labels)), train_labels], 1e-12, None))
    return {"low-score": low_score_rate(val_probs, val_labels)[0],
            "confident joint": confident_joint_rate(val_probs, val_labels, val_probs.shape[1]),
            "anchor": anchor_rate(val_probs),
            "small-loss": float(1 - low_component_probability(fit_loss_mixture(losses, max_iter=50), losses).mean()),
            "network's disagreement with the held-out noisy labels": float((val_probs.argmax(1) != val_labels).mean())}


def report(name: str, realised: float, rates: dict[str, float], tail: str) -> None:
    print(f"{name}: realised {realised:.3f} | " + " | ".join(f"{k} {v:.3f}" for k, v in rates.items()) + f" | {tail}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--train-per-class", type=int, default=1100, help="training images per class (validation included)")
    ap.add_argument("--validation", type=int, default=100, help="held-out images per noisy class")
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's baseline epochs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--save", default=None, help="also save the probabilities to this .npz")
    ap.add_argument("--probs", default=None, help="print the estimates from probabilities saved by --save; train nothing")
    args = ap.parse_args()
    if args.probs:
        f = np.load(args.probs)
        rates = estimates(f["val_probs"], f["val_labels"], f["train_probs"], f["train_labels"])
        report(str(f["name"]) if "name" in f else Path(args.probs).stem, float(f["realised"]), rates, f"from {args.probs}")
        return
    try:
        spec = ExperimentSpec.create(dataset="cifar10", noise=args.noise, rate=args.rate, method=None, preset=args.preset,
                                     seed=args.seed, overrides=(f"data.validation={args.validation}",
                                                                f"data.train_per_class={args.train_per_class}"))
        data = spec.prepare_data()
    except DdlnlError as e:
        raise SystemExit(str(e)) from None
    start = time.perf_counter()
    preset = spec.resolved.preset
    cfg = TrainConfig.from_dict(preset["baseline"]["train"] | {"compile": False} | ({"epochs": args.epochs} if args.epochs else {}))
    torch.manual_seed(args.seed)
    net = build_model(preset["model"], data.num_classes, data.x_train.shape[-1])
    train_network(net, data.x_train, data.y_train_noisy, cfg, generator=generator(args.seed))
    val_probs, val_labels = predict_probs(net, data.validation.x), data.validation.y_noisy.numpy()
    train_probs, train_labels = predict_probs(net, data.x_train), data.y_train_noisy.numpy()
    if args.save:
        np.savez(args.save, val_probs=val_probs, val_labels=val_labels, train_probs=train_probs, train_labels=train_labels,
                 realised=data.noisy.actual_rate, name=spec.noise.name)
    report(spec.noise.name, data.noisy.actual_rate, estimates(val_probs, val_labels, train_probs, train_labels),
           f"{len(data.noisy.labels)} training images, {cfg.epochs} epochs, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
