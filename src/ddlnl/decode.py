"""How a stored synthetic set becomes the images a network trains on.

Some distillers store a compressed parameterisation of their set: DANCE's multi-formation
(IDC) packs ``factor``² smaller images into each stored image, and RCIG trains on the set
together with its horizontally flipped copies. ``SyntheticSet.meta["decode"]`` names the
decoder; :func:`decode_set` is the one place that applies it, so the evaluator, the
controls and the report all see the same training set. The IPC budget counts stored images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ddlnl.errors import DataError


def decode_multiformation(images: torch.Tensor, factor: int) -> torch.Tensor:
    """Split each image into a ``factor`` x ``factor`` grid and resize every cell to full size (bilinear).

    Output is crop-major: all images' cell (0, 0), then cell (0, 1), ... — so the labels
    of the decoded set are ``labels.repeat(factor ** 2)``.
    """
    if factor == 1:
        return images
    n, c, h, w = images.shape
    if h % factor or w % factor:
        raise DataError(f"image size {h}x{w} is not divisible by the multi-formation factor {factor}",
                        "use a factor that divides the image side (DANCE: 2 for 32 and 64 px)")
    sh, sw = h // factor, w // factor
    cells = [images[:, :, i * sh:(i + 1) * sh, j * sw:(j + 1) * sw] for i in range(factor) for j in range(factor)]
    return F.interpolate(torch.cat(cells), size=(h, w), mode="bilinear", align_corners=False)


def training_labels(labels: torch.Tensor, meta: dict, loss: str = "ce") -> torch.Tensor:
    """Float labels as the given loss reads them.

    DATM's soft labels are logits already. RCIG's are regression targets
    (``meta["label_semantics"] == "regression_targets"``): MSE (its own recipe) trains on them
    as they are, and cross-entropy on ``targets x meta["label_temperature"]`` (e^tau), the scale
    at which RCIG's outer loss turns them into class logits — softmax of the raw targets would
    be nearly uniform.
    """
    if labels.is_floating_point() and meta.get("label_semantics") == "regression_targets" and loss != "mse":
        return labels * float(meta.get("label_temperature", 1.0))
    return labels


def decode_set(images: torch.Tensor, labels: torch.Tensor, decode: dict | None) -> tuple[torch.Tensor, torch.Tensor]:
    """(images, labels) to train on, given a set's ``meta["decode"]`` (None: the stored set itself)."""
    if not decode:
        return images, labels
    kind = decode.get("kind")
    if kind == "multiformation":
        factor = int(decode.get("factor", 2))
        return decode_multiformation(images, factor), labels.repeat((factor**2,) + (1,) * (labels.dim() - 1))
    if kind == "flip_copies":
        return torch.cat([images, images.flip(-1)]), torch.cat([labels, labels])
    raise DataError(f"unknown decode kind {kind!r} in the synthetic set's metadata",
                    "known kinds: multiformation, flip_copies; was the file written by a newer ddlnl?")
