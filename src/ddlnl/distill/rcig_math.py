"""RCIG's mathematics: linearised network, kernel-ridge read-out, inner solve, implicit gradient.

Notation (docs/methods/rcig.md §4.2-4.4). A network f(x; theta) with features phi(x; theta) is
linearised around base weights theta0: the tangent output is ``o(x) = J(x) delta`` with
``J(x) = d f(x; theta0) / d theta`` restricted to the *tangent mask* (every conv layer and the
classifier bias; the classifier kernel is replaced by the kernel-ridge read-out). On the
coreset (X_s, Y_s), N rows (flip copies included) and C classes, with
``K = phi_s phi_s^T`` and ``A = K + lam I``::

    W       = A^-1 (Y_s - o_s)
    L_in    = [ 1/2 |Y_s - o_s - K W|^2 + lam/2 (tr(W^T K W) + |delta|^2) ] / (N C)
            = c [ 1/2 r^T A^-1 r + 1/2 |delta|^2 ],   r = Y_s - J_s delta,  c = lam / (N C)
    P(x_t)  = o_t + phi_t phi_s^T A^-1 (Y_s - o_s)
    L_out   = mean CE(softmax(P e^tau), y_t) - mean_s min(top1(Y_s) - top2(Y_s), 1/(2C))

The second line of L_in is an identity (K A^-1 = I - lam A^-1), so the inner problem is a
convex quadratic in delta, ``L_in = 1/2 delta^T H delta - b^T delta + const`` with
``H = c (J_s^T A^-1 J_s + I)`` and ``b = c J_s^T A^-1 Y_s``. A Hessian-vector product is one
J and one J^T at theta0 (a JVP and a VJP), with no second derivative of the network;
:func:`hvp_forward_over_reverse` computes the same product the general way
(``jvp(grad(L_in))``, forward over reverse) for tests and benchmarks.

J and J^T on a fixed batch come from :class:`Linearised`, in one of three formulations:
``jvp`` (forward mode, ``torch.func.jvp`` per product), ``linearize`` (``torch.func.linearize``
once per batch, then one traced JVP per product) and ``vjp`` (reverse mode only: J^T from a
kept graph, J as the VJP of the linear map u -> J^T u, a double backward). They give the same
numbers; their cost differs (benchmarks/bench_rcig.py).

Implicit gradient. With v ~ H^-1 g_t (g_t = dL_out/d delta), the outer loss's gradient
through the inner solution is ``-d/d(X_s, Y_s) [v . grad_delta L_in]``, and
``v . grad_delta L_in = c [ -(J_s v)^T A^-1 (Y_s - J_s delta) + v . delta ]``: one pass with
two tangent directions (v, delta), differentiated w.r.t. the images by ordinary autograd.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ddlnl.errors import check_choice
from ddlnl.models.functional import unflatten_params

FORMULATIONS = ("jvp", "linearize", "vjp")
SOLVERS = ("adam", "cg")


# --------------------------------------------------------------------------- the linearised network


def tangent_mask(net: nn.Module) -> torch.Tensor:
    """Flat 0/1 vector over ``net``'s parameters: 1 where RCIG learns a tangent (all but the classifier kernel)."""
    return torch.cat([torch.full((p.numel(),), 0.0 if name == "classifier.weight" else 1.0, dtype=p.dtype)
                      for name, p in net.named_parameters()])


