"""Experts and their cache, DATM's window/threshold/paper table, MTT/DATM end to end on toys."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.distill.datm import PAPER_TABLE, accept_update, paper_setting, start_epoch_upper
from ddlnl.distill.matching import make_plan, match_trajectory
from ddlnl.errors import ConfigError
from ddlnl.evaluate import build_model
from ddlnl.experts import ExpertConfig, load_or_train_experts

MODEL = {"name": "convnet", "width": 8, "depth": 2, "norm": "instance"}


def context(tmp_path, seed=0, flip=False, logs=None):
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(3), 16)
    images = torch.randn(len(labels), 3, 16, 16, generator=g) + torch.as_tensor(labels).view(-1, 1, 1, 1).float()
    if flip:
        labels = labels.copy()
        labels[0] = 1
    log = logs.append if logs is not None else (lambda m: None)
    return DistillContext("toy", images, labels, 3, Preprocessor("none"), MODEL, seed=seed, cache_dir=tmp_path, log=log)


# ---------------------------------------------------------------------------- experts


@pytest.mark.parametrize("gsam", [False, True])
def test_expert_cache_miss_then_hit_and_epochs_differ(tmp_path, gsam):
    cfg = ExpertConfig(num_experts=2, epochs=3, batch_size=16, gsam=gsam)
    logs = []
    ctx = context(tmp_path, logs=logs)
    trajs = load_or_train_experts(ctx, cfg)
    assert any("expert cache miss" in m for m in logs)
    assert len(trajs) == 2 and trajs[0].shape[0] == 4 and trajs[0].dtype == torch.float32
    for t in trajs:  # every saved epoch is a distinct snapshot (the CPU .cpu() aliasing bug)
        for e in range(3):
            assert not torch.equal(t[e], t[e + 1])
    assert not torch.equal(trajs[0][-1], trajs[1][-1])  # two experts, two seeds
    assert ctx.timings["experts"] > 0
    logs.clear()
    again = load_or_train_experts(context(tmp_path, logs=logs), cfg)
    assert any("expert cache hit" in m for m in logs) and not any("expert 1/2 trained" in m for m in logs)
    assert all(torch.equal(a, b) for a, b in zip(trajs, again))
    # different noisy labels -> a different key -> trained again
    logs.clear()
    load_or_train_experts(context(tmp_path, flip=True, logs=logs), ExpertConfig(num_experts=1, epochs=3, batch_size=16, gsam=gsam))
    assert any("expert cache miss" in m for m in logs)


# ---------------------------------------------------------------------------- window, threshold, table


def test_sequential_window_grows_then_stops():
    kw = dict(min_start=0, current_max=10, max_start=20, expansion_end=1000, sequential=True)
    assert start_epoch_upper(0, **kw) == 10
    assert start_epoch_upper(500, **kw) == 15
    assert start_epoch_upper(1000, **kw) == 20 and start_epoch_upper(5000, **kw) == 20
    assert start_epoch_upper(0, **(kw | {"sequential": False})) == 20
    assert start_epoch_upper(0, **(kw | {"current_max": None})) == 20
    # DATM's draw: start in [min, upper) -- so the target index start + M stays within the trajectory
    d = create_distiller("datm", min_start_epoch=2, current_max_start_epoch=4, max_start_epoch=6, expansion_end_epoch=10)
    rng = np.random.default_rng(0)
    early = {d.start_epoch(0, rng) for _ in range(200)}
    late = {d.start_epoch(10, rng) for _ in range(200)}
    assert early == {2, 3} and late == {2, 3, 4, 5}


def test_threshold_rule():
    assert accept_update(0.99, 1.0) and accept_update(1.0, 1.0) and not accept_update(1.01, 1.0)
    assert accept_update(5.0, None)
    assert create_distiller("datm", threshold=1.1).accept(1.05)
    assert create_distiller("mtt").accept(100.0)  # MTT has no threshold


def test_paper_table_selects_by_dataset_ipc_and_noise():
    clean = paper_setting("cifar10", 10)
    assert (clean["syn_steps"], clean["max_start_epoch"], clean["current_max_start_epoch"], clean["lr_teacher"]) == (80, 20, 10, 0.01)
    assert paper_setting("cifar10", 10, "symmetric", 0.4)["lr_teacher"] == 0.001
    assert paper_setting("cifar10", 10, "symmetric", 0.8)["lr_lr"] == 1e-6
    assert paper_setting("cifar10", 10, "aggre", 0.0)["lr_teacher"] == 0.01
    assert paper_setting("cifar10", 1)["threshold"] == 1.1 and not paper_setting("cifar10", 1)["sequential_generation"]
    assert paper_setting("cifar100", 50)["pix_init"] == "real"
    assert paper_setting("cifar100", 1)["expert_epochs"] == 3
    assert paper_setting("tinyimagenet", 50, "symmetric", 0.4)["pix_init"] == "real"
    with pytest.raises(ConfigError, match="IPC 7"):
        paper_setting("cifar10", 7)
    for key in PAPER_TABLE:  # every row builds valid options
        create_distiller("datm", **paper_setting(*key))


# ---------------------------------------------------------------------------- distillation


TOY = dict(num_experts=1, syn_steps=6, expert_epochs=1, max_start_epoch=2, expert_batch=8, lr_img=30.0, lr_lr=1e-7,
           batch_syn=None, dsa_strategy="")


def mean_loss(net, traj, images, labels, lr, plans, M=1):
    return np.mean([match_trajectory(net, traj[t], traj[t + M], images, labels, torch.tensor(lr), p).loss
                    for t in (0, 1) for p in plans])


@pytest.mark.parametrize("method", ["mtt", "datm"])
def test_smoke_distillation_lowers_the_matching_loss(tmp_path, method):
    extra = {"current_max_start_epoch": 1, "expansion_end_epoch": 10, "threshold": None, "lr_y": 1.0,
             "expert_gsam": False} if method == "datm" else {}
    ctx = context(tmp_path)
    d = create_distiller(method, iterations=15, **TOY, **extra)
    syn = d.run(ctx, 4)
    assert syn.images.shape == (12, 3, 16, 16) and syn.lr is not None and syn.lr > 0
    assert syn.labels.dtype == (torch.float32 if method == "datm" else torch.long)
    assert syn.meta["method"] == method and ctx.timings["distill"] > 0
    traj = load_or_train_experts(context(tmp_path), d.expert_config())[0]
    net = build_model(MODEL, 3, 16)
    plans = [make_plan(12, 6, 12, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    g = torch.Generator().manual_seed(0)
    if method == "datm":  # the same initial set as the distiller drew
        init_x, init_y = d.init_set(context(tmp_path), 4, [traj], g)
    else:
        init_x, init_y = context(tmp_path).random_real(4, g)
    before = mean_loss(net, traj, init_x, init_y, TOY["lr_img"] * 0 + 0.01, plans)
    after = mean_loss(net, traj, syn.images, syn.labels, syn.lr, plans)
    assert after < before


def test_datm_init_filters_by_expert_prediction_and_soft_labels(tmp_path):
    ctx = context(tmp_path)
    d = create_distiller("datm", iterations=0, **TOY)
    traj = load_or_train_experts(ctx, d.expert_config())
    x, y = d.init_set(ctx, 4, traj, torch.Generator().manual_seed(0))
    assert y.shape == (12, 3) and y.is_floating_point()
    assert d.init_report["pix_init"] == "samples_predicted_correctly"
    classes = torch.arange(3).repeat_interleave(4)
    net = build_model(MODEL, 3, 16)
    from ddlnl.models.functional import functional_forward

    with torch.no_grad():
        pred = functional_forward(net, traj[0][-1], x).argmax(1)
    picked_ok = pred == classes
    assert picked_ok.sum() >= 12 - d.init_report["filled_at_random"]
    hard = create_distiller("datm", iterations=0, pix_init="real", soft_labels=False, **TOY)
    _, yh = hard.init_set(ctx, 4, traj, torch.Generator().manual_seed(0))
    assert yh.dtype == torch.long


def test_init_only_control_is_the_distillers_starting_set(tmp_path):
    """issue 7's DATM control: the init alone equals what the distillation starts from (0 iterations)."""
    start = create_distiller("datm", iterations=0, **TOY).run(context(tmp_path), 3)
    d = create_distiller("datm", iterations=2, **TOY)
    init = d.init_only(context(tmp_path), 3)
    assert torch.equal(init.images, start.images) and torch.equal(init.labels, start.labels)
    assert init.label_kind == "soft" and init.lr is None and init.meta["datm"]["pix_init"] == "samples_predicted_correctly"


