"""DSA, crop+flip and CutMix against hand-computed expectations on tiny inputs."""

from __future__ import annotations

import math

import pytest
import torch

from ddlnl.augment import (
    DEFAULT_DSA_STRATEGY,
    DSA_OPS,
    DSADraw,
    apply_dsa,
    crop_flip,
    cutmix,
    dsa,
    sample_dsa,
    siamese_dsa,
)
from ddlnl.errors import ConfigError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = 4, size: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 3, size, size, generator=gen(seed))


def draw(op: str, size: int = 32, **params) -> DSADraw:
    """A hand-made per-sample (or shared, if every tensor has one entry) draw."""
    tensors = {k: torch.as_tensor(v) for k, v in params.items()}
    shared = all(t.shape[0] == 1 for t in tensors.values())
    return DSADraw(op, (size, size), shared, tensors)


# ----------------------------------------------------------------------------- siamese


@pytest.mark.parametrize("op", DSA_OPS)
def test_shared_draw_is_identical_across_batches_of_any_size(op):
    a, b = images(3, seed=1), images(5, seed=2)
    d = sample_dsa(op, 1, image_size=32, generator=gen(7), shared=True)
    assert all(t.shape == (1,) for t in d.params.values())
    out_a = apply_dsa(a, d)
    out_ab = apply_dsa(torch.cat([a, b]), d)
    torch.testing.assert_close(out_ab[:3], out_a, atol=1e-6, rtol=0)


@pytest.mark.parametrize("op", DSA_OPS)
def test_shared_draw_gives_every_sample_the_same_transform(op):
    x = images(1).expand(6, -1, -1, -1)
    out = apply_dsa(x, sample_dsa(op, 6, image_size=32, generator=gen(3), shared=True))
    for i in range(1, 6):
        torch.testing.assert_close(out[i], out[0], atol=1e-6, rtol=0)


def test_siamese_dsa_matches_rows_of_a_larger_batch():
    a, b = images(2, seed=1), images(7, seed=2)
    for seed in range(12):  # covers every op with high probability
        out_a, out_ab = siamese_dsa(a, torch.cat([a, b]), generator=gen(seed))
        assert out_ab.shape == (9, 3, 32, 32)
        torch.testing.assert_close(out_ab[:2], out_a, atol=1e-6, rtol=0)


def test_per_sample_draw_differs_between_samples():
    x = images(1).expand(8, -1, -1, -1)
    out = apply_dsa(x, sample_dsa("color", 8, image_size=32, generator=gen(0)))
    assert not torch.allclose(out[0], out[1])


# ----------------------------------------------------------------------------- each op


def test_flip_flips_where_drawn():
    x = images(2)
    out = apply_dsa(x, draw("flip", flip=[True, False]))
    assert torch.equal(out[0], x[0].flip(-1))
    assert torch.equal(out[1], x[1])


@pytest.mark.parametrize("sh,sw", [(1, -2), (-4, 4), (0, 0), (3, 0)])
def test_crop_shifts_by_drawn_amount_with_zero_fill(sh, sw):
    x = torch.arange(1, 1 + 3 * 6 * 6, dtype=torch.float).view(1, 3, 6, 6)
    out = apply_dsa(x, draw("crop", size=6, shift_h=[sh], shift_w=[sw]))
    expect = torch.zeros_like(x)
    for i in range(6):
        for j in range(6):
            if 0 <= i + sh < 6 and 0 <= j + sw < 6:
                expect[0, :, i, j] = x[0, :, i + sh, j + sw]
    assert torch.equal(out, expect)


def test_crop_shifts_stay_within_pad():
    d = sample_dsa("crop", 4000, image_size=32, generator=gen(0))
    for key in ("shift_h", "shift_w"):
        assert d.params[key].min() == -4 and d.params[key].max() == 4


def test_cutout_zeroes_a_16_square_on_32px():
    x = torch.ones(1, 3, 32, 32)
    out = apply_dsa(x, draw("cutout", centre_h=[16], centre_w=[10]))
    zero = out[0, 0] == 0
    assert zero.sum() == 16 * 16
    assert zero[8:24, 2:18].all()
    assert (out[:, 1:] == out[:, :1]).all()  # same mask on every channel


