"""Seconds per CIFAR-10 epoch (50,000 training images) of each noisy-label baseline on this machine.

Each baseline trains the preset's network (default: ``quick``, ConvNet-3 width 64, batch 128,
crop+flip) on ``--n`` training images at 40% symmetric noise, and the measured time is scaled
to a 50,000-image epoch. CE/GCE/SCE go through the one trainer (``torch.compile`` as in the
preset; the second epoch is timed, after compiling); Co-teaching and DivideMix run eagerly.
DivideMix is shown as its warm-up epoch (CE on both networks) and its main epoch (the
per-sample loss pass + GMM on both networks, then MixMatch for both; its length grows with the
labelled fraction, printed). Real images come from ``$DDLNL_DATA`` (``--data-root``) when
present, else random tensors of CIFAR-10 shape.

    python benchmarks/bench_baselines.py [--n 5000] [--preset quick] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import time
from types import SimpleNamespace

import numpy as np
import torch

from ddlnl.baselines import BaselineContext, create_baseline
from ddlnl.baselines import dividemix as dm_mod
from ddlnl.data.noise import NoiseSpec
from ddlnl.models import create_model
from ddlnl.presets import load_preset
from ddlnl.train import TrainConfig, train_network
from ddlnl.utils.runtime import machine

FULL = 50_000


def load(n: int, preset: dict, data_root: str | None):
    root = data_root or os.environ.get("DDLNL_DATA")
    if root and os.path.isdir(os.path.join(root, "cifar10")):
        from ddlnl.experiment import prepare_data

        p = dict(preset) | {"data": {"train_per_class": n // 10, "test_size": 1000}}
        return prepare_data("cifar10", NoiseSpec("symmetric", 0.4, 0), p, data_root=root), f"real CIFAR-10 from {root}"
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 10, (n,), generator=g)
    rng = np.random.default_rng(0)
    noisy = y.numpy().copy()
    flip = rng.random(n) < 0.4
    noisy[flip] = (noisy[flip] + rng.integers(1, 10, flip.sum())) % 10
    data = SimpleNamespace(
        num_classes=10, x_train=torch.randn(n, 3, 32, 32, generator=g), y_train_noisy=torch.as_tensor(noisy),
        noisy=SimpleNamespace(labels=noisy, nominal_rate=0.4, spec=NoiseSpec("symmetric", 0.4, 0)),
        x_test=torch.randn(1000, 3, 32, 32, generator=g), y_test=torch.randint(0, 10, (1000,), generator=g),
        splits=SimpleNamespace(train=SimpleNamespace(labels=y.numpy())),
    )
    return data, "random tensors of CIFAR-10 shape"


def per_epoch_trainer(data, preset, loss: str) -> float:
    """Second-epoch seconds of the one trainer with ``loss`` (the first epoch compiles)."""
    cfg = TrainConfig.from_dict(preset["baseline"]["train"], epochs=2, loss=loss)
    torch.manual_seed(0)
    m = dict(preset["model"])
    net = create_model(m.pop("name"), 10, image_size=32, **m)
    stamps = []
    t0 = time.perf_counter()
    train_network(net, data.x_train, data.y_train_noisy, cfg, generator=torch.Generator().manual_seed(0),
                  epoch_callback=lambda e, _net, _state: stamps.append(time.perf_counter()))
    return stamps[1] - stamps[0] if len(stamps) > 1 else stamps[0] - t0


def timed(times: dict, key: str, fn):
    def wrap(*a, **k):
        t = time.perf_counter()
        out = fn(*a, **k)
        times[key] = times.get(key, 0.0) + time.perf_counter() - t
        return out

    return wrap


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="training images timed (scaled to 50,000)")
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--only", default="ce,gce,sce,coteaching,dividemix")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    preset = load_preset(args.preset)
    data, source = load(args.n, preset, args.data_root)
    n = data.x_train.shape[0]
    scale = FULL / n
    print(f"machine: {machine()} | torch threads {torch.get_num_threads()} | {os.cpu_count()} logical CPUs")
    print(f"preset {preset['name']}: model {preset['model']}, baseline.train {preset['baseline']['train']}")
    print(f"data: {source}, {n} training images timed, scaled to {FULL:,} per epoch\n")
    print("| baseline | s / epoch (50k) | images/s | note |")
    print("|---|---|---|---|")
    only = args.only.split(",")
    for loss in ("ce", "gce", "sce"):
        if loss in only:
            s = per_epoch_trainer(data, preset, loss)
            print(f"| {loss} | {s * scale:.1f} | {n / s:.0f} | one trainer, compile={preset['baseline']['train'].get('compile', False)} |", flush=True)
    ep = {"epochs": 1}
    if "coteaching" in only:
        p = dict(preset) | {"baseline": {"runs": 1, "train": dict(preset["baseline"]["train"]) | ep}}
        b = create_baseline("coteaching", num_gradual=1)
        t = time.perf_counter()
        b.train(BaselineContext(data, p), 0)
        s = time.perf_counter() - t
        print(f"| coteaching | {s * scale:.1f} | {n / s:.0f} | two networks, eager |", flush=True)
    if "dividemix" in only:
        p = dict(preset) | {"baseline": {"runs": 1, "train": dict(preset["baseline"]["train"]) | {"epochs": 2}}}
        b = create_baseline("dividemix", warmup=1, rampup_epochs=1)
        times: dict = {}
        b._warmup_epoch = timed(times, "warmup", b._warmup_epoch)
        b._mixmatch_epoch = timed(times, "mixmatch", b._mixmatch_epoch)
        orig = dm_mod.per_sample_losses
        dm_mod.per_sample_losses = timed(times, "divide", orig)
        try:
            out = b.train(BaselineContext(data, p), 0)
        finally:
            dm_mod.per_sample_losses = orig
        lab = out.details["history"][-1]["labelled"]
        print(f"| dividemix warm-up | {times['warmup'] * scale:.1f} | {n / times['warmup']:.0f} | CE on both networks, eager |")
        main_s = times["divide"] + times["mixmatch"]
        print(f"| dividemix | {main_s * scale:.1f} | {n / main_s:.0f} | loss pass + GMM {times['divide'] * scale:.1f} s, MixMatch "
              f"{times['mixmatch'] * scale:.1f} s; labelled fraction {lab[0] / n:.2f} / {lab[1] / n:.2f} |", flush=True)


if __name__ == "__main__":
    main()
