"""Run a network on a flat parameter vector, the representation trajectory matching needs.

MTT/DATM treat a network's parameters as one vector theta so that an unrolled SGD step is
``theta - lr * grad`` and the loss is a distance between vectors. The original code did
this with ``ReparamModule``; here ``torch.func.functional_call`` does it on an ordinary
module. The layout is ``net.named_parameters()`` in order, each flattened, concatenated.
Buffers (BatchNorm running statistics) are not in the vector; they come from the module.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.func import functional_call

from ddlnl.errors import ConfigError


def num_params(net: nn.Module) -> int:
    """Length of the flat vector of ``net``."""
    return sum(p.numel() for p in net.parameters())


def flatten_params(net: nn.Module) -> torch.Tensor:
    """A new 1-D tensor holding every parameter of ``net`` (detached; a fresh leaf)."""
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def unflatten_params(net: nn.Module, flat: torch.Tensor) -> dict[str, torch.Tensor]:
    """Name -> view of ``flat`` shaped like that parameter, so gradients reach ``flat``."""
    named = list(net.named_parameters())
    total = sum(p.numel() for _, p in named)
    if flat.dim() != 1 or flat.numel() != total:
        raise ConfigError(
            f"flat parameter vector has shape {tuple(flat.shape)}, the network needs ({total},)",
            "build it with flatten_params() on a network of the same architecture",
        )
    chunks = flat.split([p.numel() for _, p in named])
    return {name: c.view(p.shape) for (name, p), c in zip(named, chunks)}


def functional_forward(net: nn.Module, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``net(x)`` computed with the parameters in ``flat`` (buffers from the module)."""
    return functional_call(net, unflatten_params(net, flat), (x,))
