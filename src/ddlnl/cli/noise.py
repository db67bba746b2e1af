"""``ddlnl noise``: realise a noise model and print its rate and transition matrix."""

from __future__ import annotations

import json
from pathlib import Path

from ddlnl.cli.common import add_noise_args, noise_spec


def add_parser(sub) -> None:
    p = sub.add_parser("noise", help="realise a noise model and print its rate and transition matrix")
    add_noise_args(p)
    p.add_argument("--json", action="store_true", help='print {"nominal_rate", "actual_rate", "transition", "seed"}')
    p.add_argument("--out", default=None, help="also save noisy_labels.npy and noise.json in this folder")


def main(args) -> int:
    from ddlnl.data.noise import format_transition
    from ddlnl.data.registry import check_dataset_name
    from ddlnl.experiment import prepare_noise_only
    from ddlnl.spec import label_file_digests

    spec = noise_spec(args)
    check_dataset_name(args.dataset)
    label_file_digests(args.dataset, spec, args.labels, args.clean_labels)  # a run's checks: the files exist and fit the noise
    splits, noisy = prepare_noise_only(args.dataset, spec, data_root=args.data_root, imbalance=args.imbalance, seed=args.seed,
                                       labels=args.labels, clean_labels=args.clean_labels)
    if args.out:
        from ddlnl.utils.io import write_json, write_npy

        write_npy(Path(args.out) / "noisy_labels.npy", noisy.labels)
        write_json(Path(args.out) / "noise.json", noisy.summary())
    if args.json:
        s = noisy.summary()
        print(json.dumps({k: s[k] for k in ("nominal_rate", "actual_rate", "transition", "seed")} | {"type": s["type"]}))
        return 0
    print(f"{args.dataset}: {len(noisy.labels)} training labels, noise {spec.type}, seed {spec.seed}")
    if not noisy.clean_known:
        print("no clean labels to compare with: the noise rate and transition are unknown (--clean-labels FILE gives them)")
        return 0
    print(f"nominal rate {noisy.nominal_rate:.4f}   realised rate {noisy.actual_rate:.4f}")
    print("realised transition matrix (rows: true class, columns: noisy label):")
    print(format_transition(noisy.transition, splits.train.classes if splits.num_classes <= 20 else None))
    return 0
