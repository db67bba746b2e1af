"""``ddlnl privacy RUN``: membership inference against a finished run's networks; writes privacy.json."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ddlnl.cli.common import add_data_args, apply_runtime_flags, progress_log
from ddlnl.privacy.options import AuditOptions, parse_targets

DEFAULTS = AuditOptions()  # the same defaults as a study's `privacy: true`


def add_parser(sub) -> None:
    p = sub.add_parser("privacy", help="membership-inference audit (loss attack, LiRA) of a run's networks; writes privacy.json")
    add_data_args(p)
    p.add_argument("run", help="a finished run folder (the --out of `ddlnl run`)")
    p.add_argument("--shadows", type=int, default=DEFAULTS.shadows, metavar="K",
                   help="shadow networks per target (even; each audit example is IN for K/2 of them)")
    p.add_argument("--audit-points", type=int, default=DEFAULTS.audit_points, metavar="N",
                   help="members audited (training images), and as many non-members (test images); TPR at 0.1 %% FPR "
                        "needs 1000 or more")
    p.add_argument("--targets", default=",".join(DEFAULTS.targets), metavar="LIST",
                   help="comma-separated: full_noisy, random, distilled, dp_sgd (needs the privacy extra)")
    p.add_argument("--dp-epsilon", type=float, default=DEFAULTS.dp_epsilon, metavar="EPS", help="the DP-SGD target's privacy budget (delta = 1/(10 N), N training images)")
    p.add_argument("--bootstrap", type=int, default=DEFAULTS.bootstrap, metavar="B", help="bootstrap draws for the 95 %% intervals (0: none)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: cuda when available)")
    p.add_argument("--deterministic", action="store_true", help="PyTorch's deterministic algorithms, cuDNN included")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--json", action="store_true", help="print privacy.json instead of the table")


def format_table(result: dict) -> str:
    """One line per target and attack: test accuracy, AUC, balanced accuracy, TPR at 0.1 % and 1 % FPR."""
    from ddlnl.privacy.metrics import METRICS, format_metric

    lines = ["| target | test acc (%) | attack | AUC | bal. acc | TPR@0.1%FPR | TPR@1%FPR |", "|---|---|---|---|---|---|---|"]
    for name, t in result["targets"].items():
        for attack, m in t["attacks"].items():
            cells = [format_metric(m[key]) for key in METRICS]
            lines.append(f"| {name} | {100 * t['test_acc']:.2f} | {attack} | " + " | ".join(cells) + " |")
    leaks = "; ".join(f"{role}: {d['kept_images']} of {d['slots']} slots are training images" for role, d in result["direct_leaks"].items())
    return "\n".join(lines) + f"\n\ndirect leaks: {leaks}"


def main(args) -> int:
    from ddlnl.privacy import audit_run

    apply_runtime_flags(args)
    log = progress_log(args, sys.stderr if args.json else None)
    options = AuditOptions(args.shadows, args.audit_points, parse_targets(args.targets), args.dp_epsilon, args.bootstrap)
    result = audit_run(args.run, **options.to_dict(), data_root=args.data_root, device=args.device, progress=not args.no_progress,
                       log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(format_table(result))
        print(f"\nwrote {Path(args.run) / 'privacy.json'} and {Path(args.run) / result['figure']}")
    return 0
