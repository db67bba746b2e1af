"""Many networks at once: stacked trainings equal the same trainings run one at a time.

Each training keeps its own initial weights, data order, augmentation and CutMix draws and
optimiser state, so stacking changes nothing but float rounding (grouped convolutions
instead of K separate ones): the weights after a few epochs agree to within 1e-4.
"""

from __future__ import annotations

import pytest
import torch

from ddlnl.evaluate import CheckpointTests, build_model, evaluate_set
from ddlnl.experts import ExpertConfig, train_experts
from ddlnl.models.stacked import StackedNetworks
from ddlnl.train import (
    TrainConfig,
    TrainHook,
    Training,
    networks_at_once,
    network_training_bytes,
    stack_groups,
    train_networks,
)
from ddlnl.utils.runtime import generator

MODEL = {"name": "convnet", "width": 8, "depth": 2, "norm": "instance"}
TOL = dict(rtol=1e-4, atol=1e-5)


def data(n=24, seed=0, soft=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, 16, 16, generator=g)
    y = torch.randn(n, 4, generator=g) if soft else torch.randint(0, 4, (n,), generator=g)
    return x, y


def nets(seeds, model=MODEL):
    out = []
    for s in seeds:
        torch.manual_seed(s)
        out.append(build_model(model, 4, 16))
    return out


def weights(net):
    return torch.cat([p.detach().flatten() for p in net.state_dict().values() if p.is_floating_point()])


def train_both(cfg: TrainConfig, datasets, seeds=(1, 2, 3), model=MODEL, hooks=None):
    """The same trainings stacked (batch_networks = len(seeds)) and one at a time; returns both."""
    results = []
    for k in (len(seeds), 1):
        ns = nets(seeds, model)
        hs = hooks() if hooks else [None] * len(seeds)
        trainings = [Training(n, x, y, generator(s), h) for n, (x, y), s, h in zip(ns, datasets, seeds, hs)]
        c = TrainConfig.from_dict(cfg.to_dict() | {"batch_networks": k})
        assert stack_groups(trainings, c) == ([list(range(len(seeds)))] if k > 1 else [[i] for i in range(len(seeds))])
        stats = train_networks(trainings, c)
        results.append((ns, stats, hs))
    return results


@pytest.mark.parametrize("recipe", [
    {"augment": "none"},
    {"augment": "dsa", "cutmix_prob": 0.5},
    {"augment": "crop_flip", "optimizer": "adam", "lr": 0.001, "schedule": "cosine", "warmup_epochs": 1},
])
def test_stacked_trainings_equal_sequential_ones(recipe):
    cfg = TrainConfig(**{"epochs": 4, "batch_size": 10, "lr": 0.05} | recipe)
    (stacked, s_stats, _), (alone, a_stats, _) = train_both(cfg, [data()] * 3)
    # Adam divides by the root of the second moment, so rounding in near-zero gradients moves a
    # weight by up to about lr / 50 (here 2e-5 against 1.2e-2 of movement): a looser bound for it
    tol = TOL | {"atol": 1e-4} if cfg.optimizer == "adam" else TOL
    for a, b in zip(stacked, alone):
        torch.testing.assert_close(weights(a), weights(b), **tol)
    for a, b in zip(s_stats, a_stats):
        assert a.epoch_losses == pytest.approx(b.epoch_losses, rel=1e-4) and a.images_processed == b.images_processed
    assert not torch.allclose(weights(stacked[0]), weights(stacked[1]))  # three different networks, not one copied


def test_sets_with_other_images_and_label_kinds_stack():
    """A random control (hard labels) and a distilled set (soft labels) of one size train side by side."""
    cfg = TrainConfig(epochs=3, batch_size=8, augment="dsa")
    (stacked, _, _), (alone, _, _) = train_both(cfg, [data(seed=0), data(seed=1, soft=True)], seeds=(1, 2))
    for a, b in zip(stacked, alone):
        torch.testing.assert_close(weights(a), weights(b), **TOL)


