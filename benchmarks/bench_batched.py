"""Many networks at once: seconds per epoch of K trainings stacked against the same K one at a time.

For each training-set size (IPC-10 sets of 10 and 100 images, and an expert's full CIFAR-10
training set, capped at ``--expert-batches`` batches per epoch) and each K, this trains K fresh
networks of the preset's evaluation recipe (random CIFAR-shaped data, the preset's network,
eager, augmentation as in the recipe) with ``batch_networks: K`` (one stacked network) and with
``batch_networks: 1`` (one after another), and prints seconds per epoch per network for both,
their ratio, and the peak memory of the stacked training (GPU: allocated; CPU: growth of the
process's peak resident set, which only grows, so read it top to bottom).

    python benchmarks/bench_batched.py [--preset quick] [--sizes 10,100] [--k 1,3,10] [--epochs 5] [--expert-batches 20] [--device cpu]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

from ddlnl.evaluate import build_model
from ddlnl.presets import load_preset
from ddlnl.train import TrainConfig, Training, train_networks
from ddlnl.utils.runtime import generator, resolve_device


def peak_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def time_trainings(n: int, k: int, cfg: TrainConfig, model: dict, device: torch.device) -> tuple[float, float]:
    """Seconds of training k networks on n images each with ``cfg`` (its batch_networks decides
    stacked or one at a time), and the peak memory after it."""
    x, y = torch.randn(n, 3, 32, 32, device=device), torch.randint(0, 10, (n,), device=device)
    trainings = []
    for seed in range(k):
        torch.manual_seed(seed)
        trainings.append(Training(build_model(model, 10, 32).to(device), x, y, generator(seed)))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
    t0 = time.perf_counter()
    train_networks(trainings, cfg)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, peak_mb(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--sizes", default="10,100", help="set sizes (IPC x classes); the expert row is added unless --expert-batches 0")
    ap.add_argument("--k", default="1,3,10", help="networks trained at once")
    ap.add_argument("--epochs", type=int, default=5, help="epochs timed per set-size training (after an untimed one-epoch warm-up training)")
    ap.add_argument("--expert-batches", type=int, default=20, help="batches of 256 per expert epoch (0: no expert row)")
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    device = resolve_device(args.device)
    preset = load_preset(args.preset)
    train = {**preset["evaluation"]["train"], "compile": False}
    rows = [(int(s), train, args.epochs) for s in args.sizes.split(",")]
    if args.expert_batches > 0:  # an expert's recipe (MTT/DATM buffers): plain SGD at batch 256, DSA
        expert = {"batch_size": 256, "lr": 0.01, "momentum": 0.0, "weight_decay": 0.0, "schedule": "constant", "augment": "dsa"}
        rows.append((256 * args.expert_batches, expert, 2))
    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}; preset {preset['name']} "
          f"v{preset['version']}, model {preset['model']}")
    print("| images | K | stacked s / epoch / network | one at a time s / epoch / network | one at a time / stacked | peak MB (stacked) |")
    print("|---|---|---|---|---|---|")
    for n, recipe, epochs in rows:
        for k in (int(v) for v in args.k.split(",")):
            seconds = {}
            for mode in (k, 1):
                cfg = TrainConfig.from_dict({**recipe, "epochs": 1, "batch_networks": mode})
                time_trainings(n, k, cfg, preset["model"], device)  # warm-up: allocator, kernels
                cfg = TrainConfig.from_dict({**recipe, "epochs": epochs, "batch_networks": mode})
                seconds[mode], peak = time_trainings(n, k, cfg, preset["model"], device)
                if mode == k:
                    stacked_peak = peak
                if k == 1:
                    seconds[1] = seconds[k]
                    break
            per = {m: s / epochs / k for m, s in seconds.items()}
            print(f"| {n} | {k} | {per[k]:.4f} | {per[1]:.4f} | {per[1] / per[k]:.2f} | {stacked_peak:.0f} |", flush=True)


if __name__ == "__main__":
    main()
