"""Small datasets written in each official on-disk layout, for the loader tests.

Pixels are random uint8 so that any transposition or ordering mistake shows. The CIFAR
python batches are written the way the originals were: Python 2 pickles (protocol 2,
strings as byte strings, arrays via ``numpy.core.multiarray._reconstruct``), by a small
opcode writer below, since Python 3's pickler would encode bytes differently.
"""

from __future__ import annotations

import io
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from ddlnl.data.cifar import CIFAR10_CLASSES, CIFAR100_COARSE_CLASSES, CIFAR100_FINE_CLASSES
from ddlnl.data.cifar import CIFAR100_SUPERCLASS_OF_FINE


@dataclass
class Arrays:
    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    train_coarse: np.ndarray | None = None
    test_coarse: np.ndarray | None = None


def random_arrays(n_train: int, n_test: int, num_classes: int, seed: int, side: int = 32,
                  coarse: bool = False) -> Arrays:
    rng = np.random.default_rng(seed)
    a = Arrays(
        rng.integers(0, 256, (n_train, side, side, 3), dtype=np.uint8),
        rng.integers(0, num_classes, n_train).astype(np.int64),
        rng.integers(0, 256, (n_test, side, side, 3), dtype=np.uint8),
        rng.integers(0, num_classes, n_test).astype(np.int64),
    )
    if coarse:
        a.train_coarse = CIFAR100_SUPERCLASS_OF_FINE[a.train_y]
        a.test_coarse = CIFAR100_SUPERCLASS_OF_FINE[a.test_y]
    return a


# ---- Python-2-style pickles ---------------------------------------------------------

def _emit(o, out: bytearray) -> None:
    if o is None:
        out += b"N"
    elif o is True or o is False:
        out += b"\x88" if o else b"\x89"
    elif isinstance(o, (int, np.integer)):
        o = int(o)
        if 0 <= o < 256:
            out += b"K" + bytes([o])
        elif 0 <= o < 65536:
            out += b"M" + struct.pack("<H", o)
        else:
            out += b"J" + struct.pack("<i", o)
    elif isinstance(o, (str, bytes)):
        b = o.encode("latin1") if isinstance(o, str) else bytes(o)
        out += (b"U" + bytes([len(b)]) if len(b) < 256 else b"T" + struct.pack("<I", len(b))) + b
    elif isinstance(o, tuple):
        if not o:
            out += b")"
        elif len(o) <= 3:
            for x in o:
                _emit(x, out)
            out += {1: b"\x85", 2: b"\x86", 3: b"\x87"}[len(o)]
        else:
            out += b"("
            for x in o:
                _emit(x, out)
            out += b"t"
    elif isinstance(o, list):
        out += b"]"
        if o:
            out += b"("
            for x in o:
                _emit(x, out)
            out += b"e"
    elif isinstance(o, dict):
        out += b"}"
        if o:
            out += b"("
            for k, v in o.items():
                _emit(k, out)
                _emit(v, out)
            out += b"u"
    elif isinstance(o, np.dtype):
        out += b"cnumpy\ndtype\n"
        _emit((o.str[1:], 0, 1), out)
        out += b"R"
        _emit((3, o.str[0], None, None, None, -1, -1, 0), out)
        out += b"b"
    elif isinstance(o, np.ndarray):
        _emit_array(o, out)
    else:
        raise TypeError(f"cannot write {type(o).__name__} in a Python 2 pickle")


def _emit_array(a: np.ndarray, out: bytearray) -> None:
    a = np.ascontiguousarray(a)
    out += b"cnumpy.core.multiarray\n_reconstruct\n"
    out += b"cnumpy\nndarray\n"
    _emit((0,), out)
    _emit("b", out)
    out += b"\x87R("  # TUPLE3, REDUCE, then MARK for the 5-tuple state
    _emit(1, out)
    _emit(tuple(a.shape), out)
    _emit(a.dtype, out)
    _emit(False, out)
    _emit(a.tobytes(), out)
    out += b"tb"  # TUPLE, BUILD


