"""Noisy-label baselines: losses and their gradients, Co-teaching's schedule, DivideMix's split, cleanlab's extra."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddlnl.baselines import (
    BaselineContext,
    BaselineUnavailable,
    create_baseline,
    list_baselines,
    parse_baselines,
)
from ddlnl.baselines.coteaching import (
    forget_schedule,
    num_remember,
    small_loss_exchange,
)
from ddlnl.baselines.dividemix import co_divide, sharpen
from ddlnl.trust import clean_probability, fit_loss_mixture
from ddlnl.data.noise import NoiseSpec
from ddlnl.errors import ConfigError
from ddlnl.train import TrainConfig, gce_loss, label_loss, sce_loss


# -- GCE / SCE: formulas and gradients ------------------------------------------------------
def _batch(seed=0, n=6, c=4):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=torch.float64), torch.randint(0, c, (n,), generator=g)


@pytest.mark.parametrize("q", [0.7, 0.3, 1.0])
def test_gce_matches_its_formula(q):
    logits, y = _batch()
    p_y = torch.softmax(logits, 1)[torch.arange(len(y)), y]
    assert torch.allclose(gce_loss(logits, y, q, reduction="none"), (1 - p_y**q) / q)
    # q -> 0 is cross-entropy, q = 1 is MAE on p_y (1 - p_y)
    assert torch.allclose(gce_loss(logits, y, 1e-6), F.cross_entropy(logits, y), atol=1e-4)
    if q == 1.0:
        assert torch.allclose(gce_loss(logits, y, 1.0, reduction="none"), 1 - p_y)


def test_gce_gradient_matches_the_hand_derived_one():
    logits, y = _batch(1)
    q = 0.7
    logits.requires_grad_(True)
    gce_loss(logits, y, q, reduction="none").sum().backward()
    p = torch.softmax(logits.detach(), 1)
    p_y = p[torch.arange(len(y)), y].view(-1, 1)
    onehot = F.one_hot(y, 4).double()
    # dL/dz = -p_y^(q-1) * dp_y/dz = -p_y^q * (onehot - p)
    assert torch.allclose(logits.grad, -(p_y**q) * (onehot - p))
    assert torch.autograd.gradcheck(lambda z: gce_loss(z, y, q), (logits.detach().clone().requires_grad_(True),))


def test_sce_matches_its_formula_and_gradient():
    logits, y = _batch(2)
    alpha, beta, A = 0.1, 1.0, -4.0
    p = torch.softmax(logits, 1)
    onehot = F.one_hot(y, 4).double()
    log_label = torch.where(onehot > 0, torch.zeros_like(onehot), torch.full_like(onehot, A))  # log 1 = 0, log 0 := A
    rce = -(p * log_label).sum(1)
    expected = alpha * F.cross_entropy(logits, y, reduction="none") + beta * rce
    assert torch.allclose(sce_loss(logits, y, alpha, beta, A, reduction="none"), expected)
    z = logits.clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda t: sce_loss(t, y, alpha, beta, A), (z,))
    z.grad = None
    sce_loss(z, y, alpha, beta, A, reduction="none").sum().backward()
    p_y = p[torch.arange(len(y)), y].view(-1, 1)
    hand = alpha * (p - onehot) + beta * (-A) * (-p_y * (onehot - p))
    assert torch.allclose(z.grad, hand)


def test_trainer_uses_the_configured_loss():
    logits, y = _batch(3)
    assert label_loss(logits, y, TrainConfig(loss="gce", gce_q=0.5)) == pytest.approx(float(gce_loss(logits, y, 0.5)))
    assert label_loss(logits, y, TrainConfig(loss="sce")) == pytest.approx(float(sce_loss(logits, y)))
    assert label_loss(logits, y, TrainConfig()) == pytest.approx(float(F.cross_entropy(logits, y)))
    with pytest.raises(ConfigError, match="soft labels"):
        label_loss(logits, torch.randn(6, 4), TrainConfig(loss="gce"))
    for bad in ({"loss": "mae"}, {"gce_q": 0.0}, {"sce_A": 1.0}, {"sce_alpha": -1.0}):
        with pytest.raises(ConfigError):
            TrainConfig(**bad)


# -- Co-teaching -------------------------------------------------------------------------------
def test_forget_schedule_ramps_linearly_then_stays():
    s = forget_schedule(0.4, 200, 10)
    assert s[0] == 0.0 and s[9] == pytest.approx(0.4) and np.all(s[10:] == 0.4)
    assert np.allclose(np.diff(s[:10]), 0.4 / 9)
    assert forget_schedule(0.4, 3, 1).tolist() == [0.0, 0.4, 0.4]


def test_small_loss_exchange_keeps_the_scheduled_fraction_of_the_peers_smallest_losses():
    g = torch.Generator().manual_seed(0)
    l1, l2 = torch.rand(100, generator=g), torch.rand(100, generator=g)
    upd1, upd2 = small_loss_exchange(l1, l2, 0.3)
    assert upd1.numel() == upd2.numel() == num_remember(100, 0.3) == 70
    # net 1 trains on the samples net 2 finds easiest, and vice versa
    assert set(upd1.tolist()) == set(torch.argsort(l2)[:70].tolist())
    assert set(upd2.tolist()) == set(torch.argsort(l1)[:70].tolist())
    assert l2[upd1].max() <= l2[torch.argsort(l2)[70:]].min()


def separable_images(y: torch.Tensor, g: torch.Generator, side: int) -> torch.Tensor:
    """Images whose first channel's mean tells the class apart (noise of std 0.3 around it)."""
    x = torch.randn(len(y), 3, side, side, generator=g) * 0.3
    x[:, 0] += (y.float() - 1).view(-1, 1, 1) * 2
    return x


