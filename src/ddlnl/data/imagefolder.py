"""Any image-classification dataset laid out as ``<path>/{train,test}/<class>/<image>``.

Classes are the sorted sub-folder names of ``train`` (``test`` must have the same set);
images (png, jpg, jpeg, bmp, webp, any case) are read in sorted name order and
converted to RGB. Nothing is resized: all images must share one square size, so that a
dataset never changes silently on its way into training. Selected with the dataset
name ``folder:<path>`` (absolute, or relative to the data root).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from ddlnl.data.types import DatasetSplits, LabeledImages
from ddlnl.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
PREFIX = "folder:"

_LAYOUT_FIX = "lay the dataset out as {p}/train/<class>/<image> and {p}/test/<class>/<image>"


def folder_path(name: str, data_root: str | Path) -> Path:
    """The folder named by ``folder:<path>``: absolute, or relative to ``data_root``."""
    raw = Path(name[len(PREFIX):]).expanduser() if name.startswith(PREFIX) else Path(name)
    return raw if raw.is_absolute() else Path(data_root) / raw


def _class_dirs(split: Path) -> dict[str, Path]:
    return {d.name: d for d in sorted(split.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir()
                  if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith("."))


def _read_split(split: Path, classes: list[str], sizes: dict[tuple[int, int], Path]) -> LabeledImages:
    images, labels, paths = [], [], []
    for c, name in enumerate(classes):
        for path in _images_in(split / name):
            try:
                with Image.open(path) as im:
                    arr = np.asarray(im.convert("RGB"), dtype=np.uint8)
            except (OSError, UnidentifiedImageError, ValueError) as exc:
                raise DataError(f"cannot decode image {path}: {exc}", "replace or remove the file") from None
            size = (arr.shape[1], arr.shape[0])
            sizes.setdefault(size, path)
            if len(sizes) > 1 or size[0] != size[1]:
                found = ", ".join(f"{w}x{h} (e.g. {p})" for (w, h), p in sizes.items())
                raise DataError(
                    f"{path} is {size[0]}x{size[1]}; images of a folder dataset must all be the same square size "
                    f"(sizes found: {found})",
                    "resize every image to one square size (e.g. 32x32) before training",
                )
            images.append(arr)
            labels.append(c)
            paths.append(path.relative_to(split).as_posix())
    if not images:
        raise DataError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) under {split}", _LAYOUT_FIX.format(p=split.parent))
    return LabeledImages(np.stack(images), np.asarray(labels, dtype=np.int64), tuple(classes), tuple(paths))


def load_image_folder(path: str | Path, name: str | None = None) -> DatasetSplits:
    """Train and test splits of the ImageFolder tree at ``path``."""
    path = Path(path)
    train_dir, test_dir = path / "train", path / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise DataError(f"folder dataset: {d} does not exist", _LAYOUT_FIX.format(p=path))
    train_classes, test_classes = _class_dirs(train_dir), _class_dirs(test_dir)
    if not train_classes:
        raise DataError(f"{train_dir} has no class sub-folders", _LAYOUT_FIX.format(p=path))
    if set(train_classes) != set(test_classes):
        only_train = sorted(set(train_classes) - set(test_classes))
        only_test = sorted(set(test_classes) - set(train_classes))
        raise DataError(
            f"{path}: train and test have different classes (only in train: {only_train or 'none'}; "
            f"only in test: {only_test or 'none'})",
            "give train/ and test/ the same class sub-folders",
        )
    classes = sorted(train_classes)
    empty = [c for c in classes if not _images_in(train_dir / c)]
    if empty:
        raise DataError(f"{train_dir}: class folder(s) without images: {', '.join(empty)}",
                        "add images or remove the empty class folders from train/ and test/")
    sizes: dict[tuple[int, int], Path] = {}
    train, test = _read_split(train_dir, classes, sizes), _read_split(test_dir, classes, sizes)
    return DatasetSplits(name or f"{PREFIX}{path}", train, test, source=f"folder:{path}")
