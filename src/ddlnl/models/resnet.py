"""CIFAR ResNet-18, the cross-architecture evaluation network of DC/MTT/DATM.

CIFAR variant: 3x3 stem conv with stride 1 and no max-pool (ImageNet's 7x7/stride-2 stem
would leave a 1x1 map at 32 px), BasicBlocks [2, 2, 2, 2] of widths 64/128/256/512
(``width`` x 1/2/4/8; only tests and quick smoke runs change the default 64),
global average pooling, linear classifier. Global (rather than fixed 4x4) pooling makes
the same net work at 32 and 64 px with a 512-d embedding.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ddlnl.errors import check_choice
from ddlnl.models import check_positive_int, register_model

NORMS = ("batch", "instance", "none")


def _norm(norm: str, channels: int) -> nn.Module:
    if norm == "batch":
        return nn.BatchNorm2d(channels)
    if norm == "instance":
        return nn.GroupNorm(channels, channels, affine=True)
    return nn.Identity()


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual; a 1x1 projection when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False)
        self.bn1 = _norm(norm, c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, stride=1, padding=1, bias=False)
        self.bn2 = _norm(norm, c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), _norm(norm, c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


@register_model("resnet18")
class ResNet18(nn.Module):
    """CIFAR ResNet-18; ``embed`` returns the globally pooled features (512-d by default)."""

    def __init__(
        self,
        num_classes: int,
        *,
        image_size: int = 32,  # unused: global pooling fits any size
        in_channels: int = 3,
        norm: str = "batch",
        width: int = 64,
    ):
        super().__init__()
        check_choice("norm", norm, NORMS)
        check_positive_int("width", width)
        widths = [width * 2**i for i in range(4)]
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = _norm(norm, width)
        stages, c_in = [], width
        for i, c_out in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(c_in, c_out, stride, norm), BasicBlock(c_out, c_out, 1, norm)]
            stages.append(nn.Sequential(*blocks))
            c_in = c_out
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.feature_dim = widths[-1]
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Globally average-pooled features (N, 8 * width), 512 by default."""
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return out.mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits (N, num_classes)."""
        return self.classifier(self.embed(x))
