"""Share of clean labels among the real images a saved set was made of.

Each image of the set is matched to its nearest training image (exact up to storage
rounding for sets of unmodified real images: random controls, DATM's and DANCE's
initialisations), and the script prints how often that image's noisy label is its clean
label. It tells a filter that removes noise (DATM's expert-prediction filter) from one that
does not (random choice).

    DDLNL_DATA=/work/shared/data python scripts/label_purity.py --noise symmetric --rate 0.4 RUN/init_only.safetensors RUN/random.safetensors

A distilled set whose images moved too far to match is traced through ``--sources``: a set of
unmodified real images it started from slot by slot (RCIG starts from the random control's
draw, so ``--sources RUN/random.safetensors RUN/distilled.safetensors``). For sets with soft
labels the script also prints what the labels a network trains on (softmax of
``ddlnl.decode.training_labels``) say about the slots whose noisy label is wrong.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from ddlnl.data.noise import NoiseSpec
from ddlnl.decode import training_labels
from ddlnl.experiment import prepare_data
from ddlnl.presets import load_preset
from ddlnl.synset import SyntheticSet, match_training_images


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+", help="SyntheticSet files made of real training images")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--noise", default="symmetric")
    ap.add_argument("--rate", type=float, default=None, help="noise rate (default: the noise's own; none for CIFAR-N sets)")
    ap.add_argument("--noise-seed", type=int, default=0)
    ap.add_argument("--preset", default="quick")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--sources", default=None, help="set of unmodified training images the sets' slots started from")
    args = ap.parse_args()
    noise = NoiseSpec.create(args.noise, args.rate, args.noise_seed)
    data = prepare_data(args.dataset, noise, load_preset(args.preset), data_root=args.data_root, seed=args.noise_seed)
    train = data.x_train.float().flatten(1)
    noisy, clean = np.asarray(data.noisy.labels), np.asarray(data.splits.train.labels)
    print(f"{args.dataset} {noise.name}: {len(noisy)} training images, {(noisy != clean).mean():.1%} noisy labels")
    sources = None
    if args.sources:
        sources, why = match_training_images(SyntheticSet.load(args.sources).images, train)
        if sources is None:
            raise SystemExit(f"--sources {args.sources}: {why}")
    for path in args.sets:
        s = SyntheticSet.load(path)
        idx, why = (sources, f"slots traced through {args.sources}") if sources is not None else match_training_images(s.images, train)
        if idx is None:
            print(f"{path}: {why}: not a set of unmodified training images; no label purity (try --sources)")
            continue
        idx = idx.numpy()
        if len(idx) != len(s.images):
            raise SystemExit(f"{path} has {len(s.images)} images but --sources has {len(idx)}")
        print(f"{path}: {len(idx)} images, {why}: clean labels {(noisy[idx] == clean[idx]).mean():.1%}")
        if s.label_kind == "soft":
            report_soft_labels(s, noisy[idx], clean[idx])


def report_soft_labels(s: SyntheticSet, noisy: np.ndarray, clean: np.ndarray) -> None:
    """What the trained-on soft labels put on the given (noisy) and the true class, clean vs mislabelled slots."""
    p = torch.softmax(training_labels(s.labels, s.meta).float(), dim=1).numpy()
    rows = np.arange(len(noisy))
    wrong = noisy != clean
    argmax = p.argmax(1)
    print(f"  soft labels: argmax = noisy label {(argmax == noisy).mean():.1%}, = clean label {(argmax == clean).mean():.1%}; "
          f"p(given class) {p[rows, noisy][~wrong].mean():.3f} on correctly labelled slots")
    if wrong.any():
        rank = (p[wrong] > p[rows[wrong], clean[wrong]][:, None]).sum(1)
        print(f"  on the {int(wrong.sum())} mislabelled slots: p(given class) {p[rows, noisy][wrong].mean():.3f}, "
              f"p(true class) {p[rows, clean][wrong].mean():.3f}, true class ranked first on {(rank == 0).mean():.1%} "
              f"(median rank {int(np.median(rank)) + 1})")

if __name__ == "__main__":
    main()
