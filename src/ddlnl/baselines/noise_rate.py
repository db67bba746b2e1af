"""How much of the training set is mislabelled, estimated from the noisy labels alone.

A method that needs a noise rate (Co-teaching's forget rate) takes this estimate by default, a
user's number when given one, and the realised rate only when asked for it by name
(``oracle``: it is computed from the clean labels, which a user does not have).

The estimator needs predicted probabilities on images the network did not train on: the
validation split's (``data.validation``; one network trained on the training images), else
out-of-fold probabilities over the training images (``folds`` networks, each trained on the
other folds, as cleanlab does). From them, per noisy class j, it reads the mixture proportion
of images labelled j that are not j: among the images labelled otherwise, the ``quantile``
with the lowest predicted p_j marks a region that true j images rarely reach; the share of
the images labelled j that fall there, relative to the share of the others, is the share of
images labelled j that look like the others (Scott's mixture-proportion estimate, read at
one quantile). The images labelled otherwise include true j images sent away by the noise; taking
as many sent away as received (equal clean and noisy class sizes), a ratio r becomes
r / (1 + r n_j / (n - n_j)). The rate is the label-weighted mean over classes.

Why this one: at a short budget (3 epochs) the network is weak, and estimators built on its
confidence (the confident joint, anchor points) count its own errors as label noise; this one
uses only how it *ranks* images, which is good long before it is accurate.
``scripts/noise_rate_estimate.py`` compares the estimators; docs/protocol.md has the figures.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ddlnl.evaluate import predict_logits
from ddlnl.train import TrainConfig, train_network
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed

DEFAULT_QUANTILE = 0.1


@dataclass(frozen=True)
class NoiseRateEstimate:
    rate: float
    per_class: tuple[float, ...]  # P(true class != j | noisy label j), per noisy class j
    source: str  # where the held-out probabilities came from
    images_processed: int


def low_score_rate(probs: np.ndarray, labels: np.ndarray, quantile: float = DEFAULT_QUANTILE) -> tuple[float, list[float]]:
    """(rate, per-class rates) from held-out probabilities ``probs`` (n, C) and noisy ``labels`` (n,).

    Per class j: r = P(p_j <= t | label j) / P(p_j <= t | label != j), t the ``quantile`` of p_j over
    the images labelled otherwise, corrected for the true j images among those (r / (1 + r n_j / (n - n_j)))
    and clipped to [0, 1]; the rate weights classes by their label counts."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels)
    if probs.ndim != 2 or probs.shape[0] != labels.shape[0]:
        raise ValueError(f"probs must be (n, classes) with one row per label, got {probs.shape} for {labels.shape[0]} labels")
    rates, weights = [], []
    for j in range(probs.shape[1]):
        own, other = probs[labels == j, j], probs[labels != j, j]
        if own.size == 0 or other.size == 0:
            rates.append(0.0)
            weights.append(own.size)
            continue
        t = np.quantile(other, quantile)
        r = (own <= t).mean() / max((other <= t).mean(), 1e-12)
        rates.append(float(min(1.0, r / (1 + r * own.size / other.size))))
        weights.append(own.size)
    return float(np.average(rates, weights=weights)), rates


def predict_probs(net: torch.nn.Module, x: torch.Tensor) -> np.ndarray:
    """Softmax probabilities of ``net`` on ``x`` (float64, for the counting estimators)."""
    return torch.softmax(predict_logits(net, x), 1).double().numpy()


def cross_validated_probs(ctx, cfg: TrainConfig, folds: int, purpose: str) -> tuple[np.ndarray, int]:
    """Out-of-fold predicted probabilities of every training image (stratified by noisy label):
    ``folds`` networks of the baseline recipe, each trained on the other folds. Seeds come from
    the ``<purpose>.folds`` and ``<purpose>.fold_network`` streams. Returns (probs, images processed)."""
    d = ctx.data
    labels = d.noisy.labels.astype(np.int64)
    rng = np.random.default_rng(stream_seed(ctx.seed, f"{purpose}.folds"))
    fold_of = np.empty(labels.size, dtype=np.int64)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fold_of[idx] = np.arange(idx.size) % folds
    probs, processed = np.zeros((labels.size, d.num_classes), dtype=np.float64), 0
    for f in range(folds):
        tr, te = np.flatnonzero(fold_of != f), np.flatnonzero(fold_of == f)
        seed = stream_seed(ctx.seed, f"{purpose}.fold_network", f)
        torch.manual_seed(seed)
        net = ctx.model()
        stats = train_network(net, d.x_train[tr], d.y_train_noisy[tr], cfg, generator=make_generator(seed),
                              progress=ctx.progress, desc=f"{purpose} fold {f + 1}/{folds}")
        probs[te] = predict_probs(net, d.x_train[te])
        processed += stats.images_processed + te.size
    return probs, processed


def estimate_noise_rate(ctx, cfg: TrainConfig, *, folds: int = 2, quantile: float = DEFAULT_QUANTILE,
                        purpose: str = "noise_rate") -> NoiseRateEstimate:
    """The training labels' noise rate from held-out probabilities (see the module docstring):
    on the validation split when the preset holds one out, else ``folds``-fold cross-fitted."""
    d = ctx.data
    if d.validation is not None:
        seed = stream_seed(ctx.seed, f"{purpose}.network")
        torch.manual_seed(seed)
        net = ctx.model()
        stats = train_network(net, d.x_train, d.y_train_noisy, cfg, generator=make_generator(seed),
                              progress=ctx.progress, desc=f"{purpose} network")
        probs, labels = predict_probs(net, d.validation.x), d.validation.y_noisy.numpy()
        processed, source = stats.images_processed + len(labels), f"validation split ({len(labels)} images)"
    else:
        probs, processed = cross_validated_probs(ctx, cfg, folds, purpose)
        labels, source = d.noisy.labels, f"{folds}-fold cross-fitting on the training images"
    rate, per_class = low_score_rate(probs, labels, quantile)
    return NoiseRateEstimate(rate, tuple(per_class), source, processed)
