"""Contract tests run on every registered model, plus exact parameter counts.

Registry-driven: a newly registered model gets the shape, backward and flat-vector tests
for free. ``SMALL`` shrinks a model's width where it has one, to keep the suite fast.
"""

from __future__ import annotations

import pytest
import torch
from torch.func import functional_call
from torch.nn import functional as F

from ddlnl.errors import ConfigError
from ddlnl.models import create_model, list_models, model_options
from ddlnl.models.functional import (
    flatten_params,
    functional_forward,
    num_params,
    unflatten_params,
)

NORMS = ("instance", "batch", "none")
SMALL = {"convnet": {"width": 16}, "resnet18": {"width": 8}}
CLASSES = 7
# Models with a norm option get every norm; the others (rcig_convnet: no normalisation by design)
# are covered by their own tests (tests/test_rcig.py).
NORMED = [m for m in list_models() if "norm" in model_options(m)]


def _build(name: str, norm: str, image_size: int = 32) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(name, CLASSES, image_size=image_size, norm=norm, **SMALL.get(name, {}))


def _batch(n: int = 3, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 3, size, size, generator=g), torch.randint(CLASSES, (n,), generator=g)


@pytest.mark.parametrize("norm", NORMS)
@pytest.mark.parametrize("name", NORMED)
class TestContract:
    def test_forward_and_embed_shapes(self, name, norm):
        net = _build(name, norm)
        x, _ = _batch()
        assert net(x).shape == (3, CLASSES)
        assert net.embed(x).shape == (3, net.feature_dim)

    def test_backward_reaches_every_parameter(self, name, norm):
        net = _build(name, norm)
        x, y = _batch()
        F.cross_entropy(net(x), y).backward()
        for pname, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), pname

    def test_flat_round_trip(self, name, norm):
        net = _build(name, norm)
        flat = flatten_params(net)
        assert flat.dim() == 1 and flat.numel() == num_params(net)
        views = unflatten_params(net, flat)
        assert list(views) == [n for n, _ in net.named_parameters()]
        for pname, p in net.named_parameters():
            assert torch.equal(views[pname], p)
        flat[0] += 1.0  # views share storage with the vector
        assert views[next(iter(views))].reshape(-1)[0] == flat[0]

    def test_functional_forward_matches_module(self, name, norm):
        net = _build(name, norm).eval()
        x, _ = _batch()
        expect = net(x)
        got = functional_forward(net, flatten_params(net), x)
        torch.testing.assert_close(got, expect, atol=1e-6, rtol=0)
        state = {**dict(net.named_parameters()), **dict(net.named_buffers())}
        torch.testing.assert_close(functional_call(net, state, (x,)), expect, atol=1e-6, rtol=0)

    def test_flat_gradient_matches_module_grads(self, name, norm):
        net = _build(name, norm)
        x, y = _batch()
        flat = flatten_params(net).requires_grad_()
        (g_flat,) = torch.autograd.grad(
            F.cross_entropy(functional_forward(net, flat, x), y), flat
        )
        F.cross_entropy(net(x), y).backward()
        g_mod = torch.cat([p.grad.reshape(-1) for p in net.parameters()])
        torch.testing.assert_close(g_flat, g_mod, atol=1e-6, rtol=1e-5)

    def test_runs_at_64px(self, name, norm):
        net = _build(name, norm, image_size=64)
        x, _ = _batch(2, 64)
        assert net(x).shape == (2, CLASSES)
        assert net.embed(x).shape == (2, net.feature_dim)


def test_double_backward_through_sgd_step():
    """What trajectory matching does: grad of a loss of (theta - lr * grad) w.r.t. images."""
    net = create_model("convnet", CLASSES, width=8)
    x, y = _batch(4)
    x.requires_grad_()
    theta = flatten_params(net).requires_grad_()
    (g,) = torch.autograd.grad(
        F.cross_entropy(functional_forward(net, theta, x), y), theta, create_graph=True
    )
    (theta - 0.01 * g).pow(2).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_unflatten_rejects_wrong_length():
    net = create_model("convnet", CLASSES, width=8)
    with pytest.raises(ConfigError, match="flatten_params"):
        unflatten_params(net, torch.zeros(num_params(net) + 1))


def test_convnet_parameter_count_matches_dc():
    # conv 3->128 (3*9*128 + 128) + 2 x conv 128->128 (128*9*128 + 128)
    # + 3 GroupNorm (2*128 each) + linear 2048->10 (2048*10 + 10)
    expect = (3 * 9 * 128 + 128) + 2 * (128 * 9 * 128 + 128) + 3 * 256 + (2048 * 10 + 10)
    assert expect == 320_010
    net = create_model("convnet", 10)
    assert num_params(net) == expect and net.feature_dim == 2048


def test_convnet_layout_matches_dc_names():
    net = create_model("convnet", 10)
    names = [n for n, _ in net.named_parameters()]
    assert names[:4] == [
        "features.0.weight",
        "features.0.bias",
        "features.1.weight",
        "features.1.bias",
    ]
    assert names[-2:] == ["classifier.weight", "classifier.bias"]
    assert isinstance(net.features[1], torch.nn.GroupNorm) and net.features[1].num_groups == 128


def test_convnet_d4_on_64px_has_2048_features():
    net = create_model("convnet", 200, image_size=64, depth=4)
    assert net.feature_dim == 2048


def test_convnet_pooling_options():
    assert create_model("convnet", 10, width=8, pooling="none").feature_dim == 8 * 32 * 32
    net = create_model("convnet", 10, width=8, pooling="max")
    assert isinstance(net.features[3], torch.nn.MaxPool2d)


def test_resnet18_parameter_count():
    def conv(c_in, c_out, k=3):
        return c_in * c_out * k * k

    def bn(c):
        return 2 * c

    total = conv(3, 64) + bn(64)
    c_in = 64
    for c in (64, 128, 256, 512):
        total += conv(c_in, c) + bn(c) + conv(c, c) + bn(c)  # first block
        if c != c_in:
            total += conv(c_in, c, 1) + bn(c)  # projection shortcut
        total += 2 * (conv(c, c) + bn(c))  # second block
        c_in = c
    total += 512 * 10 + 10
    assert total == 11_173_962
    assert num_params(create_model("resnet18", 10, norm="batch")) == total


@torch.no_grad()
@pytest.mark.parametrize("size", [32, 64])
def test_resnet18_default_width_at_32_and_64px(size):
    net = create_model("resnet18", 10, image_size=size).eval()
    x, _ = _batch(1, size)
    assert net(x).shape == (1, 10) and net.embed(x).shape == (1, 512) == (1, net.feature_dim)


def test_unknown_name_lists_models():
    with pytest.raises(ConfigError, match="convnet"):
        create_model("vgg11", 10)


def test_unknown_kwarg_lists_options():
    with pytest.raises(ConfigError, match="width"):
        create_model("convnet", 10, widht=64)


@pytest.mark.parametrize(
    "kwargs",
    [{"norm": "layer"}, {"pooling": "mean"}, {"width": 0}, {"depth": 0}, {"depth": 6}],
)
def test_bad_convnet_options(kwargs):
    with pytest.raises(ConfigError):
        create_model("convnet", 10, **kwargs)


def test_bad_common_options():
    with pytest.raises(ConfigError):
        create_model("convnet", 0)
    with pytest.raises(ConfigError):
        create_model("resnet18", 10, norm="group")
