"""Seconds per RCIG outer iteration and peak RSS, per formulation and inverse-Hessian solver.

CIFAR-10 shapes (3x32x32, 10 classes), random "real" images, RCIG's ConvNet with
softplus(60). One outer iteration = the whole of ``RCIG.distill``'s loop body: inner solve,
outer loss and direct gradient, g_t, inverse-Hessian product, implicit gradient, AdaBelief
step, EMA, pool training (the mean of randint(1, 16) steps, i.e. 8). Learning rates are fixed
(no tuning) so every configuration does the same work. Each configuration runs in a fresh
subprocess, so its peak RSS (ru_maxrss) is its own.

    .venv/bin/python benchmarks/bench_rcig.py                                 # IPC 1/10/50, w128 (slow on a CPU)
    .venv/bin/python benchmarks/bench_rcig.py --ipc 10 --width 16 --formulations jvp vjp --solvers cg adam
    .venv/bin/python benchmarks/bench_rcig.py --hvp --ipc 1 10 --width 16     # one HVP: closed form vs forward-over-reverse
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time


def worker(a) -> dict:
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    from ddlnl.data.preprocess import Preprocessor
    from ddlnl.distill import DistillContext
    from ddlnl.distill.rcig import RCIG

    n_real = max(a.batch_real, 10 * a.ipc) * 2
    labels = np.arange(n_real) % 10
    images = torch.randn(n_real, 3, 32, 32)
    ctx = DistillContext("bench", images, labels, 10, Preprocessor("none"), {"name": "convnet"}, seed=0, log=lambda m: None)
    d = RCIG(iterations=a.warmup + a.repeats, width=a.width, pool_size=2, batch_real=a.batch_real, inner_steps=a.steps,
             hinv_steps=a.steps, hinv_solver=a.solver, formulation=a.formulation, inner_lr=1e-3, hvp_lr=1e-3,
             use_flip=not a.no_flip, pool_max_steps=2, log_every=10**6)
    # time each iteration through the distiller's own loop
    times: list[float] = []
    orig = d.train_pool_model

    def timed_pool(*args, **kw):  # pool training: RCIG's mean of 8 steps
        args = list(args)
        args[7] = 8
        out = orig(*args, **kw)
        times.append(time.perf_counter())
        return out

    d.train_pool_model = timed_pool
    t0 = time.perf_counter()
    d.run(ctx, a.ipc)
    stamps = [t0] + times
    per_iter = [b - c for b, c in zip(stamps[1:], stamps[:-1])][a.warmup:]
    return {"ipc": a.ipc, "width": a.width, "formulation": a.formulation, "solver": a.solver, "steps": a.steps,
            "batch_real": a.batch_real, "flip": not a.no_flip, "s_per_iter": statistics.median(per_iter),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, "threads": a.threads}


def hvp_table(a) -> None:
    """ms per Hessian-vector product of the inner problem: RCIG's closed form (one J, one J^T) vs
    forward-over-reverse AD of L_in (``jvp(grad(L_in))``), on the coreset (flips included)."""
    import torch

    torch.set_num_threads(a.threads)
    from ddlnl.distill import rcig_math as R
    from ddlnl.models import create_model
    from ddlnl.models.functional import flatten_params

    print("| IPC | width | coreset rows | closed form, jvp (ms) | closed form, vjp (ms) | forward-over-reverse (ms) |")
    print("|---|---|---|---|---|---|")
    for ipc in a.ipc:
        torch.manual_seed(0)
        net = create_model("rcig_convnet", 10, width=a.width, softplus_temp=60.0).requires_grad_(False)
        th, mask = flatten_params(net), R.tangent_mask(net)
        n = 10 * ipc * (1 if a.no_flip else 2)
        x, y = torch.randn(n, 3, 32, 32), torch.randn(n, 10)
        delta, v = 1e-3 * torch.randn_like(th) * mask, torch.randn_like(th) * mask
        row = []
        for form in ("jvp", "vjp"):
            prob = R.InnerProblem(R.Linearised(net, th, x, formulation=form, mask=mask), y, 5e-4 * 10 * ipc)
            prob.hvp(v)
            t0 = time.perf_counter()
            for _ in range(a.repeats):
                prob.hvp(v)
            row.append(1000 * (time.perf_counter() - t0) / a.repeats)
        R.hvp_forward_over_reverse(net, th, x, y, 5e-4 * 10 * ipc, delta, v, mask)
        t0 = time.perf_counter()
        for _ in range(a.repeats):
            R.hvp_forward_over_reverse(net, th, x, y, 5e-4 * 10 * ipc, delta, v, mask)
        row.append(1000 * (time.perf_counter() - t0) / a.repeats)
        print(f"| {ipc} | {a.width} | {n} | {row[0]:.0f} | {row[1]:.0f} | {row[2]:.0f} |", flush=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ipc", type=int, nargs="+", default=[1, 10, 50])
    p.add_argument("--width", type=int, default=128)
    p.add_argument("--formulations", nargs="+", default=["jvp", "vjp"], choices=["jvp", "linearize", "vjp"])
    p.add_argument("--solvers", nargs="+", default=["cg", "adam"], choices=["cg", "adam"])
    p.add_argument("--steps", type=int, default=20, help="inner and inverse-Hessian steps")
    p.add_argument("--batch-real", type=int, default=1024)
    p.add_argument("--no-flip", action="store_true")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--timeout", type=float, default=3600)
    p.add_argument("--hvp", action="store_true", help="time one Hessian-vector product per formulation instead")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--formulation", default="jvp", help=argparse.SUPPRESS)
    p.add_argument("--solver", default="cg", help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.worker:
        a.ipc = a.ipc[0]
        print(json.dumps(worker(a)))
        return 0
    if a.hvp:
        hvp_table(a)
        return 0
    print("| IPC | width | formulation | H^-1 solver | steps | real batch | flip | s / iter | peak RSS (GiB) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for ipc in a.ipc:
        for form in a.formulations:
            for solver in a.solvers:
                cmd = [sys.executable, __file__, "--worker", "--ipc", str(ipc), "--width", str(a.width), "--formulation", form,
                       "--solver", solver, "--steps", str(a.steps), "--batch-real", str(a.batch_real), "--repeats",
                       str(a.repeats), "--warmup", str(a.warmup), "--threads", str(a.threads)] + (["--no-flip"] if a.no_flip else [])
                row = f"| {ipc} | {a.width} | {form} | {solver} | {a.steps} | {a.batch_real} | {not a.no_flip} |"
                try:
                    out = subprocess.run(cmd, check=False, capture_output=True, text=True, timeout=a.timeout)
                except subprocess.TimeoutExpired:
                    print(f"{row} timeout > {a.timeout:.0f} s | |", flush=True)
                    continue
                if out.returncode != 0:
                    err = (out.stderr.strip().splitlines() or ["?"])[-1]
                    print(f"{row} failed: {err} | |", flush=True)
                    continue
                r = json.loads(out.stdout.strip().splitlines()[-1])
                print(f"{row} {r['s_per_iter']:.2f} | {r['peak_rss_gib']:.2f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