def test_random_cutouts_are_the_square_clipped_to_the_image():
    n = 300
    d = sample_dsa("cutout", n, image_size=32, generator=gen(0))
    out = apply_dsa(torch.ones(n, 1, 32, 32), d)
    ch, cw = d.params["centre_h"], d.params["centre_w"]
    assert ch.min() >= 0 and ch.max() <= 32
    for i in range(0, n, 37):
        expect = torch.ones(32, 32)
        top, left = int(ch[i]) - 8, int(cw[i]) - 8
        expect[max(top, 0) : max(top + 16, 0), max(left, 0) : max(left + 16, 0)] = 0
        assert torch.equal(out[i, 0], expect)


def test_brightness_adds_the_drawn_offset():
    x = images(2)
    d = draw("color", brightness=[0.3, -0.2], saturation=[1.0, 1.0], contrast=[1.0, 1.0])
    out = apply_dsa(x, d)
    torch.testing.assert_close(out, x + torch.tensor([0.3, -0.2]).view(2, 1, 1, 1))


def test_saturation_formula():
    x = images(1)
    out = apply_dsa(x, draw("color", brightness=[0.0], saturation=[1.7], contrast=[1.0]))
    mean = x.mean(dim=1, keepdim=True)
    torch.testing.assert_close(out, (x - mean) * 1.7 + mean)


def test_contrast_formula():
    x = images(1)
    out = apply_dsa(x, draw("color", brightness=[0.0], saturation=[1.0], contrast=[0.6]))
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, (x - mean) * 0.6 + mean)


def test_color_applies_brightness_then_saturation_then_contrast():
    x = images(1)
    out = apply_dsa(x, draw("color", brightness=[0.1], saturation=[0.4], contrast=[1.3]))
    y = x + 0.1
    m = y.mean(1, keepdim=True)
    y = (y - m) * 0.4 + m
    m = y.mean((1, 2, 3), keepdim=True)
    torch.testing.assert_close(out, (y - m) * 1.3 + m)


def test_color_parameter_ranges():
    p = sample_dsa("color", 4000, image_size=32, generator=gen(0)).params
    assert -0.5 <= p["brightness"].min() and p["brightness"].max() < 0.5
    assert 0.0 <= p["saturation"].min() and p["saturation"].max() < 2.0
    assert 0.5 <= p["contrast"].min() and p["contrast"].max() < 1.5


def test_scale_and_rotate_identity_return_the_input():
    x = images(2)
    scaled = apply_dsa(x, draw("scale", sx=[1.0], sy=[1.0]))
    torch.testing.assert_close(scaled, x, atol=1e-5, rtol=0)
    rotated = apply_dsa(x, draw("rotate", angle=[0.0]))
    torch.testing.assert_close(rotated, x, atol=1e-5, rtol=0)


def test_scale_by_minus_one_flips_both_axes():
    x = images(1, size=8)
    out = apply_dsa(x, draw("scale", size=8, sx=[-1.0], sy=[-1.0]))
    torch.testing.assert_close(out, x.flip(2, 3), atol=1e-5, rtol=0)


def test_rotate_by_90_degrees_is_rot90():
    x = images(1, size=8)
    out = apply_dsa(x, draw("rotate", size=8, angle=[math.pi / 2]))
    torch.testing.assert_close(out, torch.rot90(x, 1, (2, 3)), atol=1e-5, rtol=0)


def test_scale_rotate_flip_parameter_ranges():
    p = sample_dsa("scale", 4000, image_size=32, generator=gen(0)).params
    for k in ("sx", "sy"):
        assert 1 / 1.2 <= p[k].min() and p[k].max() < 1.2
    assert not torch.equal(p["sx"], p["sy"])
    a = sample_dsa("rotate", 4000, image_size=32, generator=gen(0)).params["angle"]
    assert a.abs().max() <= math.radians(15) and a.abs().max() > math.radians(14)
    f = sample_dsa("flip", 4000, image_size=32, generator=gen(0)).params["flip"].float().mean()
    assert 0.45 < f < 0.55


def test_one_op_is_chosen_uniformly():
    counts = {op: 0 for op in DSA_OPS}
    g = gen(0)
    for _ in range(600):
        counts[sample_dsa(DEFAULT_DSA_STRATEGY, 1, image_size=32, generator=g, shared=True).op] += 1
    assert all(60 < c < 140 for c in counts.values()), counts


