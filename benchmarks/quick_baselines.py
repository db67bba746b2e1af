"""Quick-preset accuracies of the noisy-label baselines, without the distillation stages.

Trains each requested baseline exactly as ``ddlnl run --baselines ...`` does (same
``BaselineContext``, preset, data preparation, noise realisation and seed) and prints one JSON
line per baseline as it finishes: clean test accuracy, wall seconds, images processed.

    DDLNL_DATA=/work/shared/data python benchmarks/quick_baselines.py --noise symmetric --rate 0.4 \\
        --baselines ce,gce,sce,coteaching [--preset quick] [--seed 0] [--set data.validation=500]

``--set`` overrides the preset as ``ddlnl run --set`` does (``ce_selected`` needs a validation
split); a baseline with details (``ce_selected``'s chosen epoch and final-epoch accuracy) prints them.
"""

from __future__ import annotations

import argparse
import json
import time

from ddlnl.baselines import BaselineContext, create_baseline, parse_baselines
from ddlnl.data.noise import NoiseSpec
from ddlnl.experiment import prepare_data
from ddlnl.presets import apply_overrides, load_preset
from ddlnl.utils.runtime import resolve_device, seed_everything


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--baselines", default="ce,gce,sce,coteaching,dividemix")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    args = ap.parse_args()
    preset, _ = apply_overrides(load_preset(args.preset), args.overrides)
    seed_everything(args.seed)
    data = prepare_data(args.dataset, NoiseSpec(args.noise, args.rate, args.seed), preset, data_root=args.data_root, seed=args.seed)
    device = resolve_device(None)
    print(json.dumps({"dataset": args.dataset, "noise": args.noise, "nominal_rate": data.noisy.nominal_rate,
                      "actual_rate": data.noisy.actual_rate, "preset": preset["name"], "n_train": int(data.x_train.shape[0])}), flush=True)
    for name in parse_baselines(args.baselines):
        b = create_baseline(name, **((preset.get("baselines") or {}).get(name) or {}))
        t = time.perf_counter()
        ev = b.run(BaselineContext(data, preset, device=device, seed=args.seed))
        print(json.dumps({"baseline": name, "acc_mean": ev.acc_mean, "acc_std": ev.acc_std, "runs": ev.runs,
                          "seconds": round(time.perf_counter() - t, 1), "images_processed": ev.images_processed,
                          "device": str(device), **({"details": b.details} if getattr(b, "details", None) else {})}),
              flush=True)


if __name__ == "__main__":
    main()
