"""Training recipes other than the common one (Adam, multistep, warm-up, MSE, CutMix), set decoding,
and the `--eval native` plumbing that selects a method's own evaluation recipe."""

import json
import math

import pytest
import torch
import yaml

from ddlnl.decode import decode_multiformation, decode_set
from ddlnl.errors import ConfigError, DataError
from ddlnl.models import create_model
from ddlnl.presets import evaluation_for, load_preset, method_options
from ddlnl.train import TrainConfig, label_loss, lr_at, train_network


def test_multistep_warmup_and_cosine_floor_schedules():
    ms = TrainConfig(epochs=1500, lr=0.01, schedule="multistep", milestones=[2 / 3, 5 / 6], gamma=0.2)
    assert lr_at(ms, 999) == pytest.approx(0.01) and lr_at(ms, 1000) == pytest.approx(0.002)
    assert lr_at(ms, 1249) == pytest.approx(0.002) and lr_at(ms, 1250) == pytest.approx(0.0004)
    wc = TrainConfig(epochs=100, lr=1.0, schedule="cosine", warmup_epochs=10, lr_floor=0.01)
    assert lr_at(wc, 0) == pytest.approx(0.1) and lr_at(wc, 4) == pytest.approx(0.5)
    assert lr_at(wc, 10) == pytest.approx(1.0)  # warm-up done: the cosine starts at its peak
    assert lr_at(wc, 55) == pytest.approx(0.01 + 0.99 * 0.5)  # half-way through the decay
    assert lr_at(wc, 100) == pytest.approx(0.01)  # the floor
    # the common recipe is unchanged by the new fields
    assert lr_at(TrainConfig(epochs=10, lr=1.0, schedule="cosine"), 5) == pytest.approx(0.5 * (1 + math.cos(math.pi / 2)))


@pytest.mark.parametrize("bad", [{"milestones": [0.5, 1.5]}, {"gamma": 2.0}, {"cutmix_prob": -0.1}, {"warmup_epochs": 50},
                                 {"optimizer": "lion"}, {"loss": "hinge"}, {"lr_floor": 1.5}])
def test_recipe_values_out_of_range_are_refused(bad):
    with pytest.raises(ConfigError):
        TrainConfig(epochs=50, **bad)


def test_mse_loss_targets_float_labels_and_centred_one_hot():
    cfg = TrainConfig(loss="mse")
    out = torch.tensor([[0.5, -0.5, 0.0]])
    assert float(label_loss(out, torch.tensor([[0.5, -0.5, 0.0]]), cfg)) == 0.0
    centred = torch.tensor([[2 / 3, -1 / 3, -1 / 3]])
    assert float(label_loss(centred, torch.tensor([0]), cfg)) == pytest.approx(0.0, abs=1e-7)
    assert float(label_loss(torch.zeros(1, 3), torch.tensor([0]), cfg)) == pytest.approx(0.5 * (4 / 9 + 1 / 9 + 1 / 9) / 3)


def test_adam_mse_and_cutmix_recipes_train():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 2, (64,), generator=g)
    x = torch.randn(64, 3, 8, 8, generator=g) * 0.3
    x[:, 0] += (y.float() * 2 - 1).view(-1, 1, 1)
    for cfg in (TrainConfig(epochs=30, batch_size=64, lr=0.01, optimizer="adam", loss="mse", augment="none",
                            schedule="cosine", warmup_epochs=3, weight_decay=0.0),
                TrainConfig(epochs=30, batch_size=16, lr=0.05, augment="none", cutmix_prob=0.5, schedule="multistep",
                            milestones=[0.6], gamma=0.2)):
        torch.manual_seed(0)
        net = create_model("convnet", 2, image_size=8, width=8, depth=1)
        stats = train_network(net, x, y, cfg, generator=torch.Generator().manual_seed(0))
        assert stats.epoch_losses[-1] < stats.epoch_losses[0]
        assert (net(x).argmax(1) == y).float().mean() > 0.9, cfg


