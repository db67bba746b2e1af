"""CIFAR-10 and CIFAR-100 loaders for two on-disk layouts.

Layouts, under a data root ``<root>``:

* torchvision (the extracted official python archives):
  ``<root>/cifar-10-batches-py/{data_batch_1..5, test_batch, batches.meta}`` and
  ``<root>/cifar-100-python/{train, test, meta}``. Each batch is a Python 2 pickle of a
  dict with ``b"data"`` (uint8, N x 3072, channel-major rows) and ``b"labels"``
  (CIFAR-100: ``b"fine_labels"`` and ``b"coarse_labels"``). Read with the restricted
  unpickler of :mod:`ddlnl.data.safe_pickle`.
* npz (no pickle at all; the layout of the shared data folder):
  ``<root>/cifar10/train.npz`` or ``<root>/cifar10/train_part*.npz`` plus
  ``<root>/cifar10/test.npz``; keys ``x`` (uint8, N x 32 x 32 x 3, RGB HWC) and ``y``
  (integer labels). Each ``train_part*.npz`` also holds ``start`` (int64 scalar, the
  index of its first row); parts are joined in ``start`` order and must be contiguous.
  CIFAR-100 uses ``<root>/cifar100/`` the same way, with ``y`` the fine labels (0..99)
  and an extra ``y_coarse`` (superclass labels, 0..19). ``train.npz`` wins over parts.

When both layouts are complete the npz one is used. Every array is kept in the official
order (data_batch_1..5 then test_batch), which is what CIFAR-N label files index.
Loading never hashes files (slow); :mod:`ddlnl.data.check` does.
"""

from __future__ import annotations

import re
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ddlnl.data.fetch import fetch_hint
from ddlnl.data.safe_pickle import load_pickle_restricted
from ddlnl.data.types import DatasetSplits, LabeledImages
from ddlnl.errors import DataError, check_choice

CIFAR_NAMES = ("cifar10", "cifar100", "cifar100_coarse")

CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)

# Official order of ``fine_label_names`` / ``coarse_label_names`` in cifar-100-python/meta.
CIFAR100_FINE_CLASSES: tuple[str, ...] = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle", "bottle",
    "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle", "caterpillar", "cattle",
    "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch", "crab", "crocodile", "cup", "dinosaur",
    "dolphin", "elephant", "flatfish", "forest", "fox", "girl", "hamster", "house", "kangaroo", "keyboard",
    "lamp", "lawn_mower", "leopard", "lion", "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain",
    "mouse", "mushroom", "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road", "rocket",
    "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake", "spider",
    "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank", "telephone", "television", "tiger", "tractor",
    "train", "trout", "tulip", "turtle", "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm",
)

CIFAR100_COARSE_CLASSES: tuple[str, ...] = (
    "aquatic_mammals", "fish", "flowers", "food_containers", "fruit_and_vegetables",
    "household_electrical_devices", "household_furniture", "insects", "large_carnivores",
    "large_man-made_outdoor_things", "large_natural_outdoor_scenes", "large_omnivores_and_herbivores",
    "medium_mammals", "non-insect_invertebrates", "people", "reptiles", "small_mammals", "trees",
    "vehicles_1", "vehicles_2",
)

# The superclass table of the CIFAR-100 description, in coarse-label order.
_SUPERCLASS_MEMBERS: tuple[tuple[str, ...], ...] = (
    ("beaver", "dolphin", "otter", "seal", "whale"),
    ("aquarium_fish", "flatfish", "ray", "shark", "trout"),
    ("orchid", "poppy", "rose", "sunflower", "tulip"),
    ("bottle", "bowl", "can", "cup", "plate"),
    ("apple", "mushroom", "orange", "pear", "sweet_pepper"),
    ("clock", "keyboard", "lamp", "telephone", "television"),
    ("bed", "chair", "couch", "table", "wardrobe"),
    ("bee", "beetle", "butterfly", "caterpillar", "cockroach"),
    ("bear", "leopard", "lion", "tiger", "wolf"),
    ("bridge", "castle", "house", "road", "skyscraper"),
    ("cloud", "forest", "mountain", "plain", "sea"),
    ("camel", "cattle", "chimpanzee", "elephant", "kangaroo"),
    ("fox", "porcupine", "possum", "raccoon", "skunk"),
    ("crab", "lobster", "snail", "spider", "worm"),
    ("baby", "boy", "girl", "man", "woman"),
    ("crocodile", "dinosaur", "lizard", "snake", "turtle"),
    ("hamster", "mouse", "rabbit", "shrew", "squirrel"),
    ("maple_tree", "oak_tree", "palm_tree", "pine_tree", "willow_tree"),
    ("bicycle", "bus", "motorcycle", "pickup_truck", "train"),
    ("lawn_mower", "rocket", "streetcar", "tank", "tractor"),
)


