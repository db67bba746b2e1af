"""DD_LNL's two departures as options: experts longer than matching reads (``train_epochs``) with the
init filter and soft labels at ``label_epoch``; a method's own preprocessing (``methods.<name>.preprocess``)."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from ddlnl.data.noise import NoiseSpec
from ddlnl.data.preprocess import Preprocessor, to_float_tensor
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.distill import mtt as mtt_module
from ddlnl.distill.datm import expert_logits
from ddlnl.errors import ConfigError
from ddlnl.evaluate import build_model
from ddlnl.experts import ExpertConfig, expert_key, load_or_train_experts, train_expert
from ddlnl.spec import ExperimentSpec
from ddlnl.utils.seeds import stream_seed

MODEL = {"name": "convnet", "width": 8, "depth": 2, "norm": "instance"}
# window = max_start_epoch + expert_epochs = 3; the experts train 5 epochs
TOY = dict(num_experts=1, syn_steps=2, expert_epochs=1, max_start_epoch=2, expert_batch=8, lr_img=30.0, lr_lr=1e-7,
           batch_syn=None, dsa_strategy="", expert_gsam=False)
DATM_TOY = TOY | dict(min_start_epoch=0, current_max_start_epoch=1, expansion_end_epoch=2, threshold=None)


def context(tmp_path, logs=None):
    g = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(3), 16)
    images = torch.randn(len(labels), 3, 16, 16, generator=g) + torch.as_tensor(labels).view(-1, 1, 1, 1).float()
    return DistillContext("toy", images, labels, 3, Preprocessor("none"), MODEL, seed=0, cache_dir=tmp_path,
                          log=(logs.append if logs is not None else (lambda m: None)))


def full_trajectory(ctx, cfg: ExpertConfig) -> torch.Tensor:
    """The same expert with every epoch kept (same recipe and seed as the cached expert 0)."""
    every = ExpertConfig(num_experts=1, epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum, batch_size=cfg.batch_size,
                         dsa_strategy=cfg.dsa_strategy, gsam=cfg.gsam)
    return train_expert(ctx.images, torch.as_tensor(ctx.labels), ctx.model, ctx.num_classes, every,
                        seed=stream_seed(ctx.seed, "expert", 0))


# ---------------------------------------------------------------------------- experts


def test_default_length_keeps_todays_experts_and_cache_key(tmp_path):
    for method in ("mtt", "datm"):
        cfg = create_distiller(method, **TOY).expert_config()
        assert cfg.epochs == 3 and cfg.keep_until is None and cfg.stored_epochs() == [0, 1, 2, 3]
        ctx = context(tmp_path)
        key = expert_key(ctx.dataset, ctx.images, ctx.labels, ctx.model, ctx.preprocess.meta(), cfg, 0)
        assert "stored_epochs" not in key  # the key of an expert that keeps every epoch is what it was
        # train_epochs equal to the window is the same expert (same config, same cache entry)
        assert create_distiller(method, train_epochs=3, **TOY).expert_config() == cfg
        # at their defaults the new options stay out of the runner's stage key (existing runs resume)
        assert not {"train_epochs", "label_epoch"} & set(create_distiller(method, **TOY).options_dict())
        assert create_distiller(method, train_epochs=5, **TOY).options_dict()["train_epochs"] == 5
    assert create_distiller("datm", label_epoch=1, **TOY).options_dict()["label_epoch"] == 1


def test_long_expert_trains_train_epochs_and_keeps_window_and_final_epoch(tmp_path):
    logs = []
    ctx = context(tmp_path, logs)
    d = create_distiller("datm", train_epochs=5, **DATM_TOY)
    cfg = d.expert_config()
    assert cfg.epochs == 5 and cfg.stored_epochs() == [0, 1, 2, 3, 5] and cfg.row(5) == 4
    traj = load_or_train_experts(ctx, cfg)[0]
    assert traj.shape[0] == 5 and any("(5 epochs, 5 of them kept" in m for m in logs)
    full = full_trajectory(ctx, cfg)
    assert full.shape[0] == 6  # really trained 5 epochs
    assert torch.equal(traj, full[[0, 1, 2, 3, 5]])
    short = create_distiller("datm", **DATM_TOY).expert_config()
    key = {c.epochs: expert_key(ctx.dataset, ctx.images, ctx.labels, ctx.model, ctx.preprocess.meta(), c, 0) for c in (cfg, short)}
    assert key[5] != key[3] and key[5]["stored_epochs"] == {"until": 3, "also": [], "last": 5}
    logs.clear()
    assert torch.equal(load_or_train_experts(context(tmp_path, logs), cfg)[0], traj)  # cached
    assert any("expert cache hit" in m for m in logs)


@pytest.mark.parametrize("method", ["mtt", "datm"])
def test_matching_reads_only_the_window_of_a_long_expert(tmp_path, monkeypatch, method):
    """Start epochs in [min_start, max_start), targets start + M <= window: never the final epoch."""
    opts = (DATM_TOY if method == "datm" else TOY) | {"train_epochs": 5, "iterations": 8}
    d = create_distiller(method, **opts)
    cfg = d.expert_config()
    calls = []
    real = mtt_module.match_trajectory

    def spy(net, start, target, *a, **k):
        calls.append((start.clone(), target.clone()))
        return real(net, start, target, *a, **k)

    monkeypatch.setattr(mtt_module, "match_trajectory", spy)
    syn = d.run(context(tmp_path), 2)
    traj = load_or_train_experts(context(tmp_path), cfg)[0]
    epochs = cfg.stored_epochs()

    def epoch_of(params):
        return next(epochs[i] for i in range(len(epochs)) if torch.equal(traj[i], params))

    pairs = {(epoch_of(s), epoch_of(t)) for s, t in calls}
    assert len(calls) == 8 and all(t == s + 1 and 0 <= s < 2 and t <= 3 for s, t in pairs)
    assert syn.meta["matching"]["expert_train_epochs"] == 5


def test_filter_and_soft_labels_use_the_final_epoch_of_a_long_expert(tmp_path, monkeypatch):
    """Spy on every expert evaluation of the initialisation: all at the final (epoch 5) weights,
    none at the window's last epoch (3); the soft labels are the final epoch's logits."""
    from ddlnl.distill import datm as datm_module

    ctx = context(tmp_path)
    d = create_distiller("datm", train_epochs=5, iterations=0, **DATM_TOY)
    full = full_trajectory(ctx, d.expert_config())
    used = []
    real = datm_module.expert_logits
    monkeypatch.setattr(datm_module, "expert_logits", lambda c, net, params, x, *a: used.append(params) or real(c, net, params, x, *a))
    init = d.init_only(ctx, 4)
    assert used and all(torch.equal(p, full[5]) for p in used)
    assert init.meta["datm"]["label_epoch"] == 5 and init.meta["datm"]["expert_train_epochs"] == 5
    # pix_init real: the soft labels are expert 0's logits at the label epoch, and they differ at epoch 3
    monkeypatch.setattr(datm_module, "expert_logits", real)
    r = create_distiller("datm", train_epochs=5, iterations=0, pix_init="real", **DATM_TOY)
    s = r.init_only(context(tmp_path), 4)
    net = build_model(MODEL, 3, 16)
    assert torch.allclose(s.labels, expert_logits(ctx, net, full[5], s.images), atol=1e-6)
    assert not torch.allclose(s.labels, expert_logits(ctx, net, full[3], s.images), atol=1e-3)


def crafted_trajectory(num_params: int, favourite: dict[int, int]) -> torch.Tensor:
    """Rows whose classifier bias makes the network predict one class everywhere (row -> class)."""
    traj = torch.zeros(max(favourite) + 1, num_params)
    for row, c in favourite.items():
        traj[row, num_params - 3 + c] = 1e4  # classifier.bias is the last parameter (3 classes)
    return traj


@pytest.mark.parametrize("label_epoch, row, kept_class", [("final", 4, 2), (3, 3, 0), (1, 1, 1)])
def test_filter_uses_the_label_epoch(tmp_path, label_epoch, row, kept_class):
    """The window's last epoch (3) picks class 0, epoch 1 class 1, the final epoch (5) class 2: only
    the label epoch's class is filtered, the other classes are filled at random."""
    ctx = context(tmp_path)
    d = create_distiller("datm", train_epochs=5, label_epoch=label_epoch, iterations=0, **DATM_TOY)
    assert d.expert_config().stored_epochs() == [0, 1, 2, 3, 5] and d.expert_config().row(d.label_epoch()) == row
    p = build_model(MODEL, 3, 16)
    n = sum(q.numel() for q in p.parameters())
    traj = crafted_trajectory(n, {1: 1, 3: 0, 4: 2})
    x, y = d.init_set(ctx, 4, [traj], torch.Generator().manual_seed(0))
    assert d.init_report["filled_at_random"] == 8  # two classes with no image predicted as theirs
    assert d.init_report["label_epoch"] == (5 if label_epoch == "final" else label_epoch)
    assert (y.argmax(1) == kept_class).all()  # soft labels from the same epoch