def test_setting_auto_keys_stages_on_the_configured_options(tmp_path):
    """The paper row is applied for the run, but options_dict() (the runner's stage key) stays as
    configured, so a resumed run, which skips the distillation, computes the same control keys."""
    base = context(tmp_path)
    ctx = DistillContext("cifar10", base.images, base.labels, 3, Preprocessor("none"), MODEL, seed=0, cache_dir=tmp_path)
    d = create_distiller("datm", iterations=0, setting="auto", paper_noise="symmetric:0.4", **{**TOY, "expert_gsam": False})
    configured = d.options_dict()
    syn = d.run(ctx, 1)
    assert d.options_dict() == configured == syn.meta["options"] and configured["setting"] == "auto"
    row = paper_setting("cifar10", 1, "symmetric", 0.4)
    assert syn.meta["applied_options"]["lr_teacher"] == row["lr_teacher"] != configured["lr_teacher"]
    assert syn.meta["applied_options"]["syn_steps"] == row["syn_steps"]


def test_setting_auto_reads_the_noise_from_the_context_and_never_changes_the_options(tmp_path):
    """``setting: auto`` takes the noise from ``ctx.noise`` (a NoiseSpec); ``paper_noise`` overrides it;
    the resolved values are a new object and the distiller's own (frozen) options stay as configured."""
    from dataclasses import FrozenInstanceError

    from ddlnl.data.noise import NoiseSpec

    base = context(tmp_path)
    logs = []

    def ctx(noise):
        return DistillContext("cifar10", base.images, base.labels, 3, Preprocessor("none"), MODEL, log=logs.append, noise=noise)

    d = create_distiller("datm", setting="auto", **TOY)
    configured = d.options
    sym = d.resolved_options(ctx(NoiseSpec("symmetric", 0.4)), 1)
    assert sym.lr_teacher == paper_setting("cifar10", 1, "symmetric", 0.4)["lr_teacher"] == 0.001
    assert sym is not configured and d.options is configured and d.options.lr_teacher == TOY.get("lr_teacher", 0.01)
    assert d.resolved_options(ctx(NoiseSpec("worst", 0.0)), 10).lr_teacher == 0.001  # CIFAR-10N worst, IPC 10
    assert any("noise worst:" in m for m in logs)  # a human label set is named without a rate
    assert d.resolved_options(ctx(None), 1).lr_teacher == 0.01 and any("unknown" in m for m in logs)  # clean row
    over = create_distiller("datm", setting="auto", paper_noise="clean", **TOY)
    assert over.resolved_options(ctx(NoiseSpec("symmetric", 0.4)), 1).lr_teacher == 0.01  # the explicit override wins
    assert create_distiller("datm", **TOY).resolved_options(ctx(NoiseSpec("symmetric", 0.4)), 1) is not None
    with pytest.raises(FrozenInstanceError):
        d.options.lr_teacher = 1.0
    with pytest.raises(ConfigError, match="paper_noise"):
        create_distiller("datm", setting="auto", paper_noise="sideways:0.4")


