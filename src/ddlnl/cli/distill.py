"""``ddlnl distill``: distil a noisy training set into a SyntheticSet file."""

from __future__ import annotations

from pathlib import Path

from ddlnl.cli.common import (
    add_experiment_args,
    apply_runtime_flags,
    checkpoint_every,
    experiment_spec,
    progress_log,
)


def add_parser(sub) -> None:
    p = sub.add_parser("distill", help="distil a noisy training set into a SyntheticSet file")
    add_experiment_args(p)
    p.add_argument("--out", required=True, help="output .safetensors file")


def main(args) -> int:
    from ddlnl.api import distill

    spec = experiment_spec(args)
    apply_runtime_flags(args)
    checkpoint = Path(str(args.out) + ".checkpoint.pt")
    synset = distill(spec, log=progress_log(args), progress=not args.no_progress, checkpoint=checkpoint,
                     checkpoint_every_s=checkpoint_every(args))
    synset.save(args.out)
    checkpoint.unlink(missing_ok=True)  # the set is written: an interrupted run no longer needs it
    cleaned = synset.meta.get("clean_first")
    if cleaned:
        print(f"cleaned first with {cleaned['cleaner']}: kept {cleaned['kept']} training images "
              f"({synset.meta['timings_s']['clean_first']:.1f} s, {cleaned['images_processed']:,} images processed)")
    print(f"wrote {args.out} ({synset.images.shape[0]} images, {synset.label_kind} labels) in {synset.meta['timings_s'].get('distill', 0):.1f} s")
    return 0
