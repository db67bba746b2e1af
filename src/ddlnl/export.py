"""Distilled sets in formats other tools read: a PNG grid to look at, an image folder, DATM's files.

A SyntheticSet keeps its images in network-input space (normalised or ZCA-whitened) and may
store a compressed parameterisation (``meta["decode"]``); every export says which of the two
it writes. Pixel images are ``preprocess.inverse`` clipped to [0, 1]. Folders are written
beside their destination and renamed into place, so an interrupted export leaves nothing half-made.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch

from ddlnl.errors import ConfigError, DataError, check_choice
from ddlnl.synset import SyntheticSet
from ddlnl.utils.io import atomic_path

EXPORT_FORMATS = ("png-grid", "imagefolder", "datm")
FRAME_RGB = (255, 0, 0)  # the frame around an image whose label is known to be wrong
MARGIN = 3  # white pixels around each image in the grid; the frame takes the inner 2 of them
FRAME = 2


def load_set(path: str | Path) -> SyntheticSet:
    """``SyntheticSet.load`` whose failures (missing, unreadable) are ConfigErrors about the SET argument."""
    try:
        return SyntheticSet.load(path)
    except DataError as e:
        raise ConfigError(f"cannot export {path}: {e.problem}", e.fix or "pass a .safetensors file written by ddlnl") from None


def export_set(synset: SyntheticSet | str | Path, to: str, out: str | Path, *, force: bool = False) -> Path:
    """Write ``synset`` (or the set file at that path) as ``to`` at ``out``; returns ``out``.

    ``png-grid``: one PNG, a row per class (the stored images, in pixels). ``imagefolder``:
    ``out/<class>/<i>.png`` of the decoded training images and ``out/labels.json``. ``datm``:
    ``images_best.pt``/``labels_best.pt``/``lr_best.pt`` of the training set in network space.
    An existing ``out`` is replaced only with ``force`` (never a file where a folder goes).
    """
    to = check_choice("export format (--to)", to, EXPORT_FORMATS)
    if not isinstance(synset, SyntheticSet):
        synset = load_set(synset)
    out = Path(out)
    if to == "png-grid":
        if out.is_dir():
            raise ConfigError(f"--out {out} is a folder; png-grid writes one PNG file", "pass a file path, e.g. --out set.png")
        if out.exists() and not force:
            raise ConfigError(f"--out {out} exists", "pass --force to overwrite it, or another --out")
        return class_grid_png(synset, out)
    check_folder_out(out, force)
    write = write_imagefolder if to == "imagefolder" else write_datm
    with staging_dir(out) as tmp:
        write(synset, tmp)
    return out


# ----------------------------------------------------------------------------- pixels and names


def pixel_images(synset: SyntheticSet, images: torch.Tensor | None = None) -> torch.Tensor:
    """Network-space images (the stored ones by default) → float (N, 3|1, H, W) in [0, 1].

    A DATM/MTT folder does not record its preprocessing (usually ZCA), so its images are
    shown as DATM shows them: each clipped to mean ± 2.5 std and scaled to [0, 1].
    """
    x = (synset.images if images is None else images).detach().float().cpu()
    if synset.meta.get("format") == "datm" and synset.preprocess.kind == "none":
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        std = x.std(dim=(1, 2, 3), keepdim=True).clamp_min(1e-8)
        lo, hi = mean - 2.5 * std, mean + 2.5 * std
        return ((x.clamp(lo, hi) - lo) / (hi - lo)).clamp(0, 1)
    return synset.preprocess.inverse(x).clamp(0, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """[0, 1] float (N, C, H, W) → uint8 (N, H, W, C)."""
    return (x * 255).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()


def num_classes(synset: SyntheticSet) -> int:
    meta, hard = synset.meta, synset.hard_labels()
    seen = int(hard.max()) + 1 if hard.numel() else 0
    known = meta.get("num_classes") or len(meta.get("classes") or []) or (synset.labels.shape[1] if synset.labels.ndim == 2 else 0)
    return max(int(known), seen)


def class_names(synset: SyntheticSet) -> list[str]:
    """The dataset's class names where the set's meta has them (``meta["classes"]``), else indices."""
    C, names = num_classes(synset), synset.meta.get("classes")
    if isinstance(names, (list, tuple)) and len(names) == C:
        return [str(n) for n in names]
    return [str(c) for c in range(C)]


def folder_names(names: list[str]) -> list[str]:
    """Class names as safe, distinct folder names (``a/b`` → ``a_b``; a repeat gets ``_<index>``)."""
    out, seen = [], set()
    for i, name in enumerate(names):
        safe = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or str(i)
        if safe in seen:
            safe = f"{safe}_{i}"
        seen.add(safe)
        out.append(safe)
    return out


# ----------------------------------------------------------------------------- the PNG grid


def _font(size: int):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: the fixed bitmap font
        return ImageFont.load_default()


def class_grid_png(synset: SyntheticSet, path: str | Path, *, wrong=None) -> Path:
    """Draw the set's stored images as one PNG, a row per class (by hard label; a soft-labelled set of
    IPC images per class by the class each slot was made for), class names at the left.

    ``wrong``: optional boolean array over the stored images (length N, stored order); a true
    entry means that image's (noisy) label is known to be wrong, and it gets a red frame.
    Written atomically; returns ``path``.
    """
    from PIL import Image, ImageDraw

    path = Path(path)
    n = synset.images.shape[0]
    if wrong is not None:
        wrong = np.asarray(wrong.cpu() if isinstance(wrong, torch.Tensor) else wrong, dtype=bool).reshape(-1)
        if wrong.shape[0] != n:
            raise ValueError(f"wrong has {wrong.shape[0]} entries for {n} stored images")
    pixels = to_uint8(pixel_images(synset))
    if pixels.shape[-1] == 1:
        pixels = np.repeat(pixels, 3, axis=-1)
    hard = synset.hard_labels().cpu().numpy()
    names = class_names(synset)
    C = len(names)
    ipc = synset.meta.get("ipc")
    if synset.label_kind == "soft" and isinstance(ipc, int) and n == C * ipc:
        # a row is the class a slot was made for (slots are stored class by class): learned soft labels
        # may put their argmax elsewhere, and a row by argmax would mix classes and leave others empty
        hard = np.repeat(np.arange(C), ipc)
    rows = [np.flatnonzero(hard == c) for c in range(C)]
    cols = max([len(r) for r in rows] + [1])
    h, w = pixels.shape[1:3]
    scale = max(1, 64 // max(h, w))  # small images (CIFAR's 32 px) are shown at twice their size
    ch, cw = h * scale, w * scale
    sh, sw = ch + 2 * MARGIN, cw + 2 * MARGIN
    font = _font(max(10, min(16, sh // 3)))
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    shown = [nm if len(nm) <= 24 else nm[:23] + "…" for nm in names]
    boxes = [measure.textbbox((0, 0), s, font=font) for s in shown]
    label_w = max(b[2] - b[0] for b in boxes) + 2 * MARGIN + 6
    canvas = np.full((C * sh, label_w + cols * sw, 3), 255, dtype=np.uint8)
    for c, idx in enumerate(rows):
        for j, i in enumerate(idx):
            y, x = c * sh + MARGIN, label_w + j * sw + MARGIN
            if wrong is not None and wrong[i]:
                canvas[y - FRAME : y + ch + FRAME, x - FRAME : x + cw + FRAME] = FRAME_RGB
            canvas[y : y + ch, x : x + cw] = pixels[i].repeat(scale, axis=0).repeat(scale, axis=1)
    img = Image.fromarray(canvas)
    draw = ImageDraw.Draw(img)
    for c, (s, b) in enumerate(zip(shown, boxes)):
        draw.text((MARGIN, c * sh + (sh - (b[3] - b[1])) // 2 - b[1]), s, fill=(0, 0, 0), font=font)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


# ----------------------------------------------------------------------------- folders


def check_folder_out(out: Path, force: bool) -> None:
    """A folder export goes to a new path or an empty folder; a non-empty one only with ``force``."""
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file; this export writes a folder there", "pass a new or empty folder for --out")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise ConfigError(f"--out {out} is a folder that is not empty",
                          "pass a new or empty folder for --out, or --force to replace that folder's contents")


class staging_dir:
    """A temporary folder beside ``out``, renamed to ``out`` when the block succeeds (the old ``out``
    is moved aside first and deleted after), deleted when it fails."""

    def __init__(self, out: Path):
        self.out = out

    def __enter__(self) -> Path:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp", dir=self.out.parent))
        return self.tmp

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)
            return
        old = None
        if self.out.is_dir():
            old = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".old", dir=self.out.parent))
            os.replace(self.out, old / "old")
        os.replace(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_imagefolder(synset: SyntheticSet, folder: Path) -> None:
    """``folder/<class>/<i>.png`` of the decoded training images in pixels, and ``labels.json``:
    per file the hard label and, for soft labels, the softmax of the logits; the learned lr."""
    from PIL import Image

    images, labels = synset.training_data()
    pixels = to_uint8(pixel_images(synset, images))
    soft = labels.is_floating_point()
    hard = (labels.argmax(dim=1) if soft else labels).cpu().long()
    probs = torch.softmax(labels.float(), dim=1) if soft else None
    names = class_names(synset)
    if hard.numel() and int(hard.max()) >= len(names):  # decoded labels never exceed the stored ones; a guard all the same
        names = names + [str(c) for c in range(len(names), int(hard.max()) + 1)]
    dirs = folder_names(names)
    entries = []
    for i in range(pixels.shape[0]):
        c = int(hard[i])
        rel = f"{dirs[c]}/{i}.png"
        (folder / dirs[c]).mkdir(exist_ok=True)
        px = pixels[i]
        Image.fromarray(px[..., 0] if px.shape[-1] == 1 else px).save(folder / rel, format="PNG")
        entry = {"file": rel, "label": c}
        if probs is not None:
            entry["soft_label"] = probs[i].tolist()
        entries.append(entry)
    doc = {
        "format": "ddlnl.imagefolder",
        "method": synset.meta.get("method"),
        "dataset": synset.meta.get("dataset"),
        "classes": names,
        "folders": dirs,
        "label_kind": "soft" if soft else "hard",
        "lr": synset.lr,
        "decode": synset.meta.get("decode"),
        "stored_images": int(synset.images.shape[0]),
        "images": entries,
    }
    (folder / "labels.json").write_text(json.dumps(doc, indent=1) + "\n")


def write_datm(synset: SyntheticSet, folder: Path) -> None:
    """DATM/MTT's ``images_best.pt`` (network space, as DATM keeps them), ``labels_best.pt`` (int64
    indices or float logits) and ``lr_best.pt`` (a 0-d tensor, only when the set learned one).

    DATM's files carry no decoding or label semantics, so they hold the training set
    (``training_data()``): the stored set itself unless it is compressed (DANCE) or flipped (RCIG).
    """
    images, labels = synset.training_data()
    labels = labels.detach().cpu()
    torch.save(images.detach().cpu().float().clone().contiguous(), folder / "images_best.pt")
    torch.save((labels.float() if labels.is_floating_point() else labels.long()).clone().contiguous(), folder / "labels_best.pt")
    if synset.lr is not None:
        torch.save(torch.tensor(float(synset.lr)), folder / "lr_best.pt")