def _superclass_of_fine() -> np.ndarray:
    out = np.full(len(CIFAR100_FINE_CLASSES), -1, dtype=np.int64)
    for coarse, members in enumerate(_SUPERCLASS_MEMBERS):
        for fine in members:
            out[CIFAR100_FINE_CLASSES.index(fine)] = coarse
    assert (out >= 0).all()
    out.flags.writeable = False
    return out


#: ``CIFAR100_SUPERCLASS_OF_FINE[f]`` is the coarse label of fine label ``f``.
CIFAR100_SUPERCLASS_OF_FINE: np.ndarray = _superclass_of_fine()

# md5 of the extracted official python batches (the values torchvision checks).
TORCHVISION_MD5: dict[str, str] = {
    "cifar-10-batches-py/data_batch_1": "c99cafc152244af753f735de768cd75f",
    "cifar-10-batches-py/data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "cifar-10-batches-py/data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "cifar-10-batches-py/data_batch_4": "634d18415352ddfa80567beed471001a",
    "cifar-10-batches-py/data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "cifar-10-batches-py/test_batch": "40351d587109b95175f43aff81a1287e",
    "cifar-10-batches-py/batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
    "cifar-100-python/train": "16019d7e3df5f24257cddd939b257f8d",
    "cifar-100-python/test": "f0ef6b0ae62326f3e7ffdfab6717acfc",
    "cifar-100-python/meta": "7973b15100ade9c7d40fb424638fde48",
}

# sha256 of the npz files of the shared data folder (see its README).
NPZ_SHA256: dict[str, str] = {
    "cifar10/train_part0.npz": "146b0327cdec356fef32a686530ff870644c2b5cc4a0d2eb99e24cb3b528f2d8",
    "cifar10/train_part1.npz": "4c3d33502a6b63f7e28203fbe9688255fcdaa10a53f8bf1401a9c2eef3de8a29",
    "cifar10/test.npz": "b206f77a57d4a7927e619536d95a3f9f5c64f6ffe8d1a094dddba81bf45296c2",
}

_TV_DIR = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
_TV_TRAIN = {"cifar10": tuple(f"data_batch_{i}" for i in range(1, 6)), "cifar100": ("train",)}
_TV_TEST = {"cifar10": "test_batch", "cifar100": "test"}
_TV_META = {"cifar10": "batches.meta", "cifar100": "meta"}
_NPZ_DIR = {"cifar10": "cifar10", "cifar100": "cifar100"}
_PART_RE = re.compile(r"^train_part.*\.npz$")


def family_of(name: str) -> str:
    """Which file set a dataset name reads: ``cifar100_coarse`` shares CIFAR-100's files."""
    return "cifar10" if name == "cifar10" else "cifar100"


@dataclass
class Layout:
    """Which files of one layout exist; ``status`` is found, partial or missing."""

    layout: str
    path: Path
    present: list[Path] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.missing:
            return "found"
        return "partial" if self.present else "missing"


def _note(lay: Layout, path: Path) -> None:
    if path.is_file():
        lay.present.append(path)
    else:
        lay.missing.append(str(path))


def _train_parts(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if _PART_RE.match(p.name) and p.is_file())


def npz_layout(family: str, root: Path) -> Layout:
    folder = root / _NPZ_DIR[family]
    lay = Layout("npz", folder)
    single = folder / "train.npz"
    if single.is_file():
        lay.present.append(single)
    elif parts := _train_parts(folder):
        lay.present.extend(parts)
    else:
        lay.missing.append(f"{single} (or {folder}/train_part*.npz)")
    _note(lay, folder / "test.npz")
    return lay


def torchvision_layout(family: str, root: Path, *, with_meta: bool = True) -> Layout:
    folder = root / _TV_DIR[family]
    lay = Layout("torchvision", folder)
    names = list(_TV_TRAIN[family]) + [_TV_TEST[family]] + ([_TV_META[family]] if with_meta else [])
    for n in names:
        _note(lay, folder / n)
    return lay


def cifar_layouts(family: str, root: Path) -> list[Layout]:
    """Both layouts of ``family`` ("cifar10" or "cifar100"), npz first (it is preferred)."""
    return [npz_layout(family, root), torchvision_layout(family, root)]


