"""K networks of one architecture as one module, for training them side by side.

:class:`StackedNetworks` holds the parameters and buffers of K networks stacked along a new
leading dimension (``torch.func.stack_module_state``) and runs them on a (K, B, ...) batch
with ``torch.func.vmap`` over ``functional_call``: one call, and on a GPU one set of kernel
launches, for K small networks. The K original modules stay usable throughout: while stacked,
each module's tensors are views into the stacked storage, so an optimiser step on the stack
is seen by the modules at once (a hook can test module k between epochs) and nothing is
copied back at the end. :meth:`StackedNetworks.release` gives the modules their own storage again.

An optimiser over the stacked parameters is the same as K optimisers over the K networks for
element-wise rules (SGD with momentum and weight decay, Adam): :meth:`optimizer_state` and
:meth:`stack_optimizer_states` convert between the two, so a stacked training saves and
resumes per network.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from ddlnl.errors import ConfigError


class StackedNetworks(nn.Module):
    """K networks of one architecture trained as one module; ``forward`` maps (K, B, ...) to (K, B, C)."""

    def __init__(self, nets: Sequence[nn.Module]):
        super().__init__()
        nets = list(nets)
        if len(nets) < 2:
            raise ConfigError(f"stacking needs at least 2 networks, got {len(nets)}", "train a single network directly")
        shapes = {tuple((n, tuple(t.shape)) for n, t in m.state_dict().items()) for m in nets}
        if len(shapes) > 1 or len({type(m) for m in nets}) > 1:
            raise ConfigError("stacked networks must share one architecture", "stack networks built from one model config")
        params, buffers = stack_module_state(nets)
        self.param_names, self.buffer_names = list(params), list(buffers)
        self.stacked_params = nn.ParameterList(nn.Parameter(params[n].detach().clone()) for n in self.param_names)
        for i, n in enumerate(self.buffer_names):
            self.register_buffer(f"b{i}", buffers[n].clone())
        self.nets = nets
        self.base = [copy.deepcopy(nets[0]).to("meta")]  # a list: not a submodule, no parameters of its own
        self._share_storage()

    @property
    def k(self) -> int:
        return len(self.nets)

    def _stacked_buffers(self) -> list[torch.Tensor]:
        return [getattr(self, f"b{i}") for i in range(len(self.buffer_names))]

    def _share_storage(self) -> None:
        """Point each module's parameters and buffers at its slice of the stacked storage."""
        for k, net in enumerate(self.nets):
            for p, s in zip(net.parameters(), self.stacked_params, strict=True):
                p.data = s.data[k]
            named = dict(net.named_buffers())
            for n, s in zip(self.buffer_names, self._stacked_buffers(), strict=True):
                named[n].data = s.data[k]

    def release(self) -> list[nn.Module]:
        """Give each module its own copy of its (trained) tensors; returns the modules."""
        for net in self.nets:
            for t in [*net.parameters(), *net.buffers()]:
                t.data = t.data.clone()
        return self.nets

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] != self.k:
            raise ConfigError(f"stacked input has {x.shape[0]} groups for {self.k} networks", "stack one batch per network")
        base = self.base[0]
        base.train(self.training)
        params = dict(zip(self.param_names, self.stacked_params, strict=True))
        buffers = dict(zip(self.buffer_names, self._stacked_buffers(), strict=True))

        def one(p, b, xb):
            return functional_call(base, (p, b), (xb,))

        return vmap(one)(params, buffers, x)

    # -- optimiser state, per network ---------------------------------------------------------
    def optimizer_state(self, opt: torch.optim.Optimizer, k: int) -> dict:
        """Network k's share of ``opt``'s state, as the state dict of an optimiser over that network
        alone (``opt`` is over ``self.parameters()``, whose order is the network's parameter order)."""
        full = opt.state_dict()
        return {"state": {i: {name: _slice(v, k, self.k) for name, v in s.items()} for i, s in full["state"].items()},
                "param_groups": copy.deepcopy(full["param_groups"])}

    def stack_optimizer_states(self, states: Sequence[dict]) -> dict:
        """The state dict of an optimiser over the stack, from one optimiser state dict per network."""
        if len(states) != self.k:
            raise ConfigError(f"{len(states)} optimiser states for {self.k} networks", "pass one state per network")
        first = states[0]
        stacked = {}
        for i in first["state"]:
            stacked[i] = {name: torch.stack([s["state"][i][name] for s in states]) if _per_network(v) else v
                          for name, v in first["state"][i].items()}
        return {"state": stacked, "param_groups": copy.deepcopy(first["param_groups"])}


def _per_network(v) -> bool:
    return isinstance(v, torch.Tensor) and v.dim() > 0


def _slice(v, k: int, K: int):
    """Network k's part of a stacked optimiser state entry (scalars such as Adam's step are shared)."""
    if _per_network(v):
        if v.shape[0] != K:  # pragma: no cover - every element-wise state has the parameter's shape
            raise ConfigError(f"optimiser state of shape {tuple(v.shape)} is not stacked over {K} networks", "")
        return v[k].clone()
    return v.clone() if isinstance(v, torch.Tensor) else v