def test_batch_norm_networks_stack():
    cfg = TrainConfig(epochs=2, batch_size=12, augment="none")
    model = MODEL | {"norm": "batch"}
    (stacked, _, _), (alone, _, _) = train_both(cfg, [data()] * 2, seeds=(1, 2), model=model)
    for a, b in zip(stacked, alone):
        torch.testing.assert_close(weights(a), weights(b), **TOL)
        torch.testing.assert_close(a.features[1].running_var, b.features[1].running_var, **TOL)


def test_checkpoint_tests_see_each_stacked_network_between_epochs():
    x, y = data(40, seed=5)
    cfg = TrainConfig(epochs=4, batch_size=16, augment="none", lr=0.1)
    (_, _, s_hooks), (_, _, a_hooks) = train_both(cfg, [data()] * 2, seeds=(1, 2),
                                                  hooks=lambda: [CheckpointTests(x, y, [1, 2, 3, 4], last=True) for _ in range(2)])
    assert [h.accs for h in s_hooks] == [h.accs for h in a_hooks] and len(s_hooks[0].accs) == 4


def test_gsam_experts_side_by_side_equal_one_at_a_time():
    x, y = data(32)
    cfg = ExpertConfig(epochs=2, batch_size=16, gsam=True, lr=0.05)
    trajs = {k: train_experts(x, y, MODEL, 4, ExpertConfig(**{**cfg.__dict__, "batch_networks": k}), [7, 8]) for k in (2, 1)}
    for a, b in zip(trajs[2], trajs[1]):
        assert a.shape == (3, b.shape[1])
        torch.testing.assert_close(a, b, **TOL)


def test_stacked_training_resumes_per_network():
    """Killed after epoch 2 of 4 with every network's state saved, the stack resumes to the same weights."""
    x, y = data()
    cfg = TrainConfig(epochs=4, batch_size=10, augment="dsa", momentum=0.9, batch_networks=2)

    def trainings(states=None, saved=None):
        out = []
        for i, (net, s) in enumerate(zip(nets((1, 2)), (1, 2))):
            def keep(epoch, net_, state, i=i):
                if epoch == 1 and saved is not None:
                    saved[i] = state()
                if epoch == 1 and saved is not None and len(saved) == 2:
                    raise KeyboardInterrupt
            out.append(Training(net, x, y, generator(s), epoch_callback=keep, resume=None if states is None else states[i]))
        return out

    whole = trainings()
    train_networks(whole, cfg)
    saved = {}
    with pytest.raises(KeyboardInterrupt):
        train_networks(trainings(saved=saved), cfg)
    resumed = trainings(states=[saved[0], saved[1]])
    train_networks(resumed, cfg)
    for a, b in zip(whole, resumed):
        torch.testing.assert_close(weights(a.net), weights(b.net), rtol=0, atol=0)


def test_evaluation_runs_side_by_side_equal_one_at_a_time():
    x, y = data(20)
    tx, ty = data(30, seed=9)
    kw = dict(test_images=tx, test_labels=ty, num_classes=4, model=MODEL, runs=3, seed=4)
    accs = {k: evaluate_set(x, y, train=TrainConfig(epochs=3, batch_size=32, augment="dsa", batch_networks=k), **kw).accs
            for k in (3, 1)}
    assert accs[3] == pytest.approx(accs[1], abs=1e-9)


def test_what_cannot_stack_trains_alone():
    class CustomLoss(TrainHook):
        def loss(self, step):
            return super().loss(step) * 2

    x, y = data()
    cfg = TrainConfig(epochs=1, batch_size=8, batch_networks=4)
    assert stack_groups([Training(n, x, y, hook=CustomLoss()) for n in nets((1, 2))], cfg) == [[0], [1]]
    assert stack_groups([Training(nets((1, 2)), x, y)] * 2, cfg) == [[0], [1]]  # co-trained pairs
    # sets of two sizes (a distilled set decoded to more images than its controls): each size stacks with its own
    mixed = [Training(n, *data(n=k)) for n, k in zip(nets((1, 2, 3, 4, 5)), (8, 9, 8, 9, 8))]
    assert stack_groups(mixed, cfg) == [[0, 2, 4], [1, 3]]
    assert stack_groups([Training(n, x, y) for n in nets(range(6))], cfg) == [[0, 1, 2, 3], [4, 5]]
    assert stack_groups([Training(n, x, y) for n in nets(range(3))], TrainConfig(batch_networks=1)) == [[0], [1], [2]]


