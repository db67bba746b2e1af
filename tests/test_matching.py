"""Trajectory-matching gradients: exact recompute equals the naive unrolled autograd."""

import pytest
import torch

from ddlnl.distill.matching import CompiledSteps, make_plan, match_trajectory
from ddlnl.errors import ConfigError
from ddlnl.evaluate import build_model
from ddlnl.models.functional import flatten_params

MODEL = {"name": "convnet", "width": 4, "depth": 2, "norm": "instance"}


def problem(soft=True, n=6, classes=3, side=8, steps=5, batch=4, seed=0):
    torch.manual_seed(seed)
    net = build_model(MODEL, classes, side).double().requires_grad_(False)
    start = flatten_params(net)
    target = start + 0.05 * torch.randn_like(start)
    x = torch.randn(n, 3, side, side, dtype=torch.float64)
    y = torch.randn(n, classes, dtype=torch.float64) if soft else torch.arange(n) % classes
    plan = make_plan(n, steps, batch, generator=torch.Generator().manual_seed(seed + 1),
                     dsa_strategy="color_crop_cutout_flip_scale_rotate", image_size=side)
    return net, start, target, x, y, torch.tensor(0.1, dtype=torch.float64), plan


def rel(a, b):
    return float((a - b).norm() / b.norm())


@pytest.mark.parametrize("soft", [True, False])
def test_exact_recompute_equals_naive_unroll(soft):
    net, start, target, x, y, lr, plan = problem(soft=soft)
    exact = match_trajectory(net, start, target, x, y, lr, plan, mode="exact")
    naive = match_trajectory(net, start, target, x, y, lr, plan, mode="naive")
    assert exact.loss == pytest.approx(naive.loss, rel=1e-10)
    assert rel(exact.grad_images, naive.grad_images) < 1e-4
    assert rel(exact.grad_lr, naive.grad_lr) < 1e-4
    if soft:
        assert rel(exact.grad_labels, naive.grad_labels) < 1e-4
    else:
        assert exact.grad_labels is None and naive.grad_labels is None
    assert torch.allclose(exact.final_params, naive.final_params)


def test_tesla_is_first_order():
    net, start, target, x, y, lr, plan = problem()
    exact = match_trajectory(net, start, target, x, y, lr, plan, mode="exact")
    tesla = match_trajectory(net, start, target, x, y, lr, plan, mode="tesla")
    # same forward, different (approximate) image gradient over several steps
    assert tesla.loss == pytest.approx(exact.loss)
    assert rel(tesla.grad_images, exact.grad_images) > 1e-6
    # with one step there is no earlier step to propagate through: identical
    net, start, target, x, y, lr, plan = problem(steps=1)
    one_e = match_trajectory(net, start, target, x, y, lr, plan, mode="exact")
    one_t = match_trajectory(net, start, target, x, y, lr, plan, mode="tesla")
    assert rel(one_t.grad_images, one_e.grad_images) < 1e-12 and rel(one_t.grad_lr, one_e.grad_lr) < 1e-12


def test_plan_cycles_through_a_permutation_and_checks_mode():
    plan = make_plan(6, 3, 4, generator=torch.Generator().manual_seed(0))
    used = torch.cat(plan.indices)
    assert len(plan) == 3 and all(len(i) == 4 for i in plan.indices)
    assert torch.equal(torch.sort(used[:6]).values, torch.arange(6))  # the first 6 slots are one permutation
    assert plan.draws == [None, None, None]
    assert len(make_plan(3, 2, 10).indices[0]) == 3  # batch_syn capped at the set size
    net, start, target, x, y, lr, plan = problem(steps=1)
    with pytest.raises(ConfigError, match="exact"):
        match_trajectory(net, start, target, x, y, lr, plan, mode="backprop")


@pytest.mark.parametrize("compile_mode", ["default", "reduce-overhead"])
def test_compiled_steps_give_the_eager_gradients(compile_mode):
    """The Inductor-compiled step graphs (compile: true) compute what the eager passes compute:
    soft labels through exact and tesla (one pair of graphs serves both), hard labels through exact.
    reduce-overhead (CUDA graphs on a GPU; a CPU runs the same graphs without) copies its outputs out."""
    cases = ((True, ("exact", "tesla")), (False, ("exact",))) if compile_mode == "default" else ((True, ("exact",)),)
    for soft, modes in cases:
        net, start, target, x, y, lr, plan = problem(soft=soft)
        steps = CompiledSteps(net, compile_mode)
        for mode in modes:
            eager = match_trajectory(net, start, target, x, y, lr, plan, mode=mode)
            comp = match_trajectory(net, start, target, x, y, lr, plan, mode=mode, steps=steps)
            assert comp.loss == pytest.approx(eager.loss, rel=1e-10)
            assert torch.allclose(comp.final_params, eager.final_params)
            assert rel(comp.grad_images, eager.grad_images) < 1e-8 and rel(comp.grad_lr, eager.grad_lr) < 1e-8
            assert (comp.grad_labels is None) == (not soft)
            if soft:
                assert rel(comp.grad_labels, eager.grad_labels) < 1e-8
        assert len(steps._fns) == 2  # one pass-1 and one pass-2 graph, reused across modes and calls
    bn = build_model({"name": "convnet", "width": 4, "depth": 1, "norm": "batch"}, 3, 8)
    with pytest.raises(ConfigError, match="buffers"):
        CompiledSteps(bn)
    with pytest.raises(ConfigError, match="compile_mode"):
        CompiledSteps(net, "max-autotune")
