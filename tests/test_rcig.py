"""RCIG: its network, the linearisation, kernel ridge, HVPs, the implicit gradient and a smoke distillation."""

import numpy as np
import pytest
import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.distill import rcig_math as R
from ddlnl.decode import training_labels
from ddlnl.distill.rcig import RCIG
from ddlnl.train import centred_one_hot
from ddlnl.errors import ConfigError
from ddlnl.models import create_model
from ddlnl.models.functional import flatten_params
from ddlnl.optim import AdaBelief


def tiny_net(C=3, size=8, width=2, depth=2, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    return create_model("rcig_convnet", C, image_size=size, width=width, depth=depth, softplus_temp=60.0).to(dtype).requires_grad_(False)


def toy_ctx(C=3, n_per_class=20, size=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(C), n_per_class)
    images = torch.randn(len(labels), 3, size, size, generator=g) + torch.as_tensor(labels).view(-1, 1, 1, 1).float()
    return DistillContext("toy", images, labels, C, Preprocessor("none"), {"name": "convnet"}, seed=seed, log=lambda m: None)


def test_rcig_convnet_widths_activation_and_features():
    net = create_model("rcig_convnet", 10, width=8, softplus_temp=60.0)
    assert [c.out_channels for c in net.convs] == [8, 16, 32] and net.feature_dim == 32 * 4 * 4
    assert create_model("rcig_convnet", 10, image_size=64, width=4).convs.__len__() == 4  # RCIG's depth rule
    x = torch.randn(2, 3, 32, 32)
    logits, feats = net(x, features=True)
    assert logits.shape == (2, 10) and feats.shape == (2, 512) and torch.equal(net(x), logits)
    relu = create_model("rcig_convnet", 10, width=8, softplus_temp=0)
    assert torch.equal(relu.act(torch.tensor([-1.0, 2.0])), torch.tensor([0.0, 2.0]))
    assert torch.allclose(net.act(torch.tensor([2.0])), torch.tensor([2.0]), atol=1e-3)  # softplus(60 x)/60 ~ relu
    with pytest.raises(ConfigError):
        create_model("rcig_convnet", 10, softplus_temp=-1)


def test_options_are_checked():
    with pytest.raises(ConfigError, match="hinv_solver"):
        create_distiller("rcig", hinv_solver="neumann")
    with pytest.raises(ConfigError, match="formulation"):
        create_distiller("rcig", formulation="fd")
    with pytest.raises(ConfigError, match="pool_lr"):
        create_distiller("rcig", pool_lr=0)
    with pytest.raises(ConfigError, match="tune_factor"):
        create_distiller("rcig", tune_factor=1.0)


def test_formulations_agree_and_jt_is_the_adjoint():
    net = tiny_net()
    th, mask = flatten_params(net), R.tangent_mask(net).double()
    assert mask.sum() < mask.numel()  # the classifier kernel is not linearised
    x = torch.randn(5, 3, 8, 8, dtype=torch.float64)
    d, u = torch.randn_like(th) * mask, torch.randn(5, 3, dtype=torch.float64)
    outs = [R.Linearised(net, th, x, formulation=f, mask=mask) for f in R.FORMULATIONS]
    jd = [lin.J(d) for lin in outs]
    for other in jd[1:]:
        assert torch.allclose(jd[0], other, atol=1e-12)
    assert torch.allclose((jd[0] * u).sum(), (d * outs[0].JT(u)).sum(), atol=1e-12)
    eps = 1e-6  # J d is the directional derivative of the logits
    fd = (R.net_forward(net, th + eps * d, x)[0] - R.net_forward(net, th - eps * d, x)[0]) / (2 * eps)
    assert torch.allclose(jd[0], fd, atol=1e-7)


def test_kernel_ridge_matches_a_direct_solve():
    g = torch.Generator().manual_seed(0)
    fs, ft = torch.randn(6, 20, generator=g), torch.randn(4, 20, generator=g)
    ys, os_, ot = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g), torch.randn(4, 3, generator=g)
    lam = 0.05
    chol = R.ridge_cholesky(fs, lam)
    direct = torch.linalg.solve(fs.double() @ fs.double().T + lam * torch.eye(6, dtype=torch.float64), (ys - os_).double())
    assert torch.allclose(R.ridge_solve(chol, (ys - os_).double()), direct, atol=1e-10)
    pred = R.krr_predict(ft, ot, fs, os_, ys, lam)
    assert torch.allclose(pred, ot + (ft.double() @ fs.double().T @ direct).float(), atol=1e-5)


