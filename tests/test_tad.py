"""TAD (``tad``) and DATM with the trusted split (``datm_trusted``): the split inside expert training finds
planted mislabelled samples, recall relabels some with their true class, both run through ``ddlnl run``,
their initial images are trusted ones, and TAD's experts never share DATM's cache entries."""

import json
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ddlnl.distill import DistillContext, create_distiller
from ddlnl.experts import expert_key, key_hash
from ddlnl.evaluate import build_model
from ddlnl.train import TrainConfig, train_network
from ddlnl.trust import TrustHook, TrustRule, recall_untrusted, trust_split
from ddlnl.utils.runtime import generator as make_generator
from tests.test_clean_first import planted

MODEL = {"name": "convnet", "width": 8, "depth": 1, "norm": "instance"}


def trained_with_hook(seed: int, rule: TrustRule, epochs: int = 5):
    data, correct = planted(seed)
    torch.manual_seed(seed)
    net = build_model(MODEL, data.num_classes, 8)
    hook = TrustHook(rule, data.num_classes, seed, warmup=2, refresh_every=1)
    cfg = TrainConfig(epochs=epochs, batch_size=16, lr=0.05, schedule="cosine", augment="none")
    stats = train_network(net, data.x_train, data.y_train_noisy, cfg, generator=make_generator(seed), hook=hook)
    return data, correct, net, hook, stats


@pytest.mark.parametrize("seed", [0, 1])
def test_the_split_inside_expert_training_finds_planted_mislabelled_samples(seed):
    """30 % wrong labels: chance trusts 70 % correct ones. The hook's last split trusts >= 85 % correct ones and keeps
    >= 80 % of the correct ones; each refresh costs one loss pass (N images) on top of the (smaller) sweeps."""
    data, correct, net, hook, stats = trained_with_hook(seed, TrustRule(recall=False))
    trusted = (hook.train_labels >= 0).numpy()
    assert correct[trusted].mean() >= 0.85 and trusted[correct].mean() >= 0.8, (correct[trusted].mean(), trusted[correct].mean())
    assert len(hook.refreshes) == 3 and all(r["recalled"] == 0 for r in hook.refreshes)
    n = correct.size
    swept = 2 * n + sum(r["trusted"] for r in hook.refreshes)  # two warm-up epochs, then the trusted samples
    assert stats.images_processed == swept + 3 * n


def test_recall_gives_untrusted_samples_their_true_class_on_separable_features():
    """Three well separated clusters; the mislabelled samples are the untrusted ones. Recall relabels most of them,
    with their cluster's class (chance: 1/3), and leaves samples far from every anchor alone."""
    rng = np.random.default_rng(0)
    c, n = 3, 100
    y = np.repeat(np.arange(c), n)
    centres = rng.normal(size=(c, 16)) * 6
    feats = centres[y] + rng.normal(size=(y.size, 16))
    noisy = y.copy()
    flip = rng.permutation(y.size)[:60]
    noisy[flip] = (noisy[flip] + 1) % c
    outliers = flip[:5]
    feats[outliers] = rng.normal(size=(5, 16)) * 40  # far from every anchor
    trusted = noisy == y
    recalled, pseudo = recall_untrusted(feats, noisy, trusted, c, quantile=0.9, min_cosine=0.3, fit_samples=5000, seed=0)
    assert not recalled[trusted].any() and recalled[flip].mean() >= 0.7 and not recalled[outliers].any()
    assert (pseudo[recalled] == y[recalled]).mean() >= 0.95
    assert np.array_equal(pseudo[~recalled], noisy[~recalled])


