"""The paper preset is DD_LNL's code, setting by setting: each departure found by reading DD_LNL
is either fixed or an option whose paper value is set here (docs/datm.md, docs/rcig.md,
docs/protocol.md, docs/studies.md say where each value comes from)."""

from __future__ import annotations

import pytest

from ddlnl.distill.datm import paper_setting
from ddlnl.presets import evaluation_for, load_preset
from ddlnl.spec import ExperimentSpec


def _resolved(method: str, ipc: int = 10, noise: str = "symmetric", rate: float | None = 0.4, dataset: str = "cifar10"):
    return ExperimentSpec.create(dataset=dataset, noise=noise, rate=rate, method=method, ipc=ipc, preset="paper").resolved


def test_experts_train_dd_lnl_length_and_label_with_their_final_epoch():
    for method in ("datm", "mtt"):
        assert _resolved(method).options["train_epochs"] == 100
    assert _resolved("datm").options["label_epoch"] == "final"


@pytest.mark.parametrize("method, preprocess", [("datm", "zca"), ("mtt", "zca"), ("rcig", "zca"), ("dance", "normalize"),
                                                 ("dm", "normalize")])
def test_each_method_cell_is_preprocessed_as_its_code_does(method, preprocess):
    assert _resolved(method).preset["preprocess"] == preprocess


def test_datm_evaluates_at_its_own_batch_and_the_published_number_is_a_named_secondary():
    paper = load_preset("paper")
    assert evaluation_for(paper, "datm", "native")["train"]["batch_size"] == 128
    assert evaluation_for(paper, "datm", "common")["train"]["batch_size"] == 256  # the common recipe (DC/DM/MTT)
    assert paper["evaluation"]["checkpoint_every"] == 250  # DANCE's test interval, for the best-of-checkpoints column


def test_per_setting_configurations_are_applied():
    assert load_preset("paper")["methods"]["rcig"]["setting"] == "auto"
    assert load_preset("paper")["methods"]["datm"]["setting"] == "auto"
    # DD_LNL's CIFAR-10 IPC 1000 configs: 6,000 iterations under symmetric and asymmetric <= 0.4 noise, else the preset's
    assert paper_setting("cifar10", 1000, "symmetric", 0.4)["iterations"] == 6000
    assert paper_setting("cifar10", 1000, "asymmetric", 0.2)["iterations"] == 6000
    assert "iterations" not in paper_setting("cifar10", 1000, "asymmetric", 0.8)
    assert "iterations" not in paper_setting("cifar10", 1000, "clean", 0.0)
    assert "iterations" not in paper_setting("cifar10", 10, "symmetric", 0.4)


def test_the_full_noisy_baseline_is_offered_in_all_three_readings():
    baselines = load_preset("paper")["baselines"]
    assert {"ce", "ce_converged", "ce_selected"} <= set(baselines)
