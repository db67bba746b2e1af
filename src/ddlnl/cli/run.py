"""``ddlnl run``: baselines, the random control and the distilled set, evaluated; writes result.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ddlnl.cli.common import (
    DEFAULTS,
    add_eval_arg,
    add_experiment_args,
    apply_runtime_flags,
    checkpoint_every,
    experiment_spec,
    progress_log,
)


def add_parser(sub) -> None:
    p = sub.add_parser("run", help="baseline + random control + distilled set, evaluated; writes result.json")
    add_experiment_args(p)
    p.add_argument("--out", default=DEFAULTS["out"], help="run folder (default: runs/demo)")
    p.add_argument("--baselines", default="ce", metavar="LIST",
                   help="noisy-label baselines on the full noisy set, comma-separated: ce, gce, sce, coteaching, dividemix, "
                        "cleanlab (optional extra), or 'all' (default: ce; ce always runs)")
    p.add_argument("--json", action="store_true", help="print result.json instead of the table (with --dry-run: the plan as JSON)")
    p.add_argument("--dry-run", action="store_true",
                   help="print the resolved settings and each stage's work and estimated time; train, load and write nothing")
    add_eval_arg(p)
    p.add_argument("--eval-every", type=int, default=0, metavar="N",
                   help="while distilling, every N iterations train one quick network on the current set (a fifth of the "
                        "evaluation epochs) and record its test (and noisy-validation) accuracy in result.json's history; 0: off")
    p.add_argument("--log-dir", default=None, metavar="DIR",
                   help="also write the distillation's loss, the quick accuracies and the final accuracies as TensorBoard "
                        "scalars into DIR (needs the tensorboard extra)")


def main(args) -> int:
    from ddlnl.baselines import parse_baselines
    from ddlnl.results import format_result_table
    from ddlnl.run import run_experiment

    spec = experiment_spec(args, baselines=parse_baselines(args.baselines))
    if args.dry_run:
        from ddlnl.plan import format_plan, plan, write_json_text

        cost = plan(spec)
        print(write_json_text(cost) if args.json else format_plan(cost))
        return 0
    apply_runtime_flags(args)
    log = progress_log(args, sys.stderr if args.json else None)
    result = run_experiment(spec, args.out, log=log, progress=not args.no_progress, checkpoint_every_s=checkpoint_every(args),
                            eval_every=args.eval_every, log_dir=args.log_dir)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        print(format_result_table(result))
        print(f"\nwrote {Path(args.out) / 'result.json'}")
    return 0
