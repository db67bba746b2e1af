"""A two-component one-dimensional Gaussian mixture fitted by EM (DivideMix's co-divide).

DivideMix fits ``GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)`` to
the min-max normalised per-sample losses and calls the low-mean component clean. This is the
same model in numpy (no scikit-learn dependency): initialised by a few steps of 1-D k-means
from the extremes, then EM until the mean log-likelihood gains less than ``tol``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class GMM1D:
    weights: np.ndarray  # (2,)
    means: np.ndarray  # (2,)
    variances: np.ndarray  # (2,)
    iterations: int
    converged: bool

    def log_joint(self, x: np.ndarray) -> np.ndarray:
        """log w_k + log N(x | mu_k, var_k), shape (N, 2)."""
        x = np.asarray(x, dtype=np.float64).reshape(-1, 1)
        return np.log(self.weights) - 0.5 * (np.log(2 * np.pi * self.variances) + (x - self.means) ** 2 / self.variances)

    def posterior(self, x: np.ndarray) -> np.ndarray:
        lj = self.log_joint(x)
        lj -= lj.max(axis=1, keepdims=True)
        p = np.exp(lj)
        return p / p.sum(axis=1, keepdims=True)

    def low_component_probability(self, x: np.ndarray) -> np.ndarray:
        """P(component with the smaller mean | x): DivideMix's clean probability."""
        return self.posterior(x)[:, int(np.argmin(self.means))]


def fit_gmm_1d(x, *, max_iter: int = 10, tol: float = 1e-2, reg_covar: float = 5e-4) -> GMM1D:
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size < 2:
        raise ValueError("a two-component mixture needs at least two values")
    # k-means initialisation from the extremes
    means = np.array([x.min(), x.max()], dtype=np.float64)
    for _ in range(10):
        assign = np.abs(x[:, None] - means[None]).argmin(axis=1)
        new = np.array([x[assign == k].mean() if np.any(assign == k) else means[k] for k in range(2)])
        if np.allclose(new, means):
            break
        means = new
    resp = np.eye(2)[np.abs(x[:, None] - means[None]).argmin(axis=1)]
    gmm = _m_step(x, resp, reg_covar)
    prev, converged, it = -np.inf, False, 0
    for it in range(1, max_iter + 1):
        lj = gmm.log_joint(x)
        mx = lj.max(axis=1, keepdims=True)
        log_norm = mx + np.log(np.exp(lj - mx).sum(axis=1, keepdims=True))
        resp = np.exp(lj - log_norm)
        ll = float(log_norm.mean())
        gmm = _m_step(x, resp, reg_covar)
        if abs(ll - prev) < tol:
            converged = True
            break
        prev = ll
    gmm.iterations, gmm.converged = it, converged
    return gmm


def _m_step(x: np.ndarray, resp: np.ndarray, reg_covar: float) -> GMM1D:
    nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
    means = (resp * x[:, None]).sum(axis=0) / nk
    variances = (resp * (x[:, None] - means) ** 2).sum(axis=0) / nk + reg_covar
    return GMM1D(nk / x.size, means, variances, 0, False)


def clean_probability(losses, **kwargs) -> np.ndarray:
    """Min-max normalise per-sample losses, fit the mixture, return each sample's clean probability."""
    losses = np.asarray(losses, dtype=np.float64).ravel()
    span = losses.max() - losses.min()
    z = (losses - losses.min()) / (span if span > 0 else 1.0)
    if span == 0:
        return np.full(losses.shape, 0.5)
    return fit_gmm_1d(z, **kwargs).low_component_probability(z)
