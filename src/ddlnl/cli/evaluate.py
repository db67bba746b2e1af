"""``ddlnl evaluate``: the common protocol applied to any saved synthetic set."""

from __future__ import annotations

from pathlib import Path

import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.data.registry import load_dataset, resolve_data_root
from ddlnl.errors import ConfigError, DataError
from ddlnl.evaluate import evaluate_synthetic_set
from ddlnl.experiment import stratified_subsample
from ddlnl.presets import apply_overrides, evaluation_for, load_preset
from ddlnl.synset import SyntheticSet
from ddlnl.utils.runtime import resolve_device, seed_everything


def evaluate_file(args) -> dict:
    synset = SyntheticSet.load(args.set)
    meta = synset.meta
    dataset = args.dataset or meta.get("dataset")
    if not dataset:
        raise ConfigError(f"{args.set} does not say which dataset it was distilled from", "pass --dataset, e.g. --dataset cifar10")
    preset, _ = apply_overrides(load_preset(args.preset or meta.get("preset") or "quick"), args.overrides)
    protocol = getattr(args, "eval_protocol", "common")
    if protocol != "common" and not meta.get("method"):
        raise ConfigError(f"{args.set} does not say which method made it, so it has no native recipe", "use --eval common")
    preset["evaluation"] = evaluation_for(preset, meta.get("method", ""), protocol)
    if args.runs is not None and args.runs < 1:
        raise ConfigError(f"--runs must be at least 1, got {args.runs}", "pass --runs 1 or more")
    runs = args.runs or preset["evaluation"].get("runs", 1)
    root = resolve_data_root(args.data_root)
    splits = load_dataset(dataset, root, imbalance=meta.get("imbalance"), seed=meta.get("seed", 0))
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
        raise ConfigError(f"{args.set} has labels for more classes than {dataset}'s {num_classes}", "pass the right --dataset")
    if synset.images.shape[-1] != splits.test.image_size:
        raise ConfigError(f"{args.set} holds {synset.images.shape[-1]} px images but {dataset} has {splits.test.image_size} px images",
                          "pass the --dataset the set was distilled from")
    pre = synset.preprocess
    if meta.get("format") == "datm":
        pre = Preprocessor(args.preprocess or "zca").fit(splits.train.images)
    elif args.preprocess and args.preprocess != pre.kind:
        raise ConfigError(f"{args.set} was made with {pre.kind!r} preprocessing, not {args.preprocess!r}", "drop --preprocess")
    test = splits.test
    if preset["data"].get("test_size"):
        test = test.subset(stratified_subsample(test.labels, int(preset["data"]["test_size"]), args.seed))
    seed_everything(args.seed)
    result = evaluate_synthetic_set(
        synset, preset, labels=labels,
        test_images=pre.apply_uint8(test.images), test_labels=torch.tensor(test.labels, dtype=torch.long),
        num_classes=num_classes, runs=runs, seed=args.seed, device=resolve_device(args.device),
        progress=not args.no_progress, desc="evaluate",
    )
    return result.to_dict() | {"set": str(Path(args.set)), "preset": preset["name"], "dataset": dataset,
                               "label_kind": "hard" if args.hard_labels else synset.label_kind, "protocol": protocol}