def test_inner_loss_closed_form_and_hvps_match_double_backward():
    net = tiny_net()
    th, mask = flatten_params(net), R.tangent_mask(net).double()
    x, y = torch.randn(6, 3, 8, 8, dtype=torch.float64), torch.randn(6, 3, dtype=torch.float64)
    lam = 0.05
    delta, v = 0.1 * torch.randn_like(th) * mask, torch.randn_like(th) * mask
    prob = R.InnerProblem(R.Linearised(net, th, x, formulation="jvp", mask=mask), y, lam)
    # the literal L_in (W, K W, tr(W^T K W)), differentiated twice by autograd
    d = delta.clone().requires_grad_(True)
    o = torch.func.jvp(lambda t: R.net_forward(net, t, x)[0], (th,), (d * mask,))[1]
    literal = R.inner_loss_literal(prob.lin.feats, o, y, d * mask, lam)
    assert float(literal.detach()) == pytest.approx(prob.loss(delta), rel=1e-10)
    (grad,) = torch.autograd.grad(literal, d, create_graph=True)
    (hv_double,) = torch.autograd.grad(grad, d, v)
    hv = prob.hvp(v)
    assert torch.allclose(hv, hv_double * mask, atol=1e-12)
    assert torch.allclose(hv, R.hvp_forward_over_reverse(net, th, x, y, lam, delta, v, mask), atol=1e-12)
    # and the quadratic form: gradient of L_in = H delta - b
    assert torch.allclose(grad.detach() * mask, prob.hvp(delta) - prob.b, atol=1e-12)


def _implicit_problem(formulation):
    C, ipc, size = 2, 2, 8
    net = tiny_net(C=C, size=size, width=2, depth=2)
    th = flatten_params(net)
    g = torch.Generator().manual_seed(1)
    x_syn = torch.randn(C * ipc, 3, size, size, generator=g, dtype=torch.float64)
    y_syn = centred_one_hot(torch.arange(C).repeat_interleave(ipc), C).double() + 0.05 * torch.randn(C * ipc, C, generator=g, dtype=torch.float64)
    xt = torch.randn(12, 3, size, size, generator=g, dtype=torch.float64)
    yt = torch.arange(12) % C
    d = RCIG(formulation=formulation, use_flip=True, inner_solver="cg", hinv_solver="cg", inner_steps=400, hinv_steps=400)
    d.mask, d._passes = R.tangent_mask(net).double(), 0
    return d, net, th, x_syn, y_syn, xt, yt, 0.02


def _total_outer_loss(d, net, th, x_syn, y_syn, xt, yt, lam):
    """L_out(X, Y, delta*(X, Y)) with the inner problem solved to convergence (CG)."""
    xs, ys = R.with_flips(x_syn, y_syn, True)
    prob = R.InnerProblem(R.Linearised(net, th, xs, formulation="jvp", mask=d.mask), ys, lam)
    delta = R.cg_quadratic(prob.hvp, prob.b, 400)[0]
    lin_t = R.Linearised(net, th, xt, formulation="jvp", mask=d.mask)
    loss, _ = R.outer_loss(lin_t.feats, lin_t.J(delta), prob.lin.feats, prob.lin.J(delta), ys, yt, torch.zeros((), dtype=torch.float64),
                           lam, y_margin=y_syn)
    return float(loss)


