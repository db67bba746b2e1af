"""Re-check the quick preset's tuned choices (versions 3-5) on a validation split of noisy labels.

Versions 3-5 of the quick preset were chosen by clean *test* accuracy, mostly on clean labels
and one seed. This script makes each of those choices again the way a practitioner can: under
the main job's noise (CIFAR-10, symmetric 0.4), each variant is distilled once and its set
trained ``--runs`` times, and the variants are ranked by accuracy on ``data.validation`` held-out
training images scored against their *noisy* labels. The test accuracy is printed beside it
for the record, never used to choose.

Each line is one variant: the preset's current setting first, then the earlier setting that
the version replaced. A choice stands when the current setting's validation accuracy is not
below the earlier one's.

    DDLNL_DATA=... python scripts/recheck_quick_choices.py [--only datm] [--runs 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from ddlnl.errors import DdlnlError
from ddlnl.evaluate import evaluate_synthetic_set
from ddlnl.spec import ExperimentSpec
from ddlnl.utils.io import write_json

FIGURES = ("val_acc", "val_accs", "test_acc", "test_accs", "lr", "distill_s", "eval_s")
# (choice, method, overrides): the current setting (no override) and the one it replaced
VARIANTS = [
    ("datm: 300 matching iterations (v3)", "datm", ()),
    ("datm: 50 matching iterations (v2)", "datm", ("methods.datm.iterations=50",)),
    ("datm: expert lr 0.03, student lr 0.05, lr_lr 1e-4 (v5)", "datm", ()),
    ("datm: expert lr 0.01, student lr 0.01, lr_lr 1e-5 (v4)", "datm",
     ("methods.datm.lr_teacher_expert=0.01", "methods.datm.lr_teacher=0.01", "methods.datm.lr_lr=1.0e-5")),
    ("rcig: lr_images 0.03 (v3)", "rcig", ()),
    ("rcig: lr_images 0.003 (v2)", "rcig", ("methods.rcig.lr_images=0.003",)),
    ("rcig: horizontal-flip copies (v5)", "rcig", ()),
    ("rcig: no flip copies (v4)", "rcig", ("methods.rcig.use_flip=false",)),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--validation", type=int, default=500, help="held-out images per noisy class")
    ap.add_argument("--runs", type=int, default=2, help="evaluation runs per variant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--preset", default="quick", help="smoke: a check that the script runs")
    ap.add_argument("--only", default=None, help="run only this method's variants")
    ap.add_argument("--json", default=None, help="also write the figures here, after each variant; a rerun skips the variants it holds")
    args = ap.parse_args()
    done: dict[tuple, dict] = {}  # a variant listed twice (the current setting) is measured once
    if args.json and Path(args.json).exists():  # resume: what an earlier, interrupted run measured
        for v in json.loads(Path(args.json).read_text())["variants"]:
            done[(v["method"], tuple(v["overrides"]))] = {k: v[k] for k in FIGURES}
    out = []
    for choice, method, overrides in VARIANTS:
        if args.only and method != args.only:
            continue
        key = (method, overrides)
        if key not in done:
            try:
                spec = ExperimentSpec.create(dataset="cifar10", noise=args.noise, rate=args.rate, method=method, ipc=10,
                                             preset=args.preset, seed=args.seed,
                                             overrides=(f"data.validation={args.validation}", *overrides))
                data = spec.prepare_data()
            except DdlnlError as e:
                raise SystemExit(str(e)) from None
            start = time.perf_counter()
            ctx = spec.distill_context(data, "cpu", log=lambda m: None, progress=False)
            synset = spec.distiller().run(ctx, spec.ipc)
            distill_s = time.perf_counter() - start
            ev = evaluate_synthetic_set(synset, spec.resolved.preset, test_images=data.x_test, test_labels=data.y_test,
                                        num_classes=data.num_classes, runs=args.runs, seed=args.seed,
                                        validation=data.validation)
            done[key] = {"val_acc": ev.val_acc_mean, "val_accs": ev.val_accs, "test_acc": ev.acc_mean, "test_accs": ev.accs,
                         "lr": ev.train["lr"], "distill_s": distill_s, "eval_s": ev.seconds}
        r = done[key]
        out.append({"choice": choice, "method": method, "overrides": list(overrides)} | r)
        if args.json:
            write_json(args.json, {"noise": args.noise, "rate": args.rate, "validation_per_class": args.validation,
                                   "runs": args.runs, "seed": args.seed, "variants": out})
        print(f"{choice}: validation {100 * r['val_acc']:.2f} ({' / '.join(f'{100 * a:.2f}' for a in r['val_accs'])}) "
              f"| test {100 * r['test_acc']:.2f} | lr {r['lr']:.4g} | distill {r['distill_s']:.0f} s, "
              f"evaluate {r['eval_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