def net_forward(net: nn.Module, theta: torch.Tensor, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits, features) of ``net`` (a model whose ``forward`` takes ``features=True``) at flat parameters ``theta``."""
    return functional_call(net, unflatten_params(net, theta), (x,), {"features": True})


class Linearised:
    """J and J^T of ``net`` at ``theta0`` on a fixed batch ``x`` (no gradient to ``x``).

    ``feats`` are phi(x; theta0) and ``logits0`` f(x; theta0), both detached. ``J(d)`` gives
    the tangent logits (n, C) for a flat direction ``d``; ``JT(u)`` the flat vector J^T u,
    masked. Every call counts its images in ``passes`` (cost accounting).
    """

    def __init__(self, net: nn.Module, theta0: torch.Tensor, x: torch.Tensor, *, formulation: str = "jvp",
                 mask: torch.Tensor | None = None):
        self.formulation = check_choice("rcig formulation", formulation, FORMULATIONS)
        self.net, self.x = net, x.detach()
        self.theta0 = theta0.detach()
        self.mask = tangent_mask(net).to(theta0) if mask is None else mask
        with torch.enable_grad():
            self._t = self.theta0.clone().requires_grad_(True)
            self._logits, feats = net_forward(net, self._t, self.x)
        self.feats, self.logits0 = feats.detach(), self._logits.detach()
        self._jvp_fn: Callable | None = None
        self._g = self._u = None
        self.passes = self.x.shape[0]

    def _f(self, theta: torch.Tensor) -> torch.Tensor:
        return net_forward(self.net, theta, self.x)[0]

    def JT(self, u: torch.Tensor) -> torch.Tensor:
        """J^T u for u of shape (n, C), masked to the tangent parameters."""
        self.passes += self.x.shape[0]
        (g,) = torch.autograd.grad(self._logits, self._t, grad_outputs=u.to(self._logits.dtype), retain_graph=True)
        return g * self.mask

    def J(self, d: torch.Tensor) -> torch.Tensor:
        """J d (tangent logits, (n, C)) for a flat direction ``d`` (masked first)."""
        d = (d * self.mask).to(self.theta0.dtype)
        self.passes += self.x.shape[0]
        if self.formulation == "jvp":
            return torch.func.jvp(self._f, (self.theta0,), (d,))[1].detach()
        if self.formulation == "linearize":
            if self._jvp_fn is None:
                self._jvp_fn = torch.func.linearize(self._f, self.theta0)[1]
            return self._jvp_fn(d).detach()
        if self._g is None:  # vjp: J d = d/du <J^T u, d>, the VJP of the linear map u -> J^T u
            with torch.enable_grad():
                self._u = torch.zeros_like(self._logits, requires_grad=True)
                (self._g,) = torch.autograd.grad(self._logits, self._t, grad_outputs=self._u, create_graph=True)
        (jd,) = torch.autograd.grad(self._g, self._u, grad_outputs=d, retain_graph=True)
        return jd.detach()


def tangents_with_graph(net: nn.Module, theta0: torch.Tensor, x: torch.Tensor, directions: list[torch.Tensor],
                        formulation: str = "jvp") -> tuple[torch.Tensor, list[torch.Tensor]]:
    """(phi(x; theta0), [J(x) d for d in directions]), differentiable w.r.t. ``x`` (reverse over the linearisation).

    The directions are constants (detach them first) and should already be masked.
    """
    check_choice("rcig formulation", formulation, FORMULATIONS)
    theta0 = theta0.detach()
    if formulation in ("jvp", "linearize"):
        feats, outs = None, []
        for d in directions:
            (_, f), (t_logits, _) = torch.func.jvp(lambda th: net_forward(net, th, x), (theta0,), (d,))
            feats = f if feats is None else feats
            outs.append(t_logits)
        if feats is None:
            feats = net_forward(net, theta0, x)[1]
        return feats, outs
    t = theta0.clone().requires_grad_(True)
    logits, feats = net_forward(net, t, x)
    u = torch.zeros_like(logits, requires_grad=True)
    (g,) = torch.autograd.grad(logits, t, grad_outputs=u, create_graph=True)
    outs = [torch.autograd.grad(g, u, grad_outputs=d, create_graph=True, retain_graph=True)[0] for d in directions]
    return feats, outs


# --------------------------------------------------------------------------- kernel ridge


def ridge_cholesky(feats_s: torch.Tensor, lam: float, use_x64: bool = True) -> torch.Tensor:
    """Cholesky factor of K_ss + lam I (float64 when ``use_x64``; differentiable w.r.t. the features)."""
    f = feats_s.double() if use_x64 else feats_s
    a = f @ f.T
    a = a + lam * torch.eye(a.shape[0], dtype=a.dtype, device=a.device)
    return torch.linalg.cholesky(a)


def ridge_solve(chol: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """(K + lam I)^-1 rhs from the Cholesky factor, in rhs's dtype."""
    return torch.cholesky_solve(rhs.to(chol.dtype), chol).to(rhs.dtype)