@pytest.mark.parametrize("formulation", ["jvp", "vjp"])
def test_implicit_gradient_matches_finite_differences(formulation):
    d, net, th, x_syn, y_syn, xt, yt, lam = _implicit_problem(formulation)
    x_leaf, y_leaf = x_syn.clone().requires_grad_(True), y_syn.clone().requires_grad_(True)
    log_temp = torch.zeros((), dtype=torch.float64, requires_grad=True)
    xs, ys = R.with_flips(x_syn, y_syn, True)
    prob, delta, _ = d.solve_inner(net, th, xs, ys, lam, None)
    gx, gy, _, g_t, _, _ = d.outer_grads(net, th, prob, delta, x_leaf, y_leaf, log_temp, xt, yt, lam)
    v = R.cg_quadratic(prob.hvp, g_t, 400)[0]
    ix, iy = d.implicit_grads(net, th, delta, v, x_leaf, y_leaf, lam)
    total_x, total_y = gx + ix, gy + iy
    assert ix.norm() > 1e-3 * gx.norm()  # the implicit part matters here
    eps = 1e-5
    rng = np.random.default_rng(0)
    for _ in range(4):
        i = tuple(int(rng.integers(s)) for s in x_syn.shape)
        xp, xm = x_syn.clone(), x_syn.clone()
        xp[i] += eps
        xm[i] -= eps
        fd = (_total_outer_loss(d, net, th, xp, y_syn, xt, yt, lam) - _total_outer_loss(d, net, th, xm, y_syn, xt, yt, lam)) / (2 * eps)
        assert float(total_x[i]) == pytest.approx(fd, rel=1e-4, abs=1e-8)
    for j in range(2):
        i = (j, j % 2)
        yp, ym = y_syn.clone(), y_syn.clone()
        yp[i] += eps
        ym[i] -= eps
        fd = (_total_outer_loss(d, net, th, x_syn, yp, xt, yt, lam) - _total_outer_loss(d, net, th, x_syn, ym, xt, yt, lam)) / (2 * eps)
        assert float(total_y[i]) == pytest.approx(fd, rel=1e-4, abs=1e-8)


def test_inverse_hessian_solvers_and_monotone_inner_loss_at_the_tuned_lr():
    ctx = toy_ctx()
    d = RCIG(width=2, depth=2, inner_steps=10, hinv_steps=10, batch_real=30, tune_factor=2.0, tune_max_trials=25)
    d.mask, d._passes = None, 0
    net = d._net(ctx, 16).requires_grad_(False)
    d.mask = R.tangent_mask(net)
    th = flatten_params(net)
    x, classes = ctx.random_real(2, torch.Generator().manual_seed(0))
    y = centred_one_hot(classes, 3)
    lam = 5e-4 * 6
    log_temp = torch.zeros((), requires_grad=True)
    xt, yt = ctx.images[:30], torch.as_tensor(ctx.labels[:30])
    inner_lr, _hvp_lr, rep = d.tune(ctx, net, th, x.clone().requires_grad_(True), y.clone().requires_grad_(True), log_temp, xt, yt, lam)
    assert rep["inner_trials"] > 1 and rep["hvp_trials"] >= 1
    xs, ys = R.with_flips(x, y, True)
    prob, delta, hist = d.solve_inner(net, th, xs, ys, lam, inner_lr)
    assert R.lr_verdict(hist) == 1  # strictly decreasing inner loss at the tuned lr
    assert prob.loss(delta) < prob.constant()
    g = torch.randn_like(th) * d.mask
    for solver, lr in (("cg", None), ("adam", 1e-3)):
        _v, res = R.solve_quadratic(solver, prob.hvp, g, 10, lr)
        assert res[-1] < res[0] == 0.0  # 2 q(v) goes down from q(0) = 0
    assert R.lr_verdict([3.0, 2.0, 1.0]) == 1 and R.lr_verdict([1.0, 0.5, 2.0]) == -1 and R.lr_verdict([1.0, 0.5, 0.7]) == 0