def py2_pickle(obj) -> bytes:
    """Protocol-2 pickle of ``obj`` as Python 2's cPickle wrote the CIFAR batches."""
    out = bytearray(b"\x80\x02")
    _emit(obj, out)
    out += b"."
    return bytes(out)


def channel_major(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) HWC -> (N, 3072) rows: R plane, G plane, B plane, each row-major."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2).reshape(len(images), -1))


# ---- CIFAR ---------------------------------------------------------------------------

def write_cifar10_torchvision(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 0) -> Arrays:
    a = random_arrays(n_train, n_test, 10, seed)
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True, exist_ok=True)
    for i, idx in enumerate(np.array_split(np.arange(n_train), 5), 1):
        batch = {"batch_label": f"training batch {i} of 5", "labels": a.train_y[idx].tolist(),
                 "data": channel_major(a.train_x[idx]), "filenames": [f"img_{j}.png" for j in idx]}
        (folder / f"data_batch_{i}").write_bytes(py2_pickle(batch))
    test = {"batch_label": "testing batch 1 of 1", "labels": a.test_y.tolist(),
            "data": channel_major(a.test_x), "filenames": [f"t_{j}.png" for j in range(n_test)]}
    (folder / "test_batch").write_bytes(py2_pickle(test))
    meta = {"num_cases_per_batch": 10000, "label_names": list(CIFAR10_CLASSES), "num_vis": 3072}
    (folder / "batches.meta").write_bytes(py2_pickle(meta))
    return a


def write_cifar100_torchvision(root: Path, n_train: int = 20, n_test: int = 10, seed: int = 1) -> Arrays:
    a = random_arrays(n_train, n_test, 100, seed, coarse=True)
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True, exist_ok=True)
    for name, x, y, c in (("train", a.train_x, a.train_y, a.train_coarse), ("test", a.test_x, a.test_y, a.test_coarse)):
        batch = {"filenames": [f"{name}_{j}.png" for j in range(len(y))], "batch_label": f"{name}ing batch 1 of 1",
                 "fine_labels": y.tolist(), "coarse_labels": c.tolist(), "data": channel_major(x)}
        (folder / name).write_bytes(py2_pickle(batch))
    meta = {"fine_label_names": list(CIFAR100_FINE_CLASSES), "coarse_label_names": list(CIFAR100_COARSE_CLASSES)}
    (folder / "meta").write_bytes(py2_pickle(meta))
    return a


def write_cifar_npz(root: Path, family: str = "cifar10", n_train: int = 20, n_test: int = 10, seed: int = 2,
                    parts: int = 2) -> Arrays:
    """npz layout; ``parts=0`` writes one train.npz, else train_part{i}.npz with ``start``."""
    cifar100 = family == "cifar100"
    a = random_arrays(n_train, n_test, 100 if cifar100 else 10, seed, coarse=cifar100)
    folder = root / family
    folder.mkdir(parents=True, exist_ok=True)

    def extra(c):
        return {"y_coarse": c.astype(np.uint8)} if cifar100 else {}

    if parts == 0:
        np.savez_compressed(folder / "train.npz", x=a.train_x, y=a.train_y.astype(np.uint8), **extra(a.train_coarse))
    else:
        for i, idx in enumerate(np.array_split(np.arange(n_train), parts)):
            np.savez_compressed(folder / f"train_part{i}.npz", x=a.train_x[idx], y=a.train_y[idx].astype(np.uint8),
                                start=np.int64(idx[0]), **extra(a.train_coarse[idx] if cifar100 else None))
    np.savez_compressed(folder / "test.npz", x=a.test_x, y=a.test_y.astype(np.uint8), **extra(a.test_coarse))
    return a