def symmetric_flips(y: torch.Tensor, c: int, rate: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(noisy labels, flipped mask): each label moves to another class with probability ``rate``."""
    rng = np.random.default_rng(seed)
    noisy = y.numpy().copy()
    flip = rng.random(len(y)) < rate
    noisy[flip] = (noisy[flip] + rng.integers(1, c, flip.sum())) % c
    return noisy, flip


def tiny_data(n_per_class=24, c=3, rate=0.4, seed=0, side=8):
    """A separable 3-class problem with symmetric noise, shaped like PreparedData."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(c).repeat_interleave(n_per_class)
    x = separable_images(y, g, side)
    noisy, flip = symmetric_flips(y, c, rate, seed)
    ty = torch.arange(c).repeat_interleave(10)
    tx = separable_images(ty, g, side)
    noisy_labels = SimpleNamespace(labels=noisy, nominal_rate=rate, actual_rate=float(flip.mean()), spec=NoiseSpec("symmetric", rate, 0))
    return SimpleNamespace(
        num_classes=c, x_train=x, y_train_noisy=torch.as_tensor(noisy), noisy=noisy_labels, x_test=tx, y_test=ty, validation=None,
        splits=SimpleNamespace(train=SimpleNamespace(labels=y.numpy())), label_correct=np.asarray(noisy) == y.numpy(),
    )


PRESET = {
    "model": {"name": "convnet", "width": 8, "depth": 1, "norm": "instance"},
    "baseline": {"runs": 1, "train": {"epochs": 4, "batch_size": 16, "lr": 0.05, "schedule": "cosine", "augment": "none"}},
}


def test_coteaching_run_keeps_the_scheduled_small_loss_fraction():
    data = tiny_data()
    b = create_baseline("coteaching", num_gradual=2, forget_rate=0.4)
    ev = b.run(BaselineContext(data, PRESET, seed=0))
    assert b.details["forget_rate_source"] == "option"
    run = b.details["runs"][0]
    sched = forget_schedule(0.4, 4, 2)
    assert run["schedule"] == pytest.approx(sched.tolist()) and run["forget_rate"] == 0.4
    n, bs = 72, 16
    for rate, kept in zip(sched, run["kept_fraction"]):
        expected = sum(num_remember(min(bs, n - i), rate) for i in range(0, n, bs)) / n
        assert kept == pytest.approx(expected)
        assert abs(kept - (1 - rate)) <= 1 / bs + 1e-9
    assert 0 <= ev.acc_mean <= 1 and ev.images_processed == 2 * 72 * 4 and len(ev.per_class) == 3
    # precision and recall of "kept = correctly labelled": both count the same kept-and-correct samples
    sel, n_correct = run["selection"], int(data.label_correct.sum())
    assert sel["kept_fraction"] == run["kept_fraction"][-1]
    assert sel["precision"] * sel["kept_fraction"] * n == pytest.approx(sel["recall"] * n_correct)
    assert 0 < sel["recall"] <= 1 and b.details.get("selection") is None  # per run; the run's row gets the mean


# -- DivideMix ---------------------------------------------------------------------------------
def test_gmm_recovers_two_known_components():
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0.1, 0.05, 700), rng.normal(0.8, 0.08, 300)])
    gmm = fit_loss_mixture(x, max_iter=100, tol=1e-8, reg_covar=1e-8)
    means, order = gmm.means_.ravel(), np.argsort(gmm.means_.ravel())
    assert means[order] == pytest.approx([0.1, 0.8], abs=0.02)
    assert np.sqrt(gmm.covariances_.ravel()[order]) == pytest.approx([0.05, 0.08], abs=0.01)
    assert gmm.weights_[order] == pytest.approx([0.7, 0.3], abs=0.03)