def test_smoke_distillation_lowers_the_outer_loss_and_describes_its_labels():
    ctx = toy_ctx()
    d = create_distiller("rcig", iterations=20, width=2, depth=2, pool_size=2, batch_real=30, inner_steps=5, hinv_steps=5,
                         hinv_solver="cg", tune_factor=2.0, max_online_steps=15)
    s = d.run(ctx, 2)
    assert len(d.losses) == 20 and np.mean(d.losses[-5:]) < np.mean(d.losses[:5])
    assert s.images.shape == (6, 3, 16, 16) and s.labels.shape == (6, 3) and s.labels.dtype == torch.float32
    assert s.labels.argmax(1).tolist() == [0, 0, 1, 1, 2, 2]
    assert s.meta["label_semantics"] == "regression_targets" and s.meta["label_temperature"] > 1.0
    assert s.meta["decode"] == {"kind": "flip_copies"} and s.meta["rcig"]["pool_resets"] >= 1
    images, _labels = s.training_data()
    assert images.shape[0] == 12 and torch.equal(images[6:], s.images.flip(-1))
    assert torch.allclose(training_labels(s.labels, s.meta), s.labels * s.meta["label_temperature"])
    assert torch.equal(training_labels(s.labels, s.meta, loss="mse"), s.labels)
    assert torch.allclose(s.training_data()[1][: s.labels.shape[0]], s.labels * s.meta["label_temperature"])
    assert ctx.timings["distill"] > 0 and ctx.images_processed > 0


def test_clip_and_adabelief():
    direct, implicit = torch.tensor([3.0, 4.0]), torch.tensor([0.0, 10.0])
    assert torch.allclose(R.clip_to(implicit, direct), torch.tensor([0.0, 5.0]))
    assert torch.equal(R.clip_to(torch.tensor([1.0, 0.0]), direct), torch.tensor([1.0, 0.0]))
    p = torch.tensor([1.0], requires_grad=True)
    opt = AdaBelief([p], lr=0.1)
    grads, m, s = [2.0, -1.0], 0.0, 0.0
    expected = 1.0
    for t, g in enumerate(grads, 1):
        p.grad = torch.tensor([g])
        opt.step()
        m = 0.9 * m + 0.1 * g
        s = 0.999 * s + 0.001 * (g - m) ** 2 + 1e-16
        expected -= 0.1 * (m / (1 - 0.9**t)) / ((s / (1 - 0.999**t)) ** 0.5 + 1e-16)
        assert float(p) == pytest.approx(expected, rel=1e-6)


class _Stop(Exception):
    pass


def test_resume_after_an_interruption_equals_an_uninterrupted_run(tmp_path, monkeypatch):
    from ddlnl.distill.loop import DistillLoop

    opts = {"iterations": 5, "width": 2, "depth": 2, "pool_size": 2, "batch_real": 20, "inner_steps": 3, "hinv_steps": 3,
            "tune_factor": 3.0, "max_online_steps": 6, "lr_monitor_interval": 2}
    whole = create_distiller("rcig", **opts).run(toy_ctx(), 2)
    ctx = toy_ctx()
    ctx.checkpoint, ctx.checkpoint_every_s = tmp_path / "ckpt.pt", 0.0
    calls, real_report = {"n": 0}, DistillLoop.report

    def failing_report(self, loss):  # stop inside the fourth iteration, after its updates
        calls["n"] += 1
        if calls["n"] == 4:
            raise _Stop
        return real_report(self, loss)

    monkeypatch.setattr(DistillLoop, "report", failing_report)
    with pytest.raises(_Stop):
        create_distiller("rcig", **opts).run(ctx, 2)
    monkeypatch.setattr(DistillLoop, "report", real_report)
    resumed = create_distiller("rcig", **opts).run(ctx, 2)
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.labels, whole.labels)
    assert resumed.meta["label_temperature"] == whole.meta["label_temperature"]
    assert resumed.meta["rcig"]["inner_lr"] == whole.meta["rcig"]["inner_lr"]