def test_synset_round_trips_through_ddlnl_evaluate(tmp_path):
    from tests.data.fixtures import write_cifar10_npz

    write_cifar10_npz(tmp_path, n_train_per_class=6, n_test_per_class=2)
    env = dict(os.environ, DDLNL_CACHE=str(tmp_path / "cache"))
    from ddlnl.synset import SyntheticSet
    from ddlnl.data.registry import load_dataset

    splits = load_dataset("cifar10", tmp_path)
    pre = Preprocessor("normalize").fit(splits.train.images)
    x = pre.apply_uint8(splits.train.images)
    ctx = DistillContext("cifar10", x, splits.train.labels.astype(np.int64), 10, pre,
                         {"name": "convnet", "width": 8, "depth": 2, "norm": "instance"}, cache_dir=tmp_path / "cache",
                         log=lambda m: None)
    syn = create_distiller("datm", iterations=1, **(TOY | {"syn_steps": 2})).run(ctx, 2)
    syn.meta.update({"dataset": "cifar10", "num_classes": 10, "image_size": 32,
                     "model": {"name": "convnet", "width": 8, "depth": 2, "norm": "instance"}, "preset": "smoke"})
    path = syn.save(tmp_path / "datm.safetensors")
    back = SyntheticSet.load(path)
    assert torch.equal(back.labels, syn.labels) and back.lr == pytest.approx(syn.lr)
    r = subprocess.run([sys.executable, "-m", "ddlnl.cli", "evaluate", str(path), "--data-root", str(tmp_path), "--json",
                        "--no-progress", "--set", "evaluation.train.epochs=2"], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert 0 <= out["acc_mean"] <= 1


def test_compile_option_routes_matching_through_compiled_steps(tmp_path):
    opts = dict(iterations=2, **(TOY | {"syn_steps": 2}), current_max_start_epoch=1, expansion_end_epoch=10, expert_gsam=False)
    eager = create_distiller("datm", **opts).run(context(tmp_path), 2)
    logs: list[str] = []
    comp = create_distiller("datm", compile=True, **opts).run(context(tmp_path, logs=logs), 2)
    assert any("compiled matching steps" in m for m in logs)
    assert torch.allclose(comp.images, eager.images, atol=1e-4) and torch.allclose(comp.labels, eager.labels, atol=1e-4)
    assert not torch.equal(comp.images, create_distiller("datm", **(opts | {"iterations": 0})).run(context(tmp_path), 2).images)
    with pytest.raises(ConfigError, match="naive"):
        create_distiller("mtt", compile=True, mode="naive")


def test_expert_momentum_reaches_the_expert_recipe_and_is_range_checked():
    for method in ("mtt", "datm"):
        assert create_distiller(method).expert_config().momentum == 0.0  # the buffers' plain SGD (cache keys unchanged)
        assert create_distiller(method, expert_momentum=0.9).expert_config().recipe()["momentum"] == 0.9
        with pytest.raises(ConfigError, match="expert_momentum"):
            create_distiller(method, expert_momentum=1.0)