def write_cifar10_npz(root: Path, n_train_per_class: int = 2, n_test_per_class: int = 1, seed: int = 0,
                      parts: int = 2) -> np.ndarray:
    """Class-balanced CIFAR-10 in the npz layout (shuffled order); returns the train labels."""
    rng = np.random.default_rng(seed)
    train_y = rng.permutation(np.repeat(np.arange(10), n_train_per_class))
    test_y = rng.permutation(np.repeat(np.arange(10), n_test_per_class))
    folder = root / "cifar10"
    folder.mkdir(parents=True, exist_ok=True)
    train_x = rng.integers(0, 256, (len(train_y), 32, 32, 3), dtype=np.uint8)
    for i, idx in enumerate(np.array_split(np.arange(len(train_y)), max(parts, 1))):
        np.savez_compressed(folder / f"train_part{i}.npz", x=train_x[idx], y=train_y[idx].astype(np.uint8),
                            start=np.int64(idx[0]))
    np.savez_compressed(folder / "test.npz", x=rng.integers(0, 256, (len(test_y), 32, 32, 3), dtype=np.uint8),
                        y=test_y.astype(np.uint8))
    return train_y.astype(np.int64)


# ---- CIFAR-N label files -------------------------------------------------------------

CIFAR10N_KEYS = ("aggre_label", "random_label1", "random_label2", "random_label3", "worse_label")


def human_label_arrays(family: str, clean: np.ndarray) -> dict[str, np.ndarray]:
    """Label dict like the official file: key i flips every (i+2)-th label to the next class."""
    clean = np.asarray(clean, dtype=np.int64)
    idx = np.arange(len(clean))

    def flip(labels, k, step):
        out = labels.copy()
        out[idx % step == 0] = (out[idx % step == 0] + 1) % k
        return out

    if family == "cifar10":
        d = {"clean_label": clean}
        d.update({key: flip(clean, 10, i + 2) for i, key in enumerate(CIFAR10N_KEYS)})
        return d
    coarse = CIFAR100_SUPERCLASS_OF_FINE[clean]
    return {"clean_label": clean, "noisy_label": flip(clean, 100, 2),
            "clean_coarse_label": coarse, "noisy_coarse_label": flip(coarse, 20, 3)}


def write_human_labels(root: Path, family: str, labels: dict[str, np.ndarray], fmt: str = "npz",
                       top_level: bool = False) -> Path:
    """Write a CIFAR-N file. fmt: npz | pt (numpy arrays) | pt_list | pt_tensor | pt_numpy_core."""
    sub, stem = ("cifar10n", "CIFAR-10_human") if family == "cifar10" else ("cifar100n", "CIFAR-100_human")
    folder = root if top_level else root / sub
    folder.mkdir(parents=True, exist_ok=True)
    if fmt == "npz":
        path = folder / f"{stem}.npz"
        np.savez_compressed(path, **{k: v.astype(np.uint8) for k, v in labels.items()})
        return path
    import torch

    path = folder / f"{stem}.pt"
    if fmt == "pt_list":
        obj = {k: v.tolist() for k, v in labels.items()}
    elif fmt == "pt_tensor":
        obj = {k: torch.from_numpy(v.copy()) for k, v in labels.items()}
    else:
        obj = dict(labels)
    torch.save(obj, path)
    if fmt == "pt_numpy_core":  # as saved by numpy 1.x: globals live in numpy.core
        _rename_global_module(path, b"numpy._core.multiarray", b"numpy.core.multiarray")
    return path


def write_cifar10n_npz(root: Path, clean_labels: np.ndarray) -> Path:
    """``<root>/cifar10n/CIFAR-10_human.npz`` built on ``clean_labels`` (overwrites)."""
    return write_human_labels(root, "cifar10", human_label_arrays("cifar10", clean_labels), fmt="npz")


def _rename_global_module(path: Path, old: bytes, new: bytes) -> None:
    with zipfile.ZipFile(path) as z:
        entries = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, data in entries:
            if name.endswith("data.pkl"):
                assert b"c" + old + b"\n" in data
                data = data.replace(b"c" + old + b"\n", b"c" + new + b"\n")
            z.writestr(name, data)
    path.write_bytes(buf.getvalue())


# ---- Tiny-ImageNet -------------------------------------------------------------------

