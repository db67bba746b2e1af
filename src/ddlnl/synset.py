"""The SyntheticSet file: a distilled set that explains itself and loads without unpickling.

One ``.safetensors`` file holds the tensors (``images`` in network-input space, ``labels``
as int64 class indices or float soft-label logits, the learned ``lr`` if any, and the
preprocessing state such as the ZCA matrix) and, in its header, a JSON document with the
metadata: method, IPC, dataset, classes, noise spec with realised rate and seed, preset,
package versions. Sets saved by the original DATM/MTT code (``images_best.pt``,
``labels_best.pt``, ``lr_best.pt``) are read too, with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.errors import DataError
from ddlnl.utils.io import atomic_path, load_weights_only

FORMAT_VERSION = 1


@dataclass
class SyntheticSet:
    images: torch.Tensor  # float (N, 3, H, W), preprocessed (network input space)
    labels: torch.Tensor  # int64 (N,) or float (N, C) soft-label logits
    preprocess: Preprocessor
    lr: float | None = None
    meta: dict = field(default_factory=dict)

    @property
    def label_kind(self) -> str:
        return "hard" if self.labels.dtype == torch.long else "soft"

    def training_data(self, labels: torch.Tensor | None = None, loss: str = "ce") -> tuple[torch.Tensor, torch.Tensor]:
        """The (images, labels) a network trains on with ``loss``: the stored set decoded per
        ``meta["decode"]`` (multi-formation, flip copies) and float labels read per
        ``meta["label_semantics"]`` (:mod:`ddlnl.decode`). ``labels`` replace the set's own."""
        from ddlnl.decode import decode_set, training_labels

        labels = training_labels(self.labels if labels is None else labels, self.meta, loss)
        return decode_set(self.images, labels, self.meta.get("decode"))

    def hard_labels(self) -> torch.Tensor:
        """Class indices: the labels themselves, or the argmax of soft labels (the hard-label control)."""
        return self.labels if self.label_kind == "hard" else self.labels.argmax(dim=1)

    # -- file I/O --------------------------------------------------------------------------
    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        tensors = {"images": self.images.detach().cpu().contiguous(), "labels": self.labels.detach().cpu().contiguous()}
        if self.lr is not None:
            tensors["lr"] = torch.tensor([float(self.lr)])
        tensors.update({k: v.cpu().contiguous() for k, v in self.preprocess.state_tensors().items()})
        header = {
            "format": "ddlnl.synthetic_set",
            "format_version": FORMAT_VERSION,
            "label_kind": self.label_kind,
            "preprocess": self.preprocess.meta(),
            "meta": self.meta,
        }
        with atomic_path(path) as tmp:
            save_file(tensors, str(tmp), metadata={"ddlnl": json.dumps(header, default=str)})
        return path

    @classmethod
    def load(cls, path: str | Path) -> "SyntheticSet":
        """Load a ddlnl ``.safetensors`` file, or a directory/file saved by DATM/MTT."""
        path = Path(path)
        if not path.exists():
            raise DataError(f"synthetic set {path} does not exist", "pass the path of a .safetensors file or a DATM/MTT folder")
        if path.is_dir() or path.suffix == ".pt":
            return _load_datm(path)
        return _load_safetensors(path)


def match_training_images(images: torch.Tensor, train: torch.Tensor) -> tuple[torch.Tensor | None, str]:
    """(training index of each image, how) when every image is a training image up to storage rounding,
    else (None, why): which real images a random control or an initialisation was made of, so the
    share of them whose noisy label is wrong can be counted (label purity) and shown."""
    dist, idx = torch.cdist(images.float().flatten(1), train.float().flatten(1)).topk(2, dim=1, largest=False)
    match, runner_up = dist[:, 0], dist[:, 1]
    how = f"match distance <= {float(match.max()):.3g}, next image >= {float(runner_up.min()):.3g}"
    return (None, how) if bool((match > 0.5 * runner_up).any()) else (idx[:, 0], how)


