"""The trusted split: which training samples a network's losses say are correctly labelled, and
which of the rest its features can relabel.

One implementation for every method that splits a noisy set by loss: the ``loss_gmm`` and
``dividemix`` cleaners and DivideMix (``ddlnl.baselines``), and TAD's experts and DATM's
``pix_init: trusted`` (``ddlnl.distill``). It sits below both, so neither imports the other.

* **Loss mixture** (DivideMix's estimator): scikit-learn's ``GaussianMixture(n_components=2,
  max_iter=10, tol=1e-2, reg_covar=5e-4)`` on the min-max normalised per-sample losses; the
  low-mean component is "clean". Its k-means start is seeded from the run's seed streams
  (DivideMix leaves it unseeded); ten EM iterations are DivideMix's choice, not convergence, so
  scikit-learn's convergence warning is silenced. :func:`class_clean_probability` fits one per
  noisy class.
* **Recall** (:func:`recall_untrusted`, TAD's inner loop as we read it, docs/tad.md): class
  anchors are the mean trusted embedding per class; a Ledoit-Wolf shared covariance of the
  trusted embeddings around their anchors (:class:`ShrunkMahalanobis`) gives Mahalanobis distances; an untrusted sample is
  recalled with its nearest anchor's class when it is as close to that anchor as the trusted
  samples of that class are (``quantile``) and its cosine similarity to the anchor (both centred
  on the trusted mean) is at least ``min_cosine``.
* **The split inside a training** (:class:`TrustHook`): every ``refresh_every`` epochs after a
  warm-up, recompute the split with the network being trained and sweep only the trusted and
  recalled samples, the recalled ones under their pseudo-labels.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture

from ddlnl.errors import ConfigError
from ddlnl.evaluate import predict_logits
from ddlnl.train import Step, Sweep, TrainConfig, TrainHook, TrainRun, batch_loss, train_network
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed

# --------------------------------------------------------------------------- the loss mixture


def fit_loss_mixture(x, *, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4, seed: int = 0) -> GaussianMixture:
    """A two-component 1-D Gaussian mixture fitted to the values ``x``."""
    x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
    if x.shape[0] < 2:
        raise ValueError("a two-component mixture needs at least two values")
    gmm = GaussianMixture(n_components=2, max_iter=max_iter, tol=tol, reg_covar=reg_covar, random_state=seed % 2**32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return gmm.fit(x)


def low_component_probability(gmm: GaussianMixture, x) -> np.ndarray:
    """P(the component with the smaller mean | x): DivideMix's clean probability."""
    return gmm.predict_proba(np.asarray(x, dtype=np.float64).reshape(-1, 1))[:, int(np.argmin(gmm.means_.ravel()))]


def clean_probability(losses, **kwargs) -> np.ndarray:
    """Min-max normalise per-sample losses, fit the mixture (``kwargs``: :func:`fit_loss_mixture`'s),
    return each sample's clean probability (0.5 everywhere when all losses are equal)."""
    losses = np.asarray(losses, dtype=np.float64).ravel()
    span = losses.max() - losses.min()
    if span == 0:
        return np.full(losses.shape, 0.5)
    z = (losses - losses.min()) / span
    return low_component_probability(fit_loss_mixture(z, **kwargs), z)


def class_clean_probability(losses: np.ndarray, labels: np.ndarray, num_classes: int, seed: int, purpose: str, *,
                            per_class: bool = True) -> np.ndarray:
    """:func:`clean_probability` fitted per noisy class (group g's k-means start: ``stream_seed(seed, purpose, g)``),
    or once over all samples (a lone sample: 0.5)."""
    labels = np.asarray(labels)
    groups = [np.flatnonzero(labels == c) for c in range(num_classes)] if per_class else [np.arange(labels.size)]
    prob = np.zeros(labels.size)
    for g, idx in enumerate(groups):
        if idx.size:
            prob[idx] = clean_probability(losses[idx], seed=stream_seed(seed, purpose, g))
    return prob


