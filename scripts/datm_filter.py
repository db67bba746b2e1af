"""How well DATM's initialisation filter ("expert 0 at the label epoch predicts the noisy class") picks
correctly labelled images, over the whole training set, and optionally DATM's initial set itself.

Reads (or trains) the experts of a cell through the expert cache, as ``ddlnl run`` would, and never
trains a distiller. Example (the 100-epoch expert of docs/results.md, "Why DATM's filter denoises")::

    python scripts/datm_filter.py --noise symmetric --rate 0.4 \\
        --set methods.datm.train_epochs=100 --set methods.datm.label_epoch=final --init-out long-init.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ddlnl.data.noise import selection_scores
from ddlnl.distill.datm import expert_logits
from ddlnl.evaluate import build_model
from ddlnl.experts import load_or_train_experts
from ddlnl.spec import ExperimentSpec


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=None)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ipc", type=int, default=10)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--init-out", default=None, help="also write DATM's initial set (the init-only control) here")
    args = ap.parse_args()
    spec = ExperimentSpec.create(dataset=args.dataset, noise=args.noise, rate=args.rate, seed=args.seed, method="datm",
                                 ipc=args.ipc, preset=args.preset, overrides=tuple(args.overrides), data_root=args.data_root)
    data = spec.prepare_data()
    ctx = spec.distill_context(data, "cpu", progress=False, log=lambda m: None)
    datm = spec.distiller()
    options = datm.resolved_options(ctx, args.ipc)
    cfg = datm.expert_config(options)
    experts = load_or_train_experts(ctx, cfg)
    epoch = datm.label_epoch(options)
    net = build_model(ctx.model, ctx.num_classes, ctx.images.shape[-1])
    with torch.no_grad():
        pred = torch.cat([expert_logits(ctx, net, experts[0][cfg.row(epoch)], ctx.images[i:i + 5000]).argmax(1)
                          for i in range(0, len(ctx.images), 5000)]).numpy()
    noisy, clean = np.asarray(data.noisy.labels), np.asarray(data.splits.train.labels)
    correct, kept = noisy == clean, pred == noisy
    s = selection_scores(kept, correct)
    print(f"{spec.noise.name}: expert 0 at epoch {epoch} of {cfg.epochs} predicts the noisy label of {kept.mean():.1%} of the "
          f"training images ({kept[~correct].mean():.1%} of the mislabelled ones); clean-label accuracy {(pred == clean).mean():.1%}; "
          f"filter precision {s['precision']:.1%}, recall {s['recall']:.1%}")
    if args.init_out:
        init = datm.init_only(ctx, args.ipc)
        ctx.stamp_init_index(init)
        init.meta.update(spec.synset_meta(data) | {"method": "datm:init_only", "ipc": args.ipc})
        init.save(args.init_out)
        idx = np.asarray(init.meta["init_index"])
        print(f"initial set: {len(idx)} images, {correct[idx].mean():.1%} correctly labelled -> {args.init_out}")


if __name__ == "__main__":
    main()
