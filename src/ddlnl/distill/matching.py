"""Trajectory matching (MTT/DATM) on flat parameter vectors, with three gradient modes.

A student starts at an expert's parameters ``theta_0 = theta*_t`` and takes ``N``
(``syn_steps``) SGD steps on synthetic minibatches with the learnable lr ``alpha``::

    theta_{i+1} = theta_i - alpha * g_i,   g_i = grad_theta loss(theta_i; aug_i(X[idx_i]), Y[idx_i])

and the matching loss is ``L = ||theta_N - theta*_{t+M}||^2 / ||theta*_t - theta*_{t+M}||^2``.
The gradient of ``L`` goes to the synthetic images ``X``, the lr ``alpha`` and (soft) labels ``Y``.

Modes
-----
``exact`` (default)
    Pass 1 unrolls without a graph and keeps only the N parameter vectors ``theta_i``.
    Pass 2 walks back from ``a_N = dL/dtheta_N``: at each step it rebuilds the graph of
    ``g_i`` at ``theta_i`` and takes ONE vector-Jacobian product of ``g_i`` with
    ``-alpha * a_{i+1}``. That VJP gives this step's share of dL/dX and dL/dY, and its
    theta part is the Hessian-vector product that carries the adjoint back:
    ``a_i = a_{i+1} - alpha * H_i a_{i+1}``. ``dL/dalpha = -sum_i g_i . a_{i+1}``. The
    result equals back-propagation through the whole unroll (up to float rounding), while
    memory holds one step's graph plus N vectors of P floats, whatever N is.
``tesla``
    DATM_tesla's first-order approximation: the same reverse pass without the HVP, so
    every step sees ``a_N`` (theta_i is treated as independent of earlier images).
    Same cost as ``exact`` minus nothing worth measuring; kept for comparison.
``naive``
    MTT's unroll with ``create_graph=True`` and one ``backward``: memory grows with N.
    For tests and benchmarks.

The minibatch order and the DSA draws of the N steps are fixed in a :class:`StepPlan`
before pass 1, so that the reverse pass recomputes exactly the same steps.

Steps (``steps=``; :class:`EagerSteps` by default, :class:`CompiledSteps` with ``compile: true``)
    Both passes call two step functions: pass 1 ``g_i``, pass 2 ``g_i`` and its VJP. The
    minibatch gather and the DSA draw stay outside them, in eager autograd, which carries
    the VJP's data part back to the images and labels. ``exact`` and ``tesla`` spend most
    of their time in the step's double backward, whose instance-norm part is dozens of
    small element-wise kernels; :class:`CompiledSteps` traces the two functions once per
    batch shape into aten graphs (``make_fx``) and compiles them with Inductor, which fuses
    those kernels.
    The gradients are the same up to float rounding (a ReLU whose input sits within
    rounding of 0 may switch sides, as with any change of summation order).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ddlnl.augment import DSADraw, apply_dsa, sample_dsa
from ddlnl.errors import ConfigError, check_choice
from ddlnl.models.functional import functional_forward
from ddlnl.train import label_loss

MODES = ("exact", "tesla", "naive")
COMPILE_MODES = ("default", "reduce-overhead")  # torch.compile modes of CompiledSteps


@dataclass
class StepPlan:
    """Which synthetic images each inner step uses, and the DSA draw applied to them."""

    indices: list[torch.Tensor]
    draws: list[DSADraw | None]

    def __len__(self) -> int:
        return len(self.indices)


def make_plan(
    n_images: int,
    syn_steps: int,
    batch_syn: int,
    *,
    generator: torch.Generator | None = None,
    dsa_strategy: str | None = None,
    image_size: int | tuple[int, int] = 32,
) -> StepPlan:
    """Minibatches as DATM draws them: consecutive chunks of a random permutation, re-drawn
    when used up; one per-sample DSA draw per step (none if ``dsa_strategy`` is falsy)."""
    batch_syn = min(batch_syn, n_images)
    indices, draws, order = [], [], torch.empty(0, dtype=torch.long)
    for _ in range(syn_steps):
        if order.numel() < batch_syn:
            order = torch.cat([order, torch.randperm(n_images, generator=generator)])
        indices.append(order[:batch_syn])
        order = order[batch_syn:]
        draws.append(
            sample_dsa(dsa_strategy, batch_syn, image_size=image_size, generator=generator) if dsa_strategy else None
        )
    return StepPlan(indices, draws)


@dataclass
class MatchResult:
    """The matching loss and its gradients (``None`` for inputs that were not asked for)."""

    loss: float
    grad_images: torch.Tensor
    grad_lr: torch.Tensor
    grad_labels: torch.Tensor | None
    final_params: torch.Tensor


def _batch(images, labels, idx, draw):
    """Step ``i``'s minibatch: the images (with the step's DSA draw) and their labels."""
    x = images[idx]
    return (apply_dsa(x, draw) if draw is not None else x), labels[idx]


def _step_loss(net: nn.Module, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The student's training loss on one minibatch, with parameters ``theta``."""
    return label_loss(functional_forward(net, theta, x), y)