def _load_safetensors(path: Path) -> SyntheticSet:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            header = json.loads((f.metadata() or {}).get("ddlnl", "null"))
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise DataError(
            f"{path} is not a readable safetensors file ({e})",
            "re-create it with `ddlnl distill` or `ddlnl run`; the file may be truncated",
        ) from None
    if not isinstance(header, dict) or header.get("format") != "ddlnl.synthetic_set":
        raise DataError(f"{path} is a safetensors file but not a ddlnl synthetic set (no 'ddlnl' header)", "pass a file written by ddlnl")
    for key in ("images", "labels"):
        if key not in tensors:
            raise DataError(f"{path} has no '{key}' tensor", "the file is damaged; re-create it")
    images, labels = tensors["images"], tensors["labels"]
    _check_shapes(path, images, labels)
    lr = float(tensors["lr"].reshape(-1)[0]) if "lr" in tensors and tensors["lr"].numel() else None
    meta, pre_meta = header.get("meta", {}), header.get("preprocess", {})
    if not isinstance(meta, dict) or not isinstance(pre_meta, dict):
        raise DataError(f"{path}: the ddlnl header's 'meta' and 'preprocess' must be mappings", "the file is damaged; re-create it")
    try:
        pre = Preprocessor.from_state(pre_meta, tensors)
    except (KeyError, ValueError, TypeError, RuntimeError) as e:  # e.g. a ZCA set without its matrix
        raise DataError(f"{path}: its preprocessing state is incomplete or damaged ({type(e).__name__}: {e})",
                        "the file is damaged; re-create it with `ddlnl distill` or `ddlnl run`") from None
    return SyntheticSet(images.float(), labels, pre, lr, meta)


def _check_shapes(path, images: torch.Tensor, labels: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise DataError(f"{path}: images have shape {tuple(images.shape)}, expected (N, 3, H, W)", "pass a set of RGB images")
    if labels.shape[0] != images.shape[0] or labels.ndim not in (1, 2):
        raise DataError(
            f"{path}: {images.shape[0]} images but labels of shape {tuple(labels.shape)}",
            "labels must be (N,) class indices or (N, C) soft labels",
        )
    if not torch.isfinite(images).all():
        raise DataError(f"{path}: images contain NaN or Inf", "the distillation diverged; use an earlier checkpoint")


def _load_pt(path: Path) -> torch.Tensor:
    obj = load_weights_only(path, fix="pass a file saved with torch.save(tensor), e.g. DATM's images_best.pt")
    if not isinstance(obj, torch.Tensor):
        raise DataError(f"{path} holds a {type(obj).__name__}, not a tensor", "pass images_best.pt / labels_best.pt / lr_best.pt as saved by DATM/MTT")
    return obj.detach()


def _load_datm(path: Path) -> SyntheticSet:
    folder = path if path.is_dir() else path.parent
    stem = "best"
    if path.is_file():
        name = path.stem  # e.g. images_best, images_5000
        stem = name.split("_", 1)[1] if "_" in name else "best"
    img_file, lab_file, lr_file = (folder / f"{k}_{stem}.pt" for k in ("images", "labels", "lr"))
    if not img_file.exists() or not lab_file.exists():
        raise DataError(
            f"no DATM/MTT synthetic set in {folder} (looked for {img_file.name} and {lab_file.name})",
            "pass a ddlnl .safetensors file, or a folder with images_best.pt and labels_best.pt",
        )
    images, labels = _load_pt(img_file), _load_pt(lab_file)
    if labels.ndim == 1:
        labels = labels.long()
    else:
        labels = labels.float()
    _check_shapes(img_file, images, labels)
    lr = float(_load_pt(lr_file).reshape(-1)[0]) if lr_file.exists() else None
    meta = {"method": "external", "source": str(folder), "format": "datm"}
    return SyntheticSet(images.float(), labels, Preprocessor("none"), lr, meta)