def per_sample_ce(net: torch.nn.Module, x: torch.Tensor, y) -> np.ndarray:
    """Each sample's cross-entropy under ``net`` (eval mode, no augmentation), as DivideMix reads it."""
    return F.cross_entropy(predict_logits(net, x), torch.as_tensor(y, dtype=torch.long).cpu(), reduction="none").numpy()


# --------------------------------------------------------------------------- a warm-up network's split


@dataclass
class LossSplit:
    """A loss-mixture split of the training set: per sample its clean probability and whether it is trusted."""

    clean_prob: np.ndarray  # P(low-loss component | loss), per sample
    losses: np.ndarray  # the warm-up network's CE loss, per sample
    trusted: np.ndarray  # bool: clean_prob > threshold
    images_processed: int


def warmup_loss_split(make_net: Callable[[], torch.nn.Module], x: torch.Tensor, y: torch.Tensor, num_classes: int,
                      cfg: TrainConfig, *, seed: int, threshold: float = 0.5, per_class: bool = True, purpose: str,
                      progress: bool = False) -> LossSplit:
    """Warm up one network (``make_net()``, weights from ``<purpose>.network``) on the noisy labels ``y``
    with ``cfg``, then split by :func:`class_clean_probability` (k-means starts from ``<purpose>.gmm``)."""
    net_seed = stream_seed(seed, f"{purpose}.network")
    torch.manual_seed(net_seed)
    net = make_net()
    stats = train_network(net, x, y, cfg, generator=make_generator(net_seed), progress=progress, desc=f"{purpose} warm-up")
    labels = np.asarray(y)
    losses = per_sample_ce(net, x, labels)
    prob = class_clean_probability(losses, labels, num_classes, seed, f"{purpose}.gmm", per_class=per_class)
    return LossSplit(prob, losses, prob > threshold, stats.images_processed + labels.size)


# --------------------------------------------------------------------------- recall


class ShrunkMahalanobis:
    """Squared Mahalanobis distances under the Ledoit-Wolf covariance of residuals ``resid`` (n, d):
    (1 - s) S + s mu I, with S = resid^T resid / n, s scikit-learn's ``ledoit_wolf_shrinkage`` and mu
    = trace(S) / d. Computed from the thin SVD of ``resid`` (n x d, never a d x d matrix): in its row
    space the eigenvalues are (1 - s) sigma^2 / n + s mu, elsewhere s mu."""

    def __init__(self, resid: np.ndarray):
        from sklearn.covariance import ledoit_wolf_shrinkage

        n, d = resid.shape
        shrink = float(ledoit_wolf_shrinkage(resid, assume_centered=True))
        mu = float((resid**2).sum() / (n * d))
        _, sig, self.vt = np.linalg.svd(resid, full_matrices=False)
        self.lam = (1 - shrink) * sig**2 / n + shrink * mu
        self.floor = max(shrink * mu, 1e-12 * float(self.lam.max(initial=1.0)))
        self.lam = np.maximum(self.lam, self.floor)

    def __call__(self, v: np.ndarray) -> np.ndarray:
        proj = v @ self.vt.T
        return (proj**2 / self.lam).sum(1) + np.maximum((v**2).sum(1) - (proj**2).sum(1), 0.0) / self.floor


