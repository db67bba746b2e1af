"""Differentiable augmentation: DSA (as in DC/DSA/MTT/DATM), DANCE's op order, crop+flip and CutMix.

DSA ("differentiable siamese augmentation") is ``DiffAugment`` with ``ParamDiffAug``
defaults and ``aug_mode='S'``: each call picks ONE token of the strategy uniformly and
applies it ('color' = brightness, saturation, contrast, in that order). Every op is
differentiable w.r.t. the images, which is what lets gradients reach synthetic pixels.

The original re-seeds the global RNG to make two calls agree ("siamese" use in DM). Here a
draw is an explicit object instead: :func:`sample_dsa` returns a :class:`DSADraw` (the op
and its parameter tensors) and :func:`apply_dsa` applies it, so real and synthetic batches
get exactly the same transform. A shared draw holds one value per parameter and applies to
a batch of any size; a per-sample draw holds one value per image.

All randomness comes from the ``generator`` argument (the global RNG when None), is drawn
on the generator's device and then moved, so a seed reproduces the same result on any
device. Everything is vectorised over the batch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn import functional as F

from ddlnl.errors import ConfigError

DEFAULT_DSA_STRATEGY = "color_crop_cutout_flip_scale_rotate"
DSA_OPS = ("color", "crop", "cutout", "flip", "scale", "rotate")

# ParamDiffAug defaults (identical in DC, DSA, DM, MTT, DATM).
BRIGHTNESS = 1.0  # offset (u - 0.5) * 1.0 added to every pixel
SATURATION = 2.0  # factor u * 2 on the distance to the per-pixel channel mean
CONTRAST = 0.5  # factor u + 0.5 on the distance to the per-image mean
CROP_PAD = 0.125  # max integer shift: int(0.125 * side + 0.5) = 4 at 32 px, zero fill
CUTOUT = 0.5  # square side int(0.5 * side + 0.5) = 16 at 32 px
FLIP_P = 0.5  # probability of a horizontal flip
SCALE = 1.2  # sx, sy ~ U(1/1.2, 1.2), independently
ROTATE_DEG = 15.0  # angle ~ U(-15, 15) degrees

Size = tuple[int, int]


@dataclass(frozen=True, eq=False)
class DSADraw:
    """One DSA parameter draw: the chosen op and its parameters.

    ``params`` maps names to tensors of shape (n,), n = batch size for a per-sample draw
    and 1 for a shared draw. Keys per op: color: brightness (offset), saturation,
    contrast (factors); crop: shift_h, shift_w (ints, out[i] = in[i + shift]); cutout:
    centre_h, centre_w (ints); flip: flip (bool); scale: sx, sy; rotate: angle (radians).
    ``op == "none"`` is the identity.
    """

    op: str
    image_size: Size
    shared: bool
    params: dict[str, torch.Tensor] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> "DSADraw":
        """The same draw with its tensors on ``device``."""
        moved = {k: v.to(device) for k, v in self.params.items()}
        return DSADraw(self.op, self.image_size, self.shared, moved)


# ----------------------------------------------------------------------------- parsing


def parse_strategy(strategy: str) -> list[str]:
    """Tokens of a DSA strategy string; '', 'none' and 'None' mean no augmentation."""
    if strategy in ("", "none", "None"):
        return []
    tokens = strategy.split("_")
    bad = [t for t in tokens if t not in DSA_OPS]
    if bad:
        raise ConfigError(
            f"unknown DSA op(s) {', '.join(map(repr, bad))} in strategy {strategy!r}",
            f"join tokens from {', '.join(DSA_OPS)} with '_', e.g. {DEFAULT_DSA_STRATEGY!r}",
        )
    return tokens


def _size(image_size: int | Size) -> Size:
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if h < 1 or w < 1:
        raise ConfigError(f"image_size must be positive, got {image_size!r}", "pass e.g. 32")
    return int(h), int(w)


def _rng_device(generator: torch.Generator | None) -> torch.device:
    return generator.device if generator is not None else torch.device("cpu")


# ----------------------------------------------------------------------------- sampling


def sample_dsa(
    strategy: str,
    batch_size: int,
    *,
    image_size: int | Size,
    generator: torch.Generator | None = None,
    device: torch.device | str | None = None,
    shared: bool = False,
) -> DSADraw | DiffAugDraw:
    """Pick one op of ``strategy`` and draw its parameters (one set if ``shared``).

    A ``dance:`` strategy gives a :class:`DiffAugDraw` in DANCE's op order instead (see below)."""
    if strategy.startswith(DANCE_PREFIX):
        return _sample_dance(strategy, batch_size, image_size, generator, device, shared)
    tokens = parse_strategy(strategy)
    size = _size(image_size)
    if not tokens:
        return DSADraw("none", size, shared)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}", "pass the batch length")
    g, dev = generator, _rng_device(generator)
    op = tokens[int(torch.randint(len(tokens), (1,), generator=g, device=dev))]
    n = 1 if shared else batch_size
    params = _SAMPLERS[op](n, size, g, dev)
    draw = DSADraw(op, size, shared, params)
    return draw.to(device) if device is not None else draw


