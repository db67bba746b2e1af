"""How fast does this machine train ConvNet-3, compared with its matmul peak?

Prints the fp32 matmul rate (the practical ceiling), then the ConvNet-3 training-step
throughput (forward + cross-entropy + backward + SGD momentum 0.9, wd 5e-4) in eager NCHW,
eager channels_last, eager without oneDNN (PyTorch's im2col + BLAS convolutions) and
torch.compile (NCHW and channels_last), as images/s, effective GFLOP/s and fraction of the
matmul peak. Effective FLOPs are counted from the layer shapes (convs and linear, 2 per
multiply-add) and a train step is taken as 3x the forward. Use the numbers to size presets.

On a CPU with native bf16 (AMX tiles or AVX-512 BF16; ``torch.cpu`` says which) it adds the
compiled step under ``torch.autocast("cpu", torch.bfloat16)``: what a ``precision: bf16`` option
could gain there. Elsewhere bf16 is emulated and the row is left out.

``--profile`` adds where the compiled step's time goes (convolution forward, convolution
backward, everything else: Inductor's fused norm/pool/ReLU kernels and the optimiser), from
torch.profiler. ``--processes`` adds the throughput of two trainings at once, each in its own
process with one thread, against one training with all threads: what running independent
trainings side by side on the CPU's cores would gain.

    python benchmarks/bench_models.py [--steps 8] [--batch 256] [--width 128] [--no-compile] [--profile] [--processes]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F

from ddlnl.models import create_model


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_gflops(n: int, device: torch.device, repeats: int = 5) -> float:
    """Best-of-``repeats`` fp32 GFLOP/s of an n x n matmul."""
    a, b = torch.randn(n, n, device=device), torch.randn(n, n, device=device)
    c = torch.empty(n, n, device=device)
    torch.mm(a, b, out=c)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        torch.mm(a, b, out=c)
        sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 / best / 1e9


def forward_flops(net: nn.Module, x: torch.Tensor) -> tuple[int, list[tuple[str, int]]]:
    """FLOPs of one image's forward pass (convs + linear), with a per-layer breakdown."""
    rows: list[tuple[str, int]] = []

    def hook(name):
        def count(mod, inp, out):
            if isinstance(mod, nn.Conv2d):
                k = mod.kernel_size[0] * mod.kernel_size[1] * mod.in_channels // mod.groups
                rows.append((name, 2 * k * out[0].numel()))
            else:
                rows.append((name, 2 * mod.in_features * mod.out_features))

        return count

    handles = [
        m.register_forward_hook(hook(n))
        for n, m in net.named_modules()
        if isinstance(m, (nn.Conv2d, nn.Linear))
    ]
    with torch.no_grad():
        net(x[:1])
    for h in handles:
        h.remove()
    return sum(f for _, f in rows), rows


def native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AMX tiles or AVX-512 BF16), so that autocast can pay off."""
    return torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()


def time_train_steps(net, x, y, steps: int, warmup: int, bf16: bool = False) -> tuple[float, float]:
    """(seconds of the first step, median seconds of ``steps`` later steps); ``bf16``: forward under CPU autocast."""
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(net(x), y)
        loss.backward()
        opt.step()

    times = []
    for _ in range(1 + warmup + steps):
        sync(x.device)
        t0 = time.perf_counter()
        step()
        sync(x.device)
        times.append(time.perf_counter() - t0)
    return times[0], statistics.median(times[1 + warmup :])


def profile_split(net, x, y, steps: int) -> dict[str, float]:
    """Share of a (compiled) train step's CPU time in convolution forward, backward, and the rest."""
    from torch.profiler import ProfilerActivity, profile

    time_train_steps(net, x, y, 1, warmup=2)
    opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            F.cross_entropy(net(x), y).backward()
            opt.step()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    fwd = sum(e.self_cpu_time_total for e in events if e.key in ("aten::mkldnn_convolution", "aten::_slow_conv2d_forward"))
    bwd = sum(e.self_cpu_time_total for e in events if e.key in ("aten::convolution_backward", "aten::_slow_conv2d_backward"))
    return {"convolution forward": fwd / total, "convolution backward": bwd / total, "everything else": 1 - (fwd + bwd) / total}


