"""DANCE: the middle encoder, multi-formation, the siamese DiffAug, expert recipe, a smoke condensation."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ddlnl.augment import DiffAugDraw, apply_dsa, dsa, sample_dsa
from ddlnl.data.preprocess import Preprocessor
from ddlnl.decode import decode_multiformation
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.distill.dance import expert_config, interpolate_params, load_flat, mix_init
from ddlnl.distill.dm import class_means, dm_loss, siamese_class_batches
from ddlnl.errors import ConfigError
from ddlnl.evaluate import build_model
from ddlnl.experts import ExpertConfig, expert_key, load_or_train_experts
from ddlnl.models.functional import flatten_params

MODEL = {"name": "convnet", "width": 8, "depth": 2, "norm": "instance"}
TOY = {"num_experts": 2, "expert_epochs": 2, "expert_batch": 16, "batch_real": 16}


def context(tmp_path, seed=0, n_per_class=16, C=3):
    """Pixel images in [0, 1] whose brightness depends on the class, normalised like a real run."""
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(C), n_per_class)
    px = torch.rand(len(labels), 3, 16, 16, generator=g) * 0.5 + torch.as_tensor(labels).view(-1, 1, 1, 1).float() * 0.25
    pre = Preprocessor("normalize").fit(px)
    return DistillContext("toy", pre(px), labels, C, pre, MODEL, seed=seed, cache_dir=tmp_path, log=lambda m: None)


# ---------------------------------------------------------------------------- middle encoder


@pytest.mark.parametrize("lam", [0.0, 0.3, 1.0])
def test_interpolated_encoder_is_the_weighted_mix_of_the_two_state_dicts(lam):
    torch.manual_seed(0)
    a, b = build_model(MODEL, 3, 16), build_model(MODEL, 3, 16)
    sa, sb = a.state_dict(), b.state_dict()
    net = load_flat(build_model(MODEL, 3, 16), interpolate_params(flatten_params(a), flatten_params(b), lam))
    for name, p in net.state_dict().items():
        torch.testing.assert_close(p, lam * sa[name] + (1 - lam) * sb[name])
    with pytest.raises(ConfigError):
        load_flat(net, torch.zeros(3))


# ---------------------------------------------------------------------------- multi-formation


def test_multiformation_decodes_four_full_size_images_per_stored_image():
    ipc, factor = 3, 2
    px = torch.rand(ipc * factor**2, 3, 32, 32)
    stored = mix_init(px, ipc, factor)
    assert stored.shape == (ipc, 3, 32, 32)
    decoded = decode_multiformation(stored, factor)
    assert decoded.shape == (ipc * factor**2, 3, 32, 32)
    # crop-major: decoded image k*ipc + m comes from source image k*ipc + m (nearest down, bilinear up)
    expected = F.interpolate(F.interpolate(px, size=(16, 16)), size=(32, 32), mode="bilinear", align_corners=False)
    torch.testing.assert_close(decoded, expected)


def test_distilled_set_stores_ipc_images_and_trains_on_four_times_as_many(tmp_path):
    ctx = context(tmp_path)
    s = create_distiller("dance", iterations=2, **TOY).run(ctx, 2)
    assert s.images.shape == (6, 3, 16, 16) and s.labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert s.meta["decode"] == {"kind": "multiformation", "factor": 2} and s.meta["method"] == "dance"
    x, y = s.training_data()
    assert x.shape == (24, 3, 16, 16) and y.tolist() == [0, 0, 1, 1, 2, 2] * 4
    path = s.save(tmp_path / "set.safetensors")
    from ddlnl.synset import SyntheticSet

    assert SyntheticSet.load(path).training_data()[0].shape == (24, 3, 16, 16)


def test_images_stay_in_pixel_range_and_init_only_is_the_mix_init(tmp_path):
    ctx = context(tmp_path)
    s = create_distiller("dance", iterations=3, lr_img=50.0, **TOY).run(ctx, 2)
    px = ctx.preprocess.inverse(s.images)
    assert px.min() >= -1e-5 and px.max() <= 1 + 1e-5  # clamped in pixel space
    init = create_distiller("dance", **TOY).init_only(context(tmp_path), 2)
    first = ctx.preprocess.inverse(ctx.images[:8])  # class 0's first ipc * 4 images
    torch.testing.assert_close(ctx.preprocess.inverse(init.images[:2]), mix_init(first, 2, 2), atol=1e-5, rtol=0)


@pytest.mark.parametrize("batch_syn_max", [200, 5])  # 5: each class's 8 decoded images are subsampled
def test_real_batches_of_all_classes_in_one_forward_equal_the_class_by_class_steps(tmp_path, batch_syn_max):
    """The inner-class view embeds every class's real batch in one forward; with the generator's
    draws made in the same order, the steps equal the original class-by-class loop."""
    d = create_distiller("dance", iter_calib=0, batch_syn_max=batch_syn_max, **TOY)
    ctx = context(tmp_path)
    torch.manual_seed(0)
    flat = [flatten_params(build_model(MODEL, 3, 16)) for _ in range(2)]
    experts = [torch.stack([flat[0], flat[1]]), torch.stack([flat[1], flat[0]])]

    def reference(pixels, opt, g, ends, nets, ipc):  # the class-by-class loop as DANCE writes it
        o, middle = d.options, nets[0]
        k, lam = int(torch.randint(len(ends), (1,), generator=g)), float(torch.rand((), generator=g))
        load_flat(middle, interpolate_params(ends[k][0], ends[k][1], lam))
        with torch.no_grad():
            pixels.clamp_(0.0, 1.0)
        for c in range(ctx.num_classes):
            pool = torch.as_tensor(ctx.class_indices(c))
            real = ctx.images[pool[torch.randperm(len(pool), generator=g)[: o.batch_real]]]
            syn = d.decoded(ctx, pixels, c, ipc, g)
            (real,), (syn,) = siamese_class_batches([real], [syn], g, o.dsa_strategy, "cpu")
            with torch.no_grad():
                real_mean = class_means(middle.embed(real), [real.shape[0]])
            loss = dm_loss(real_mean, class_means(middle.embed(syn), [syn.shape[0]]))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()

    pixels, _, opt, g, ends, nets = d.setup(ctx, 2, experts)
    d.iteration(ctx, pixels, opt, g, ends, nets, 2)
    ref_pixels, _, ref_opt, ref_g, ref_ends, ref_nets = d.setup(ctx, 2, experts)
    reference(ref_pixels, ref_opt, ref_g, ref_ends, ref_nets, 2)
    torch.testing.assert_close(pixels, ref_pixels, rtol=1e-5, atol=1e-6)
    assert torch.equal(g.get_state(), ref_g.get_state())  # the same draws, in the same number


# ---------------------------------------------------------------------------- augmentation


def test_siamese_dance_augmentation_uses_one_draw_for_real_and_synthetic():
    g = torch.Generator().manual_seed(3)
    probe = torch.rand(1, 3, 16, 16)
    real = torch.cat([torch.rand(5, 3, 16, 16), probe])
    syn = torch.cat([probe, torch.rand(2, 3, 16, 16)])
    for _ in range(10):
        (ar,), (as_,) = siamese_class_batches([real], [syn], g, "dance:color_crop_cutout", "cpu")
        torch.testing.assert_close(ar[-1], as_[0])  # the same image gets the same transform in both batches
    draw = sample_dsa("dance:color_crop_cutout", 1, image_size=16, generator=g, shared=True)
    assert isinstance(draw, DiffAugDraw) and all(d.shared for d in draw.draws)
    assert all(v.shape == (1,) for d in draw.draws for v in d.params.values())  # one draw, whatever the batch


def test_dance_op_order_flip_and_color_always_then_one_then_cutout():
    g = torch.Generator().manual_seed(0)
    seen = set()
    for _ in range(40):
        draw = sample_dsa("dance:color_crop_cutout_flip_scale_rotate", 4, image_size=16, generator=g)
        ops = [d.op for d in draw.draws]
        assert ops[:2] == ["flip", "color"] and ops[-1] == "cutout" and len(ops) == 4
        seen.add(ops[2])
    assert seen == {"crop", "scale", "rotate"}
    x = torch.rand(4, 3, 16, 16, requires_grad=True)
    dsa(x, "dance:color_crop", generator=g).sum().backward()  # the trainer's per-sample path, differentiable
    assert x.grad is not None
    assert torch.equal(apply_dsa(x, sample_dsa("dance:", 4, image_size=16, generator=g)), x)


# ---------------------------------------------------------------------------- experts and options


def test_dance_expert_recipe_and_its_cache_key(tmp_path):
    o = create_distiller("dance").options
    tc = expert_config(o).train_config()
    assert (tc.momentum, tc.weight_decay, tc.batch_size, tc.schedule, tc.gamma, tc.cutmix_prob) == (0.9, 5e-4, 64, "multistep", 0.2, 0.5)
    assert tc.dsa_strategy == "dance:color_crop" and tc.epochs == 60
    from ddlnl.train import lr_at

    assert [lr_at(tc, e) for e in (39, 40, 49, 50)] == pytest.approx([0.01, 0.002, 0.002, 0.0004])
    # MTT's key is unchanged by the new fields; DANCE's recipe gives another key
    assert set(ExpertConfig().recipe()) == {"epochs", "lr", "momentum", "weight_decay", "batch_size", "dsa_strategy", "gsam", "rho", "alpha"}
    ctx = context(tmp_path)
    args = (ctx.dataset, ctx.images, ctx.labels, ctx.model, ctx.preprocess.meta())
    assert expert_key(*args, expert_config(o), 0) != expert_key(*args, ExpertConfig(epochs=60), 0)
    trajs = load_or_train_experts(ctx, expert_config(create_distiller("dance", **TOY).options))
    assert len(trajs) == 2 and trajs[0].shape[0] == 3


@pytest.mark.parametrize("bad", [{"iterations": -1}, {"init": "noise"}, {"factor": 0}, {"lr_img": 0.0}, {"momentum": 1.5},
                                 {"expert_gamma": 2.0}, {"expert_milestones": [1.5]}, {"batch_syn_max": 0}])
def test_bad_options_are_refused(bad):
    with pytest.raises(ConfigError):
        create_distiller("dance", **bad)


# ---------------------------------------------------------------------------- condensation


def matching_loss(ctx, images, experts, ipc):
    """Mean DM loss over a few middle encoders (no augmentation): real class means vs decoded synthetic ones."""
    net = build_model(MODEL, ctx.num_classes, 16).requires_grad_(False)
    x = decode_multiformation(images, 2)
    y = torch.arange(ctx.num_classes).repeat_interleave(ipc).repeat(4)
    real_y = torch.as_tensor(ctx.labels)
    total = []
    for t in experts:
        for lam in (0.0, 0.5, 1.0):
            load_flat(net, interpolate_params(t[0], t[-1], lam))
            real = torch.stack([net.embed(ctx.images[real_y == c]).mean(0) for c in range(ctx.num_classes)])
            syn = torch.stack([net.embed(x[y == c]).mean(0) for c in range(ctx.num_classes)])
            total.append(float(dm_loss(real, syn)))
    return float(np.mean(total))


def test_smoke_condensation_lowers_the_matching_loss(tmp_path):
    """On three seeds (one toy distillation is too noisy to judge: seed 0 alone goes up), the
    matching loss at middle encoders without augmentation drops on average."""
    before, after = [], []
    for seed in range(3):
        d = create_distiller("dance", iterations=30, lr_img=0.5, **TOY)
        out = d.run(context(tmp_path, seed=seed), 2)
        experts = load_or_train_experts(context(tmp_path, seed=seed), expert_config(d.options))
        start = d.init_only(context(tmp_path, seed=seed), 2)
        before.append(matching_loss(context(tmp_path, seed=seed), start.images, experts, 2))
        after.append(matching_loss(context(tmp_path, seed=seed), out.images, experts, 2))
        assert len(d.losses) == 30 and len(d.calib_losses) == 30 and all(np.isfinite(d.losses))
    assert np.mean(after) < 0.9 * np.mean(before), (before, after)
    assert class_means(torch.ones(4, 2), [2, 2]).shape == (2, 2)  # the DM pieces DANCE reuses


def test_resume_from_a_checkpoint_equals_an_uninterrupted_run(tmp_path):
    full = create_distiller("dance", iterations=4, **TOY).run(context(tmp_path), 2)
    ctx = context(tmp_path)
    ctx.checkpoint = tmp_path / "ckpt.pt"
    create_distiller("dance", iterations=2, **TOY).run(ctx, 2)  # leaves a checkpoint at iteration 2
    ctx = context(tmp_path)
    ctx.checkpoint = tmp_path / "ckpt.pt"
    resumed = create_distiller("dance", iterations=4, **TOY).run(ctx, 2)
    torch.testing.assert_close(resumed.images, full.images)