def test_multiformation_decode_gives_factor_squared_full_size_images():
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).view(2, 3, 4, 4)
    out = decode_multiformation(x, 2)
    assert out.shape == (8, 3, 4, 4)
    # crop-major: rows 0-1 are both images' top-left cells, upsampled from 2x2
    top_left = torch.nn.functional.interpolate(x[:, :, :2, :2], size=(4, 4), mode="bilinear", align_corners=False)
    assert torch.equal(out[:2], top_left)
    imgs, labels = decode_set(x, torch.tensor([3, 7]), {"kind": "multiformation", "factor": 2})
    assert labels.tolist() == [3, 7, 3, 7, 3, 7, 3, 7] and imgs.shape[0] == 8
    imgs, labels = decode_set(x, torch.eye(2), {"kind": "flip_copies"})
    assert torch.equal(imgs[2:], x.flip(-1)) and torch.equal(labels, torch.cat([torch.eye(2)] * 2))
    with pytest.raises(DataError, match="decode kind"):
        decode_set(x, torch.tensor([0, 1]), {"kind": "zoom"})
    with pytest.raises(DataError, match="divisible"):
        decode_multiformation(torch.zeros(1, 3, 5, 5), 2)


def native_preset(tmp_path):
    p = load_preset("smoke")
    p["name"] = "smoke-native"
    p["methods"]["dm"]["native_eval"] = {"train": {"epochs": 4, "batch_size": 64, "lr": 0.01, "optimizer": "adam",
                                                   "schedule": "cosine", "warmup_epochs": 1, "augment": "none"},
                                         "runs": 2, "model": {"name": "convnet", "width": 8, "depth": 1}}
    path = tmp_path / "native.yaml"
    path.write_text(yaml.safe_dump(p))
    return path


def test_evaluation_for_selects_the_native_recipe(tmp_path):
    preset = load_preset(str(native_preset(tmp_path)))
    assert "native_eval" not in method_options(preset, "dm")
    ev = evaluation_for(preset, "dm", "native")
    assert ev["train"]["optimizer"] == "adam" and ev["runs"] == 2 and ev["model"]["width"] == 8 and ev["protocol"] == "native"
    assert evaluation_for(preset, "dm", "common") == preset["evaluation"]
    with pytest.raises(ConfigError, match="no native evaluation recipe"):
        evaluation_for(preset, "mtt", "native")
    bad = load_preset("smoke")
    bad["methods"]["dm"]["native_eval"] = {"train": {"epochs": 3, "optimiser": "adam"}}
    from ddlnl.presets import validate_preset

    with pytest.raises(ConfigError, match="optimiser"):
        validate_preset(bad)


def test_run_with_native_eval_keeps_the_distilled_set_and_adds_native_rows(tmp_path):
    from ddlnl.run import RunConfig, run_experiment
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path / "data"
    write_cifar10_npz(root, n_train_per_class=6, n_test_per_class=2)
    logs = []
    cfg = RunConfig(preset=str(native_preset(tmp_path)), method="dm", ipc=2, out=str(tmp_path / "run"), data_root=str(root), progress=False)
    common = run_experiment(cfg, log=logs.append)
    cfg.eval_protocol = "native"
    logs.clear()
    native = run_experiment(cfg, log=logs.append)
    assert not any("distilling" in m for m in logs)  # the set is made once; only its evaluation changes
    row = native["results"]["distilled"]
    assert row["protocol"] == "native" and row["runs"] == 2 and row["train"]["optimizer"] == "adam"
    assert row["model"]["width"] == 8 and common["results"]["distilled"]["protocol"] == "common"
    assert native["results"]["random"]["train"]["optimizer"] == "adam"  # the control gets the same recipe
    saved = json.loads((tmp_path / "run" / "stages" / "distilled_native.json").read_text())
    assert saved["value"]["protocol"] == "native"
