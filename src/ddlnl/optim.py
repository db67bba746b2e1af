"""AdaBelief (Zhuang et al., NeurIPS 2020), the optimiser RCIG uses for its coreset.

Written here (about 20 lines) rather than taken from a package: ``adabelief-pytorch`` has not
had a release since 2021-02, and a general optimiser collection would be a dependency for
one update rule. The rule and defaults follow ``optax.adabelief`` (b1 0.9, b2 0.999,
eps 1e-16, eps_root 1e-16, no weight decay, no rectification)::

    m = b1 m + (1 - b1) g
    s = b2 s + (1 - b2) (g - m)^2 + eps_root
    p -= lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)

As a ``torch.optim.Optimizer`` its state checkpoints through ``state_dict``.
"""

from __future__ import annotations

import torch


class AdaBelief(torch.optim.Optimizer):
    def __init__(self, params, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-16,
                 eps_root: float = 1e-16):
        if lr <= 0 or not 0 <= betas[0] < 1 or not 0 <= betas[1] < 1:
            raise ValueError(f"AdaBelief: invalid lr {lr} or betas {betas}")
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps, "eps_root": eps_root})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                if not st:
                    st["step"] = torch.zeros((), dtype=torch.float64)
                    st["m"], st["s"] = torch.zeros_like(p), torch.zeros_like(p)
                st["step"] += 1
                t = float(st["step"])
                m, s, g = st["m"], st["s"], p.grad
                m.mul_(b1).add_(g, alpha=1 - b1)
                s.mul_(b2).addcmul_(g - m, g - m, value=1 - b2).add_(group["eps_root"])
                denom = (s / (1 - b2**t)).sqrt_().add_(group["eps"])
                p.addcdiv_(m, denom, value=-group["lr"] / (1 - b1**t))
        return loss