def krr_predict(feats_t, o_t, feats_s, o_s, y_s, lam: float, use_x64: bool = True) -> torch.Tensor:
    """P = o_t + phi_t phi_s^T (K_ss + lam I)^-1 (Y_s - o_s): the linearised model with the ridge read-out."""
    chol = ridge_cholesky(feats_s, lam, use_x64)
    alpha = torch.cholesky_solve((y_s - o_s).to(chol.dtype), chol)
    k_ts = feats_t.to(chol.dtype) @ feats_s.to(chol.dtype).T
    return o_t + (k_ts @ alpha).to(o_t.dtype)


def label_margin(y: torch.Tensor) -> torch.Tensor:
    """mean_s min(top1 - top2, 1/(2C)): RCIG's term that keeps each learned label's class ahead."""
    top = y.topk(2, dim=1).values
    return torch.clamp(top[:, 0] - top[:, 1], max=1.0 / (2 * y.shape[1])).mean()


def outer_loss(feats_t, o_t, feats_s, o_s, y_s, y_t: torch.Tensor, log_temp, lam: float, *, use_x64: bool = True,
               y_margin: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """(L_out, accuracy of P on the real batch); ``y_t`` are int64 (noisy) class indices."""
    pred = krr_predict(feats_t, o_t, feats_s, o_s, y_s, lam, use_x64)
    loss = F.cross_entropy(pred * log_temp.exp(), y_t) - label_margin(y_s if y_margin is None else y_margin)
    return loss, float((pred.argmax(1) == y_t).float().mean())


# --------------------------------------------------------------------------- the inner problem


class InnerProblem:
    """The convex inner problem on the coreset: L_in(delta) = 1/2 delta^T H delta - b^T delta + const."""

    def __init__(self, lin: Linearised, y_s: torch.Tensor, lam: float, use_x64: bool = True):
        self.lin, self.y, self.lam = lin, y_s.detach(), float(lam)
        self.chol = ridge_cholesky(lin.feats, lam, use_x64)
        self.c = self.lam / (y_s.shape[0] * y_s.shape[1])
        self._b: torch.Tensor | None = None

    def solve_a(self, r: torch.Tensor) -> torch.Tensor:
        return ridge_solve(self.chol, r)

    @property
    def b(self) -> torch.Tensor:
        if self._b is None:
            self._b = self.c * self.lin.JT(self.solve_a(self.y))
        return self._b

    def hvp(self, v: torch.Tensor) -> torch.Tensor:
        """H v = c (J^T A^-1 J v + v): one JVP and one VJP."""
        return self.c * (self.lin.JT(self.solve_a(self.lin.J(v))) + v * self.lin.mask)

    def loss(self, delta: torch.Tensor) -> float:
        """L_in(delta) (one JVP)."""
        r = self.y - self.lin.J(delta)
        return float(self.c * (0.5 * (r * self.solve_a(r)).sum() + 0.5 * (delta * self.lin.mask).pow(2).sum()))

    def constant(self) -> float:
        """L_in(0) = c/2 Y^T A^-1 Y; L_in(delta) = constant + q(delta)."""
        return float(self.c * 0.5 * (self.y * self.solve_a(self.y)).sum())


def inner_loss_literal(feats_s, o_s, y_s, delta, lam: float) -> torch.Tensor:
    """L_in written as the original does (W, K W, tr(W^T K W)); float64; for tests."""
    f, o, y = feats_s.double(), o_s.double(), y_s.double()
    k = f @ f.T
    w = torch.linalg.solve(k + lam * torch.eye(k.shape[0], dtype=k.dtype), y - o)
    err = y - o - k @ w
    loss = 0.5 * (err**2).sum() + 0.5 * lam * (torch.trace(w.T @ k @ w) + (delta.double() ** 2).sum())
    return loss / (y.shape[0] * y.shape[1])


def hvp_forward_over_reverse(net: nn.Module, theta0: torch.Tensor, x: torch.Tensor, y_s: torch.Tensor, lam: float,
                             delta: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
                             use_x64: bool = True) -> torch.Tensor:
    """H v by forward-over-reverse AD of L_in (``jvp(grad(L_in))``): the general route, for checks and benchmarks."""
    mask = tangent_mask(net).to(theta0) if mask is None else mask
    theta0 = theta0.detach()
    feats = net_forward(net, theta0, x)[1].detach()
    chol = ridge_cholesky(feats, lam, use_x64)
    c = lam / (y_s.shape[0] * y_s.shape[1])

    def l_in(d):
        dm = d * mask
        o = torch.func.jvp(lambda th: net_forward(net, th, x)[0], (theta0,), (dm,))[1]
        r = y_s - o
        return c * (0.5 * (r * ridge_solve(chol, r)).sum() + 0.5 * (dm**2).sum())

    return torch.func.jvp(torch.func.grad(l_in), (delta.detach(),), (v.detach(),))[1] * mask


# --------------------------------------------------------------------------- solvers for 1/2 x^T H x - b^T x


def adam_quadratic(hvp: Callable, b: torch.Tensor, steps: int, lr: float, *, betas=(0.9, 0.999), eps: float = 1e-8
                   ) -> tuple[torch.Tensor, list[float]]:
    """``steps`` Adam steps from 0 on q(x) = 1/2 x^T H x - b^T x (optax defaults).

    Returns x and the history ``x_k . (H x_k - 2 b) = 2 q(x_k)`` before each step (RCIG's
    "residuals"; for the inner problem L_in(x_k) = const + history_k / 2).
    """
    x, m, v = torch.zeros_like(b), torch.zeros_like(b), torch.zeros_like(b)
    hist = []
    b1, b2 = betas
    for k in range(steps):
        hx = hvp(x) if k > 0 else torch.zeros_like(b)
        hist.append(float((x * (hx - 2 * b)).sum()))
        g = hx - b
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        m_hat, v_hat = m / (1 - b1 ** (k + 1)), v / (1 - b2 ** (k + 1))
        x = x - lr * m_hat / (v_hat.sqrt() + eps)
    return x, hist


def cg_quadratic(hvp: Callable, b: torch.Tensor, steps: int) -> tuple[torch.Tensor, list[float]]:
    """``steps`` conjugate-gradient iterations from 0 for H x = b (H symmetric positive definite).

    Same history as :func:`adam_quadratic`; CG decreases q monotonically (in exact arithmetic)
    and needs no learning rate.
    """
    x, r = torch.zeros_like(b), b.clone()
    p, rr = r.clone(), float((r * r).sum())
    hist = []
    for _ in range(steps):
        hist.append(float(-(x * (r + b)).sum()))  # H x = b - r
        if rr <= 1e-30:
            continue
        hp = hvp(p)
        curv = float((p * hp).sum())
        if curv <= 0:
            break
        alpha = rr / curv
        x = x + alpha * p
        r = r - alpha * hp
        rr_new = float((r * r).sum())
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, hist


def solve_quadratic(solver: str, hvp: Callable, b: torch.Tensor, steps: int, lr: float | None):
    check_choice("rcig solver", solver, SOLVERS)
    if solver == "cg":
        return cg_quadratic(hvp, b, steps)
    return adam_quadratic(hvp, b, steps, float(lr))


def lr_verdict(hist: list[float]) -> int:
    """RCIG's test of a solve's curve: 1 strictly decreasing, -1 diverged (ends above its start), 0 otherwise."""
    if len(hist) < 2:
        return 0
    if all(a > b for a, b in itertools.pairwise(hist)):
        return 1
    return -1 if hist[-1] > hist[0] else 0


# --------------------------------------------------------------------------- implicit gradient


def implicit_objective(feats_s, j_v, j_delta, y_s, v, delta, lam: float, use_x64: bool = True) -> torch.Tensor:
    """v . grad_delta L_in(delta; X_s, Y_s) = c [ -(J_s v)^T A^-1 (Y_s - J_s delta) + v . delta ]."""
    chol = ridge_cholesky(feats_s, lam, use_x64)
    c = lam / (y_s.shape[0] * y_s.shape[1])
    z = ridge_solve(chol, y_s - j_delta)
    return c * (-(j_v * z).sum() + (v * delta).sum())


def clip_to(implicit: torch.Tensor, direct: torch.Tensor) -> torch.Tensor:
    """Rescale ``implicit`` to norm <= ``direct``'s norm, NaNs to numbers (RCIG's per-leaf clip)."""
    ni, nd = implicit.norm(), direct.norm()
    scale = torch.minimum(ni, nd) / ni
    return torch.nan_to_num(implicit * scale)


def with_flips(x: torch.Tensor, y: torch.Tensor, use_flip: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The coreset the inner problem sees: the images plus their horizontal flips (same labels)."""
    if not use_flip:
        return x, y
    return torch.cat([x, x.flip(-1)]), torch.cat([y, y])