def test_label_epoch_beyond_the_window_is_kept_and_used(tmp_path):
    ctx = context(tmp_path)
    d = create_distiller("datm", train_epochs=5, label_epoch=4, iterations=0, pix_init="real", **DATM_TOY)
    cfg = d.expert_config()
    assert cfg.stored_epochs() == [0, 1, 2, 3, 4, 5] and cfg.row(4) == 4
    s = d.init_only(ctx, 4)
    full = full_trajectory(ctx, cfg)
    net = build_model(MODEL, 3, 16)
    assert torch.allclose(s.labels, expert_logits(ctx, net, full[4], s.images), atol=1e-6)
    assert s.meta["datm"]["label_epoch"] == 4


def test_bad_lengths_and_label_epochs_are_config_errors():
    for method in ("mtt", "datm"):
        with pytest.raises(ConfigError, match=r"train_epochs \(2\).*max_start_epoch \+ expert_epochs \(2 \+ 1 = 3\)") as e:
            create_distiller(method, **(TOY | {"train_epochs": 2}))
        assert "3 or more" in e.value.fix
        for bad in (0, 3.5, True, "100"):
            with pytest.raises(ConfigError, match="train_epochs"):
                create_distiller(method, **(TOY | {"train_epochs": bad}))
    for bad in (6, -1, "last", True, 2.0, None):
        with pytest.raises(ConfigError, match="label_epoch"):
            create_distiller("datm", train_epochs=5, label_epoch=bad, **DATM_TOY)
    with pytest.raises(ConfigError, match=r"label_epoch.*\[0, 3\]"):  # without train_epochs: the window's length
        create_distiller("datm", label_epoch=4, **DATM_TOY)
    assert create_distiller("datm", train_epochs=5, label_epoch=0, **DATM_TOY).label_epoch() == 0