def _choose_layout(family: str, root: Path) -> Layout:
    # Loading needs the data files only; batches.meta / meta is checked by `ddlnl data check`.
    layouts = [npz_layout(family, root), torchvision_layout(family, root, with_meta=False)]
    for lay in layouts:
        if lay.status == "found":
            return lay
    partial = [lay for lay in layouts if lay.status == "partial"]
    if partial:
        lay = partial[0]
        raise DataError(
            f"{family}: the {lay.layout} layout in {lay.path} is incomplete; missing: {', '.join(lay.missing)}",
            f"restore the missing files or remove the folder; or {fetch_hint(family, root, force=True)} "
            f"into {root / _TV_DIR[family]}/",
        )
    npz, tv = layouts
    raise DataError(
        f"{family} not found under {root} (looked for {npz.path}/ and {tv.path}/)",
        f"{fetch_hint(family, root)}; or provide either the npz layout ({npz.path}/train.npz or train_part*.npz, plus {npz.path}/test.npz) "
        f"or the torchvision layout ({tv.path}/ with {', '.join(_TV_TRAIN[family] + (_TV_TEST[family],))}); "
        "or point --data-root / $DDLNL_DATA at the folder that holds them",
    )


def _corrupt(path: Path, why: str) -> DataError:
    return DataError(f"{path} is corrupt or not a CIFAR file: {why}", f"re-obtain {path.name} (re-download / re-extract it)")


def _check_labels(path: Path, labels: np.ndarray, n: int, num_classes: int, what: str) -> np.ndarray:
    if labels.ndim != 1 or labels.shape[0] != n:
        raise _corrupt(path, f"{what} has shape {labels.shape}, expected ({n},)")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise _corrupt(path, f"{what} has dtype {labels.dtype}, expected integers")
    labels = labels.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise _corrupt(path, f"{what} has values outside 0..{num_classes - 1} (min {labels.min()}, max {labels.max()})")
    return labels


def _check_coarse(path: Path, fine: np.ndarray, coarse: np.ndarray) -> None:
    bad = int(np.count_nonzero(CIFAR100_SUPERCLASS_OF_FINE[fine] != coarse))
    if bad:
        raise _corrupt(path, f"{bad} coarse labels disagree with the CIFAR-100 superclass of their fine label")


# ---- torchvision layout -------------------------------------------------------------

def _read_batch(path: Path, family: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    d = load_pickle_restricted(path)
    if not isinstance(d, dict) or b"data" not in d:
        raise _corrupt(path, "no b'data' entry")
    data = d[b"data"]
    if not isinstance(data, np.ndarray) or data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3072:
        shape = getattr(data, "shape", None)
        raise _corrupt(path, f"b'data' must be a uint8 array of shape (N, 3072), got {type(data).__name__} {shape}")
    n = data.shape[0]
    images = np.ascontiguousarray(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))
    label_key = b"labels" if family == "cifar10" else b"fine_labels"
    if label_key not in d:
        raise _corrupt(path, f"no {label_key!r} entry")
    k = 10 if family == "cifar10" else 100
    fine = _check_labels(path, np.asarray(d[label_key]), n, k, label_key.decode())
    coarse = None
    if family == "cifar100":
        if b"coarse_labels" not in d:
            raise _corrupt(path, "no b'coarse_labels' entry")
        coarse = _check_labels(path, np.asarray(d[b"coarse_labels"]), n, 20, "coarse_labels")
        _check_coarse(path, fine, coarse)
    return images, fine, coarse


def _read_torchvision(family: str, folder: Path, files: tuple[str, ...]):
    parts = [_read_batch(folder / f, family) for f in files]
    images = np.concatenate([p[0] for p in parts])
    fine = np.concatenate([p[1] for p in parts])
    coarse = np.concatenate([p[2] for p in parts]) if family == "cifar100" else None
    return images, fine, coarse


def read_meta_names(family: str, root: Path) -> dict[str, list[str]]:
    """Class-name lists stored in the torchvision ``batches.meta`` / ``meta`` file."""
    path = root / _TV_DIR[family] / _TV_META[family]
    d = load_pickle_restricted(path)
    keys = (b"label_names",) if family == "cifar10" else (b"fine_label_names", b"coarse_label_names")
    if not isinstance(d, dict) or any(k not in d for k in keys):
        raise _corrupt(path, f"expected keys {', '.join(map(repr, keys))}")
    out = {}
    for k in keys:
        names = d[k]
        if not isinstance(names, list) or not all(isinstance(s, (bytes, str)) for s in names):
            raise _corrupt(path, f"{k!r} is not a list of strings")
        out[k.decode()] = [s.decode("latin1") if isinstance(s, bytes) else s for s in names]
    return out


# ---- npz layout -------------------------------------------------------------------

