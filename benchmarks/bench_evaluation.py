"""What one evaluation run of a distilled set costs, eager against torch.compile.

The protocol trains a fresh network on the set for the preset's epochs and tests it on the
10,000 test images; on this CPU that training dominates every quick run (DANCE's 400 decoded
images at IPC 10 most of all). For each set size this times two evaluation trainings of
``--epochs`` epochs each with the preset's recipe (random CIFAR-shaped data, the preset's
network): the first includes any compiling, the second shows the steady rate. Which batches
are compiled is decided as in a full run of the preset's epochs (the trainer's
COMPILE_MIN_IMAGES is scaled to the timed epochs). It prints seconds per epoch, the compile
overhead and the projected seconds of one run at the preset's epochs.

    python benchmarks/bench_evaluation.py [--preset quick] [--sizes 10,100,400,500] [--epochs 40]
"""

from __future__ import annotations

import argparse
import resource
import time

import torch

import ddlnl.train as trainer
from ddlnl.evaluate import build_model
from ddlnl.presets import load_preset
from ddlnl.train import TrainConfig, train_network
from ddlnl.utils.runtime import generator


def time_training(n: int, cfg: TrainConfig, model: dict, seed: int) -> float:
    x, y = torch.randn(n, 3, 32, 32), torch.randint(0, 10, (n,))
    torch.manual_seed(seed)
    net = build_model(model, 10, 32)
    t0 = time.perf_counter()
    train_network(net, x, y, cfg, generator=generator(seed))
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--sizes", default="10,100,400,500", help="training-set sizes (IPC x classes; DANCE IPC 10 decodes to 400)")
    ap.add_argument("--epochs", type=int, default=40, help="epochs timed per training (the projection scales them)")
    args = ap.parse_args()
    preset = load_preset(args.preset)
    train = dict(preset["evaluation"]["train"])
    full_epochs = train["epochs"]
    # Route batches to the compiled module exactly as a run of full_epochs would.
    trainer.COMPILE_MIN_IMAGES = trainer.COMPILE_MIN_IMAGES * args.epochs / full_epochs
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; preset {preset['name']} v{preset['version']}: "
          f"model {preset['model']}, evaluation.train {train}")
    print(f"timed: 2 trainings of {args.epochs} epochs per row (the first pays any compile); projection: one run of {full_epochs} epochs\n")
    print("| set size | compile | s / epoch (steady) | img/s | compile overhead (s) | projected s / run |")
    print("|---|---|---|---|---|---|")
    for n in (int(s) for s in args.sizes.split(",")):
        for compiled in (False, True):
            cfg = TrainConfig.from_dict({**train, "epochs": args.epochs, "compile": compiled})
            first = time_training(n, cfg, preset["model"], 0)
            steady = time_training(n, cfg, preset["model"], 1)
            per_epoch = steady / args.epochs
            overhead = max(first - steady, 0.0)
            print(f"| {n} | {compiled} | {per_epoch:.3f} | {n / per_epoch:.0f} | {overhead:.1f} | {per_epoch * full_epochs + overhead:.0f} |", flush=True)
    print(f"\npeak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GiB")


if __name__ == "__main__":
    main()
