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
    from ddlnl.data.types import check_ipc
    from ddlnl.utils.runtime import resolve_device, seed_everything

    spec = experiment_spec(args)
    apply_runtime_flags(args)
    distiller = spec.distiller()
    device = resolve_device(spec.device)
    seed_everything(spec.seed)
    data = spec.prepare_data()
    check_ipc(data.noisy.labels, data.num_classes, spec.ipc)
    ctx = spec.distill_context(data, device, log=progress_log(args), progress=not args.no_progress, checkpoint=Path(str(args.out) + ".checkpoint.pt"),
                               checkpoint_every_s=checkpoint_every(args))
    synset = distiller.run(ctx, spec.ipc)
    synset.meta.update(spec.synset_meta(data) | {"timings_s": ctx.timings})
    synset.save(args.out)
    ctx.checkpoint.unlink(missing_ok=True)  # the set is written: an interrupted run no longer needs it
    print(f"wrote {args.out} ({synset.images.shape[0]} images, {synset.label_kind} labels) in {ctx.timings.get('distill', 0):.1f} s")
    return 0
