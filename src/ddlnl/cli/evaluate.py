"""``ddlnl evaluate``: the common protocol (or a method's native one) applied to any saved synthetic set."""

from __future__ import annotations

import json
from pathlib import Path

from ddlnl.cli.common import add_data_args, add_eval_arg, add_precision_arg, apply_runtime_flags
from ddlnl.errors import ConfigError, DataError


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="evaluate a SyntheticSet file (or a DATM/MTT folder) with the common protocol")
    add_data_args(p)
    p.add_argument("set", help="a .safetensors file written by ddlnl, or a folder/file with images_best.pt, labels_best.pt, lr_best.pt")
    p.add_argument("--preset", default=None, help="evaluation recipe (default: the set's preset, else quick)")
    p.add_argument("--runs", type=int, default=None, help="number of fresh networks (default: the preset's)")
    p.add_argument("--dataset", default=None, help="dataset of the test set (required for DATM/MTT files)")
    p.add_argument("--preprocess", default=None, choices=["normalize", "zca", "none"],
                   help="preprocessing for DATM/MTT files (default zca, as DATM uses)")
    p.add_argument("--hard-labels", action="store_true", help="evaluate with argmax labels (the hard-label control)")
    add_eval_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None)
    p.add_argument("--deterministic", action="store_true", help="PyTorch's deterministic algorithms, cuDNN included")
    add_precision_arg(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")


def main(args) -> int:
    result = evaluate_file(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['set']}: {100 * result['acc_mean']:.2f} ± {100 * result['acc_std']:.2f} % clean test accuracy "
              f"over {result['runs']} run(s) ({result['label_kind']} labels, preset {result['preset']})")
    return 0


def set_spec(args, synset):
    """The :class:`ExperimentSpec` a saved set was made under, as far as its file says, with the flags on top."""
    from ddlnl.data.noise import NoiseSpec
    from ddlnl.spec import ExperimentSpec

    meta = synset.meta
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise ConfigError(f"{args.set} does not say which dataset it was distilled from", "pass --dataset, e.g. --dataset cifar10")
    if args.eval_protocol != "common" and not meta.get("method"):
        raise ConfigError(f"{args.set} does not say which method made it, so it has no native recipe", "use --eval common")
    noise = meta.get("noise") or {}
    try:
        noise = NoiseSpec(noise.get("type", "clean"), noise.get("nominal_rate", 0.0), noise.get("seed", 0))
    except ConfigError:
        noise = NoiseSpec("clean")
    # the method matters only for its native recipe ("datm:init_only" -> datm); the common protocol is the same for all
    method = str(meta["method"]).split(":")[0] if args.eval_protocol != "common" else None
    ipc = meta.get("ipc")  # descriptive only: the evaluation does not depend on it
    return ExperimentSpec(dataset=dataset, noise=noise, method=method, ipc=ipc if isinstance(ipc, int) and ipc >= 1 else 1,
                          preset=args.preset or meta.get("preset") or "quick", overrides=tuple(args.overrides), seed=args.seed,
                          imbalance=meta.get("imbalance"), eval_protocol=args.eval_protocol, device=args.device, data_root=args.data_root)


def evaluate_file(args) -> dict:
    import torch

    from ddlnl.data.preprocess import Preprocessor
    from ddlnl.data.registry import load_dataset, resolve_data_root
    from ddlnl.evaluate import evaluate_synthetic_set
    from ddlnl.experiment import test_subset
    from ddlnl.synset import SyntheticSet
    from ddlnl.utils.runtime import resolve_device, seed_everything

    if args.runs is not None and args.runs < 1:
        raise ConfigError(f"--runs must be a positive integer, got {args.runs}", "pass --runs 1 or more")
    synset = SyntheticSet.load(args.set)
    meta = synset.meta
    spec = set_spec(args, synset)
    apply_runtime_flags(args)
    preset = spec.resolved.preset
    runs = args.runs or preset["evaluation"].get("runs", 1)
    splits = load_dataset(spec.dataset, resolve_data_root(spec.data_root), imbalance=spec.imbalance, seed=meta.get("seed", 0))
    num_classes = splits.num_classes
    labels = synset.hard_labels() if args.hard_labels else synset.labels
    # checks of the set against the dataset come before any preprocessing (a ZCA fit takes a while)
    hard = synset.hard_labels()
    if hard.numel() and int(hard.min()) < 0:
        raise DataError(f"{args.set} has negative class labels (min {int(hard.min())})",
                        "labels must be class indices 0..C-1 or (N, C) soft labels; re-create the set")
    if not torch.isfinite(synset.labels.float()).all():
        raise DataError(f"{args.set} has NaN or Inf labels", "the distillation diverged; re-create the set")
    if int(hard.max()) >= num_classes or (labels.ndim == 2 and labels.shape[1] != num_classes):
        raise ConfigError(f"{args.set} has labels for more classes than {spec.dataset}'s {num_classes}", "pass the right --dataset")
    if synset.images.shape[-1] != splits.test.image_size:
        raise ConfigError(f"{args.set} holds {synset.images.shape[-1]} px images but {spec.dataset} has {splits.test.image_size} px images",
                          "pass the --dataset the set was distilled from")
    pre = synset.preprocess
    if meta.get("format") == "datm":
        pre = Preprocessor(args.preprocess or "zca").fit(splits.train.images)
    elif args.preprocess and args.preprocess != pre.kind:
        raise ConfigError(f"{args.set} was made with {pre.kind!r} preprocessing, not {args.preprocess!r}", "drop --preprocess")
    test = test_subset(splits.test, preset["data"], spec.seed)
    seed_everything(spec.seed)
    result = evaluate_synthetic_set(
        synset, preset, labels=labels,
        test_images=pre.apply_uint8(test.images), test_labels=torch.tensor(test.labels, dtype=torch.long),
        num_classes=num_classes, runs=runs, seed=spec.seed, device=resolve_device(spec.device),
        progress=not args.no_progress, desc="evaluate",
    )
    return result.to_dict() | {"set": str(Path(args.set)), "preset": preset["name"], "dataset": spec.dataset,
                               "label_kind": "hard" if args.hard_labels else synset.label_kind, "protocol": spec.eval_protocol}