# ---------------------------------------------------------------------------- the paper preset


def paper_spec(method, **kw):
    return ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method=method, ipc=10, preset="paper", **kw)


def test_paper_preset_trains_100_epoch_experts_and_labels_with_the_final_one():
    spec = paper_spec("datm")
    o = spec.resolved.options
    assert o["train_epochs"] == 100 and o["label_epoch"] == "final" and "preprocess" not in o
    d = spec.distiller()
    ctx = DistillContext("cifar10", torch.zeros(1, 3, 32, 32), np.zeros(1, dtype=np.int64), 10, Preprocessor("none"), MODEL,
                         noise=NoiseSpec("symmetric", 0.4), log=lambda m: None)
    applied = d.resolved_options(ctx, 10)  # setting: auto applies the table's window, not the length
    assert (applied.max_start_epoch, applied.expert_epochs, applied.train_epochs) == (20, 2, 100)
    cfg = d.expert_config(applied)
    assert cfg.epochs == 100 and cfg.stored_epochs() == list(range(23)) + [100] and d.label_epoch(applied) == 100
    assert paper_spec("mtt").distiller().expert_config().epochs == 100


# ---------------------------------------------------------------------------- preprocessing per method


def test_paper_preset_preprocessing_per_method():
    for method, kind in (("datm", "zca"), ("mtt", "zca"), ("rcig", "zca"), ("dance", "normalize"), ("dm", "normalize")):
        spec = paper_spec(method)
        assert spec.resolved.preset["preprocess"] == kind, method
        assert spec.data_key()["preprocess"] == kind and "preprocess" not in spec.resolved.options
    assert paper_spec(None).resolved.preset["preprocess"] == "normalize"  # no method: the preset's own


