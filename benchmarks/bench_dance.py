"""DANCE's cost: seconds per condensation iteration (IPC 1/10/50) and expert pre-training time.

CIFAR-10 shapes (3x32x32, 10 classes), ConvNet-3 with instance norm, random images (a pool
of ``--pool`` per class, from which each matching step draws ``batch_real``). One iteration
is :meth:`ddlnl.distill.dance.DANCE.iteration`: the middle encoder, 10 per-class matching
steps (128 real + up to 200 decoded synthetic images each) and 10 per-class calibration
steps, exactly as the distiller runs it. Random (untrained) "experts" are used: the cost
does not depend on the weights.

Expert pre-training: ``--expert-images`` random images trained for one epoch with DANCE's
recipe (batch 64, momentum 0.9, CutMix 0.5, ``dance:color_crop``) through the one trainer;
the script prints images/s and extrapolates to one model (60 epochs of 50,000 images).

    .venv/bin/python benchmarks/bench_dance.py                          # IPC 1/10/50 at width 128 and 64, experts
    .venv/bin/python benchmarks/bench_dance.py --ipc 10 --widths 64 --no-experts
"""

from __future__ import annotations

import argparse
import resource
import statistics
import time


def bench_iteration(ipc: int, width: int, repeats: int, warmup: int, pool: int, batch_real: int) -> dict:
    import numpy as np
    import torch

    from ddlnl.data.preprocess import Preprocessor
    from ddlnl.distill import DistillContext, create_distiller
    from ddlnl.evaluate import build_model
    from ddlnl.models.functional import flatten_params

    model = {"name": "convnet", "width": width, "depth": 3, "norm": "instance"}
    labels = np.repeat(np.arange(10), max(pool, ipc * 4))
    g = torch.Generator().manual_seed(0)
    px = torch.rand(len(labels), 3, 32, 32, generator=g)
    pre = Preprocessor("normalize").fit(px)
    ctx = DistillContext("bench", pre(px), labels, 10, pre, model, log=lambda m: None)
    d = create_distiller("dance", batch_real=batch_real)
    torch.manual_seed(0)
    experts = [torch.stack([flatten_params(build_model(model, 10, 32)) for _ in range(2)]) for _ in range(2)]
    pixels, _, opt, gen, ends, nets = d.setup(ctx, ipc, experts)
    times, images = [], 0
    for it in range(warmup + repeats):
        t0 = time.perf_counter()
        r = d.iteration(ctx, pixels, opt, gen, ends, nets, ipc)
        if it >= warmup:
            times.append(time.perf_counter() - t0)
            images = r["images"]
    return {"s_per_iter": statistics.median(times), "images": images}


def bench_expert(width: int, n_images: int, compile_: bool) -> dict:
    import numpy as np
    import torch

    from ddlnl.distill import create_distiller
    from ddlnl.distill.dance import expert_config
    from ddlnl.evaluate import build_model
    from ddlnl.train import train_network

    cfg = expert_config(create_distiller("dance", expert_compile=compile_).options)
    tc = cfg.train_config()
    tc.epochs = 1
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n_images, 3, 32, 32, generator=g)
    y = torch.as_tensor(np.arange(n_images) % 10)
    net = build_model({"name": "convnet", "width": width, "depth": 3, "norm": "instance"}, 10, 32)
    if compile_:  # compile outside the timed epoch
        warm = train_network(net, x[: tc.batch_size * 2], y[: tc.batch_size * 2], tc, generator=g)
        del warm
    t0 = time.perf_counter()
    train_network(net, x, y, tc, generator=g)
    dt = time.perf_counter() - t0
    rate = n_images / dt
    return {"img_per_s": rate, "epoch_50k_s": 50000 / rate, "model_60ep_h": 60 * 50000 / rate / 3600}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--widths", type=int, nargs="+", default=[128, 64])
    p.add_argument("--batch-real", type=int, default=128)
    p.add_argument("--pool", type=int, default=256, help="random real images per class to draw from")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--expert-images", type=int, default=3200)
    p.add_argument("--no-experts", action="store_true")
    p.add_argument("--compile", action="store_true", help="also time compiled expert training")
    args = p.parse_args()

    import os

    import torch

    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, threads {args.threads}, load average {os.getloadavg()[0]:.2f} at start")
    print("\n| IPC | width | batch_real | decoded syn / class | s / iteration | images / iteration | images / s |")
    print("|---|---|---|---|---|---|---|")
    for width in args.widths:
        for ipc in args.ipc:
            r = bench_iteration(ipc, width, args.repeats, args.warmup, args.pool, args.batch_real)
            print(f"| {ipc} | {width} | {args.batch_real} | {min(4 * ipc, 200)} | {r['s_per_iter']:.2f} | {r['images']} | "
                  f"{r['images'] / r['s_per_iter']:.0f} |", flush=True)
    if not args.no_experts:
        print("\n| expert width | compiled | train img/s | s / epoch (50k) | h / model (60 epochs) |")
        print("|---|---|---|---|---|")
        for width in args.widths:
            for comp in ([False, True] if args.compile else [False]):
                r = bench_expert(width, args.expert_images, comp)
                print(f"| {width} | {comp} | {r['img_per_s']:.0f} | {r['epoch_50k_s']:.0f} | {r['model_60ep_h']:.2f} |", flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    print(f"\npeak RSS {rss:.2f} GiB; load average {os.getloadavg()[0]:.2f} at end")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