def recall_untrusted(features: np.ndarray, labels: np.ndarray, trusted: np.ndarray, num_classes: int, *,
                     quantile: float, min_cosine: float, fit_samples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(recalled mask, pseudo-labels) of the untrusted samples (see the module doc). The shared covariance
    is fitted on at most ``fit_samples`` trusted samples (a seeded draw), which bounds its cost."""
    feats = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels)
    trusted_idx = np.flatnonzero(trusted)
    recalled, pseudo = np.zeros(labels.size, dtype=bool), labels.copy()
    present = [c for c in range(num_classes) if np.any(labels[trusted_idx] == c)]
    untrusted = np.flatnonzero(~trusted)
    if len(present) == 0 or untrusted.size == 0 or trusted_idx.size < 2:
        return recalled, pseudo
    feats = feats - feats[trusted_idx].mean(0)  # centred on the trusted mean: cosines then tell directions apart
    anchors = np.stack([feats[trusted_idx[labels[trusted_idx] == c]].mean(0) for c in present])
    own = np.full(num_classes, -1)
    own[present] = np.arange(len(present))
    fit = trusted_idx
    if fit.size > fit_samples:
        fit = np.sort(np.random.default_rng(seed).choice(fit, fit_samples, replace=False))
    maha = ShrunkMahalanobis(feats[fit] - anchors[own[labels[fit]]])
    x = feats[untrusted]
    dist = np.stack([maha(x - a) for a in anchors], 1)  # (untrusted, present classes), squared
    own_dist = maha(feats[trusted_idx] - anchors[own[labels[trusted_idx]]])
    limit = np.array([np.quantile(own_dist[labels[trusted_idx] == c], quantile) for c in present])
    near = dist.argmin(1)
    a = anchors[near]
    cos = (x * a).sum(1) / (np.linalg.norm(x, axis=1) * np.linalg.norm(a, axis=1) + 1e-12)
    ok = (dist[np.arange(untrusted.size), near] <= limit[near]) & (cos >= min_cosine)
    recalled[untrusted[ok]] = True
    pseudo[untrusted[ok]] = np.asarray(present)[near[ok]]
    return recalled, pseudo


# --------------------------------------------------------------------------- the split of one network


@dataclass(frozen=True)
class TrustRule:
    """How a network's losses and features split the set (TAD's options of the same names)."""

    threshold: float = 0.5  # trusted: P(low-loss component) > threshold
    recall: bool = True
    recall_quantile: float = 0.5
    recall_cosine: float = 0.3
    recall_fit_samples: int = 1000

    def __post_init__(self):
        for name, low, high in (("threshold", 0.0, 1.0), ("recall_quantile", 0.0, 1.0), ("recall_cosine", -1.0, 1.0)):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not low <= v <= high or (name == "threshold" and v == 1):
                raise ConfigError(f"trust {name} must be a number in [{low:g}, {high:g}{')' if name == 'threshold' else ']'}, "
                                  f"got {v!r}", f"e.g. {name}: {getattr(TrustRule, name)}")
        if not isinstance(self.recall, bool):
            raise ConfigError(f"recall must be true or false, got {self.recall!r}", "set recall: true or recall: false")
        v = self.recall_fit_samples
        if not isinstance(v, int) or isinstance(v, bool) or v < 2:
            raise ConfigError(f"recall_fit_samples must be an integer >= 2, got {v!r}", "e.g. recall_fit_samples: 1000")


@dataclass
class TrustSplit:
    """One split: who is trusted, who is recalled and under which label, and what it cost."""

    clean_prob: np.ndarray
    trusted: np.ndarray  # bool
    recalled: np.ndarray  # bool, disjoint from trusted
    labels: np.ndarray  # training label of each sample: the noisy one, a recalled sample's pseudo-label
    images_processed: int
    seconds: float

    @property
    def members(self) -> np.ndarray:
        """Positions that train: trusted and recalled."""
        return np.flatnonzero(self.trusted | self.recalled)


@torch.no_grad()
def logits_and_features(net: torch.nn.Module, x: torch.Tensor, batch: int = 1000) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and ``net.embed`` features in one eval-mode pass (the classifier reads the embedding)."""
    net.eval()
    device = next(net.parameters()).device
    logits, feats = [], []
    for i in range(0, x.shape[0], batch):
        f = net.embed(x[i : i + batch].to(device))
        feats.append(f.cpu())
        logits.append(net.classifier(f).cpu())
    net.train()
    return torch.cat(logits), torch.cat(feats)