# ----------------------------------------------------------------------------- autograd


@pytest.mark.parametrize("op", DSA_OPS)
def test_gradient_flows_to_images(op):
    x = images(2, size=8).double().requires_grad_()
    d = sample_dsa(op, 2, image_size=8, generator=gen(5))
    assert torch.autograd.gradcheck(lambda t: apply_dsa(t, d), (x,))
    x.grad = None
    dsa(x, op, generator=gen(5)).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


# ----------------------------------------------------------------------------- reproducibility


def test_same_seed_same_output():
    x = images(6)
    for seed in range(8):
        assert torch.equal(dsa(x, generator=gen(seed)), dsa(x, generator=gen(seed)))
        a1 = siamese_dsa(x, x[:2], generator=gen(seed))
        a2 = siamese_dsa(x, x[:2], generator=gen(seed))
        assert all(torch.equal(u, v) for u, v in zip(a1, a2))
    assert torch.equal(crop_flip(x, gen(3)), crop_flip(x, gen(3)))
    assert not torch.equal(crop_flip(x, gen(3)), crop_flip(x, gen(4)))


def test_none_strategy_is_identity():
    x = images(2)
    assert dsa(x, "none") is x
    assert siamese_dsa(x, strategy="")[0] is x


# ----------------------------------------------------------------------------- errors


def test_unknown_token_raises_config_error():
    with pytest.raises(ConfigError, match="cutout"):
        dsa(images(1), "color_blur")


def test_mismatched_draw_raises_config_error():
    d = sample_dsa("flip", 3, image_size=32, generator=gen(0))
    with pytest.raises(ConfigError):
        apply_dsa(images(4), d)
    with pytest.raises(ConfigError):
        apply_dsa(images(3, size=16), d)


# ----------------------------------------------------------------------------- crop_flip


def test_crop_flip_is_a_shift_within_pad_and_maybe_a_flip():
    x = torch.rand(6, 2, 12, 12, generator=gen(1)) + 1.0  # no zeros in the input
    out = crop_flip(x, gen(2), pad=4)
    assert out.shape == x.shape
    for i in range(6):
        matches = 0
        for sh in range(-4, 5):
            for sw in range(-4, 5):
                shifted = apply_dsa(x[i : i + 1], draw("crop", size=12, shift_h=[sh], shift_w=[sw]))
                matches += torch.equal(out[i : i + 1], shifted)
                matches += torch.equal(out[i : i + 1], shifted.flip(-1))
        assert matches == 1


# ----------------------------------------------------------------------------- cutmix


def test_cutmix_lam_matches_box_area():
    n, hits = 16, 0
    x = torch.arange(n, dtype=torch.float).view(n, 1, 1, 1).expand(n, 3, 32, 32)
    y = torch.arange(n)
    for seed in range(20):
        mixed, y_a, y_b, lam = cutmix(x, y, gen(seed), beta=1.0, p=1.0)
        assert torch.equal(y_a, y)
        changed = (mixed != x).any(dim=1)  # (n, H, W); a sample paired with itself shows nothing
        moved = y_b != y
        if not moved.any():
            continue
        area = changed[moved].float().sum(dim=(1, 2))
        assert torch.all(area == area[0])
        assert lam == pytest.approx(1 - float(area[0]) / (32 * 32))
        # pasted pixels carry the partner's value, i.e. its label
        for i in torch.nonzero(moved).flatten().tolist():
            assert torch.all(mixed[i][:, changed[i]] == float(y_b[i]))
        hits += lam < 1
    assert hits > 10


def test_cutmix_p0_and_beta_variants():
    x, y = images(4), torch.arange(4)
    out, y_a, y_b, lam = cutmix(x, y, gen(0), p=0.0)
    assert out is x and lam == 1.0 and torch.equal(y_b, y)
    out1 = cutmix(x, y, gen(1), beta=0.4, p=1.0)
    out2 = cutmix(x, y, gen(1), beta=0.4, p=1.0)
    assert torch.equal(out1[0], out2[0]) and out1[3] == out2[3]
    with pytest.raises(ConfigError):
        cutmix(x, y, gen(0), p=1.5)