def test_gmm_split_separates_clean_from_noisy_losses():
    """Clean samples have small losses, mislabelled ones large: the split recovers which is which."""
    rng = np.random.default_rng(1)
    is_clean = rng.random(2000) < 0.6
    losses = np.where(is_clean, rng.gamma(2.0, 0.1, 2000), rng.normal(3.0, 0.5, 2000).clip(0.5))
    prob = clean_probability(losses)  # DivideMix's settings: max_iter 10, tol 1e-2, reg_covar 5e-4
    labelled, unlabelled = co_divide(prob, 0.5)
    assert np.array_equal(np.sort(np.concatenate([labelled, unlabelled])), np.arange(2000))
    assert is_clean[labelled].mean() > 0.99 and is_clean[labelled].sum() / is_clean.sum() > 0.99
    assert (~is_clean[unlabelled]).mean() > 0.99


def test_co_divide_never_leaves_the_labelled_set_empty_and_sharpen_normalises():
    lab, unl = co_divide(np.array([0.1, 0.2, 0.3]), 0.5)
    assert lab.tolist() == [2] and unl.tolist() == [0, 1]
    p = sharpen(torch.tensor([[0.5, 0.3, 0.2]]), 0.5)
    assert torch.allclose(p.sum(1), torch.ones(1)) and p[0, 0] > 0.5
    assert clean_probability(np.ones(5)).tolist() == [0.5] * 5
    losses = np.random.default_rng(2).gamma(2.0, 0.3, 500)
    assert np.array_equal(clean_probability(losses, seed=3), clean_probability(losses, seed=3))  # seeded k-means start


def test_dividemix_runs_and_records_its_divisions():
    data = tiny_data()
    b = create_baseline("dividemix", warmup=2, rampup_epochs=1)
    ev = b.run(BaselineContext(data, PRESET, seed=0))
    hist = b.details["runs"][0]["history"]
    assert [h["phase"] for h in hist] == ["warmup", "warmup", "dividemix", "dividemix"]
    assert all(0 < k <= 72 for h in hist[2:] for k in h["labelled"])
    sel, correct = b.details["runs"][0]["selection"], data.label_correct
    assert sel["kept_fraction"] * 72 == hist[-1]["labelled"][0]
    assert sel["precision"] * hist[-1]["labelled"][0] == pytest.approx(sel["recall"] * correct.sum())
    assert 0 <= ev.acc_mean <= 1 and ev.images_processed > 2 * 72 * 4
    with pytest.raises(ConfigError, match="warmup"):
        create_baseline("dividemix", warmup=4).run(BaselineContext(data, PRESET))


def test_gce_and_sce_baselines_run_through_the_one_trainer():
    data = tiny_data()
    for name in ("ce", "gce", "sce"):
        ev = create_baseline(name).run(BaselineContext(data, PRESET, seed=0))
        assert ev.train["loss"] == name and ev.images_processed == 72 * 4


