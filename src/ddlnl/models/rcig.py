"""RCIG's ConvNet (Loo et al., ICML 2023; docs/methods/rcig.md §4.1), ``rcig_convnet``.

``depth`` blocks of conv3x3 (padding 1, bias) -> activation -> AvgPool(2), with widths
``width * 2**i`` (128, 256, 512 for the default depth 3), **no normalisation**, then a
linear classifier on the flattened features (512 * 4 * 4 = 8192 at 32 px). The activation
is ``softplus(beta * x) / beta`` with ``beta = softplus_temp`` (RCIG distils with 60, a
smooth ReLU, so that the linearised network has useful second derivatives) or ReLU when
``softplus_temp`` is 0 (RCIG's evaluation, and depth 4/5).

``depth: null`` picks RCIG's rule: 3 for images up to 32 px, 4 for 64 px, 5 for 128 px.
Initialisation follows Flax's defaults (what the original trains from): LeCun-normal
kernels (truncated normal, variance 1 / fan_in) and zero biases.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddlnl.errors import ConfigError
from ddlnl.models import check_positive_int, register_model


def rcig_depth(image_size: int) -> int:
    """RCIG's depth for an image side: 3 (<= 32 px), 4 (64 px), 5 (128 px and more)."""
    return 3 if image_size <= 32 else 4 if image_size <= 64 else 5


def lecun_normal_(t: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Flax's ``lecun_normal``: truncated normal (at +-2 sigma) with variance 1 / fan_in."""
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978  # std of a unit normal truncated at +-2
    with torch.no_grad():
        return nn.init.trunc_normal_(t, 0.0, std, -2.0 * std, 2.0 * std)


@register_model("rcig_convnet")
class RCIGConvNet(nn.Module):
    """RCIG's Conv; ``embed`` gives the flattened features phi(x), ``forward`` the logits."""

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int = 32,
        in_channels: int = 3,
        width: int = 128,
        depth: int | None = None,
        softplus_temp: float = 0.0,
    ):
        super().__init__()
        check_positive_int("width", width)
        depth = rcig_depth(image_size) if depth is None else depth
        check_positive_int("depth", depth)
        if not isinstance(softplus_temp, (int, float)) or isinstance(softplus_temp, bool) or softplus_temp < 0:
            raise ConfigError(f"softplus_temp must be a number >= 0, got {softplus_temp!r}",
                              "use 60 (RCIG's distillation) or 0 (ReLU, RCIG's evaluation)")
        size = image_size
        convs, channels = [], in_channels
        for i in range(depth):
            out = width * 2**i
            conv = nn.Conv2d(channels, out, kernel_size=3, padding=1)
            lecun_normal_(conv.weight, channels * 9)
            nn.init.zeros_(conv.bias)
            convs.append(conv)
            channels, size = out, size // 2
        if size < 1:
            raise ConfigError(f"rcig_convnet of depth {depth} pools a {image_size}px image down to nothing",
                              "lower depth (RCIG: 3 for 32 px, 4 for 64 px)")
        self.convs = nn.ModuleList(convs)
        self.softplus_temp = float(softplus_temp)
        self.feature_dim = channels * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        lecun_normal_(self.classifier.weight, self.feature_dim)
        nn.init.zeros_(self.classifier.bias)

    def act(self, x: torch.Tensor) -> torch.Tensor:
        if self.softplus_temp > 0:
            return F.softplus(x, beta=self.softplus_temp)  # softplus(beta x) / beta
        return F.relu(x)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features phi(x), (N, feature_dim)."""
        for conv in self.convs:
            x = F.avg_pool2d(self.act(conv(x)), 2)
        return x.flatten(1)

    def forward(self, x: torch.Tensor, features: bool = False):
        """Logits (N, num_classes); with ``features=True`` (logits, phi(x)) from the same pass
        (so that ``torch.func.functional_call(net, params, (x,), {"features": True})`` gives both)."""
        feats = self.embed(x)
        logits = self.classifier(feats)
        return (logits, feats) if features else logits
