"""RCIG's ``setting: auto``: its per-setting config files (depth_3, cifar100_50, depth_4_200,
depth_4_big) applied by dataset and IPC, as DATM's paper table is."""

import numpy as np
import pytest
import torch

from ddlnl.data.noise import NoiseSpec
from ddlnl.data.preprocess import Preprocessor
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.distill.rcig import PAPER_TABLE, paper_setting
from ddlnl.errors import ConfigError
from ddlnl.spec import ExperimentSpec


def ctx_for(dataset, C=3, n_per_class=4, size=8, logs=None):
    g = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(C), n_per_class)
    images = torch.randn(len(labels), 3, size, size, generator=g)
    return DistillContext(dataset, images, labels, C, Preprocessor("none"), {"name": "convnet"}, seed=0,
                          log=(logs.append if logs is not None else lambda m: None))


def paper_rcig(dataset, ipc, noise=NoiseSpec("symmetric", 0.4)):
    """The rcig distiller as the paper preset configures it for a cell (no data is read)."""
    return ExperimentSpec(dataset=dataset, noise=noise, method="rcig", ipc=ipc, preset="paper").distiller()


def test_paper_preset_resolves_rcigs_config_file_per_dataset_and_ipc():
    logs = []
    d = paper_rcig("cifar100", 50)
    configured = d.options
    assert configured.setting == "auto" and configured.use_flip is True
    c100_50 = d.resolved_options(ctx_for("cifar100", logs=logs), 50)
    assert paper_setting("cifar100", 50)[0] == "cifar100_50"
    assert c100_50.use_flip is False and c100_50.softplus_temp == 60.0 and c100_50.pool_size == 30
    assert any("cifar100_50" in m for m in logs)
    assert d.options is configured and d.options.use_flip is True  # never changed
    # options the table does not cover keep the preset's values
    assert (c100_50.iterations, c100_50.inner_solver, c100_50.batch_real) == (10000, "adam", 1024)
    # the other CIFAR-100 IPCs and every CIFAR-10 IPC: depth_3
    for ds, ipc in (("cifar100", 1), ("cifar100", 10), ("cifar100", 100), ("cifar10", 1), ("cifar10", 50), ("cifar10", 1000)):
        o = paper_rcig(ds, ipc).resolved_options(ctx_for(ds), ipc)
        assert paper_setting(ds, ipc)[0] == "depth_3" and o.use_flip is True and o.softplus_temp == 60.0, (ds, ipc)
    # Tiny-ImageNet: ReLU (softplus off); IPC 10 without flips; IPC 50 has no RCIG config
    t1 = paper_rcig("tinyimagenet", 1).resolved_options(ctx_for("tinyimagenet"), 1)
    t10 = paper_rcig("tinyimagenet", 10).resolved_options(ctx_for("tinyimagenet"), 10)
    assert paper_setting("tinyimagenet", 1)[0] == "depth_4_200" and (t1.softplus_temp, t1.use_flip) == (0.0, True)
    assert paper_setting("tinyimagenet", 10)[0] == "depth_4_big" and (t10.softplus_temp, t10.use_flip) == (0.0, False)
    assert t10.pool_size == 30  # depth_4_big's misspelt pool-size key: the 30 written under it
    with pytest.raises(ConfigError, match="no row for tinyimagenet IPC 50"):
        paper_rcig("tinyimagenet", 50).resolved_options(ctx_for("tinyimagenet"), 50)
    assert set(PAPER_TABLE) == {("cifar10", None), ("cifar100", None), ("cifar100", 50), ("tinyimagenet", 1), ("tinyimagenet", 10)}


def test_setting_none_keeps_the_options_and_the_stage_key():
    d = create_distiller("rcig")
    assert d.options.setting == "none" and "setting" not in d.options_dict()  # keys of earlier runs unchanged
    assert d.resolved_options(ctx_for("cifar100"), 50) is d.options
    with pytest.raises(ConfigError):
        create_distiller("rcig", setting="paper")


def test_a_run_records_the_applied_row_and_keys_on_the_configured_options():
    """As DATM: the run uses the row (no flips for cifar100_50), meta["applied_options"] records it,
    options_dict() (the stage key) stays as configured."""
    d = create_distiller("rcig", setting="auto", iterations=1, width=2, depth=1, batch_real=8, tune_max_trials=2,
                         lr_monitor_interval=1)
    configured = d.options_dict()
    s = d.run(ctx_for("cifar100", n_per_class=50), 50)
    assert configured["setting"] == "auto" and d.options_dict() == configured == s.meta["options"]
    applied = s.meta["applied_options"]
    assert applied["use_flip"] is False and configured["use_flip"] is True
    assert applied["pool_size"] == 30 and applied["inner_steps"] == 20 and applied["width"] == 2  # table, then configured
    assert "decode" not in s.meta  # no flip copies