# -- registry and the optional cleanlab extra -------------------------------------------------
def test_registry_and_parsing():
    assert set(list_baselines()) >= {"ce", "gce", "sce", "coteaching", "dividemix", "cleanlab"}
    assert parse_baselines("sce,ce,gce,sce") == ["ce", "sce", "gce"]
    assert parse_baselines(None) == ["ce"]
    assert parse_baselines("all")[:5] == ["ce", "gce", "sce", "coteaching", "dividemix"]
    with pytest.raises(ConfigError, match="mixup"):
        parse_baselines("ce,mixup")
    with pytest.raises(ConfigError, match="qq"):
        create_baseline("gce", qq=1)


def test_cleanlab_is_skipped_cleanly_when_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)  # import cleanlab -> ImportError
    b = create_baseline("cleanlab")
    with pytest.raises(BaselineUnavailable) as e:
        b.run(BaselineContext(tiny_data(), PRESET))
    assert "not installed" in e.value.problem and "pip install cleanlab" in e.value.fix


def test_cleanlab_runs_when_installed():
    pytest.importorskip("cleanlab")
    b = create_baseline("cleanlab", folds=2)
    ev = b.run(BaselineContext(tiny_data(), PRESET))
    assert 0 <= ev.acc_mean <= 1 and b.details["kept"] + b.details["flagged"] == 72


def test_preset_baselines_sections_validate():
    from ddlnl.presets import apply_overrides, load_preset

    for name in ("smoke", "quick", "paper"):
        p = load_preset(name)
        for b in ("gce", "sce", "coteaching", "dividemix"):
            create_baseline(b, **p["baselines"][b])
    paper = load_preset("paper")["baselines"]
    assert paper["gce"]["q"] == 0.7 and paper["sce"] == {"alpha": 0.1, "beta": 1.0, "A": -4.0}
    assert paper["coteaching"]["num_gradual"] == 10 and paper["dividemix"]["lambda_u"] == 25.0
    with pytest.raises(ConfigError, match="qq"):
        apply_overrides(load_preset("smoke"), ["baselines.gce.qq=1"])
    with pytest.raises(ConfigError, match="epochz"):
        apply_overrides(load_preset("smoke"), ["baselines.gce.train={epochz: 1}"])
    with pytest.raises(ConfigError, match="cross_arch"):
        apply_overrides(load_preset("smoke"), ["evaluation.cross_arch=vgg99"])


# -- one trainer, one contract ------------------------------------------------------------------
def fake_cleanlab(monkeypatch):
    """A stand-in for the optional AGPL cleanlab: flag the samples whose predicted class is not their label."""
    from types import ModuleType

    filt = ModuleType("cleanlab.filter")
    filt.find_label_issues = lambda labels, pred_probs, filter_by=None: pred_probs.argmax(1) != labels
    mod = ModuleType("cleanlab")
    mod.filter = filt
    monkeypatch.setitem(sys.modules, "cleanlab", mod)
    monkeypatch.setitem(sys.modules, "cleanlab.filter", filt)


SMALL = {"coteaching": {"num_gradual": 2, "forget_rate": 0.4}, "dividemix": {"warmup": 2, "rampup_epochs": 1}, "cleanlab": {"folds": 2},
         "ce_converged": {"train": {"epochs": 2}}}


def test_every_registered_baseline_implements_train(monkeypatch):
    """``train`` is the one method of the contract: no baseline dodges it (no NotImplementedError stub)."""
    import inspect

    from ddlnl.baselines.base import Baseline, RunOutcome

    fake_cleanlab(monkeypatch)
    assert not inspect.isabstract(Baseline) and not getattr(Baseline, "__abstractmethods__", None)
    ctx = BaselineContext(tiny_data(), PRESET, seed=0)
    held = tiny_data(seed=1)  # another draw, held out with its noisy labels, for a baseline that needs a validation split
    with_split = BaselineContext(tiny_data(), PRESET, seed=0)
    with_split.data.validation = SimpleNamespace(x=held.x_train, y_noisy=held.y_train_noisy)
    for name in list_baselines():
        b = create_baseline(name, **SMALL.get(name, {}))
        assert type(b).run is Baseline.run, f"{name} overrides run()"
        run_ctx = ctx
        try:
            b.check_data(ctx.data)
        except BaselineUnavailable:
            b.check_data(with_split.data)
            run_ctx = with_split
        b.prepare(run_ctx)
        out = b.train(run_ctx, 0)
        assert isinstance(out, RunOutcome) and out.images_processed >= 4, name  # cleanlab: the kept samples only
        assert isinstance(out.net, torch.nn.Module)