def test_auto_is_one_on_a_cpu_and_a_number_is_honoured():
    net = nets((1,))[0]
    assert networks_at_once(TrainConfig(), net, (3, 16, 16), 10) == 1
    assert networks_at_once(TrainConfig(batch_networks=4), net, (3, 16, 16), 10) == 4
    assert networks_at_once(TrainConfig(batch_networks=4), net, (3, 16, 16), 2) == 2
    params = sum(p.numel() for p in net.parameters()) * 4
    assert network_training_bytes(net, (3, 16, 16), 10) > 4 * params


def test_bad_batch_networks_is_a_clear_error():
    from ddlnl.errors import ConfigError

    for bad in (0, -1, "many", True, 1.5):
        with pytest.raises(ConfigError, match="batch_networks"):
            TrainConfig(batch_networks=bad)


def test_stacked_networks_share_storage_until_released():
    a, b = nets((1, 2))
    stack = StackedNetworks([a, b])
    with torch.no_grad():
        stack.stacked_params[0][1].add_(1.0)
    assert torch.equal(next(b.parameters()), stack.stacked_params[0][1])
    stack.release()
    with torch.no_grad():
        stack.stacked_params[0][1].add_(1.0)
    assert not torch.equal(next(b.parameters()), stack.stacked_params[0][1])
    out = StackedNetworks(nets((1, 2)))(torch.randn(2, 5, 3, 16, 16))
    assert out.shape == (2, 5, 4)


def test_batch_networks_is_in_no_stage_key():
    """How many networks train side by side changes speed only: a rerun with another number resumes."""
    from ddlnl.spec import ExperimentSpec
    from ddlnl.train import recipe_key

    def spec(*overrides):
        return ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method="dm", ipc=1, preset="smoke",
                                     overrides=overrides)

    plain, batched = spec(), spec("evaluation.train.batch_networks=3", "baseline.train.batch_networks=2")
    assert batched.resolved.evaluation["train"]["batch_networks"] == 3
    assert plain.evaluation_key() == batched.evaluation_key()
    assert recipe_key(plain.resolved.preset["baseline"]) == recipe_key(batched.resolved.preset["baseline"])


def test_a_run_evaluates_the_set_and_its_controls_side_by_side(tmp_path, monkeypatch):
    """In a DATM run the distilled set, the random control at its lr, the hard-label and the init-only
    controls share one recipe: with batch_networks 4 their runs train as stacks, and the rows equal
    those of the same run one network at a time."""
    import ddlnl.train as trainer
    from ddlnl.run import run_experiment
    from ddlnl.spec import ExperimentSpec
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path / "data"
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    real, sizes = trainer._train_group, []

    def recording(group, *a, **kw):
        sizes.append(len(group))
        return real(group, *a, **kw)

    monkeypatch.setattr(trainer, "_train_group", recording)
    rows = {}
    for k in (4, 1):
        sizes.clear()
        overrides = ("evaluation.train.epochs=2", "evaluation.runs=2", "baseline.train.epochs=1", "methods.datm.iterations=2",
                     f"evaluation.train.batch_networks={k}")
        spec = ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method="datm", ipc=1, preset="smoke",
                                     overrides=overrides, data_root=str(root))
        result = run_experiment(spec, tmp_path / f"run{k}", log=lambda m: None, progress=False)
        rows[k] = result["results"]
        if k == 4:  # 4 sets x 2 runs at the set's lr: two stacks of 4; the random control at the recipe's lr: one of 2
            assert sorted(sizes, reverse=True)[:3] == [4, 4, 2], sizes
        else:
            assert max(sizes) == 1
    for get in (lambda r: r["distilled"], lambda r: r["random"], lambda r: r["controls"]["random_recipe_lr"],
                lambda r: r["controls"]["hard_labels"], lambda r: r["controls"]["init_only"]):
        assert get(rows[4])["accs"] == pytest.approx(get(rows[1])["accs"], abs=1e-9)
        assert get(rows[4])["train"]["lr"] == get(rows[1])["train"]["lr"]
    assert list(rows[4]["controls"]) == ["random_real", "hard_labels", "cross_arch", "init_only", "random_recipe_lr"]
