"""The DP-SGD baseline: CE on the full noisy set with per-example clipping and Gaussian noise (Opacus).

It answers the question the privacy claims of dataset condensation must face (Carlini et al.,
"No free lunch in 'privacy for free'"): at the accuracy a distilled set reaches, does training on
all images with a proven (epsilon, delta) guarantee leak less? Its network has the baseline's
architecture and recipe (epochs, batch size, lr, schedule, augmentation); the noise multiplier
is chosen by Opacus so that the whole training spends ``epsilon`` at ``delta = 1 / (10 N)``, with
clipping norm 1. DP-SGD needs per-example gradients, so these networks train in Opacus's own loop,
one at a time (not the batched trainer); Poisson-sampled batches, as its accounting assumes.
Opacus is the optional ``privacy`` extra: ``pip install 'ddlnl[privacy]'``.
"""

from __future__ import annotations

import functools
import warnings

import torch

from ddlnl.baselines import create_baseline
from ddlnl.errors import ConfigError
from ddlnl.evaluate import SetToEvaluate, build_model
from ddlnl.privacy.options import check_epsilon
from ddlnl.privacy.shadows import Pipeline
from ddlnl.train import TrainConfig, augment_batch, label_loss, lr_at, make_optimizer
from ddlnl.utils.runtime import generator as make_generator
from ddlnl.utils.seeds import stream_seed

MAX_GRAD_NORM = 1.0


def require_opacus():
    try:
        import opacus
    except ImportError:
        raise ConfigError("the DP-SGD target needs Opacus, which is not installed",
                          "pip install 'ddlnl[privacy]' (or pip install opacus), or leave dp_sgd out of --targets") from None
    return opacus


@functools.lru_cache(maxsize=8)
def noise_multiplier(epsilon: float, delta: float, sample_rate: float, epochs: int) -> float:
    """The noise that makes ``epochs`` of Poisson batches at ``sample_rate`` spend ``epsilon`` (RDP accounting);
    searched once and reused by every shadow of the same size (the search takes seconds)."""
    from opacus.accountants.utils import get_noise_multiplier

    return float(get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=sample_rate, epochs=epochs,
                                      accountant="rdp"))


def dp_train(item: SetToEvaluate, seed: int, *, num_classes: int, epsilon: float, delta: float, device) -> tuple[torch.nn.Module, float]:
    """A fresh network (``torch.manual_seed(seed)``) trained by DP-SGD on ``item``; returns it and the epsilon spent."""
    opacus = require_opacus()
    from opacus.validators import ModuleValidator

    cfg: TrainConfig = item.train
    torch.manual_seed(seed)
    net = ModuleValidator.fix(build_model(item.model, num_classes, item.images.shape[-1])).to(device)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(item.images, item.labels), batch_size=cfg.batch_size)
    with warnings.catch_warnings():  # Opacus warns about its own secure-RNG default and full-backward hooks
        warnings.simplefilter("ignore")
        engine = opacus.PrivacyEngine(accountant="rdp")
        sigma = noise_multiplier(epsilon, delta, 1 / len(loader), cfg.epochs)
        private, opt, loader = engine.make_private(module=net, optimizer=make_optimizer(net.parameters(), cfg), data_loader=loader,
                                                   noise_multiplier=sigma, max_grad_norm=MAX_GRAD_NORM)
        gen = make_generator(seed)
        private.train()
        for epoch in range(cfg.epochs):
            for group in opt.param_groups:
                group["lr"] = lr_at(cfg, epoch)
            for x, y in loader:
                if x.shape[0] == 0:  # a Poisson batch may be empty: no step (spends less than accounted)
                    continue
                x = augment_batch(x.to(device), cfg, gen)
                loss = label_loss(private(x), y.to(device), cfg)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    return private._module.eval(), float(engine.get_epsilon(delta))


class DpSgd(Pipeline):
    """CE on the full noisy set by DP-SGD at ``epsilon``: the target and its shadows alike."""

    name, number = "dp_sgd", 3

    def __init__(self, data, preset: dict, *, epsilon: float, **kw):
        super().__init__(data, preset, **kw)
        check_epsilon(epsilon)
        require_opacus()
        self.epsilon, self.delta = float(epsilon), 0.1 / data.x_train.shape[0]
        self.spent: float | None = None

    def key(self) -> dict:
        return {"pipeline": self.name, "baseline": self.preset["baseline"], "model": self.preset["model"], "epsilon": self.epsilon,
                "delta": self.delta, "max_grad_norm": MAX_GRAD_NORM}

    def details(self) -> dict:
        return {"members_are": "the training images it was trained on", "epsilon": self.epsilon, "delta": self.delta,
                "max_grad_norm": MAX_GRAD_NORM}

    def trained_details(self) -> dict:
        return {"epsilon_spent": self.spent}

    def item(self, images: torch.Tensor, labels: torch.Tensor) -> SetToEvaluate:
        return SetToEvaluate(images, labels, self.preset["model"], create_baseline("ce").train_config(self.preset), "dp-sgd")

    def target(self) -> torch.nn.Module:
        d = self.data
        net, self.spent = dp_train(self.item(d.x_train, d.y_train_noisy), stream_seed(self.seed, "privacy.dp", 0),
                                   num_classes=d.num_classes, epsilon=self.epsilon, delta=self.delta, device=self.device)
        return net

    def at_once(self) -> int:
        return 1

    def shadow_item(self, images, labels, seed) -> SetToEvaluate:
        return self.item(images, labels)

    def train_shadows(self, items, seeds, on_done) -> None:
        for i, (item, seed) in enumerate(zip(items, seeds, strict=True)):
            on_done(i, dp_train(item, seed, num_classes=self.data.num_classes, epsilon=self.epsilon, delta=self.delta,
                                device=self.device)[0])
