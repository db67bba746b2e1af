"""scripts/expert_curve.py: per-epoch test accuracy of a cached trajectory."""

import torch

from ddlnl.evaluate import build_model
from ddlnl.evaluate import test_predictions as predict
from ddlnl.models.functional import flatten_params
from tests.scripts_loader import load_script

expert_curve = load_script("expert_curve")

MODEL = {"name": "convnet", "width": 4, "depth": 1, "norm": "instance"}


def test_each_row_is_scored_with_its_own_parameters():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(40, 3, 8, 8, generator=g)
    nets = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        nets.append(build_model(MODEL, 3, 8))
    y = predict(nets[1], x)  # row 1 predicts these labels perfectly
    traj = torch.stack([flatten_params(n) for n in nets])
    accs = expert_curve.epoch_accuracies(traj, MODEL, 3, x, y)
    expected = [predict(n, x).eq(y).float().mean().item() for n in nets]
    assert accs == expected
    assert accs[1] == 1.0 and min(accs[0], accs[2]) < 1.0