@pytest.mark.parametrize("name", ["ce", "gce", "sce"])
def test_loss_baselines_equal_the_one_trainer_bit_for_bit(name):
    """CE/GCE/SCE through the baseline = train_network called directly, same seeds (the ``baseline`` stream)."""
    from ddlnl.evaluate import accuracy_report, build_model, evaluate_set, test_predictions
    from ddlnl.train import train_network
    from ddlnl.utils.seeds import stream_seed

    data, preset = tiny_data(), {**PRESET, "baseline": {**PRESET["baseline"], "runs": 2}}
    b = create_baseline(name)
    ev = b.run(BaselineContext(data, preset, seed=3))
    cfg = TrainConfig.from_dict(preset["baseline"]["train"], **b.loss_options())
    direct = []
    for r in range(2):
        torch.manual_seed(stream_seed(3, "baseline", r))
        net = build_model(preset["model"], 3, 8)
        train_network(net, data.x_train, data.y_train_noisy, cfg, generator=torch.Generator().manual_seed(stream_seed(3, "baseline", r)))
        direct.append(accuracy_report(test_predictions(net, data.x_test), data.y_test, 3)[0])
    assert ev.accs == direct and ev.train == cfg.to_dict()
    same = evaluate_set(data.x_train, data.y_train_noisy, test_images=data.x_test, test_labels=data.y_test, num_classes=3,
                        model=preset["model"], train=cfg, runs=2, seed=3)  # the evaluation stream: other networks
    assert same.seed_stream["purpose"] == "evaluation" and ev.seed_stream["purpose"] == "baseline"
    assert same.seed_stream["run_seeds"] != ev.seed_stream["run_seeds"]


def test_cleanlab_trains_its_runs_on_the_kept_samples(monkeypatch):
    fake_cleanlab(monkeypatch)
    b = create_baseline("cleanlab", folds=2)
    ev = b.run(BaselineContext(tiny_data(), PRESET))
    kept = b.details["kept"]
    assert kept + b.details["flagged"] == 72 and "runs" not in b.details
    # 2 folds of 36 training images x 4 epochs + 72 held-out predictions, then one run on the kept samples
    assert ev.images_processed == 2 * 36 * 4 + 72 + kept * 4


