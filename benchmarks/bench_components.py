"""Seconds per building block of a ddlnl run, to size presets for a machine.

Times, on real CIFAR-10 (needs $DDLNL_DATA or --data-root): full-data training epochs
(eager and torch.compile), a forward over the test set, evaluation epochs on an IPC-10 set
with DSA, and DM iterations, all through the package's own trainer and distiller.

    python benchmarks/bench_components.py [--width 64] [--data-root PATH]
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.data.registry import load_dataset
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.evaluate import build_model, test_predictions
from ddlnl.train import TrainConfig, train_network


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--width", type=int, default=64)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--train-images", type=int, default=10240)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    splits = load_dataset("cifar10", args.data_root)
    pre = Preprocessor("normalize").fit(splits.train.images)
    x, y = pre.apply_uint8(splits.train.images), torch.as_tensor(splits.train.labels, dtype=torch.long)
    xt = pre.apply_uint8(splits.test.images)
    model = {"name": "convnet", "width": args.width, "depth": 3, "norm": "instance"}
    n = args.train_images
    rows = []
    for compile_ in (False, True):
        torch.manual_seed(0)
        net = build_model(model, 10, 32)
        cfg = TrainConfig(epochs=1, batch_size=128, lr=0.05, schedule="cosine", augment="crop_flip", compile=compile_)
        first = timed(lambda: train_network(net, x[:256], y[:256], cfg))  # includes compiling
        secs = timed(lambda: train_network(net, x[:n], y[:n], cfg))
        rows.append((f"train epoch part, {n} images, crop+flip, batch 128, {'compiled' if compile_ else 'eager'}",
                     secs, f"{n / secs:.0f} img/s (first call {first:.1f} s)"))
    rows.append(("forward over the 10,000 test images", timed(lambda: test_predictions(net, xt)), ""))
    ev = TrainConfig(epochs=100, batch_size=256, augment="dsa")
    rows.append(("100 evaluation epochs on 100 images (DSA)", timed(lambda: train_network(build_model(model, 10, 32), x[:100], y[:100], ev)), ""))
    ctx = DistillContext("cifar10", x, splits.train.labels, 10, pre, model, log=lambda m: None)
    for br in (64, 128):
        secs = timed(lambda: create_distiller("dm", iterations=10, batch_real=br).run(ctx, 10))
        rows.append((f"10 DM iterations, IPC 10, {br} real images per class", secs, f"{secs / 10:.2f} s/iteration"))
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, ConvNet-3 width {args.width}, instance norm")
    print("| workload | seconds | note |\n|---|---|---|")
    for name, secs, note in rows:
        print(f"| {name} | {secs:.1f} | {note} |")


if __name__ == "__main__":
    main()
