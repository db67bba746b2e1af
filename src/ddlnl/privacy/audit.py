"""``ddlnl privacy RUN``: membership inference against the networks of a finished run.

The targets are the networks the run compared: CE on the full noisy set (``full_noisy``), the
evaluation network trained on the random real subset (``random``) and on the distilled set
(``distilled``), each retrained here with the run's recipe and seed (run 0), and optionally a
DP-SGD network on the full noisy set (``dp_sgd``, Opacus). Their members are the training images
the run's data holds (every set was made from all of them); the non-members are test images, of the
same distribution, given labels through the run's realised noise (see :func:`heldout_labels`).
Training images kept unmodified in a set are a direct leak, listed apart
(:func:`direct_leaks`) and never drawn as audit members, so the attacks measure what a network
reveals beyond the images a set publishes. Writes ``privacy.json`` and ``privacy_roc.png``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from ddlnl.data.noise import NoiseSpec
from ddlnl.distill import create_distiller
from ddlnl.errors import ConfigError, DataError
from ddlnl.evaluate import learned_lr
from ddlnl.experiment import PreparedData, prepare_data
from ddlnl.models import model_spec
from ddlnl.presets import method_options
from ddlnl.privacy.attacks import QUERIES, all_scores, keep_matrix
from ddlnl.privacy.metrics import with_intervals
from ddlnl.privacy.options import TARGETS, AuditOptions
from ddlnl.privacy.shadows import AuditPool, FromSet, FullNoisy, ScoreCache, shadow_outputs, target_outputs
from ddlnl.stages import RunFolder
from ddlnl.synset import SyntheticSet, match_training_images
from ddlnl.utils.io import write_json
from ddlnl.utils.runtime import machine, resolve_device, versions
from ddlnl.utils.seeds import stream_seed

SCHEMA = 1


def read_config(folder: Path) -> dict:
    """The run's ``config.json`` (its spec and resolved preset), after checking the folder holds a finished run."""
    missing = [name for name in ("config.json", "result.json", "random.safetensors", "distilled.safetensors")
               if not (folder / name).exists()]
    if missing:
        raise DataError(f"{folder} is not a finished run folder (no {', '.join(missing)})",
                        "pass the --out folder of a `ddlnl run` that has finished (rerun it to finish it)")
    try:
        config = json.loads((folder / "config.json").read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{folder / 'config.json'} is unreadable ({e})", "rerun `ddlnl run` on this folder to rewrite it") from None
    if not isinstance(config, dict) or not isinstance(config.get("resolved_preset"), dict):
        raise DataError(f"{folder / 'config.json'} holds no resolved preset", "rerun `ddlnl run` on this folder with this ddlnl version")
    return config


def prepare_run_data(folder: Path, config: dict, data_root: str | None) -> PreparedData:
    """The run's prepared data: its dataset, subsamples, preprocessing and saved noise realisation."""
    files = {k: config[k]["path"] for k in ("labels", "clean_labels") if isinstance(config.get(k), dict)}
    return prepare_data(config["dataset"], NoiseSpec(**config["noise"]), config["resolved_preset"], data_root=data_root,
                        imbalance=config.get("imbalance"), seed=int(config["seed"]), saved_noise=folder, **files)


def kept_slots(synset: SyntheticSet, x_train: torch.Tensor) -> list[int | None]:
    """Per slot of a set, the training image it is (up to storage rounding), or None. One pass over the
    training set finds each slot's three nearest images; :func:`match_training_images` decides among them
    (its test compares the nearest two, which the three hold)."""
    images = synset.images.float()
    if images.shape[1:] != x_train.shape[1:] or x_train.shape[0] < 2:
        return [None] * images.shape[0]
    near = torch.cdist(images.flatten(1), x_train.float().flatten(1)).topk(min(3, x_train.shape[0]), largest=False).indices
    out = []
    for i, candidates in enumerate(near):
        idx, _ = match_training_images(images[i : i + 1], x_train[candidates])
        out.append(None if idx is None else int(candidates[idx[0]]))
    return out


def direct_leaks(slots: list[int | None], label_correct: np.ndarray | None) -> dict:
    """What a set publishes outright: its slots that are training images, and how many of those are mislabelled."""
    kept = sorted({i for i in slots if i is not None})
    return {"slots": len(slots), "kept_slots": sum(i is not None for i in slots), "kept_images": len(kept), "train_index": kept,
            "mislabelled": None if label_correct is None else int((~label_correct[kept]).sum())}


def heldout_labels(data: PreparedData, seed: int) -> tuple[np.ndarray, str]:
    """Labels for the test images that serve as non-members, and how they were made.

    Members carry their noisy labels, so non-members must carry labels of the same kind, or a loss
    threshold would tell them apart by label quality alone: each test image's label is drawn from the
    run's realised noise transition for its clean class (exact for class-conditional noise, an
    approximation for instance-dependent and human noise). Without clean labels there is no
    transition, and the test labels are used as they are."""
    clean = data.y_test.numpy()
    T = data.noisy.transition
    if T is None:
        return clean.copy(), "the test labels (no clean training labels, so no noise transition to draw from)"
    rng = np.random.default_rng(stream_seed(seed, "privacy.heldout_labels"))
    u = rng.random(clean.size)
    cdf = np.cumsum(T[clean], axis=1)
    drawn = np.minimum((u[:, None] > cdf).sum(axis=1), T.shape[1] - 1)
    return drawn.astype(np.int64), "drawn per test image from the run's realised noise transition of its clean class"


def audit_pool(data: PreparedData, points: int, seed: int, exclude: set[int]) -> AuditPool:
    """``points`` training images not in ``exclude`` (members) and as many test images (non-members),
    drawn uniformly from the ``privacy.audit`` stream; fewer when a split is smaller."""
    eligible = np.setdiff1d(np.arange(data.x_train.shape[0]), np.fromiter(exclude, dtype=np.int64, count=len(exclude)))
    n = min(points, eligible.size, data.x_test.shape[0])
    if n < 1:
        raise ConfigError("no training image is left to audit", "audit a run whose sets keep fewer of its training images")
    rng = np.random.default_rng(stream_seed(seed, "privacy.audit"))
    members = np.sort(rng.choice(eligible, n, replace=False))
    outside = np.sort(rng.choice(data.x_test.shape[0], n, replace=False))
    held, how = heldout_labels(data, seed)
    labels = torch.cat([data.y_train_noisy[torch.as_tensor(members)], torch.as_tensor(held[outside])])
    correct = data.label_correct
    mislabelled = None if correct is None else np.r_[~correct[members], held[outside] != data.y_test.numpy()[outside]]
    return AuditPool(torch.cat([data.x_train[torch.as_tensor(members)], data.x_test[torch.as_tensor(outside)]]), labels,
                     np.r_[np.ones(n, bool), np.zeros(n, bool)], members, outside, mislabelled,
                     {"members": f"{n} training images drawn uniformly, none of them kept in a set",
                      "non_members": f"{n} test images; labels {how}", "requested": points})


def score_target(scores: dict, pool: AuditPool, *, bootstrap: int, seed: int, number: int) -> tuple[dict, dict | None]:
    """Each attack's metrics on all audit points, and on the mislabelled ones (the worst case) where known."""
    def metrics(mask: np.ndarray) -> dict:
        m, o = mask & pool.member, mask & ~pool.member
        if not m.any() or not o.any():
            return {"skipped": "no mislabelled member or non-member among the audit points"}
        return {name: with_intervals(s[m], s[o], bootstrap=bootstrap, seed=stream_seed(seed, "privacy.bootstrap", number, a))
                for a, (name, s) in enumerate(scores.items())}

    everyone = metrics(np.ones(pool.member.size, bool))
    return everyone, (None if pool.mislabelled is None else metrics(pool.mislabelled))


def audit_run(folder: str | Path, *, shadows: int = AuditOptions.shadows, audit_points: int = AuditOptions.audit_points,
              targets=TARGETS, bootstrap: int = AuditOptions.bootstrap, dp_epsilon: float = AuditOptions.dp_epsilon,
              data_root: str | None = None, device: str | None = None, progress: bool = False, log=print) -> dict:
    """Attack the run's networks (see the module docstring); returns and writes ``privacy.json``.
    The options are :class:`~ddlnl.privacy.options.AuditOptions`' (``to_dict()`` gives these keywords)."""
    folder = Path(folder)
    config = read_config(folder)
    options = AuditOptions(shadows, audit_points, targets, dp_epsilon, bootstrap).checked()  # before any data is read
    if "dp_sgd" in options.targets:
        from ddlnl.privacy.dp import require_opacus

        require_opacus()
    run = RunFolder(folder)

    def busy():
        raise ConfigError(f"a ddlnl run or audit is using {folder}", "wait for it to finish, then rerun (finished shadows are kept)")

    with run.lock(on_wait=busy):
        return _audit(folder, config, **options.to_dict(), data_root=data_root, device=resolve_device(device), progress=progress,
                      log=log)


def _audit(folder: Path, config: dict, *, shadows, audit_points, targets, bootstrap, dp_epsilon, data_root, device, progress,
           log) -> dict:
    start = time.perf_counter()
    preset, seed = config["resolved_preset"], int(config["seed"])
    network = model_spec(preset["evaluation"].get("model")) or preset["model"]  # what the run's baselines trained
    log(f"[ddlnl] privacy: loading the run's data ({config['dataset']})")
    data = prepare_run_data(folder, config, data_root)
    sets = {role: SyntheticSet.load(folder / f"{role}.safetensors") for role in ("random", "distilled")}
    slots = {role: kept_slots(s, data.x_train) for role, s in sets.items()}
    leaks = {role: direct_leaks(s, data.label_correct) for role, s in slots.items()}
    exclude = {i for s in slots.values() for i in s if i is not None}
    pool = audit_pool(data, audit_points, seed, exclude)
    keep = keep_matrix(shadows, pool.member.size, stream_seed(seed, "privacy.keep"))
    result_rows = json.loads((folder / "result.json").read_text()).get("results", {})
    common = dict(device=device, seed=seed, progress=progress, log=log)
    set_lr = learned_lr(sets["distilled"], preset["evaluation"])

    def pipeline(name: str):
        if name == "full_noisy":
            return FullNoisy(data, preset | {"model": network}, **common)
        if name == "dp_sgd":
            from ddlnl.privacy.dp import DpSgd

            return DpSgd(data, preset | {"model": network}, epsilon=dp_epsilon, **common)
        method = "random" if name == "random" else config["method"]
        distiller = create_distiller(method, **(method_options(preset, method) if method in preset["methods"] else {}))
        return FromSet(name, 1 if name == "random" else 2, distiller, sets[name], int(config["ipc"]),
                       set_lr if name == "random" else None, data, preset, noise=NoiseSpec(**config["noise"]),
                       dataset=config["dataset"], **common)

    out_targets, curves = {}, {}
    for name in targets:
        t0 = time.perf_counter()
        pipe = pipeline(name)
        # not keyed by the number of shadows: shadow k's half of the pool is the same for every K > k (keep_matrix)
        cache = ScoreCache(folder / "privacy" / name, pipe.key() | {"pool": _pool_key(pool), "seed": seed})
        target = target_outputs(pipe, pool, cache)
        shadow_phi = shadow_outputs(pipe, pool, keep, cache)
        scores = all_scores(target.phi, target.loss, shadow_phi, keep)
        everyone, mislabelled = score_target(scores, pool, bootstrap=bootstrap, seed=seed, number=pipe.number)
        row = (result_rows.get(name) or {}).get("accs")
        out_targets[name] = {"test_acc": target.test_acc, "run_test_acc": None if not row else float(row[0]),
                             "attacks": everyone, "mislabelled": mislabelled, "seconds": time.perf_counter() - t0,
                             **pipe.details(), **target.extra}
        curves[f"{name} (test acc {100 * target.test_acc:.1f} %)"] = {k: (s[pool.member], s[~pool.member]) for k, s in scores.items()}
        log(f"[ddlnl] privacy: {name}: test acc {100 * target.test_acc:.2f} %, "
            + ", ".join(f"{k} AUC {v['auc']['value']:.3f}" for k, v in everyone.items() if k in ("loss", "lira_online_fixed_variance")))
    from ddlnl.privacy.figure import roc_figure

    figure = roc_figure(curves, folder / "privacy_roc.png")
    result = {
        "schema": "ddlnl.privacy", "schema_version": SCHEMA, "run": {k: config.get(k) for k in ("dataset", "noise", "method", "ipc",
                                                                                                "preset", "seed")},
        "settings": {"shadows": shadows, "audit_points": int(pool.member.sum()), "bootstrap": bootstrap, "queries": list(QUERIES),
                     "targets": list(targets), "seed_streams": ["privacy.audit", "privacy.heldout_labels", "privacy.keep",
                                                                "privacy.shadow", "privacy.bootstrap", "privacy.dp"]},
        "pool": pool.source | {"member_index": pool.member_index.tolist(), "non_member_test_index": pool.nonmember_index.tolist(),
                               "mislabelled": None if pool.mislabelled is None else
                               {"members": int((pool.mislabelled & pool.member).sum()),
                                "non_members": int((pool.mislabelled & ~pool.member).sum())}},
        "targets": out_targets, "direct_leaks": leaks, "figure": figure.name,
        "seconds": time.perf_counter() - start, "device": str(device), "machine": machine(), "versions": versions(),
    }
    write_json(folder / "privacy.json", result)
    return result


def _pool_key(pool: AuditPool) -> dict:
    """What the cached scores depend on about the pool: its images and labels, bit for bit."""
    import hashlib

    digest = hashlib.sha256(pool.images.numpy().tobytes() + pool.labels.numpy().tobytes()).hexdigest()
    return {"members": pool.member_index.tolist(), "digest": digest}
