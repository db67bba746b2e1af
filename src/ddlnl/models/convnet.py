"""ConvNet-D, the network of DC/DSA/DM/MTT/DATM/DANCE.

``depth`` blocks of conv3x3 (padding 1, bias) -> norm -> ReLU -> pool(2), then a linear
classifier on the flattened features. Instance norm is ``GroupNorm(width, width)`` as in
the DC code base (not ``nn.InstanceNorm2d``, which has no affine parameters by default).

Layers live in ``features`` (an ``nn.Sequential``) and ``classifier`` with the same
indices as the DC ``ConvNet``, so parameter order, names and flat-vector layout match the
original and expert trajectories are laid out identically. At 32 px, width 128, depth 3
gives 2048 features; Tiny-ImageNet (64 px) uses depth 4 for the same 2048.
"""

from __future__ import annotations

import torch
from torch import nn

from ddlnl.errors import ConfigError, check_choice
from ddlnl.models import check_positive_int, register_model

NORMS = ("instance", "batch", "none")
POOLINGS = ("avg", "max", "none")


def make_norm(norm: str, channels: int) -> nn.Module | None:
    """The normalisation layer named ``norm`` for ``channels`` feature maps (None: no layer)."""
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    return None


@register_model("convnet")
class ConvNet(nn.Module):
    """ConvNet-D; ``embed`` gives the DM/DANCE embedding (features before the classifier)."""

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int = 32,
        in_channels: int = 3,
        width: int = 128,
        depth: int = 3,
        norm: str = "instance",
        pooling: str = "avg",
    ):
        super().__init__()
        check_positive_int("width", width)
        check_positive_int("depth", depth)
        check_choice("norm", norm, NORMS)
        check_choice("pooling", pooling, POOLINGS)
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for _ in range(depth):
            layers.append(nn.Conv2d(channels, width, kernel_size=3, padding=1))
            norm_layer = make_norm(norm, width)
            if norm_layer is not None:
                layers.append(norm_layer)
            # Out-of-place: trajectory matching differentiates through this twice.
            layers.append(nn.ReLU())
            if pooling != "none":
                layers.append(nn.AvgPool2d(2, 2) if pooling == "avg" else nn.MaxPool2d(2, 2))
                size //= 2
            channels = width
        if size < 1:
            raise ConfigError(
                f"convnet of depth {depth} pools a {image_size}px image down to nothing",
                "lower depth, or use pooling='none'",
            )
        self.features = nn.Sequential(*layers)
        self.feature_dim = width * size * size
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Flattened features (N, feature_dim)."""
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.classifier(self.embed(x))