def trust_split(net: torch.nn.Module, images: torch.Tensor, labels, num_classes: int, rule: TrustRule, seed: int) -> TrustSplit:
    """The split ``net`` makes of (``images``, noisy ``labels``): per-class loss mixture, then recall.
    Seeds: ``stream_seed(seed, "gmm", class)`` and ``stream_seed(seed, "recall")``. One forward pass over the images."""
    start = time.perf_counter()
    labels = np.asarray(torch.as_tensor(labels).cpu(), dtype=np.int64)
    logits, feats = logits_and_features(net, images)
    losses = F.cross_entropy(logits, torch.as_tensor(labels), reduction="none").numpy()
    prob = class_clean_probability(losses, labels, num_classes, seed, "gmm")
    trusted = prob > rule.threshold
    if rule.recall:
        recalled, pseudo = recall_untrusted(feats.double().numpy(), labels, trusted, num_classes, quantile=rule.recall_quantile,
                                            min_cosine=rule.recall_cosine, fit_samples=rule.recall_fit_samples,
                                            seed=stream_seed(seed, "recall"))
    else:
        recalled, pseudo = np.zeros_like(trusted), labels.copy()
    return TrustSplit(prob, trusted, recalled, pseudo, labels.size, time.perf_counter() - start)


class TrustHook(TrainHook):
    """Trains on the trusted split of the network being trained, refreshed as it learns.

    Epochs before ``warmup`` sweep every sample. At epoch ``warmup`` and every ``refresh_every``
    epochs after it, :func:`trust_split` of the current network (seed ``stream_seed(seed, "refresh", epoch)``)
    chooses the samples the following epochs sweep; recalled ones train under their pseudo-label.
    The split in force is the hook's state, so a resumed training continues with it.
    """

    def __init__(self, rule: TrustRule, num_classes: int, seed: int, *, warmup: int = 1, refresh_every: int = 1):
        self.rule, self.num_classes, self.seed = rule, num_classes, seed
        self.warmup, self.refresh_every = warmup, refresh_every
        self.train_labels: torch.Tensor | None = None  # (N,) labels in force; -1: not swept
        self.refreshes: list[dict] = []  # per refresh: epoch, trusted, recalled, seconds, images

    def plan(self, epoch: int, run: TrainRun) -> list[Sweep]:
        if epoch < self.warmup:
            return [Sweep()]
        if self.train_labels is None or (epoch - self.warmup) % self.refresh_every == 0:
            split = trust_split(run.nets[0], run.images, run.labels, self.num_classes, self.rule, stream_seed(self.seed, "refresh", epoch))
            run.count(split.images_processed)
            lab = torch.full((len(split.labels),), -1, dtype=torch.long)
            lab[split.members] = torch.as_tensor(split.labels[split.members])
            self.train_labels = lab
            self.refreshes.append({"epoch": epoch, "trusted": int(split.trusted.sum()), "recalled": int(split.recalled.sum()),
                                   "seconds": split.seconds, "images_processed": split.images_processed})
        members = torch.nonzero(self.train_labels >= 0).flatten()
        return [Sweep(indices=members if members.numel() else None)]

    def loss(self, step: Step) -> torch.Tensor:
        y = step.y
        if self.train_labels is not None:  # a recalled sample's pseudo-label; -1 (not a member) only when none is
            y = torch.where(self.train_labels.to(y.device)[step.idx] >= 0, self.train_labels.to(y.device)[step.idx], y)
        return batch_loss(step.nets[0], step.x, y, step.run.cfg, step.run.generator)

    def state_dict(self) -> dict:
        return {} if self.train_labels is None else {"train_labels": self.train_labels.clone()}

    def load_state_dict(self, state: dict) -> None:
        if "train_labels" in state:
            self.train_labels = state["train_labels"].clone()
