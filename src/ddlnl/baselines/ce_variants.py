"""The full-noisy-set baseline defined two more ways, beside ``ce`` (``results.full_noisy``).

DD_LNL ships no script for its full-noisy baseline (docs/methods/dd_lnl.md §1.6), so what "training on
all the noisy labels" scores depends on when one stops. Two readings besides the shared recipe:

``ce_converged``  CE trained to the end of a long schedule (its ``train`` option, merged over
                  ``baseline.train``; paper: 200 epochs, cosine to 0, lr 0.05: ours), tested at
                  the final epoch. Under noise a network that long memorises wrong labels, so this
                  is the pessimistic reading.
``ce_selected``   CE with model selection on the held-out validation split (``data.validation``),
                  scored against its *noisy* labels, as a practitioner would early-stop: every
                  ``every`` epochs (and at the last) the network is scored there, the weights of
                  the best epoch (the first of equal scores) are kept and their clean test
                  accuracy is reported. The test set plays no part in the choice. Without a
                  validation split the baseline is skipped.

Both are the CE baseline's run (same network, seeds from the ``baseline`` stream, the one
trainer); only the recipe and the epoch whose weights are tested differ.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ddlnl.baselines.base import (
    BaselineContext,
    BaselineUnavailable,
    RunOutcome,
    register_baseline,
)
from ddlnl.baselines.losses import CrossEntropy
from ddlnl.errors import ConfigError
from ddlnl.evaluate import CheckpointTests, accuracy_report, checkpoint_epochs, test_predictions
from ddlnl.train import TrainRun

# ce_converged's default recipe, over baseline.train (ours: the paper code defines no baseline; see docs/baselines.md)
CONVERGED_TRAIN = {"epochs": 200, "lr": 0.05, "schedule": "cosine"}

NO_SPLIT = ("ce_selected chooses its epoch on a held-out validation split with noisy labels, and this preset "
            "holds none (data.validation is null)")
HOW_SPLIT = ("hold one out with --set data.validation=N (N images per noisy class, e.g. 500), "
             "or leave ce_selected out of --baselines")


@register_baseline
class CEConverged(CrossEntropy):
    name = "ce_converged"
    description = "cross-entropy on the full noisy set, trained to the end of a long schedule (train option), final epoch"

    @dataclass(frozen=True)
    class Options:
        train: dict = field(default_factory=lambda: dict(CONVERGED_TRAIN))  # over baseline.train

    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        d = ctx.data
        out = self.train_one_network(ctx, seed, d.x_train, d.y_train_noisy)
        losses = out.stats.epoch_losses
        out.details = {"epochs": len(losses), "final_train_loss": losses[-1], "epoch_losses": list(losses)}
        return out


class ValidationSelection(CheckpointTests):
    """Plain training that scores network 0 on the held-out *noisy* labels after each of the 1-based
    ``epochs`` (the last included) and keeps a copy of the weights of the best one (the first of equal scores)."""

    def __init__(self, validation, epochs: list[int]):
        super().__init__(validation.x, validation.y_noisy, epochs, last=True)
        self.epochs = list(epochs)
        self.best_epoch: int | None = None
        self.best_acc = -1.0
        self.best_state: dict | None = None

    @property
    def val_accs(self) -> list[float]:
        return self.accs

    def tested(self, epoch: int, run: TrainRun) -> None:
        if self.accs[-1] > self.best_acc:
            self.best_acc, self.best_epoch = self.accs[-1], epoch
            self.best_state = {k: v.detach().clone() for k, v in run.nets[0].state_dict().items()}

    def state_dict(self) -> dict:
        return super().state_dict() | {"best_epoch": self.best_epoch, "best_acc": self.best_acc, "best_state": self.best_state}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.best_epoch, self.best_acc, self.best_state = state["best_epoch"], float(state["best_acc"]), state["best_state"]


@register_baseline
class CESelected(CrossEntropy):
    name = "ce_selected"
    description = "cross-entropy on the full noisy set, weights of the epoch best on the noisy validation split; needs data.validation"

    @dataclass(frozen=True)
    class Options:
        every: int = 1  # score on the validation split every this many epochs (and at the last)
        train: dict = field(default_factory=dict)  # over baseline.train

        def __post_init__(self):
            if not isinstance(self.every, int) or isinstance(self.every, bool) or self.every < 1:
                raise ConfigError(f"ce_selected every must be a positive integer (epochs), got {self.every!r}",
                                  "use every: 1 (score after every epoch)")

    def check_data(self, data) -> None:
        if getattr(data, "validation", None) is None:
            raise BaselineUnavailable(NO_SPLIT, HOW_SPLIT)

    def train(self, ctx: BaselineContext, seed: int) -> RunOutcome:
        self.check_data(ctx.data)
        d = ctx.data
        hook = ValidationSelection(d.validation, checkpoint_epochs(self.train_config(ctx.preset).epochs, self.options.every))
        out = self.train_one_network(ctx, seed, d.x_train, d.y_train_noisy, hook=hook)
        # for reading only (what the last epoch's weights score); the choice above never saw the test set
        final_test = accuracy_report(test_predictions(out.net, d.x_test), d.y_test, d.num_classes)[0]
        out.net.load_state_dict(hook.best_state)
        out.details = {"every": self.options.every, "epochs_tested": hook.epochs, "val_accs": hook.val_accs,
                       "chosen_epoch": hook.best_epoch, "chosen_val_acc": hook.best_acc, "final_epoch": hook.epochs[-1],
                       "final_epoch_val_acc": hook.val_accs[-1], "final_epoch_test_acc": final_test}
        return out
