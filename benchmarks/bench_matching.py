"""Seconds per outer iteration and peak RSS of trajectory matching, per gradient mode.

CIFAR-10 shapes (3x32x32, 10 classes), ConvNet-3 with instance norm, random images and a
random "expert" pair (theta_t, theta_t+M). One outer iteration = ddlnl.distill.matching's
match_trajectory (N student steps forward and the gradient to images, lr and soft labels)
plus the SGD updates a distiller makes. Every configuration runs in a fresh subprocess so
the reported peak RSS (ru_maxrss) belongs to that configuration alone.

    .venv/bin/python benchmarks/bench_matching.py                      # the full grid (slow on a CPU)
    .venv/bin/python benchmarks/bench_matching.py --ipc 10 --steps 20 40 --modes exact tesla
    .venv/bin/python benchmarks/bench_matching.py --ipc 10 --steps 20 --modes exact exact-compiled

``exact-compiled`` / ``tesla-compiled`` run the steps through matching.CompiledSteps (option
``compile: true``), ``exact-graphs`` / ``tesla-graphs`` the same with ``compile_mode:
reduce-overhead`` (CUDA graphs on a GPU); the "first iter" column includes tracing and
compiling the graphs. ``--device cuda`` times on a GPU (peak memory is then the GPU's).

batch_syn defaults to the whole set (10 x IPC, as DATM at IPC 1/10/50); --batch-syn caps it.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def worker(args) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from ddlnl.distill.matching import CompiledSteps, make_plan, match_trajectory
    from ddlnl.evaluate import build_model
    from ddlnl.models.functional import flatten_params

    device = torch.device(args.device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    torch.manual_seed(0)
    net = build_model({"name": "convnet", "width": args.width, "depth": 3, "norm": "instance"}, 10, 32).to(device)
    net.requires_grad_(False)
    start = flatten_params(net)
    target = start + 0.01 * torch.randn_like(start)
    n = 10 * args.ipc
    bsyn = min(args.batch_syn or n, n)
    images = torch.randn(n, 3, 32, 32, device=device)
    labels = (torch.randn(n, 10) if args.soft else torch.arange(10).repeat_interleave(args.ipc)).to(device)
    lr = torch.tensor(0.01, device=device)
    g = torch.Generator().manual_seed(0)
    mode, _, how = args.mode.partition("-")
    steps = CompiledSteps(net, "reduce-overhead" if how == "graphs" else "default") if how else None
    times, first = [], None
    for it in range(args.warmup + args.repeats):
        plan = make_plan(n, args.steps, bsyn, generator=g, dsa_strategy="color_crop_cutout_flip_scale_rotate", image_size=32)
        sync()
        t0 = time.perf_counter()
        r = match_trajectory(net, start, target, images, labels, lr, plan, mode=mode, steps=steps)
        with torch.no_grad():
            images -= 100.0 * r.grad_images
            lr = lr - 1e-5 * r.grad_lr
        sync()
        dt = time.perf_counter() - t0
        first = dt if first is None else first
        if it >= args.warmup:
            times.append(dt)
    rss_gib = (torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda"
               else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20)
    # Contention yardstick: one plain training step (forward + backward) on the same batch,
    # timed right after, so "syn-step / train-step" is comparable across loaded and idle hosts.
    from ddlnl.train import label_loss

    net.requires_grad_(True)
    ref = []
    for _ in range(3):
        sync()
        t0 = time.perf_counter()
        label_loss(net(images[:bsyn]), labels[:bsyn]).backward()
        sync()
        ref.append(time.perf_counter() - t0)
    return {"ipc": args.ipc, "batch_syn": bsyn, "steps": args.steps, "mode": args.mode, "width": args.width,
            "s_per_iter": statistics.median(times), "ms_per_step": 1000 * statistics.median(times) / args.steps,
            "peak_rss_gib": rss_gib, "repeats": len(times), "threads": args.threads,
            "train_step_ms": 1000 * statistics.median(ref), "first_iter_s": first}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--steps", type=int, nargs="+", default=[20, 40, 80])
    p.add_argument("--modes", nargs="+", default=["exact", "naive", "tesla"], choices=["exact", "naive", "tesla", "exact-compiled", "tesla-compiled", "exact-graphs", "tesla-graphs"])
    p.add_argument("--device", default="cpu", help="cpu or cuda")
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--batch-syn", type=int, default=None)
    p.add_argument("--soft", action="store_true", help="soft (learned) labels, as DATM")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600, help="seconds per configuration")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--mode", default="exact", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        args.ipc, args.steps = args.ipc[0], args.steps[0]
        print(json.dumps(worker(args)))
        return 0
    print(f"device {args.device}")
    print("| IPC | batch_syn | syn_steps | mode | width | s / iter | ms / syn-step | syn-step / train-step | peak memory (GiB) | first iter (s) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for ipc in args.ipc:
        for steps in args.steps:
            for mode in args.modes:
                cmd = [sys.executable, __file__, "--worker", "--ipc", str(ipc), "--steps", str(steps), "--mode", mode,
                       "--width", str(args.width), "--repeats", str(args.repeats), "--warmup", str(args.warmup),
                       "--threads", str(args.threads), "--device", args.device] + (["--batch-syn", str(args.batch_syn)] if args.batch_syn else []) \
                    + (["--soft"] if args.soft else [])
                try:
                    out = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
                except subprocess.TimeoutExpired:
                    print(f"| {ipc} | | {steps} | {mode} | {args.width} | timeout > {args.timeout:.0f} s | | | | |", flush=True)
                    continue
                if out.returncode != 0:
                    err = (out.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"| {ipc} | | {steps} | {mode} | {args.width} | failed: {err} | | | | |", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"| {ipc} | {r['batch_syn']} | {steps} | {mode} | {r['width']} | {r['s_per_iter']:.2f} | "
                      f"{r['ms_per_step']:.0f} | {r['ms_per_step'] / r['train_step_ms']:.1f} | {r['peak_rss_gib']:.2f} | "
                      f"{r['first_iter_s']:.1f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