def test_recall_inside_training_relabels_planted_samples_with_their_true_class():
    data, correct, net, hook, _ = trained_with_hook(0, TrustRule(recall=True, recall_quantile=0.9, recall_cosine=0.0), epochs=6)
    split = trust_split(net, data.x_train, data.y_train_noisy, data.num_classes,
                        TrustRule(recall=True, recall_quantile=0.9, recall_cosine=0.0), seed=0)
    true = np.repeat(np.arange(data.num_classes), correct.size // data.num_classes)  # planted()'s clean classes
    recalled = np.flatnonzero(split.recalled & ~correct)
    assert recalled.size >= 5  # some of the planted wrong labels are recalled ...
    assert (split.labels[recalled] == true[recalled]).mean() >= 0.8  # ... with their true class (chance: 1/2 of the others)
    assert correct[split.trusted].mean() >= 0.85  # chance: 0.7
    # the hook's state carries the split in force (resume), and trains recalled samples under their pseudo-label
    state = hook.state_dict()
    other = TrustHook(hook.rule, data.num_classes, 0)
    other.load_state_dict(state)
    assert torch.equal(other.train_labels, hook.train_labels)


def small_ctx(tmp_path, n_per_class=12):
    from ddlnl.data.noise import NoiseSpec
    from ddlnl.experiment import prepare_data
    from ddlnl.presets import load_preset
    from tests.data.fixtures import write_cifar10_npz

    write_cifar10_npz(tmp_path, n_train_per_class=n_per_class, n_test_per_class=4)
    preset = load_preset("smoke")
    data = prepare_data("cifar10", NoiseSpec("symmetric", 0.2, 0), preset, data_root=tmp_path, seed=0)
    ctx = DistillContext("cifar10", data.x_train, data.noisy.labels, data.num_classes, data.preprocess, preset["model"],
                         seed=0, cache_dir=tmp_path / "cache", log=lambda m: None, noise=data.noisy.spec)
    return ctx, preset


def test_init_images_are_trusted_and_tad_experts_have_their_own_cache_key(tmp_path):
    from ddlnl.presets import method_options

    ctx, preset = small_ctx(tmp_path)
    for name in ("tad", "datm_trusted"):
        d = create_distiller(name, **method_options(preset, name))
        synset = d.init_only(ctx, 2)
        trusted = set(ctx.selections["trusted"]["kept"].tolist())
        init = ctx.selections["init"]["kept"]
        per_class = np.bincount(ctx.labels[sorted(trusted)], minlength=ctx.num_classes)
        short = np.maximum(2 - per_class, 0)  # a class with fewer trusted samples than IPC fills from the rest
        assert len(init) == 2 * ctx.num_classes and len(trusted) > 0, name
        assert sum(i not in trusted for i in init.tolist()) == short.sum() == synset.meta["datm"]["filled_outside"], name
        full = [i for i in init.tolist() if short[ctx.labels[i]] == 0]
        assert set(full) <= trusted and len(full) >= ctx.num_classes, name
    assert "recalled" in ctx.selections
    tad = create_distiller("tad", **method_options(preset, "tad"))
    datm = create_distiller("datm", **method_options(preset, "datm"))
    keys = [expert_key(ctx.dataset, ctx.images, ctx.labels, ctx.model, ctx.preprocess.meta(), m.expert_config(), ctx.seed)
            for m in (tad, datm, create_distiller("datm_trusted", **method_options(preset, "datm_trusted")))]
    assert key_hash(keys[0]) != key_hash(keys[1]) and keys[1] == keys[2]  # datm_trusted reuses DATM's experts
    assert keys[0]["train"]["hook_key"]["method"] == "tad" and "hook_key" not in keys[1]["train"]
    other = create_distiller("tad", **(method_options(preset, "tad") | {"recall_cosine": 0.5}))
    assert key_hash(expert_key(ctx.dataset, ctx.images, ctx.labels, ctx.model, ctx.preprocess.meta(), other.expert_config(),
                               ctx.seed)) != key_hash(keys[0])


def test_a_partly_trained_tad_expert_resumes_with_the_split_in_force(tmp_path):
    """Experts save partial files with the hook's state; a resumed expert equals an uninterrupted one."""
    from ddlnl.experts import train_experts
    from ddlnl.presets import method_options

    ctx, preset = small_ctx(tmp_path)
    tad = create_distiller("tad", **method_options(preset, "tad"))
    cfg = tad.expert_config()
    labels = torch.as_tensor(ctx.labels)
    full = train_experts(ctx.images, labels, ctx.model, ctx.num_classes, cfg, [5], hooks=[cfg.hook(ctx, 0)])[0]
    partial = tmp_path / "p.pt"

    class Stop(Exception):
        pass

    def stop(i, traj):
        raise Stop

    cut = cfg.epochs - 1  # interrupt after the partial file of the epoch before the last is written
    hook = cfg.hook(ctx, 0)
    orig = hook.plan
    hook.plan = lambda epoch, run: (_ for _ in ()).throw(Stop()) if epoch == cut else orig(epoch, run)
    with pytest.raises(Stop):
        train_experts(ctx.images, labels, ctx.model, ctx.num_classes, cfg, [5], partials=[partial], partial_every_s=0.0,
                      hooks=[hook])
    assert "hook" in torch.load(partial, weights_only=True)
    resumed = train_experts(ctx.images, labels, ctx.model, ctx.num_classes, cfg, [5], partials=[partial], hooks=[cfg.hook(ctx, 0)],
                            log=lambda m: None)[0]
    assert torch.allclose(full, resumed)


@pytest.mark.parametrize("method", ["tad", "datm_trusted"])
def test_tad_and_datm_trusted_run_through_ddlnl_run(method, tmp_path):
    from tests.data.fixtures import write_cifar10_npz

    write_cifar10_npz(tmp_path, n_train_per_class=12, n_test_per_class=4)
    out = tmp_path / "run"
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "ddlnl.cli", "run", "--preset", "smoke", "--method", method, "--ipc", "2",
                        "--data-root", str(tmp_path), "--out", str(out), "--no-progress",
                        "--set", "evaluation.train.epochs=2", "--set", "baseline.train.epochs=1"],
                       capture_output=True, text=True, timeout=600, env={"DDLNL_CACHE": str(tmp_path / "cache"),
                                                                          **__import__("os").environ})
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "result.json").read_text())
    sel = res["results"]["distilled"]["selection"]
    assert "trusted" in sel and 0 <= sel["trusted"]["precision"] <= 1
    if method == "tad":  # its pseudo-labels scored against the clean labels, when it recalled any
        assert "recalled" in sel and ("label_accuracy" in sel["recalled"])
        assert sel["recalled"]["label_accuracy"] is None or 0 <= sel["recalled"]["label_accuracy"] <= 1
    print(method, f"{time.perf_counter() - start:.1f}s")