def read_npz(path: Path, keys: tuple[str, ...], optional: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
    """All ``keys`` (and any present ``optional`` keys) of an npz file, without pickle."""
    try:
        with np.load(path, allow_pickle=False) as z:
            if not hasattr(z, "files"):
                raise _corrupt(path, "not an npz archive")
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise _corrupt(path, f"missing key(s) {', '.join(missing)} (has {', '.join(z.files) or 'none'})")
            return {k: z[k] for k in keys + optional if k in z.files}
    except DataError:
        raise
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError) as exc:
        raise _corrupt(path, f"{type(exc).__name__}: {exc}") from None


def _npz_split(path: Path, family: str, *, need_start: bool) -> tuple[int, np.ndarray, np.ndarray, np.ndarray | None]:
    keys = ("x", "y", "start") if need_start else ("x", "y")
    optional = (() if need_start else ("start",)) + (("y_coarse",) if family == "cifar100" else ())
    d = read_npz(path, keys, optional)
    x = d["x"]
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[1:] != (32, 32, 3):
        raise _corrupt(path, f"x must be uint8 of shape (N, 32, 32, 3), got {x.dtype} {x.shape}")
    n = x.shape[0]
    k = 10 if family == "cifar10" else 100
    y = _check_labels(path, d["y"], n, k, "y")
    coarse = None
    if family == "cifar100":
        if "y_coarse" not in d:
            raise _corrupt(path, "missing key y_coarse (the CIFAR-100 superclass labels)")
        coarse = _check_labels(path, d["y_coarse"], n, 20, "y_coarse")
        _check_coarse(path, y, coarse)
    start = 0
    if "start" in d:
        s = d["start"]
        if s.shape != () or not np.issubdtype(s.dtype, np.integer):
            raise _corrupt(path, f"start must be an integer scalar, got {s.dtype} {s.shape}")
        start = int(s)
    return start, x, y, coarse


def _read_npz_train(family: str, files: list[Path]):
    if len(files) == 1 and files[0].name == "train.npz":
        _, x, y, c = _npz_split(files[0], family, need_start=False)
        return x, y, c
    parts = sorted((_npz_split(p, family, need_start=True) + (p,) for p in files), key=lambda t: t[0])
    expected = 0
    for start, x, _, _, p in parts:
        if start != expected:
            raise _corrupt(p, f"start is {start} but the parts before it end at row {expected} (parts must be contiguous)")
        expected += x.shape[0]
    x = np.concatenate([t[1] for t in parts])
    y = np.concatenate([t[2] for t in parts])
    c = np.concatenate([t[3] for t in parts]) if family == "cifar100" else None
    return x, y, c


# ---- public -------------------------------------------------------------------------

def _splits(name: str, lay: Layout, train, test) -> DatasetSplits:
    if name == "cifar10":
        classes, pick = CIFAR10_CLASSES, 1
    elif name == "cifar100":
        classes, pick = CIFAR100_FINE_CLASSES, 1
    else:
        classes, pick = CIFAR100_COARSE_CLASSES, 2
    return DatasetSplits(
        name=name,
        train=LabeledImages(train[0], train[pick], classes),
        test=LabeledImages(test[0], test[pick], classes),
        source=f"{lay.layout}:{lay.path}",
    )


def load_cifar(name: str, root: str | Path) -> DatasetSplits:
    """Load ``cifar10``, ``cifar100`` (fine labels) or ``cifar100_coarse`` from ``root``."""
    check_choice("CIFAR dataset", name, CIFAR_NAMES)
    root = Path(root)
    family = family_of(name)
    lay = _choose_layout(family, root)
    if lay.layout == "npz":
        train_files = [p for p in lay.present if p.name != "test.npz"]
        train = _read_npz_train(family, train_files)
        _, *test = _npz_split(lay.path / "test.npz", family, need_start=False)
    else:
        train = _read_torchvision(family, lay.path, _TV_TRAIN[family])
        test = _read_torchvision(family, lay.path, (_TV_TEST[family],))
    return _splits(name, lay, train, tuple(test))


def coarse_view(splits: DatasetSplits) -> DatasetSplits:
    """CIFAR-100 splits relabelled with superclasses, sharing the image arrays."""
    if splits.name != "cifar100":
        raise ValueError(f"coarse_view needs cifar100 splits, got {splits.name}")

    def conv(s: LabeledImages) -> LabeledImages:
        return LabeledImages(s.images, CIFAR100_SUPERCLASS_OF_FINE[s.labels], CIFAR100_COARSE_CLASSES)

    return DatasetSplits("cifar100_coarse", conv(splits.train), conv(splits.test), splits.source, splits.train_index)