def one_thread_worker(args) -> None:
    """(``--worker``) one process, one thread: print seconds per compiled train step."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    net = torch.compile(create_model("convnet", 10, width=args.width, depth=3, norm="instance"))
    x, y = torch.randn(args.batch, 3, 32, 32), torch.randint(10, (args.batch,))
    _, step_s = time_train_steps(net, x, y, args.steps, warmup=2)
    print(step_s, flush=True)


def two_processes(args) -> float:
    """Seconds per step of each of two one-thread trainings run at once (the mean of the two)."""
    cmd = [sys.executable, __file__, "--worker", "--batch", str(args.batch), "--width", str(args.width), "--steps", str(args.steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [float(p.communicate()[0].strip().splitlines()[-1]) for p in procs]
    return sum(outs) / len(outs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=8, help="timed train steps per variant")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile variant")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--profile", action="store_true", help="where the compiled step's time goes")
    ap.add_argument("--processes", action="store_true", help="two one-thread trainings at once against one with all threads")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return one_thread_worker(args)
    device = torch.device(args.device)
    torch.manual_seed(0)

    print(f"torch {torch.__version__}, device {device}, threads {torch.get_num_threads()}"
          + (f", native bf16: {'yes' if native_bf16() else 'no'}" if device.type == "cpu" else ""))
    peak = 0.0
    for n in (2048, 4096):
        rate = matmul_gflops(n, device)
        peak = max(peak, rate)
        print(f"fp32 matmul {n}x{n}: {rate:.1f} GFLOP/s (best of 5)")

    def build():
        torch.manual_seed(0)
        return create_model("convnet", 10, width=args.width, depth=3, norm="instance").to(device)

    x = torch.randn(args.batch, 3, 32, 32, device=device)
    y = torch.randint(10, (args.batch,), device=device)
    fwd, rows = forward_flops(build(), x)
    train = 3 * fwd
    breakdown = ", ".join(f"{n} {f / 1e6:.2f}M" for n, f in rows)
    print(f"ConvNet-3 w{args.width} IN, 32 px: forward {fwd / 1e6:.1f} MFLOP/image ({breakdown})")
    print(f"train step = 3x forward = {train / 1e6:.1f} MFLOP/image, batch {args.batch}\n")

    variants = [("eager NCHW", False, False), ("eager channels_last", True, False)]
    if device.type == "cpu":
        variants.append(("eager NCHW, oneDNN off (im2col + BLAS)", False, False))
    if not args.no_compile:
        variants += [("torch.compile NCHW", False, True), ("torch.compile channels_last", True, True)]
        if device.type == "cpu" and native_bf16():
            variants.append(("torch.compile NCHW, bf16 autocast", False, True))
    results = []
    for label, channels_last, compiled in variants:
        torch.backends.mkldnn.enabled = "oneDNN off" not in label
        net, xb = build(), x
        if channels_last:
            net = net.to(memory_format=torch.channels_last)
            xb = x.to(memory_format=torch.channels_last)
        if compiled:
            net = torch.compile(net)
        first, step_s = time_train_steps(net, xb, y, args.steps, warmup=2 if compiled else 1, bf16="bf16" in label)
        ips = args.batch / step_s
        gf = ips * train / 1e9
        note = f"first step (compile) {first:.1f} s" if compiled else ""
        results.append((label, step_s * 1e3, ips, gf, gf / peak, note))
        print(f"  {label}: {ips:.0f} img/s", flush=True)
    torch.backends.mkldnn.enabled = True

    print(f"\nmatmul peak: {peak:.1f} GFLOP/s\n")
    print("| variant | ms/step | train img/s | effective GFLOP/s | of matmul peak | note |")
    print("|---|---|---|---|---|---|")
    for label, ms, ips, gf, frac, note in results:
        print(f"| {label} | {ms:.0f} | {ips:.0f} | {gf:.1f} | {frac:.0%} | {note} |")
    if args.profile and not args.no_compile:
        split = profile_split(torch.compile(build()), x, y, args.steps)
        print("\ncompiled NCHW step, share of CPU time: " + ", ".join(f"{k} {v:.0%}" for k, v in split.items()))
    if args.processes and device.type == "cpu" and not args.no_compile:
        one = next(ms for label, ms, *_ in results if label == "torch.compile NCHW") / 1e3
        each = two_processes(args)
        print(f"\ncompiled NCHW: one training with {torch.get_num_threads()} threads {one * 1e3:.0f} ms/step; two at once, "
              f"one thread each, {each * 1e3:.0f} ms/step each: {2 * one / each:.2f}x the steps per second")


if __name__ == "__main__":
    main()
