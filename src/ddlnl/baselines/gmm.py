"""DivideMix's co-divide mixture: scikit-learn's ``GaussianMixture``, as DivideMix calls it.

DivideMix fits ``GaussianMixture(n_components=2, max_iter=10, tol=1e-2, reg_covar=5e-4)`` to
the min-max normalised per-sample losses and calls the low-mean component clean. The same
estimator is used here, with a ``random_state`` from the run's seed streams so that its
k-means initialisation is reproducible (DivideMix leaves it unseeded). Ten EM iterations
are DivideMix's choice, not convergence, so scikit-learn's convergence warning is silenced.
"""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture


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
