import math

import pytest
import torch

from ddlnl.errors import ConfigError
from ddlnl.evaluate import accuracy_report, evaluate_set
from ddlnl.train import TrainConfig, label_loss, lr_at, soft_cross_entropy, train_network
from ddlnl.models import create_model


def separable(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.randint(0, 2, (n,), generator=g)
    x = torch.randn(n, 3, 8, 8, generator=g) * 0.3
    x[:, 0] += (y.float() * 2 - 1).view(-1, 1, 1)  # class is the sign of channel 0
    return x, y


def test_training_learns_a_separable_problem_and_is_seeded():
    x, y = separable()
    cfg = TrainConfig(epochs=15, batch_size=32, lr=0.05, augment="none", schedule="cosine")
    torch.manual_seed(0)
    net = create_model("convnet", 2, image_size=8, width=8, depth=1)
    stats = train_network(net, x, y, cfg, generator=torch.Generator().manual_seed(0))
    acc, per_class, conf = accuracy_report(net(x).argmax(1), y, 2)
    assert acc > 0.95
    assert stats.epoch_losses[-1] < stats.epoch_losses[0]
    assert stats.images_processed == 15 * 200
    r1 = evaluate_set(x, y, test_images=x, test_labels=y, num_classes=2, model={"name": "convnet", "width": 8, "depth": 1},
                      train=cfg, runs=2, seed=3)
    r2 = evaluate_set(x, y, test_images=x, test_labels=y, num_classes=2, model={"name": "convnet", "width": 8, "depth": 1},
                      train=cfg, runs=2, seed=3)
    assert r1.accs == r2.accs and len(r1.accs) == 2
    assert sum(map(sum, r1.confusion)) == 2 * 200


def test_soft_labels_equal_hard_labels_when_one_hot_is_sharp():
    logits = torch.randn(5, 4)
    y = torch.tensor([0, 3, 1, 2, 0])
    sharp = torch.nn.functional.one_hot(y, 4).float() * 1e4
    assert torch.allclose(soft_cross_entropy(logits, sharp), torch.nn.functional.cross_entropy(logits, y), atol=1e-5)
    assert label_loss(logits, y).item() == pytest.approx(label_loss(logits, sharp).item(), abs=1e-4)


def test_schedules():
    step = TrainConfig(epochs=10, lr=1.0, schedule="step")
    assert lr_at(step, 4) == 1.0 and lr_at(step, 5) == pytest.approx(0.1)
    cos = TrainConfig(epochs=10, lr=1.0, schedule="cosine")
    assert lr_at(cos, 0) == 1.0 and lr_at(cos, 5) == pytest.approx(0.5) and lr_at(cos, 9) < 0.05


def test_per_class_accuracy_and_confusion():
    acc, pc, conf = accuracy_report(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 1]), 2)
    assert acc == 0.75 and pc.tolist() == [1.0, pytest.approx(2 / 3)] and conf.tolist() == [[1, 0], [1, 2]]


@pytest.mark.parametrize("bad", [dict(epochs=0), dict(lr=-1.0), dict(lr=math.nan), dict(schedule="linear"), dict(augment="mixup")])
def test_bad_training_options_are_refused(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_unknown_training_key_is_refused():
    with pytest.raises(ConfigError, match="epochz"):
        TrainConfig.from_dict({"epochz": 3})


@pytest.mark.parametrize("min_images, compiled_sizes", [(None, {4}), (4, {4, 2})])
def test_compile_routes_full_batches_and_a_partial_batch_only_when_it_carries_enough_images(monkeypatch, min_images, compiled_sizes):
    """10 images in batches of 4: the two full batches always go through the compiled module; the
    partial batch of 2 only when epochs x 2 reaches COMPILE_MIN_IMAGES (not paying a compile for a few batches)."""
    import ddlnl.train as train_mod

    seen = []

    def fake_compile(net, **kwargs):
        assert kwargs.get("dynamic") is False  # one static graph per shape

        def run(x):
            seen.append(x.shape[0])
            return net(x)

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    if min_images is not None:
        monkeypatch.setattr(train_mod, "COMPILE_MIN_IMAGES", min_images)
    x, y = separable(10)
    net = create_model("convnet", 2, image_size=8, width=4, depth=1)
    stats = train_network(net, x, y, TrainConfig(epochs=2, batch_size=4, augment="none", compile=True),
                          generator=torch.Generator().manual_seed(0))
    assert set(seen) == compiled_sizes
    assert seen.count(4) == 2 * 2 and stats.images_processed == 20


def test_a_hook_sweeping_a_subset_equals_training_on_that_subset():
    """The hook API (epoch plan of sweeps + per-batch loss) reuses the trainer's batch drawing and
    augmentation: sweeping indices S is bit-for-bit training on images[S], and a second network in
    the list that the loss never touches is left as it was."""
    from ddlnl.train import Sweep, TrainHook

    x, y = separable(60)
    subset = torch.arange(0, 60, 2)
    cfg = TrainConfig(epochs=3, batch_size=8, lr=0.05, augment="crop_flip", schedule="cosine")

    class Subset(TrainHook):
        def plan(self, epoch, run):
            return [Sweep(indices=subset)]

        def loss(self, step):
            assert torch.equal(step.y, y[step.idx])
            return super().loss(step)

    torch.manual_seed(0)
    a = create_model("convnet", 2, image_size=8, width=4, depth=1)
    idle = create_model("convnet", 2, image_size=8, width=4, depth=1)
    before = [p.detach().clone() for p in idle.parameters()]
    torch.manual_seed(0)
    b = create_model("convnet", 2, image_size=8, width=4, depth=1)
    sa = train_network([a, idle], x, y, cfg, generator=torch.Generator().manual_seed(1), hook=Subset())
    sb = train_network(b, x[subset], y[subset], cfg, generator=torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    assert all(torch.equal(p, q) for p, q in zip(idle.parameters(), before))
    assert sa.epoch_losses == sb.epoch_losses and sa.images_processed == sb.images_processed == 3 * 30
