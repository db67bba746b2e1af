"""Share of clean labels among the real images a saved set was made of.

Each image of the set is matched to its nearest training image (exact up to storage
rounding for sets of unmodified real images: random controls, DATM's and DANCE's
initialisations), and the script prints how often that image's noisy label is its clean
label. It tells a filter that removes noise (DATM's expert-prediction filter) from one that
does not (random choice).

    DDLNL_DATA=/work/shared/data python scripts/label_purity.py --noise symmetric --rate 0.4 RUN/init_only.safetensors RUN/random.safetensors
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ddlnl.data.noise import NoiseSpec
from ddlnl.experiment import prepare_data
from ddlnl.presets import load_preset
from ddlnl.synset import SyntheticSet


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="SyntheticSet files made of real training images")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=0.4)
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args()
    data = prepare_data(args.dataset, NoiseSpec(args.noise, args.rate, args.noise_seed), load_preset(args.preset),
                        data_root=args.data_root, seed=args.noise_seed)
    train = data.x_train.float().flatten(1)
    noisy, clean = np.asarray(data.noisy.labels), np.asarray(data.splits.train.labels)
    print(f"{args.dataset} {args.noise} {args.rate}: {len(noisy)} training images, {(noisy != clean).mean():.1%} noisy labels")
    for path in args.sets:
        s = SyntheticSet.load(path)
        dist, idx = torch.cdist(s.images.float().flatten(1), train).topk(2, dim=1, largest=False)
        match, runner_up, idx = dist[:, 0], dist[:, 1], idx[:, 0].numpy()
        where = f"{path}: {len(idx)} images, match distance <= {float(match.max()):.3g}, next image >= {float(runner_up.min()):.3g}"
        if bool((match > 0.5 * runner_up).any()):
            print(f"{where}: not a set of unmodified training images; no label purity")
        else:
            print(f"{where}: clean labels {(noisy[idx] == clean[idx]).mean():.1%}")


if __name__ == "__main__":
    main()