def _learnable(t: torch.Tensor | None) -> bool:
    return t is not None and t.is_floating_point()


class EagerSteps:
    """The two step functions of the matching passes, in eager autograd (the default).

    ``grad`` is pass 1's step; ``grad_and_vjp`` pass 2's: it rebuilds the step's graph at
    ``theta`` and takes one VJP of ``g`` with the cotangent ``-alpha * a_{i+1}``."""

    def __init__(self, net: nn.Module):
        self.net = net

    def grad(self, theta: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``g = grad_theta loss(theta; x, y)`` (no graph)."""
        th = theta.detach().requires_grad_(True)
        return torch.autograd.grad(_step_loss(self.net, th, x, y), th)[0]

    def grad_and_vjp(self, theta, x, y, cotangent, want_theta: bool = True) -> tuple:
        """``(g, v_theta, v_x[, v_y])``: ``g`` as :meth:`grad` and the VJP of ``g`` with
        ``cotangent`` (``v_theta`` is ``None`` unless ``want_theta``; ``v_y`` only for float labels)."""
        th, x = theta.detach().requires_grad_(True), x.detach().requires_grad_(True)
        y_soft = y.is_floating_point()
        y = y.detach().requires_grad_(True) if y_soft else y
        (g,) = torch.autograd.grad(_step_loss(self.net, th, x, y), th, create_graph=True)
        wrt = ([th] if want_theta else []) + [x] + ([y] if y_soft else [])
        vjp = torch.autograd.grad(g, wrt, grad_outputs=cotangent)
        return (g.detach(),) + ((None,) if not want_theta else ()) + tuple(vjp)


class CompiledSteps(EagerSteps):
    """:class:`EagerSteps`' two functions traced into aten graphs (``make_fx``) and compiled
    with Inductor, once per batch shape: about 40 s for the pair on the 2-core CPU with a cold
    Inductor cache, about 7 s with a warm one (docs/datm.md). Needs a network without buffers
    (instance norm or none): a traced graph would freeze BatchNorm's running statistics.

    ``mode="reduce-overhead"`` also records each graph as a CUDA graph on a GPU (one launch per
    step instead of one per kernel; a CPU ignores it). A CUDA graph reuses its output memory on
    the next replay, and the unrolled steps keep earlier outputs, so they are copied out."""

    def __init__(self, net: nn.Module, mode: str = "default"):
        check_choice("compile_mode", mode, COMPILE_MODES)
        if any(True for _ in net.buffers()):
            raise ConfigError("compiled trajectory matching needs a network without buffers (BatchNorm has running statistics)",
                              "use norm: instance (DATM's and MTT's network) or set compile: false")
        super().__init__(net)
        self.mode = mode
        self._fns: dict[tuple, object] = {}

    def _compiled(self, kind: str, args: tuple):
        key = (kind,) + tuple((tuple(a.shape), a.dtype, a.device) for a in args)
        fn = self._fns.get(key)
        if fn is None:
            from torch.fx.experimental.proxy_tensor import make_fx

            eager = super().grad if kind == "grad" else super().grad_and_vjp

            def body(*tensors):  # make_fx traces a plain function of the tensors
                return eager(*tensors)

            compiled = torch.compile(make_fx(body)(*args), dynamic=False, mode=None if self.mode == "default" else self.mode)
            if self.mode == "reduce-overhead":
                def fn(*tensors, compiled=compiled):
                    out = compiled(*tensors)
                    if isinstance(out, torch.Tensor):
                        return out.clone()
                    return tuple(None if t is None else t.clone() for t in out)
            else:
                fn = compiled
            self._fns[key] = fn
        return fn

    def grad(self, theta, x, y):
        return self._compiled("grad", (theta, x, y))(theta, x, y)

    def grad_and_vjp(self, theta, x, y, cotangent, want_theta: bool = True):
        """One graph for every step: it always computes ``v_theta`` (unused at the last step and by ``tesla``)."""
        return self._compiled("vjp", (theta, x, y, cotangent))(theta, x, y, cotangent)


def match_trajectory(
    net: nn.Module,
    start: torch.Tensor,
    target: torch.Tensor,
    images: torch.Tensor,
    labels: torch.Tensor,
    syn_lr: torch.Tensor,
    plan: StepPlan,
    *,
    mode: str = "exact",
    steps: EagerSteps | None = None,
) -> MatchResult:
    """Run the N student steps of ``plan`` from ``start`` and return L and its gradients.

    ``images`` (n, C, H, W) and ``syn_lr`` (0-d) are the learnable tensors; ``labels`` are
    int64 class indices (not learned) or float (n, K) soft-label logits (learned). Nothing
    is written to ``.grad``: the gradients come back in the result. ``steps`` computes the
    ``exact``/``tesla`` steps (``CompiledSteps``: the same numbers up to rounding, faster).
    """
    check_choice("matching mode", mode, MODES)
    start, target = start.detach(), target.detach()
    denom = (start - target).pow(2).sum()
    if mode == "naive":
        return _naive(net, start, target, denom, images, labels, syn_lr, plan)
    steps = steps if steps is not None else EagerSteps(net)
    alpha = syn_lr.detach()
    y_soft = _learnable(labels)
    x_leaf = images.detach().requires_grad_(True)
    y_leaf = labels.detach().requires_grad_(True) if y_soft else labels

    # Pass 1: unroll without a graph, keeping theta_0 .. theta_{N-1}.
    thetas, theta = [], start
    x_const, y_const = images.detach(), labels.detach()
    for idx, draw in zip(plan.indices, plan.draws):
        thetas.append(theta)
        theta = theta - alpha * steps.grad(theta, *_batch(x_const, y_const, idx, draw))
    final = theta
    loss = (final - target).pow(2).sum() / denom

    # Pass 2: reverse, one VJP per step; the minibatch gather and DSA carry its data part
    # back to the images and labels.
    a = 2.0 * (final - target) / denom  # dL/dtheta_N
    gx = torch.zeros_like(x_leaf)
    gy = torch.zeros_like(y_leaf) if y_soft else None
    glr = torch.zeros((), dtype=final.dtype, device=final.device)
    for i in reversed(range(len(plan))):
        want_theta = mode == "exact" and i > 0
        x, y = _batch(x_leaf, y_leaf, plan.indices[i], plan.draws[i])
        g, v_theta, *v_data = steps.grad_and_vjp(thetas[i], x.detach(), y.detach(), -alpha * a, want_theta=want_theta)
        glr -= torch.dot(g, a)
        back = torch.autograd.grad([x] + ([y] if y_soft else []), [x_leaf] + ([y_leaf] if y_soft else []),
                                   grad_outputs=v_data)
        gx += back[0]
        if y_soft:
            gy += back[1]
        if want_theta:
            a = a + v_theta
        del g, v_theta, v_data, back
    return MatchResult(float(loss), gx, glr, gy, final.detach())


def _naive(net, start, target, denom, images, labels, syn_lr, plan) -> MatchResult:
    x_leaf = images.detach().requires_grad_(True)
    y_soft = _learnable(labels)
    y_leaf = labels.detach().requires_grad_(True) if y_soft else labels
    lr_leaf = syn_lr.detach().requires_grad_(True)
    theta = start.requires_grad_(True)
    for idx, draw in zip(plan.indices, plan.draws):
        (g,) = torch.autograd.grad(_step_loss(net, theta, *_batch(x_leaf, y_leaf, idx, draw)), theta, create_graph=True)
        theta = theta - lr_leaf * g
    loss = (theta - target).pow(2).sum() / denom
    inputs = [x_leaf, lr_leaf] + ([y_leaf] if y_soft else [])
    grads = torch.autograd.grad(loss, inputs)
    return MatchResult(float(loss.detach()), grads[0], grads[1], grads[2] if y_soft else None, theta.detach())
