"""The ``ddlnl`` command line: run, noise, distill, evaluate, data.

Every error a user can fix prints one paragraph (problem and fix) and exits with status 2;
``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import json
import math
import sqlite3
import sys
from pathlib import Path

from ddlnl.errors import ConfigError, DataError, DdlnlError
from ddlnl.study_cli import COMMANDS as STUDY_COMMANDS
from ddlnl.study_cli import add_parsers as add_study_parsers

DEFAULTS = dict(dataset="cifar10", noise="symmetric", rate=0.4, method="datm", ipc=10, preset="quick", out="runs/demo")


def _add_data_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data-root", default=None, help="data folder (default: $DDLNL_DATA, else ./data)")


def _add_experiment_args(p: argparse.ArgumentParser, *, with_method: bool = True) -> None:
    _add_data_args(p)
    p.add_argument("--dataset", default=DEFAULTS["dataset"], help="cifar10, cifar100, cifar100_coarse, tinyimagenet or folder:PATH")
    p.add_argument("--noise", default=DEFAULTS["noise"], help="clean, symmetric, symmetric_inclusive, asymmetric, pairflip, aggre, random1-3, worst, noisy100")
    p.add_argument("--rate", type=float, default=None, help="nominal noise rate in [0, 1) (synthetic noise only; default 0.4)")
    p.add_argument("--imbalance", type=float, default=None, help="long-tailed training set with imbalance factor rho >= 1")
    p.add_argument("--seed", type=int, default=0, help="run seed (python, numpy, torch)")
    p.add_argument("--noise-seed", type=int, default=None, help="seed of the noise realisation (default: --seed)")
    if with_method:
        p.add_argument("--method", default=DEFAULTS["method"], help="distillation method (see `ddlnl methods`)")
        p.add_argument("--ipc", type=int, default=DEFAULTS["ipc"], help="images per class")
        p.add_argument("--preset", default=DEFAULTS["preset"], help="smoke, quick, paper, or a preset YAML path")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a preset value, e.g. --set evaluation.runs=5 (repeatable)")
        p.add_argument("--device", default=None, help="cpu, cuda or auto (default: cuda when available)")
        p.add_argument("--no-progress", action="store_true", help="hide progress bars")
        p.add_argument("--checkpoint-every", type=float, default=300.0, metavar="SECONDS",
                       help="save the distillation state this often; a rerun of the same command resumes from it (default 300)")


def _add_eval_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--eval", dest="eval_protocol", default="common", choices=["common", "native"],
                   help="evaluation recipe: the common protocol (default) or the method's own (DANCE, RCIG: native_eval in the preset)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ddlnl", description="Dataset distillation as a label denoiser: measured.")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    sub = parser.add_subparsers(dest="command")

    p = sub.add_parser("run", help="baseline + random control + distilled set, evaluated; writes result.json")
    _add_experiment_args(p)
    p.add_argument("--out", default=DEFAULTS["out"], help="run folder (default: runs/demo)")
    p.add_argument("--baselines", default="ce", metavar="LIST",
                   help="noisy-label baselines on the full noisy set, comma-separated: ce, gce, sce, coteaching, dividemix, "
                        "cleanlab (optional extra), or 'all' (default: ce; ce always runs)")
    p.add_argument("--json", action="store_true", help="print result.json instead of the table")
    _add_eval_arg(p)

    p = sub.add_parser("noise", help="realise a noise model and print its rate and transition matrix")
    _add_experiment_args(p, with_method=False)
    p.add_argument("--json", action="store_true", help='print {"nominal_rate", "actual_rate", "transition", "seed"}')
    p.add_argument("--out", default=None, help="also save noisy_labels.npy and noise.json in this folder")

    p = sub.add_parser("distill", help="distil a noisy training set into a SyntheticSet file")
    _add_experiment_args(p)
    p.add_argument("--out", required=True, help="output .safetensors file")

    p = sub.add_parser("evaluate", help="evaluate a SyntheticSet file (or a DATM/MTT folder) with the common protocol")
    _add_data_args(p)
    p.add_argument("set", help="a .safetensors file written by ddlnl, or a folder/file with images_best.pt, labels_best.pt, lr_best.pt")
    p.add_argument("--preset", default=None, help="evaluation recipe (default: the set's preset, else quick)")
    p.add_argument("--runs", type=int, default=None, help="number of fresh networks (default: the preset's)")
    p.add_argument("--dataset", default=None, help="dataset of the test set (required for DATM/MTT files)")
    p.add_argument("--preprocess", default=None, choices=["normalize", "zca", "none"],
                   help="preprocessing for DATM/MTT files (default zca, as DATM uses)")
    p.add_argument("--hard-labels", action="store_true", help="evaluate with argmax labels (the hard-label control)")
    _add_eval_arg(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--device", default=None)
    p.add_argument("--json", action="store_true")
    p.add_argument("--no-progress", action="store_true")

    p = sub.add_parser("data", help="what datasets are in the data root, and are they intact")
    p.add_argument("action", choices=["list", "check"])
    p.add_argument("names", nargs="*", help="datasets to check (default: all found)")
    _add_data_args(p)
    p.add_argument("--json", action="store_true")

    sub.add_parser("methods", help="list distillation methods and presets")
    add_study_parsers(sub)
    return parser


def _checkpoint_every(args) -> float:
    v = args.checkpoint_every
    if not v >= 0:
        raise ConfigError(f"--checkpoint-every must be a number of seconds >= 0, got {v}", "pass e.g. --checkpoint-every 300 (0: every iteration)")
    return v


def _noise_spec(args):
    from ddlnl.data.noise import HUMAN_NOISE, NoiseSpec

    rate = args.rate
    if rate is None:
        rate = 0.0 if args.noise in HUMAN_NOISE or args.noise == "clean" else DEFAULTS["rate"]
    return NoiseSpec(args.noise, rate, args.seed if args.noise_seed is None else args.noise_seed)


def cmd_run(args) -> int:
    from ddlnl.baselines import parse_baselines
    from ddlnl.run import RunConfig, format_result_table, run_experiment

    spec = _noise_spec(args)
    cfg = RunConfig(dataset=args.dataset, noise=spec.type, rate=spec.rate, method=args.method, ipc=args.ipc, preset=args.preset,
                    out=args.out, seed=args.seed, noise_seed=spec.seed, data_root=args.data_root, imbalance=args.imbalance,
                    device=args.device, overrides=args.overrides, progress=not args.no_progress,
                    baselines=parse_baselines(args.baselines), eval_protocol=args.eval_protocol,
                    checkpoint_every_s=_checkpoint_every(args))
    log = (lambda m: print(m, file=sys.stderr)) if args.json else print
    result = run_experiment(cfg, log=log)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print()
        print(format_result_table(result))
        print(f"\nwrote {Path(args.out) / 'result.json'}")
    return 0


def cmd_noise(args) -> int:
    from ddlnl.data.noise import format_transition
    from ddlnl.experiment import prepare_noise_only

    spec = _noise_spec(args)
    splits, noisy = prepare_noise_only(args.dataset, spec, data_root=args.data_root, imbalance=args.imbalance, seed=args.seed)
    if args.out:
        from ddlnl.utils.io import write_json, write_npy

        write_npy(Path(args.out) / "noisy_labels.npy", noisy.labels)
        write_json(Path(args.out) / "noise.json", noisy.summary())
    if args.json:
        s = noisy.summary()
        print(json.dumps({k: s[k] for k in ("nominal_rate", "actual_rate", "transition", "seed")} | {"type": s["type"]}))
        return 0
    print(f"{args.dataset}: {len(noisy.labels)} training labels, noise {spec.type}, seed {spec.seed}")
    print(f"nominal rate {noisy.nominal_rate:.4f}   realised rate {noisy.actual_rate:.4f}")
    print("realised transition matrix (rows: true class, columns: noisy label):")
    print(format_transition(noisy.transition, splits.train.classes if splits.num_classes <= 20 else None))
    return 0


def cmd_distill(args) -> int:
    from ddlnl.distill import DistillContext, create_distiller
    from ddlnl.experiment import prepare_data
    from ddlnl.presets import apply_overrides, load_preset, method_options
    from ddlnl.run import _synset_meta
    from ddlnl.utils.runtime import resolve_device, seed_everything

    spec = _noise_spec(args)
    preset, applied = apply_overrides(load_preset(args.preset), args.overrides)
    distiller = create_distiller(args.method, **method_options(preset, args.method))
    device = resolve_device(args.device)
    seed_everything(args.seed)
    data = prepare_data(args.dataset, spec, preset, data_root=args.data_root, imbalance=args.imbalance, seed=args.seed)
    ctx = DistillContext(args.dataset, data.x_train, data.noisy.labels, data.num_classes, data.preprocess, preset["model"],
                         device, args.seed, progress=not args.no_progress, noise={"type": spec.type, "rate": spec.rate},
                         checkpoint=Path(str(args.out) + ".checkpoint.pt"), checkpoint_every_s=_checkpoint_every(args))
    synset = distiller.run(ctx, args.ipc)
    config = {"dataset": args.dataset, "overrides": applied, "seed": args.seed, "imbalance": args.imbalance}
    synset.meta.update(_synset_meta(config, data, preset) | {"timings_s": ctx.timings})
    synset.save(args.out)
    ctx.checkpoint.unlink(missing_ok=True)  # the set is written: an interrupted run no longer needs it
    print(f"wrote {args.out} ({synset.images.shape[0]} images, {synset.label_kind} labels) in {ctx.timings.get('distill', 0):.1f} s")
    return 0


def cmd_evaluate(args) -> int:
    from ddlnl.evaluation_cli import evaluate_file

    result = evaluate_file(args)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['set']}: {100 * result['acc_mean']:.2f} ± {100 * result['acc_std']:.2f} % clean test accuracy "
              f"over {result['runs']} run(s) ({result['label_kind']} labels, preset {result['preset']})")
    return 0


def cmd_data(args) -> int:
    from ddlnl.data.check import check_data, describe_data_root, format_table
    from ddlnl.data.registry import resolve_data_root

    root = resolve_data_root(args.data_root)
    if not root.is_dir():
        print(f"ddlnl data: note: the data root {root} does not exist; pass --data-root or set $DDLNL_DATA", file=sys.stderr)
    rows = describe_data_root(root) if args.action == "list" else check_data(root, args.names or None)
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        print(f"data root: {root}")
        print(format_table(rows))
    bad = [r for r in rows if not r.get("ok", True)] if args.action == "check" else []
    if bad:  # the table says what is wrong with each; this paragraph says what to do (exit 2, as for any bad input)
        first = "; ".join(map(str, bad[0].get("problems") or ["see the table"]))[:300]
        raise DataError(f"{len(bad)} of {len(rows)} checked item(s) failed: {', '.join(r['name'] for r in bad)} "
                        f"({bad[0]['name']}: {first})",
                        "re-obtain the named files (see the problems column), or check the others with `ddlnl data check NAME`")
    return 0


def cmd_methods(args) -> int:
    from ddlnl.baselines import list_baselines
    from ddlnl.distill import list_distillers
    from ddlnl.presets import list_presets

    print("methods: " + ", ".join(list_distillers()))
    print("baselines: " + ", ".join(list_baselines()))
    print("presets: " + ", ".join(list_presets()))
    return 0


COMMANDS = {"run": cmd_run, "noise": cmd_noise, "distill": cmd_distill, "evaluate": cmd_evaluate, "data": cmd_data, "methods": cmd_methods}
COMMANDS.update(STUDY_COMMANDS)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    argv = [a for a in argv if a != "--debug"]
    parser = build_parser()
    if not argv:
        argv = ["run"]  # the README's main job: the default experiment
    args = parser.parse_args(argv)
    if args.command is None:
        args = parser.parse_args(["run"])
    args.debug = debug
    try:
        _check_common(args)
        return COMMANDS[args.command](args)
    except DdlnlError as e:
        if args.debug:
            raise
        print(f"ddlnl {args.command}: error: {e.problem}", file=sys.stderr)
        if e.fix:
            print(f"  fix: {e.fix}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; finished stages are saved and a rerun resumes from them", file=sys.stderr)
        return 130
    except (OSError, MemoryError) as e:
        if args.debug:
            raise
        print(f"ddlnl {args.command}: error: {type(e).__name__}: {e}", file=sys.stderr)
        print("  fix: check the paths, permissions and free disk/memory, then rerun (rerun with --debug for details)", file=sys.stderr)
        return 2
    except sqlite3.DatabaseError as e:  # a damaged study.sqlite (study, report)
        if args.debug:
            raise
        print(f"ddlnl {args.command}: error: the study database is damaged or not a SQLite file ({e})", file=sys.stderr)
        print("  fix: restore study.sqlite from a copy, or run the study into a new --out folder", file=sys.stderr)
        return 2
    except Exception as e:  # the last resort: one paragraph, no traceback unless --debug
        if args.debug:
            raise
        print(f"ddlnl {args.command}: internal error: {type(e).__name__}: {e}", file=sys.stderr)
        print("  fix: this is a bug or an input ddlnl does not check yet; rerun with --debug for the traceback and report it",
              file=sys.stderr)
        return 1


SEED_MAX = 2**32  # numpy's RandomState (the noise realisation) takes seeds in [0, 2**32)


def _check_common(args) -> None:
    """Checks of numbers and paths shared by several commands, before any data is loaded."""
    for flag in ("seed", "noise_seed"):
        v = getattr(args, flag, None)
        if v is not None and not 0 <= v < SEED_MAX:
            raise ConfigError(f"--{flag.replace('_', '-')} must be in [0, 2**32), got {v}", "pass a seed such as 0, 1 or 2")
    for flag in ("ipc", "runs"):
        v = getattr(args, flag, None)
        if v is not None and v < 1:
            raise ConfigError(f"--{flag} must be a positive integer, got {v}", f"pass --{flag} 1 or more")
    for flag in ("rate", "imbalance"):
        v = getattr(args, flag, None)
        if v is not None and math.isnan(v):
            raise ConfigError(f"--{flag} is not a number (nan)", f"pass a number for --{flag}")
    root = getattr(args, "data_root", None)
    if root and Path(root).expanduser().exists() and not Path(root).expanduser().is_dir():
        raise ConfigError(f"--data-root {root} is a file, not a folder", "pass the folder that holds the datasets (or set $DDLNL_DATA)")
    out = getattr(args, "out", None)
    if out and args.command in ("run", "noise", "study") and Path(out).is_file():
        raise ConfigError(f"--out {out} is a file; {args.command} writes a folder there", "pass a new or existing folder for --out")
    if out and args.command == "distill" and Path(out).is_dir():
        raise ConfigError(f"--out {out} is a folder; distill writes one .safetensors file", "pass a file path, e.g. --out set.safetensors")


if __name__ == "__main__":
    sys.exit(main())
