"""Membership-inference scores from a network's outputs on the audit points (higher: "member").

* ``loss``: minus the cross-entropy of the network on the image with its training label: members
  are fitted, so their loss is low (Yeom et al. 2018).
* ``global_threshold``: the logit-scaled confidence below, averaged over the two queries; one
  threshold for every example.
* LiRA (Carlini et al. 2022): per example, the confidences of shadow networks that trained on it
  (IN) and that did not (OUT) are fitted by Gaussians, and the target's confidence is scored by how
  much likelier it is under IN than under OUT (``online``), or by how far above the OUT Gaussian it
  lies (``offline``, one-sided, OUT networks only: they need not be retrained per target example).
  ``fixed_variance``: one pooled spread instead of each example's own, steadier with few shadows.

The confidence is ``phi = log p_y - log sum_{y' != y} p_y'``, which equals ``l_y - logsumexp_{y' != y} l_y'``
on the logits: computed that way it stays finite when p_y rounds to 0 or 1. Each example is asked
twice, as itself and horizontally mirrored (the training augmentation flips images).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.stats import norm

from ddlnl.errors import ConfigError
from ddlnl.privacy.options import check_shadows

QUERIES = ("original", "mirrored")
MIN_STD = 1e-4  # a spread of zero (identical shadow scores) would make every score infinite


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """``phi`` per row: the label's logit minus the log-sum-exp of the other logits."""
    logits = logits.double()
    own = logits.gather(1, labels.view(-1, 1)).squeeze(1)
    others = logits.scatter(1, labels.view(-1, 1), float("-inf"))
    return own - torch.logsumexp(others, dim=1)


def query_outputs(net: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """(phi of each image and its mirror, shape (n, 2); cross-entropy of each image, shape (n,))."""
    from ddlnl.evaluate import predict_logits

    labels = labels.cpu()
    plain = predict_logits(net, images)
    mirrored = predict_logits(net, torch.flip(images, dims=[-1]))
    phi = torch.stack([logit_confidence(plain, labels), logit_confidence(mirrored, labels)], dim=1)
    loss = torch.nn.functional.cross_entropy(plain.double(), labels, reduction="none")
    return phi.numpy(), loss.numpy()


def keep_matrix(shadows: int, pool: int, seed: int) -> np.ndarray:
    """(shadows, pool) booleans: which pool examples each shadow network trains on.

    Shadows come in pairs that split a fresh random permutation of the pool between them, so every
    example is IN for exactly half of the shadows and every shadow holds exactly half of the pool
    (its training sets all have one size, so the batched trainer can stack them). The pairs are drawn
    in order from one stream, so the first k rows are the same for any number of shadows above k:
    asking for more shadows later adds networks and keeps the trained ones."""
    check_shadows(shadows, "shadows")
    if pool < 2 or pool % 2:
        raise ConfigError(f"the shadow pool must hold an even number of examples >= 2, got {pool}", "audit as many non-members as members")
    rng = np.random.default_rng(seed)
    keep = np.zeros((shadows, pool), dtype=bool)
    for pair in range(shadows // 2):
        order = rng.permutation(pool)
        keep[2 * pair, order[: pool // 2]] = True
        keep[2 * pair + 1, order[pool // 2 :]] = True
    return keep


def loss_attack(loss: np.ndarray) -> np.ndarray:
    return -np.asarray(loss, dtype=np.float64)


def global_threshold(phi: np.ndarray) -> np.ndarray:
    return np.asarray(phi, dtype=np.float64).mean(axis=1)


def _fit(shadow_phi: np.ndarray, side: np.ndarray, fixed_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """Median and spread of each (example, query)'s shadow scores where ``side`` (K, n) holds; with
    ``fixed_variance`` one spread for all: the root of the mean of the per-example variances."""
    masked = np.where(side[:, :, None], shadow_phi, np.nan)
    mu = np.nanmedian(masked, axis=0)
    var = np.nanvar(masked, axis=0)
    std = np.full_like(mu, np.sqrt(np.mean(var))) if fixed_variance else np.sqrt(var)
    return mu, np.maximum(std, MIN_STD)


def _check(target_phi: np.ndarray, shadow_phi: np.ndarray, keep: np.ndarray, fixed_variance: bool) -> None:
    if shadow_phi.shape[1:] != target_phi.shape or keep.shape != shadow_phi.shape[:2]:
        raise ConfigError(f"shadow scores {shadow_phi.shape}, keep {keep.shape} and target scores {target_phi.shape} do not fit",
                          "score the same pool with every network")
    fewest = int(min(keep.sum(axis=0).min(), (~keep).sum(axis=0).min()))
    if fewest < (1 if fixed_variance else 2):
        raise ConfigError(f"an example is IN or OUT for only {fewest} shadow network(s)",
                          "use more shadows (--shadows 4 or more), or the fixed-variance variants")


def lira_online(target_phi: np.ndarray, shadow_phi: np.ndarray, keep: np.ndarray, *, fixed_variance: bool = False) -> np.ndarray:
    """Mean over queries of log N(phi; IN fit) - log N(phi; OUT fit). ``target_phi`` (n, Q); ``shadow_phi`` (K, n, Q)."""
    _check(target_phi, shadow_phi, keep, fixed_variance)
    mu_in, sd_in = _fit(shadow_phi, keep, fixed_variance)
    mu_out, sd_out = _fit(shadow_phi, ~keep, fixed_variance)
    return (norm.logpdf(target_phi, mu_in, sd_in) - norm.logpdf(target_phi, mu_out, sd_out)).mean(axis=1)


def lira_offline(target_phi: np.ndarray, shadow_phi: np.ndarray, keep: np.ndarray, *, fixed_variance: bool = False) -> np.ndarray:
    """Mean over queries of log P(Z <= phi) under the OUT fit: near 0 when phi lies far above what
    networks that never saw the example give, very negative below it."""
    _check(target_phi, shadow_phi, keep, fixed_variance)
    mu_out, sd_out = _fit(shadow_phi, ~keep, fixed_variance)
    return norm.logcdf(target_phi, mu_out, sd_out).mean(axis=1)


def all_scores(target_phi: np.ndarray, target_loss: np.ndarray, shadow_phi: np.ndarray | None, keep: np.ndarray | None) -> dict:
    """Every attack's scores of one target; the LiRA variants only with shadows (the per-example-variance
    ones with at least two IN and two OUT shadows per example)."""
    out = {"loss": loss_attack(target_loss), "global_threshold": global_threshold(target_phi)}
    if shadow_phi is None:
        return out
    per_example = int(min(keep.sum(axis=0).min(), (~keep).sum(axis=0).min())) >= 2
    for fixed in ((False, True) if per_example else (True,)):
        tag = "_fixed_variance" if fixed else ""
        out[f"lira_online{tag}"] = lira_online(target_phi, shadow_phi, keep, fixed_variance=fixed)
        out[f"lira_offline{tag}"] = lira_offline(target_phi, shadow_phi, keep, fixed_variance=fixed)
    return out