def _uniform(n: int, g, dev) -> torch.Tensor:
    return torch.rand(n, generator=g, device=dev)


def _randint(low: int, high: int, n: int, g, dev) -> torch.Tensor:
    return torch.randint(low, high, (n,), generator=g, device=dev)


def _sample_color(n, size, g, dev):
    return {
        "brightness": (_uniform(n, g, dev) - 0.5) * BRIGHTNESS,
        "saturation": _uniform(n, g, dev) * SATURATION,
        "contrast": _uniform(n, g, dev) + CONTRAST,
    }


def _sample_crop(n, size, g, dev):
    sh, sw = (int(s * CROP_PAD + 0.5) for s in size)
    return {
        "shift_h": _randint(-sh, sh + 1, n, g, dev),
        "shift_w": _randint(-sw, sw + 1, n, g, dev),
    }


def _cutout_side(size: Size) -> Size:
    return int(size[0] * CUTOUT + 0.5), int(size[1] * CUTOUT + 0.5)


def _sample_cutout(n, size, g, dev):
    # As the original: centre in [0, side] for an even square, [0, side) for an odd one.
    (h, w), (ch, cw) = size, _cutout_side(size)
    return {
        "centre_h": _randint(0, h + 1 - ch % 2, n, g, dev),
        "centre_w": _randint(0, w + 1 - cw % 2, n, g, dev),
    }


def _sample_flip(n, size, g, dev):
    return {"flip": _uniform(n, g, dev) < FLIP_P}


def _sample_scale(n, size, g, dev):
    lo = 1.0 / SCALE
    return {
        "sx": _uniform(n, g, dev) * (SCALE - lo) + lo,
        "sy": _uniform(n, g, dev) * (SCALE - lo) + lo,
    }


def _sample_rotate(n, size, g, dev):
    return {"angle": (_uniform(n, g, dev) - 0.5) * 2 * math.radians(ROTATE_DEG)}


_SAMPLERS = {
    "color": _sample_color,
    "crop": _sample_crop,
    "cutout": _sample_cutout,
    "flip": _sample_flip,
    "scale": _sample_scale,
    "rotate": _sample_rotate,
}

# ----------------------------------------------------------------------------- applying


def apply_dsa(x: torch.Tensor, draw: DSADraw | DiffAugDraw) -> torch.Tensor:
    """Apply ``draw`` to images ``x`` (N, C, H, W); differentiable w.r.t. ``x``."""
    if isinstance(draw, DiffAugDraw):
        for d in draw.draws:
            x = apply_dsa(x, d)
        return x
    if x.dim() != 4 or tuple(x.shape[-2:]) != draw.image_size:
        raise ConfigError(
            f"DSA draw is for {draw.image_size} images, got a tensor of shape {tuple(x.shape)}",
            "sample the draw with image_size equal to the batch's (H, W)",
        )
    if draw.op == "none":
        return x
    p = {k: v.to(x.device) for k, v in draw.params.items()}
    n = next(iter(p.values())).shape[0]
    if n != 1 and n != x.shape[0]:
        raise ConfigError(
            f"per-sample DSA draw has {n} entries but the batch has {x.shape[0]} images",
            "sample with batch_size equal to the batch, or with shared=True",
        )
    return _APPLIERS[draw.op](x, p)


