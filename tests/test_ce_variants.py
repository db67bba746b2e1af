"""The full-noisy CE row read two more ways: ``ce_converged`` (a long schedule, final epoch) and
``ce_selected`` (the epoch best on the noisy validation split, never on the test set)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from ddlnl.baselines import BaselineContext, BaselineUnavailable, create_baseline
from ddlnl.baselines.ce_variants import CONVERGED_TRAIN, ValidationSelection
from tests.test_baselines import PRESET, separable_images, symmetric_flips, tiny_data


def with_validation(data, per_class=8, rate=0.4, seed=1):
    """``tiny_data`` plus a held-out split drawn like its training images, with noisy labels."""
    c, side = data.num_classes, data.x_train.shape[-1]
    y = torch.arange(c).repeat_interleave(per_class)
    x = separable_images(y, torch.Generator().manual_seed(seed), side)
    noisy, _ = symmetric_flips(y, c, rate, seed)
    data.validation = SimpleNamespace(x=x, y_noisy=torch.as_tensor(noisy), index=np.arange(len(y)))
    return data


def preset(epochs=6):
    return {**PRESET, "baseline": {**PRESET["baseline"], "train": {**PRESET["baseline"]["train"], "epochs": epochs}}}


# -- ce_converged -------------------------------------------------------------------------------
def test_ce_converged_trains_its_own_recipe_s_epochs():
    data = tiny_data()
    b = create_baseline("ce_converged", train={"epochs": 7})
    ev = b.run(BaselineContext(data, preset(epochs=3), seed=0))  # the shared recipe says 3
    assert ev.train["epochs"] == 7 and ev.train["loss"] == "ce" and ev.train["schedule"] == "cosine"
    assert ev.images_processed == 72 * 7
    run = b.details["runs"][0]
    assert run["epochs"] == 7 and len(run["epoch_losses"]) == 7 and run["final_train_loss"] == run["epoch_losses"][-1]
    # its default is the paper-scale recipe, which the paper preset states
    from ddlnl.presets import load_preset

    assert create_baseline("ce_converged").options.train == CONVERGED_TRAIN
    assert load_preset("paper")["baselines"]["ce_converged"]["train"] == CONVERGED_TRAIN


# -- ce_selected ----------------------------------------------------------------------------------
class Scripted(nn.Module):
    """Predicts from a buffer of logits (one row per validation image) that the test rewrites per epoch."""

    def __init__(self, n, c):
        super().__init__()
        self.register_buffer("logits", torch.zeros(n, c))
        self.unused = nn.Parameter(torch.zeros(1))  # a network has parameters (their device is where it runs)

    def forward(self, x):
        return self.logits[: x.shape[0]]


def test_selection_keeps_the_weights_of_the_first_best_validation_epoch():
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2, 0])
    validation = SimpleNamespace(x=torch.zeros(10, 1), y_noisy=y)
    net = Scripted(10, 3)
    hook = ValidationSelection(validation, [2, 4, 6, 8])
    run = SimpleNamespace(nets=[net])
    correct = {2: 3, 4: 9, 6: 5, 8: 9}  # epochs 4 and 8 tie at 0.9: the first is kept
    for epoch in range(8):
        k = correct.get(epoch + 1, 0)
        net.logits.zero_()
        net.logits[torch.arange(10), torch.where(torch.arange(10) < k, y, (y + 1) % 3)] = 1.0
        net.logits[0, 2] += epoch / 100  # a mark of the epoch in the weights (row 0 stays right or wrong)
        hook.end_epoch(epoch, run)
    assert hook.val_accs == pytest.approx([0.3, 0.9, 0.5, 0.9])
    assert hook.best_epoch == 4 and hook.best_acc == pytest.approx(0.9)
    assert hook.best_state["logits"][0, 2].item() == pytest.approx(0.03)  # epoch index 3 = epoch 4


def test_ce_selected_reports_the_weights_of_the_best_validation_epoch():
    data = with_validation(tiny_data())
    b = create_baseline("ce_selected")
    ev = b.run(BaselineContext(data, preset(epochs=6), seed=0))
    d = b.details["runs"][0]
    assert d["epochs_tested"] == [1, 2, 3, 4, 5, 6] and len(d["val_accs"]) == 6 and d["final_epoch"] == 6
    first_best = int(np.argmax(d["val_accs"]))
    assert d["chosen_epoch"] == d["epochs_tested"][first_best] and d["chosen_val_acc"] == max(d["val_accs"])
    # the tested network is the chosen epoch's: it scores the chosen validation accuracy again
    assert ev.val_accs == [pytest.approx(d["chosen_val_acc"])]
    every2 = create_baseline("ce_selected", every=4)
    every2.run(BaselineContext(data, preset(epochs=6), seed=0))
    assert every2.details["runs"][0]["epochs_tested"] == [4, 6]


def test_ce_selected_never_reads_the_test_set_to_choose():
    data = with_validation(tiny_data())
    b = create_baseline("ce_selected")
    b.run(BaselineContext(data, preset(epochs=6), seed=0))
    g = torch.Generator().manual_seed(5)
    data.y_test = data.y_test[torch.randperm(len(data.y_test), generator=g)]  # permuted test labels
    data.x_test = torch.randn(data.x_test.shape, generator=g)  # and other test images
    again = create_baseline("ce_selected")
    again.run(BaselineContext(data, preset(epochs=6), seed=0))
    first, second = b.details["runs"][0], again.details["runs"][0]
    assert second["chosen_epoch"] == first["chosen_epoch"] and second["val_accs"] == first["val_accs"]


def test_ce_selected_is_the_converged_run_stopped_early():
    """Same recipe and seeds: ce_selected's last epoch is ce_converged's network (its reported accuracy)."""
    data = with_validation(tiny_data())
    train = {"epochs": 5, "lr": 0.05, "schedule": "cosine"}
    conv = create_baseline("ce_converged", train=train).run(BaselineContext(data, preset(), seed=2))
    sel = create_baseline("ce_selected", train=train)
    sel.run(BaselineContext(data, preset(), seed=2))
    assert sel.details["runs"][0]["final_epoch_test_acc"] == conv.accs[0]


def test_ce_selected_is_skipped_without_a_validation_split():
    b = create_baseline("ce_selected")
    with pytest.raises(BaselineUnavailable) as e:
        b.check_data(tiny_data())
    assert "data.validation" in e.value.problem and "data.validation=" in e.value.fix
    with pytest.raises(BaselineUnavailable):
        b.run(BaselineContext(tiny_data(), preset(), seed=0))
    b.check_data(with_validation(tiny_data()))  # with one it runs
    from ddlnl.errors import ConfigError

    with pytest.raises(ConfigError, match="every"):
        create_baseline("ce_selected", every=0)