@pytest.mark.parametrize("name", ["coteaching", "dividemix"])
def test_two_network_baselines_honour_the_shared_recipe(monkeypatch, name):
    """Optimiser, per-epoch lr schedule, epochs, augmentation and compile all come from ``baseline.train``."""
    import ddlnl.augment
    from ddlnl.train import lr_at

    steps, augmented, compiled = [], [], []
    adam_step = torch.optim.Adam.step

    def spy_step(opt, *a, **k):
        steps.append(opt.param_groups[0]["lr"])
        return adam_step(opt, *a, **k)

    crop_flip = ddlnl.augment.crop_flip

    def spy_crop_flip(x, **k):
        augmented.append(x.shape[0])
        return crop_flip(x, **k)

    def fake_compile(net, **k):
        compiled.append(net)
        return net

    monkeypatch.setattr(torch.optim.Adam, "step", spy_step)
    monkeypatch.setattr(ddlnl.augment, "crop_flip", spy_crop_flip)
    monkeypatch.setattr(torch, "compile", fake_compile)
    train = {"epochs": 5, "batch_size": 16, "lr": 0.01, "optimizer": "adam", "schedule": "step", "warmup_epochs": 1.5,
             "augment": "crop_flip", "compile": True}
    preset = {**PRESET, "baseline": {"runs": 1, "train": train}}
    b = create_baseline(name, **SMALL[name])
    ev = b.run(BaselineContext(tiny_data(), preset, seed=0))
    cfg = TrainConfig.from_dict(train)
    assert ev.train == cfg.to_dict() and len(compiled) == 2  # both networks compiled
    if name == "coteaching":
        per_epoch = [5] * 5  # ceil(72 / 16) joint steps of both networks
        assert sum(augmented) == 72 * 5  # one draw per batch, shared by the networks
    else:
        hist = b.details["runs"][0]["history"]
        assert len(hist) == 5
        per_epoch = [2 * 5 if h["phase"] == "warmup" else sum(-(-k // 16) for k in h["labelled"]) for h in hist]
        assert sum(augmented) > 2 * 72 * 5
    expected = [lr_at(cfg, e) for e, k in enumerate(per_epoch) for _ in range(k)]
    assert steps == pytest.approx(expected) and sorted(set(expected)) == pytest.approx([0.001, 0.01 / 1.5, 0.01])  # warm-up, step


def test_two_network_baselines_refuse_a_recipe_loss():
    for name in ("coteaching", "dividemix"):
        preset = {**PRESET, "baseline": {"runs": 1, "train": {**PRESET["baseline"]["train"], "loss": "gce"}}}
        with pytest.raises(ConfigError, match="own loss"):
            create_baseline(name, **SMALL[name]).run(BaselineContext(tiny_data(), preset))


def test_coteaching_resumes_through_the_trainer_exactly():
    """The trainer's resume covers both networks and the hook's diagnostics: 2 + 2 epochs = 4 epochs."""
    import copy

    from ddlnl.baselines.coteaching import CoTeachingHook
    from ddlnl.evaluate import build_model
    from ddlnl.train import train_network

    data = tiny_data()
    cfg = TrainConfig.from_dict(PRESET["baseline"]["train"])
    sched, clean = forget_schedule(0.4, 4, 2), torch.as_tensor(data.splits.train.labels)

    def fresh():
        torch.manual_seed(0)
        return [build_model(PRESET["model"], 3, 8) for _ in range(2)], CoTeachingHook(sched, clean), torch.Generator().manual_seed(0)

    nets, hook, g = fresh()
    saved = {}
    train_network(nets, data.x_train, data.y_train_noisy, cfg, generator=g, hook=hook,
                  epoch_callback=lambda e, _n, state: saved.setdefault(e, copy.deepcopy(state())))  # as if saved to disk
    nets2, hook2, g2 = fresh()
    train_network(nets2, data.x_train, data.y_train_noisy, cfg, generator=g2, hook=hook2, resume=saved[1])
    for a, b in zip(nets, nets2):
        for p, q in zip(a.parameters(), b.parameters()):
            assert torch.equal(p, q)
    assert hook2.state_dict() == hook.state_dict() and len(hook.kept_fraction) == 4


def test_coteaching_forget_rate_is_estimated_unless_told_or_asked_for_the_oracle():
    data = tiny_data()
    oracle = create_baseline("coteaching", num_gradual=2, forget_rate="oracle")
    oracle.run(BaselineContext(data, PRESET, seed=0))
    assert oracle.details["forget_rate"] == data.noisy.actual_rate and oracle.details["forget_rate_source"].startswith("oracle")
    assert oracle.details["runs"][0]["forget_rate_source"].startswith("oracle")
    estimated = create_baseline("coteaching", num_gradual=2)  # the default: no knowledge of the rate
    ev = estimated.run(BaselineContext(data, PRESET, seed=0))
    d = estimated.details
    assert d["forget_rate_source"].startswith("estimated from the noisy labels: 2-fold cross-fitting")
    assert 0 <= d["forget_rate"] <= 1 and len(d["estimated_per_class"]) == 3 and d["realised_rate"] == data.noisy.actual_rate
    assert d["runs"][0]["schedule"][-1] == pytest.approx(d["forget_rate"])
    # two fold networks (4 epochs on half the images each) and their held-out predictions cost images too
    assert ev.images_processed == 2 * 72 * 4 + 2 * 36 * 4 + 72
    for bad in ("nominal", True, 1.0, -0.1):
        with pytest.raises(ConfigError, match="forget_rate"):
            create_baseline("coteaching", forget_rate=bad)