TINY_WNIDS = ("n01443537", "n01629819", "n01641577")
TINY_WORDS = {"n01443537": "goldfish, Carassius auratus", "n01629819": "European fire salamander, Salamandra"}


@dataclass
class TinyFixture:
    base: Path
    train_files: list[Path]
    train_labels: np.ndarray
    val_files: list[Path]
    val_labels: np.ndarray


def _jpeg(path: Path, rng: np.random.Generator, gray: bool = False, side: int = 64) -> None:
    # Smooth content keeps JPEG artefacts small; the tests compare against PIL's own decode.
    base = rng.integers(0, 256, (8, 8, 1 if gray else 3), dtype=np.uint8)
    big = np.kron(base, np.ones((side // 8, side // 8, 1), dtype=np.uint8))
    img = Image.fromarray(big[..., 0], "L") if gray else Image.fromarray(big, "RGB")
    img.save(path, "JPEG", quality=90)


def write_tiny(root: Path, seed: int = 3) -> TinyFixture:
    """3 classes x 4 train images (names _0,_1,_2,_10), 6 val images; one grayscale JPEG."""
    rng = np.random.default_rng(seed)
    base = root / "tiny-imagenet-200"
    (base / "val" / "images").mkdir(parents=True)
    (base / "wnids.txt").write_text("\n".join(TINY_WNIDS) + "\n")
    (base / "words.txt").write_text("".join(f"{w}\t{n}\n" for w, n in TINY_WORDS.items()) + "n00001740\tentity\n")
    train_files, train_labels = [], []
    for c, wnid in enumerate(TINY_WNIDS):
        folder = base / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (base / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in (0, 1, 2, 10):
            p = folder / f"{wnid}_{i}.JPEG"
            _jpeg(p, rng, gray=(c == 1 and i == 2))
            train_files.append(p)
            train_labels.append(c)
    val_files, val_labels, lines = [], [], []
    for i, c in zip((0, 1, 2, 3, 10, 11), (2, 0, 1, 1, 0, 2)):
        p = base / "val" / "images" / f"val_{i}.JPEG"
        _jpeg(p, rng)
        val_files.append(p)
        val_labels.append(c)
        lines.append(f"val_{i}.JPEG\t{TINY_WNIDS[c]}\t0\t0\t63\t63")
    (base / "val" / "val_annotations.txt").write_text("\n".join(reversed(lines)) + "\n")
    return TinyFixture(base, train_files, np.array(train_labels), val_files, np.array(val_labels))


def decode_rgb(paths: list[Path]) -> np.ndarray:
    out = []
    for p in paths:
        with Image.open(p) as im:
            out.append(np.asarray(im.convert("RGB")))
    return np.stack(out)


# ---- ImageFolder -----------------------------------------------------------------------

IMAGEFOLDER_CLASSES = ("cat", "dog", "zebra")


def write_image_folder(root: Path, side: int = 8, seed: int = 4) -> Arrays:
    """``root/{train,test}/<class>/`` with PNG / BMP files (lossless), 3 train + 2 test per class."""
    rng = np.random.default_rng(seed)
    train_x, train_y, test_x, test_y = [], [], [], []
    for split, n, xs, ys in (("train", 3, train_x, train_y), ("test", 2, test_x, test_y)):
        for c, name in enumerate(IMAGEFOLDER_CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            (folder / "notes.txt").write_text("not an image")
            for i in range(n):
                arr = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
                fname = ("a0.png", "a1.PNG", "a2.bmp")[i]
                Image.fromarray(arr).save(folder / fname, "BMP" if fname.endswith("bmp") else "PNG")
                xs.append(arr)
                ys.append(c)
    return Arrays(np.stack(train_x), np.array(train_y), np.stack(test_x), np.array(test_y))


# ---- real data -------------------------------------------------------------------------

def real_data_root() -> Path | None:
    """$DDLNL_DATA when it holds the shared CIFAR-10 npz files, else None."""
    import os

    root = os.environ.get("DDLNL_DATA")
    if root and (Path(root) / "cifar10" / "test.npz").is_file():
        return Path(root)
    return None