def _col(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """(n,) -> (n, 1, 1, 1) in x's dtype, for broadcasting over (N, C, H, W)."""
    return t.to(x.dtype).view(-1, 1, 1, 1)


def _color(x, p):
    x = x + _col(p["brightness"], x)
    mean = x.mean(dim=1, keepdim=True)
    x = (x - mean) * _col(p["saturation"], x) + mean
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return (x - mean) * _col(p["contrast"], x) + mean


def translate(x: torch.Tensor, shift_h: torch.Tensor, shift_w: torch.Tensor) -> torch.Tensor:
    """out[..., i, j] = x[..., i + shift_h, j + shift_w], zero outside; shifts (n,), n in {1, N}.

    Two gathers on a 1-pixel zero-padded copy with clamped indices (the original's trick):
    any index past the border lands on the zero ring.
    """
    n, c, h, w = x.shape
    xp = F.pad(x, (1, 1, 1, 1))
    rows = (torch.arange(h, device=x.device) + shift_h.view(-1, 1) + 1).clamp(0, h + 1)
    cols = (torch.arange(w, device=x.device) + shift_w.view(-1, 1) + 1).clamp(0, w + 1)
    out = xp.gather(2, rows.expand(n, h)[:, None, :, None].expand(n, c, h, w + 2))
    return out.gather(3, cols.expand(n, w)[:, None, None, :].expand(n, c, h, w))


def _crop(x, p):
    return translate(x, p["shift_h"], p["shift_w"])


def _cutout(x, p):
    h, w = x.shape[-2:]
    ch, cw = _cutout_side((h, w))
    top = (p["centre_h"] - ch // 2).view(-1, 1)
    left = (p["centre_w"] - cw // 2).view(-1, 1)
    ar_h, ar_w = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    rows = (ar_h >= top) & (ar_h < top + ch)
    cols = (ar_w >= left) & (ar_w < left + cw)
    keep = ~(rows[:, :, None] & cols[:, None, :])
    return x * keep[:, None].to(x.dtype)


def _flip(x, p):
    return torch.where(p["flip"].view(-1, 1, 1, 1), x.flip(3), x)


def _affine(x: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    """grid_sample with affine ``theta`` (n, 2, 3), n in {1, N}; align_corners=True as DSA."""
    n, c, h, w = x.shape
    grid = F.affine_grid(theta.to(x.dtype), [theta.shape[0], c, h, w], align_corners=True)
    return F.grid_sample(x, grid.expand(n, h, w, 2), align_corners=True)


def _scale(x, p):
    sx, sy = p["sx"], p["sy"]
    zero = torch.zeros_like(sx)
    theta = torch.stack([torch.stack([sx, zero, zero], 1), torch.stack([zero, sy, zero], 1)], 1)
    return _affine(x, theta)


def _rotate(x, p):
    a = p["angle"]
    cos, sin, zero = torch.cos(a), torch.sin(a), torch.zeros_like(a)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    return _affine(x, theta)


_APPLIERS = {
    "color": _color,
    "crop": _crop,
    "cutout": _cutout,
    "flip": _flip,
    "scale": _scale,
    "rotate": _rotate,
}

# ----------------------------------------------------------------------------- DANCE's op order
#
# DANCE (from IDC, misc/augment.py ``DiffAug``) uses the DSA ops and parameters above in another
# order: ``flip`` and ``color`` are applied always when listed (in that order), then ONE op drawn
# uniformly from the remaining ones (crop, scale, rotate), then ``cutout`` always, last. A
# strategy string selects this order with the prefix ``dance:``, e.g. ``dance:color_crop``
# (DANCE's expert training), ``dance:color_crop_cutout`` (its siamese matching augmentation) or
# ``dance:color_crop_flip_scale_rotate`` (its evaluation), so every caller of ``sample_dsa`` /
# ``dsa`` (the trainer, DM's siamese batches) takes it unchanged. ``shared`` draws one parameter
# set per op for the whole batch (IDC's ``batch=True``).

DANCE_PREFIX = "dance:"
DANCE_FIRST = ("flip", "color")  # always, in this order
DANCE_LAST = ("cutout",)  # always, last


@dataclass(frozen=True, eq=False)
class DiffAugDraw:
    """Draws applied one after the other (DANCE's order); ``apply_dsa`` takes it like a DSADraw."""

    draws: tuple[DSADraw, ...]
    image_size: Size
    shared: bool

    @property
    def op(self) -> str:
        return "+".join(d.op for d in self.draws) or "none"

    def to(self, device: torch.device | str) -> DiffAugDraw:
        return DiffAugDraw(tuple(d.to(device) for d in self.draws), self.image_size, self.shared)


def dance_ops(strategy: str) -> tuple[list[str], list[str], list[str]]:
    """(always first, pick one of, always last) for a ``dance:`` strategy string."""
    tokens = parse_strategy(strategy.removeprefix(DANCE_PREFIX))
    first = [op for op in DANCE_FIRST if op in tokens]
    last = [op for op in DANCE_LAST if op in tokens]
    middle = [t for t in tokens if t not in DANCE_FIRST and t not in DANCE_LAST]
    return first, middle, last


def _sample_dance(strategy, batch_size, image_size, generator, device, shared) -> DiffAugDraw:
    first, middle, last = dance_ops(strategy)
    size = _size(image_size)
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}", "pass the batch length")
    g, dev = generator, _rng_device(generator)
    n = 1 if shared else batch_size
    ops = list(first)
    if middle:
        ops.append(middle[int(torch.randint(len(middle), (1,), generator=g, device=dev))])
    ops += last
    draws = tuple(DSADraw(op, size, shared, _SAMPLERS[op](n, size, g, dev)) for op in ops)
    draw = DiffAugDraw(draws, size, shared)
    return draw.to(device) if device is not None else draw


# ----------------------------------------------------------------------------- conveniences


def dsa(
    x: torch.Tensor,
    strategy: str = DEFAULT_DSA_STRATEGY,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """DSA with a per-sample draw (the original's ``seed=-1``), as used in training."""
    draw = sample_dsa(
        strategy, x.shape[0], image_size=tuple(x.shape[-2:]), generator=generator, shared=False
    )
    return apply_dsa(x, draw)


def siamese_dsa(
    *batches: torch.Tensor,
    strategy: str = DEFAULT_DSA_STRATEGY,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, ...]:
    """ONE shared draw applied to every batch (DM/DANCE real vs synthetic); sizes may differ."""
    if not batches:
        raise ConfigError("siamese_dsa needs at least one batch", "pass the image tensors")
    size = tuple(batches[0].shape[-2:])
    draw = sample_dsa(strategy, 1, image_size=size, generator=generator, shared=True)
    return tuple(apply_dsa(b, draw) for b in batches)


def crop_flip(
    x: torch.Tensor, generator: torch.Generator | None = None, pad: int = 4
) -> torch.Tensor:
    """Standard random crop (zero padding ``pad``) + horizontal flip, per sample.

    Equivalent to RandomCrop(side, padding=pad) then RandomHorizontalFlip(0.5), for
    training on full data. Draw order: shift_h, shift_w, flip.
    """
    n, dev = x.shape[0], _rng_device(generator)
    sh = _randint(-pad, pad + 1, n, generator, dev).to(x.device)
    sw = _randint(-pad, pad + 1, n, generator, dev).to(x.device)
    flip = (_uniform(n, generator, dev) < 0.5).to(x.device)
    return _flip(translate(x, sh, sw), {"flip": flip})


def cutmix(
    x: torch.Tensor,
    y: torch.Tensor,
    generator: torch.Generator | None = None,
    beta: float = 1.0,
    p: float = 0.5,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """CutMix as in DANCE/IDC: with probability ``p`` paste one box from a permuted batch.

    Returns ``(x_mixed, y_a, y_b, lam)``; train on ``lam * loss(y_a) + (1 - lam) * loss(y_b)``.
    ``lam`` is 1 - box area / image area (the box is clipped at the border). Without mixing
    it returns ``(x, y, y, 1.0)``. ``y`` may be hard (N,) or soft (N, K) labels.
    """
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"cutmix p must be in [0, 1], got {p}", "use e.g. p=0.5")
    g, dev = generator, _rng_device(generator)
    if beta <= 0 or float(torch.rand((), generator=g, device=dev)) >= p:
        return x, y, y, 1.0
    lam = _beta(beta, g, dev)
    perm = torch.randperm(x.shape[0], generator=g, device=dev).to(x.device)
    h, w = x.shape[-2:]
    cut = math.sqrt(1.0 - lam)
    cut_h, cut_w = int(h * cut), int(w * cut)
    cy, cx = int(_randint(0, h, 1, g, dev)), int(_randint(0, w, 1, g, dev))
    y1, y2 = max(cy - cut_h // 2, 0), min(cy + cut_h // 2, h)
    x1, x2 = max(cx - cut_w // 2, 0), min(cx + cut_w // 2, w)
    box = torch.zeros(h, w, dtype=torch.bool, device=x.device)
    box[y1:y2, x1:x2] = True
    mixed = torch.where(box, x[perm], x)
    return mixed, y, y[perm], 1.0 - (y2 - y1) * (x2 - x1) / (h * w)


def _beta(beta: float, g, dev) -> float:
    """Beta(beta, beta) sample driven by the torch generator (torch's Beta takes none)."""
    if beta == 1.0:
        return float(torch.rand((), generator=g, device=dev))
    seed = int(torch.randint(0, 2**62, (1,), generator=g, device=dev))
    return float(np.random.default_rng(seed).beta(beta, beta))