def test_smoke_and_quick_presets_are_unchanged():
    for preset in ("smoke", "quick"):
        for method in ("datm", "mtt", "dance", "rcig", "dm"):
            spec = ExperimentSpec.create(method=method, ipc=2, preset=preset)
            assert spec.resolved.preset["preprocess"] == "normalize"
            if method in ("datm", "mtt"):
                assert spec.distiller().options.train_epochs is None


def test_method_preprocess_is_checked():
    with pytest.raises(ConfigError, match="methods.datm.preprocess must be one of normalize, zca"):
        ExperimentSpec.create(method="datm", ipc=2, preset="smoke", overrides=("methods.datm.preprocess=whiten",))
    # a preset-wide override that the method's own value would silently beat is refused
    with pytest.raises(ConfigError, match="methods.datm.preprocess") as e:
        paper_spec("datm", overrides=("preprocess=normalize",))
    assert "methods.datm.preprocess=normalize" in e.value.fix
    assert paper_spec("datm", overrides=("preprocess=zca",)).resolved.preset["preprocess"] == "zca"
    assert paper_spec("dance", overrides=("preprocess=zca",)).resolved.preset["preprocess"] == "zca"
    assert paper_spec("datm", overrides=("methods.datm.preprocess=normalize",)).resolved.preset["preprocess"] == "normalize"


def test_study_cells_see_the_methods_preprocessing():
    from ddlnl.study.spec import Cell

    def cell(method, preset="paper", overrides=()):
        return Cell(dataset="cifar10", noise="symmetric", rate=0.4, seed=0, method=method, ipc=10, preset=preset, overrides=overrides)

    assert cell("datm").preset_parts()["preprocess"] == "zca" and cell("dance").preset_parts()["preprocess"] == "normalize"
    assert cell("datm").group == cell("mtt").group != cell("dance").group  # whitened cells share their own baseline
    plain = cell("datm", "smoke")
    zca = cell("datm", "smoke", ("methods.datm.preprocess=zca",))
    assert zca.preset_parts()["preprocess"] == "zca" and zca.config_hash() != plain.config_hash()
    assert plain.group == "cifar10-symmetric-0.4-seed0-smoke" and zca.group == plain.group + "-zca"


def test_zca_run_saves_the_fitted_zca_state_and_evaluates(tmp_path):
    """A smoke run with methods.datm.preprocess=zca: the whole cell is whitened, the saved sets carry
    the ZCA fitted on the cell's training images, and ``ddlnl evaluate`` reads them back."""
    from tests.data.fixtures import write_cifar10_npz

    from ddlnl.synset import SyntheticSet

    def ddlnl(*args, env):
        return subprocess.run([sys.executable, "-m", "ddlnl.cli", *args], capture_output=True, text=True,
                              env=dict(os.environ) | env, timeout=600)

    write_cifar10_npz(tmp_path, n_train_per_class=12, n_test_per_class=4)
    out = tmp_path / "run"
    over = "methods.datm.preprocess=zca"
    env = {"DDLNL_CACHE": str(tmp_path / "cache")}
    r = ddlnl("run", "--preset", "smoke", "--ipc", "2", "--data-root", str(tmp_path), "--out", str(out), "--no-progress",
              "--set", over, env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads((out / "config.json").read_text())["resolved_preset"]["preprocess"] == "zca"
    # the cell's training images, read without a second ZCA fit (about 30 s on this host): a DANCE cell has the same ones
    train = ExperimentSpec.create(method="dance", ipc=2, preset="smoke", data_root=str(tmp_path)).prepare_data().splits.train
    pixel_mean = to_float_tensor(train.images).mean(0).reshape(-1)
    for role in ("distilled", "random"):
        syn = SyntheticSet.load(out / f"{role}.safetensors")
        assert syn.preprocess.kind == "zca" and syn.preprocess.zca_eps == 0.1, role
        assert torch.allclose(syn.preprocess.tensors["mean"], pixel_mean, atol=1e-5), role  # fitted on the training images
        t = syn.preprocess.tensors["transform"]
        assert t.shape == (3072, 3072) and not torch.allclose(t, torch.eye(3072), atol=1e-2)
    r = ddlnl("evaluate", str(out / "distilled.safetensors"), "--data-root", str(tmp_path), "--json", "--no-progress",
              "--set", "evaluation.train.epochs=2", env=env)
    assert r.returncode == 0, r.stderr
    assert 0 <= json.loads(r.stdout)["acc_mean"] <= 1
