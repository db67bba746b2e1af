"""Flags shared by several commands, and the one place flags become an :class:`ExperimentSpec`."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ddlnl.errors import ConfigError

DEFAULTS = dict(dataset="cifar10", noise="symmetric", method="datm", ipc=10, preset="quick", out="runs/demo")


def add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="data folder (default: $DDLNL_DATA, else ./data)")


def add_noise_args(p: argparse.ArgumentParser) -> None:
    add_data_args(p)
    p.add_argument("--dataset", default=DEFAULTS["dataset"], help="cifar10, cifar100, cifar100_coarse, tinyimagenet or folder:PATH")
    p.add_argument("--noise", default=None, help="clean, symmetric, symmetric_inclusive, asymmetric, pairflip, instance (instance-dependent, "
                   "Xia et al. 2020), aggre, random1-3, worst, "
                   "noisy100, or given (your own labels, nothing added) (default: symmetric; given with --labels)")
    p.add_argument("--labels", default=None, metavar="FILE",
                   help="your training labels: .npy (one integer per training image, in the dataset's order) or .csv "
                        "(index,label or path,label rows; labels as indices or class names); implies --noise given")
    p.add_argument("--clean-labels", default=None, metavar="FILE",
                   help="clean training labels in the same format, for the analyses that need them (noise rate, label "
                        "purity, selection precision); a benchmark's own labels serve when --labels replaces them")
    p.add_argument("--rate", type=float, default=None, help="nominal noise rate in [0, 1) (synthetic noise only; default 0.4)")
    p.add_argument("--imbalance", type=float, default=None, help="long-tailed training set with imbalance factor rho >= 1")
    p.add_argument("--seed", type=int, default=0, help="run seed (python, numpy, torch)")
    p.add_argument("--noise-seed", type=int, default=None, help="seed of the noise realisation (default: --seed)")


def add_experiment_args(p: argparse.ArgumentParser) -> None:
    add_noise_args(p)
    p.add_argument("--method", default=DEFAULTS["method"], help="distillation method (see `ddlnl methods`)")
    p.add_argument("--ipc", type=int, default=DEFAULTS["ipc"], help="images per class")
    p.add_argument("--preset", default=DEFAULTS["preset"], help="smoke, quick, paper, or a preset YAML path")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a preset value, e.g. --set evaluation.runs=5 (repeatable)")
    p.add_argument("--device", default=None, help="cpu, cuda or auto (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="hide progress bars")
    p.add_argument("--deterministic", action="store_true",
                   help="PyTorch's deterministic algorithms, cuDNN included (same numbers for the same seed on a GPU; slower there)")
    add_precision_arg(p)
    p.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                   help="save the distillation state this often; a rerun of the same command resumes from it (default 300)")
    p.add_argument("--clean-first", default=None, metavar="CLEANER",
                   help="clean, then distil: the method distils only the samples this cleaner keeps from the noisy labels: "
                        "loss_gmm (per-class loss mixture), dividemix (DivideMix's warm-up and co-divide) or cleanlab (optional)")
    p.add_argument("--clean-option", dest="clean_options", action="append", default=[], metavar="KEY=VALUE",
                   help="a cleaner option, e.g. --clean-option threshold=0.6 or epochs=10 (repeatable)")


def add_precision_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default=None, choices=["fp32", "tf32"],
                   help="float32 on CUDA: fp32 (IEEE matmuls and convolutions, as a CPU) or tf32 (TensorFloat-32 tensor "
                        "cores: faster on Ampere and later, 10-bit mantissa); default: PyTorch's (TF32 convolutions, fp32 matmuls)")


def add_eval_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval", dest="eval_protocol", default="common", choices=["common", "native"],
                   help="evaluation recipe: the common protocol (default) or the method's own (DATM, DANCE, RCIG: native_eval in the preset)")


def noise_spec(args):
    """The noise of ``--noise/--rate/--noise-seed`` (``ddlnl noise``, which needs no full experiment)."""
    from ddlnl.data.noise import NoiseSpec
    from ddlnl.spec import check_imbalance, check_seed

    check_seed(args.seed)
    check_imbalance(args.imbalance)
    if args.noise_seed is not None:
        check_seed(args.noise_seed, "--noise-seed")
    noise = args.noise or ("given" if args.labels or args.clean_labels else DEFAULTS["noise"])
    return NoiseSpec.create(noise, args.rate, args.seed if args.noise_seed is None else args.noise_seed)


def experiment_spec(args, *, baselines=("ce",)):
    """The :class:`ExperimentSpec` of ``run`` / ``distill`` flags (checked there, once)."""
    from ddlnl.spec import ExperimentSpec

    return ExperimentSpec.create(dataset=args.dataset, noise=noise_spec(args), method=args.method, ipc=args.ipc, preset=args.preset,
                                 overrides=tuple(args.overrides), seed=args.seed, imbalance=args.imbalance, baselines=tuple(baselines),
                                 eval_protocol=getattr(args, "eval_protocol", "common"), device=args.device, data_root=args.data_root,
                                 labels=args.labels, clean_labels=args.clean_labels,
                                 clean_first=getattr(args, "clean_first", None), clean_options=tuple(getattr(args, "clean_options", ())))


def apply_runtime_flags(args) -> None:
    """Flags that change how, not what, a command computes (result.json's ``machine`` records them)."""
    if getattr(args, "deterministic", False):
        from ddlnl.utils.runtime import set_deterministic

        set_deterministic(True)
    if getattr(args, "precision", None) is not None:
        from ddlnl.utils.runtime import resolve_device, set_precision

        if args.precision == "tf32" and resolve_device(getattr(args, "device", None)).type != "cuda":
            raise ConfigError("--precision tf32 applies to CUDA devices; this command runs on the CPU",
                              "drop --precision (a CPU computes in IEEE fp32), or run on a GPU with --device cuda")
        set_precision(args.precision)


def checkpoint_every(args) -> float:
    v = args.checkpoint_every
    if not v >= 0:
        raise ConfigError(f"--checkpoint-every must be a number of seconds >= 0, got {v}", "pass e.g. --checkpoint-every 300 (0: every iteration)")
    return v


def check_paths(args) -> None:
    """Checks of paths shared by several commands, before any data is loaded."""
    root = getattr(args, "data_root", None)
    if root and Path(root).expanduser().exists() and not Path(root).expanduser().is_dir():
        raise ConfigError(f"--data-root {root} is a file, not a folder", "pass the folder that holds the datasets (or set $DDLNL_DATA)")
    out = getattr(args, "out", None)
    if out and args.command in ("run", "noise", "study") and Path(out).is_file():
        raise ConfigError(f"--out {out} is a file; {args.command} writes a folder there", "pass a new or existing folder for --out")
    if out and args.command == "distill" and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; distill writes one .safetensors file", "pass a file path, e.g. --out set.safetensors")


def add_verbosity_args(p: argparse.ArgumentParser) -> None:
    """``-q`` / ``-v`` on every command: how much of the work's progress it reports."""
    g = p.add_mutually_exclusive_group()
    g.add_argument("-q", "--quiet", action="store_true", help="report only warnings and the result")
    g.add_argument("-v", "--verbose", action="store_true", help="report debug messages too")


def progress_log(args, stream=None):
    """A ``log`` callable for the library's progress messages, through the stdlib logger ``ddlnl``
    (to stdout, or ``stream``): at INFO, or WARNING for ``[ddlnl] warning: ...``; ``-q`` keeps only
    warnings, ``-v`` adds DEBUG. Progress bars are tqdm's and unaffected."""
    import logging

    logger = logging.getLogger("ddlnl")
    logger.handlers.clear()
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.WARNING if getattr(args, "quiet", False) else logging.DEBUG if getattr(args, "verbose", False)
                    else logging.INFO)

    def log(message: str) -> None:
        head = message.split(":", 1)[0].lower()
        logger.log(logging.WARNING if head.endswith("warning") else logging.INFO, message)

    return log
