"""How well can a noise rate be estimated from noisy labels alone at a given training budget?

Trains one CE network on the noisy training images (the preset's baseline recipe), then
estimates the noise rate of the held-out validation images (``data.validation``; noisy labels
only) two ways, and prints them beside the realised rate (which uses the clean labels):

- ``small-loss``: a two-component Gaussian mixture over per-sample training losses (DivideMix's
  co-divide); the rate is the mass of the high-loss component;
- ``confident joint``: per-class confidence thresholds on the network's held-out probabilities
  (Northcutt et al., the estimator behind cleanlab), rows calibrated to the label counts.

An estimator that is to replace the nominal rate (Co-teaching's forget rate) must land near the
realised rate at the budget a preset can afford; this script measures whether it does.

    DDLNL_DATA=... python scripts/noise_rate_estimate.py --noise symmetric --rate 0.4 --train-per-class 1100
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from ddlnl.baselines.dividemix import per_sample_losses
from ddlnl.baselines.gmm import fit_gmm_1d
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--train-per-class", type=int, default=1100, help="training images per class (validation included)")
    ap.add_argument("--validation", type=int, default=100, help="held-out images per noisy class")
    ap.add_argument("--epochs", type=int, default=None, help="default: the preset's baseline epochs")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
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
    losses = per_sample_losses(net, data.x_train, data.y_train_noisy).numpy()
    small_loss = float(1 - fit_gmm_1d(losses, max_iter=50).low_component_probability(losses).mean())
    net.eval()
    with torch.no_grad():
        probs = torch.softmax(net(data.validation.x), 1).numpy()
    labels = data.validation.y_noisy.numpy()
    cj = confident_joint_rate(probs, labels, data.num_classes)
    print(f"{spec.noise.name}: realised {data.noisy.actual_rate:.3f} | small-loss {small_loss:.3f} | confident joint {cj:.3f} "
          f"| network's disagreement with the held-out noisy labels {float((probs.argmax(1) != labels).mean()):.3f} "
          f"| {len(data.noisy.labels)} training images, {cfg.epochs} epochs, {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
