"""What is in a data root (``ddlnl data list``) and is it intact (``ddlnl data check``).

Loading trusts the files for speed; checking reloads them and compares against what
the genuine datasets contain: sizes, per-class counts, the first labels of the official
order, and checksums where they are known. Results are returned as plain dicts for the
CLI to print with :func:`format_table`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ddlnl.data import cifar, cifarn, tiny
from ddlnl.data.fetch import ALIASES, SOURCES, fetch_hint
from ddlnl.data.registry import load_dataset, resolve_data_root
from ddlnl.errors import DdlnlError
from ddlnl.utils.io import file_digest

HUMAN_FILES: dict[str, str] = {"cifar10n": "cifar10", "cifar100n": "cifar100"}
_FETCHABLE = set(SOURCES) | set(ALIASES)  # names `ddlnl data fetch` knows

# (train size, test size, classes, train per class, test per class, image side)
EXPECTED: dict[str, tuple[int, int, int, int, int, int]] = {
    "cifar10": (50000, 10000, 10, 5000, 1000, 32),
    "cifar100": (50000, 10000, 100, 500, 100, 32),
    "cifar100_coarse": (50000, 10000, 20, 2500, 500, 32),
    "tinyimagenet": (100000, 10000, 200, 500, 50, 64),
}

# First labels of the official order (data_batch_1 / train, test_batch).
ORDER_SENTINELS: dict[str, dict[str, list[int]]] = {
    "cifar10": {"train": [6, 9, 9, 4, 1, 1, 2, 7, 8, 3], "test": [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]},
    "cifar100": {"train": [19, 29, 0, 11, 1, 86, 90, 28, 23, 31]},
}


def _row(name: str, status: str, layout: str, path: Path | str, detail: str = "") -> dict[str, Any]:
    return {"name": name, "status": status, "layout": layout, "path": str(path), "detail": detail}


def _cifar_row(name: str, root: Path) -> dict[str, Any]:
    layouts = cifar.cifar_layouts(cifar.family_of(name), root)
    for status in ("found", "partial"):
        for lay in layouts:
            if lay.status == status:
                detail = "" if status == "found" else f"missing: {', '.join(lay.missing)}"
                return _row(name, status, lay.layout, lay.path, detail)
    return _row(name, "missing", "", " or ".join(str(lay.path) for lay in layouts))


def _tiny_row(root: Path) -> dict[str, Any]:
    base = tiny.tiny_dir(root)
    need = [base / "wnids.txt", base / "train", base / "val" / "images", base / "val" / "val_annotations.txt"]
    missing = [str(p) for p in need if not p.exists()]
    status = "found" if not missing else ("partial" if len(missing) < len(need) else "missing")
    return _row("tinyimagenet", status, "folder" if status != "missing" else "", base,
                f"missing: {', '.join(missing)}" if status == "partial" else "")


def _human_row(name: str, root: Path) -> dict[str, Any]:
    dataset = HUMAN_FILES[name]
    path = cifarn.find_human_label_file(dataset, root)
    if path is None:
        return _row(name, "missing", "", cifarn.human_label_candidates(dataset, root)[1])
    return _row(name, "found", path.suffix.lstrip("."), path)


def describe_data_root(root: str | Path | None = None) -> list[dict[str, Any]]:
    """One row per known dataset and human label file: name, status, layout, path, detail."""
    root = resolve_data_root(root)
    rows = [_cifar_row(n, root) for n in cifar.CIFAR_NAMES]
    rows.append(_tiny_row(root))
    rows += [_human_row(n, root) for n in HUMAN_FILES]
    return rows


# ---- check ------------------------------------------------------------------------

def _verify_checksums(files: list[Path], root: Path, known: dict[str, str], algorithm: str,
                      problems: list[str], notes: list[str]) -> None:
    verified, unknown = 0, []
    for path in files:
        rel = path.relative_to(root).as_posix()
        if rel not in known:
            unknown.append(path.name)
        elif file_digest(path, algorithm) == known[rel]:
            verified += 1
        else:
            problems.append(f"{algorithm} of {path} does not match the known value (file altered or corrupt)")
    if verified:
        notes.append(f"{algorithm} verified for {verified} file(s)")
    if unknown:
        notes.append(f"no known checksum for {', '.join(unknown)}")


def _check_counts(name: str, splits, problems: list[str], notes: list[str]) -> None:
    n_train, n_test, k, per_train, per_test, side = EXPECTED[name]
    if splits.num_classes != k:
        problems.append(f"{splits.num_classes} classes, expected {k}")
    if splits.train.images.shape[1:] != (side, side, 3):
        problems.append(f"images are {splits.train.images.shape[1:]}, expected ({side}, {side}, 3)")
    for split, n, per in (("train", n_train, per_train), ("test", n_test, per_test)):
        part = getattr(splits, split)
        counts = np.bincount(part.labels, minlength=k)
        if len(part) != n:
            problems.append(f"{split} has {len(part)} images, expected {n}")
        if (counts != per).any():
            problems.append(f"{split} per-class counts range {counts.min()}..{counts.max()}, expected {per} each")
    if not problems:
        notes.append(f"{n_train}/{n_test} images, {k} classes, {per_train}/{per_test} per class")
    for split, first in ORDER_SENTINELS.get(name, {}).items():
        got = getattr(splits, split).labels[: len(first)].tolist()
        if got != first:
            problems.append(f"{split} labels start {got}, not {first} as in the official order")


def _check_dataset(name: str, root: Path, row: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    notes: list[str] = []
    out = {"name": name, "ok": False, "layout": row["layout"], "path": row["path"],
           "problems": problems, "notes": notes}
    if row["status"] == "missing":
        problems.append(f"not found at {row['path']}")
        if name in _FETCHABLE:
            notes.append(f"to get it: {fetch_hint(name, root)}")
        return out
    try:
        splits = load_dataset(name, root)
    except DdlnlError as exc:
        problems.append(str(exc).replace("\n", " "))
        return out
    if name in EXPECTED:
        _check_counts(name, splits, problems, notes)
    else:
        notes.append(f"{len(splits.train)}/{len(splits.test)} images, {splits.num_classes} classes")
    if name in cifar.CIFAR_NAMES:
        family = cifar.family_of(name)
        if row["layout"] == "npz":
            lay = cifar.npz_layout(family, root)
            _verify_checksums(lay.present, root, cifar.NPZ_SHA256, "sha256", problems, notes)
        else:
            lay = cifar.torchvision_layout(family, root)
            if lay.missing:
                problems.append(f"missing: {', '.join(lay.missing)}")
            _verify_checksums(lay.present, root, cifar.TORCHVISION_MD5, "md5", problems, notes)
            if not lay.missing:
                _check_meta(family, root, problems)
    elif name == "tinyimagenet":
        notes.append("no known checksums for Tiny-ImageNet")
    out["ok"] = not problems
    return out


def _check_meta(family: str, root: Path, problems: list[str]) -> None:
    expected = ({"label_names": cifar.CIFAR10_CLASSES} if family == "cifar10" else
                {"fine_label_names": cifar.CIFAR100_FINE_CLASSES, "coarse_label_names": cifar.CIFAR100_COARSE_CLASSES})
    try:
        names = cifar.read_meta_names(family, root)
    except DdlnlError as exc:
        problems.append(exc.problem)
        return
    for key, want in expected.items():
        if tuple(names[key]) != want:
            problems.append(f"{key} in the meta file differ from the official class names")


def _check_human(name: str, root: Path, row: dict[str, Any]) -> dict[str, Any]:
    problems: list[str] = []
    notes: list[str] = []
    out = {"name": name, "ok": False, "layout": row["layout"], "path": row["path"],
           "problems": problems, "notes": notes}
    if row["status"] == "missing":
        problems.append(f"not found (looked for {row['path']} and the other names of `ddlnl data list`)")
        notes.append(f"to get it: {fetch_hint(name, root)}")
        return out
    path = Path(row["path"])
    known = cifarn.HUMAN_LABEL_SHA256.get(path.name)
    if known is None:
        notes.append(f"no known checksum for {path.name}")
    elif file_digest(path, "sha256") == known:
        notes.append("sha256 verified")
    else:
        problems.append(f"sha256 of {path} does not match the official file")
    dataset = HUMAN_FILES[name]
    try:
        labels = cifarn.read_human_label_file(path)
    except DdlnlError as exc:
        problems.append(exc.problem)
        return out
    variants = [dataset] + (["cifar100_coarse"] if dataset == "cifar100" else [])
    for ds in variants:
        _check_label_sets(ds, root, path, labels, problems, notes)
    if dataset == "cifar100" and {"clean_label", "clean_coarse_label"} <= labels.keys():
        fine, coarse = labels["clean_label"], labels["clean_coarse_label"]
        if fine.shape == coarse.shape and fine.max(initial=0) < 100:
            bad = int(np.count_nonzero(cifar.CIFAR100_SUPERCLASS_OF_FINE[fine] != coarse))
            if bad:
                problems.append(f"clean_coarse_label disagrees with the superclass table at {bad} positions")
    out["ok"] = not problems
    return out


def _check_label_sets(ds: str, root: Path, path: Path, labels: dict[str, np.ndarray],
                      problems: list[str], notes: list[str]) -> None:
    ck = cifarn.clean_key(ds)
    if ck not in labels:
        problems.append(f"no {ck!r} entry")
        return
    clean = labels[ck]
    try:
        clean_ref = load_dataset(ds, root).train.labels
        against = f"{ds} train labels"
    except DdlnlError:
        clean_ref, against = clean, f"its own {ck} ({ds} images not found"
        sentinel = ORDER_SENTINELS.get(ds, {}).get("train")
        if sentinel and clean[: len(sentinel)].tolist() != sentinel:
            problems.append(f"{ck} starts {clean[:len(sentinel)].tolist()}, not {sentinel} (official order)")
        against += "; order checked on the first labels only)" if sentinel else "; order not cross-checked)"
    if len(clean_ref) != 50000:
        problems.append(f"{ck} has {len(clean)} labels, expected 50000")
    rates = []
    for label_set in cifarn.HUMAN_LABEL_SETS[ds]:
        try:
            noisy = cifarn.load_human_labels(ds, label_set, root, clean_ref)
        except DdlnlError as exc:
            problems.append(exc.problem)
            continue
        rates.append(f"{label_set} {100 * np.mean(noisy != clean_ref):.2f}%")
    if rates:
        notes.append(f"{ds} noise rates vs {against}: {', '.join(rates)}")


def check_data(root: str | Path | None = None, names: list[str] | None = None) -> list[dict[str, Any]]:
    """Load and verify each found dataset / label file (or each of ``names``).

    Every entry has ``name``, ``ok``, ``layout``, ``path``, ``problems`` and ``notes``.
    """
    root = resolve_data_root(root)
    rows = {r["name"]: r for r in describe_data_root(root)}
    if names is None:
        names = [n for n, r in rows.items() if r["status"] != "missing"]
    from ddlnl.data.imagefolder import PREFIX as FOLDER_PREFIX
    from ddlnl.errors import ConfigError

    unknown = [n for n in names if n not in rows and not (n.startswith(FOLDER_PREFIX) and len(n) > len(FOLDER_PREFIX))]
    if unknown:
        raise ConfigError(f"unknown dataset name(s) to check: {', '.join(unknown)}",
                          f"use any of: {', '.join(rows)}, or folder:<path> for an ImageFolder tree")
    results = []
    for name in names:
        if name in HUMAN_FILES:
            results.append(_check_human(name, root, rows[name]))
        else:
            row = rows.get(name) or _row(name, "found", "folder", name)
            results.append(_check_dataset(name, root, row))
    return results


def _cell(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return "; ".join(map(str, value))
    return "" if value is None else str(value)


def format_table(rows: list[dict[str, Any]]) -> str:
    """Plain-text table of ``rows`` (columns in first-seen key order)."""
    if not rows:
        return "(nothing)"
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    cells = [[_cell(r.get(c)) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)
