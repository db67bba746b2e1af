"""The one per-class real-image draw (:meth:`DistillContext.real_index`) draws exactly what its three
former copies drew: the random control's ``random_real``, DATM's trusted init (``random_among``) and
the fill of DATM's expert filter (``predicted_correctly``). Finished runs' initial sets depend on it.

The ``_old_*`` functions are verbatim copies of that code before it became one draw (self -> ctx);
the literals were recorded from it on the same fixture."""

import numpy as np
import pytest
import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.distill import DistillContext
from ddlnl.distill.datm import expert_logits, predicted_correctly
from ddlnl.evaluate import build_model

MODEL = {"name": "convnet", "width": 4, "depth": 1, "norm": "instance"}
SIZES = (9, 14, 6, 11)  # uneven classes, so that masks leave some short
SEEDS, IPCS = (0, 1, 2), (1, 3, 6)


def context():
    g = torch.Generator().manual_seed(7)
    labels = np.concatenate([np.full(n, c) for c, n in enumerate(SIZES)])
    labels = labels[torch.randperm(len(labels), generator=g).numpy()]
    images = torch.randn(len(labels), 3, 8, 8, generator=g) + torch.as_tensor(labels).view(-1, 1, 1, 1).float()
    return DistillContext("toy", images, labels, len(SIZES), Preprocessor("none"), MODEL, seed=0, log=lambda m: None)


def experts(n=2, rows=2):
    """Untrained experts: their predictions pass some images and reject others, so every fill path runs."""
    out = []
    for e in range(n):
        torch.manual_seed(100 + e)
        rs = []
        for r in range(rows):
            net = build_model(MODEL, len(SIZES), 8)
            rs.append(torch.nn.utils.parameters_to_vector(net.parameters()).detach() * (1 + r))
        out.append(torch.stack(rs))
    return out


def mask(seed, p):
    return np.random.default_rng(seed).random(sum(SIZES)) < p


def same_state(a: torch.Generator, b: torch.Generator) -> bool:
    return torch.equal(a.get_state(), b.get_state())


def same_selections(a: dict, b: dict) -> bool:
    if list(a) != list(b):
        return False
    return all(np.array_equal(a[k]["kept"], b[k]["kept"]) and a[k]["what"] == b[k]["what"]
               and (a[k]["among"] is None) == (b[k]["among"] is None)
               and (a[k]["among"] is None or np.array_equal(a[k]["among"], b[k]["among"])) for k in a)


# ---------------------------------------------------------------------------- the old code, verbatim


def _old_random_real(self, ipc: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """``ipc`` distinct random training images of each noisy class (the random control's draw)."""
    xs, ys, picks = [], [], []
    for c in range(self.num_classes):
        idx = self.class_indices(c)
        pick = idx[torch.randperm(len(idx), generator=generator)[:ipc].numpy()]
        xs.append(self.images[pick])
        ys.append(torch.full((ipc,), c, dtype=torch.long))
        picks.append(pick)
    self.record_selection("init", np.concatenate(picks), what="the real images the set's slots start from")
    return torch.cat(xs).clone(), torch.cat(ys)


def _old_random_among(ctx: DistillContext, ipc: int, g: torch.Generator, allowed: np.ndarray) -> tuple[torch.Tensor, dict]:
    """``ipc`` random images per noisy class among the ``allowed`` ones (the rest of the class fills a
    class that has too few: ``filled_outside``)."""
    picks, outside = [], 0
    for c in range(ctx.num_classes):
        pool = ctx.class_indices(c)
        inside, extra = pool[allowed[pool]], pool[~allowed[pool]]
        pick = inside[torch.randperm(len(inside), generator=g).numpy()][:ipc]
        if pick.size < ipc:
            outside += ipc - pick.size
            pick = np.concatenate([pick, extra[torch.randperm(len(extra), generator=g).numpy()][: ipc - pick.size]])
        picks.append(pick)
    index = np.concatenate(picks)
    ctx.record_selection("init", index, what="the real images the set's slots start from")
    return torch.as_tensor(index), {"filled_outside": outside}


def _old_predicted_correctly(ctx: DistillContext, experts, ipc: int, g: torch.Generator, net, row: int = -1,
                             allowed: np.ndarray | None = None) -> tuple[torch.Tensor, dict]:
    """Indices of ``ipc`` images per noisy class that an expert (trajectory row ``row``) predicts as their class.

    Expert 0 first; if a class runs short, the next expert scans the rest (DATM). If every
    expert is exhausted, random images of the class fill the gap (counted in the report).
    ``allowed`` (a mask, e.g. TAD's trusted samples) limits the scan and the filling to those samples
    while a class has enough of them (the rest of the class fills: ``filled_outside``).
    """
    picks, filled, scanned, passed, outside = [], 0, [], [], 0
    for c in range(ctx.num_classes):
        pool = ctx.class_indices(c)
        if allowed is not None:
            extra = pool[~allowed[pool]]
            pool = pool[allowed[pool]]
        pool = pool[torch.randperm(len(pool), generator=g).numpy()]
        chosen: list[int] = []
        for traj in experts:
            rest = pool[~np.isin(pool, chosen)]  # in the shuffled order
            for i in range(0, len(rest), 256):
                batch = rest[i : i + 256]
                pred = expert_logits(ctx, net, traj[row], ctx.images[batch]).argmax(1).numpy()
                if traj is experts[0]:  # the filter itself, on every image it judged (a random sample of the class)
                    scanned.append(batch)
                    passed.append(batch[pred == c])
                chosen.extend(batch[pred == c][: ipc - len(chosen)].tolist())
                if len(chosen) >= ipc:
                    break
            if len(chosen) >= ipc:
                break
        if len(chosen) < ipc:
            rest = pool[~np.isin(pool, chosen)]
            filled += ipc - len(chosen)
            chosen.extend(rest[: ipc - len(chosen)].tolist())
        if len(chosen) < ipc:  # only with ``allowed``: too few allowed samples in the class
            outside += ipc - len(chosen)
            chosen.extend(extra[torch.randperm(len(extra), generator=g).numpy()][: ipc - len(chosen)].tolist())
        picks.append(np.asarray(chosen, dtype=np.int64))
    ctx.record_selection("filter", np.concatenate(passed), among=np.concatenate(scanned),
                         what="images expert 0 predicts as their noisy class, among those it judged")
    index = np.concatenate(picks)
    ctx.record_selection("init", index, what="the real images the set's slots start from")
    return torch.as_tensor(index), {"filled_at_random": filled} | ({} if allowed is None else {"filled_outside": outside})


# ---------------------------------------------------------------------------- the new draw against it


def test_literals_recorded_from_the_old_code():
    ctx = context()
    ctx.random_real(3, torch.Generator().manual_seed(0))
    assert ctx.selections["init"]["kept"].tolist() == [38, 3, 6, 33, 18, 21, 31, 12, 26, 37, 39, 35]
    idx, outside = context().real_index(3, torch.Generator().manual_seed(1), mask(1, 0.3))
    assert idx.tolist() == [14, 3, 24, 9, 18, 28, 31, 22, 7, 39, 16, 2] and outside == 5
    net = build_model(MODEL, len(SIZES), 8)
    idx, info = predicted_correctly(context(), experts(), 3, torch.Generator().manual_seed(0), net, -1, mask(0, 0.3))
    assert idx.tolist() == [20, 11, 3, 21, 15, 13, 1, 22, 31, 2, 8, 16] and info == {"filled_at_random": 9, "filled_outside": 4}
    idx, info = predicted_correctly(context(), experts(), 3, torch.Generator().manual_seed(1), net, 0)
    assert idx.tolist() == [14, 3, 24, 21, 9, 33, 12, 22, 7, 39, 2, 10] and info == {"filled_at_random": 4}


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ipc", IPCS)
def test_random_real_draws_as_before(seed, ipc):
    old_ctx, new_ctx = context(), context()
    g_old, g_new = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    x_old, y_old = _old_random_real(old_ctx, ipc, g_old)
    x_new, y_new = new_ctx.random_real(ipc, g_new)
    assert torch.equal(x_old, x_new) and torch.equal(y_old, y_new) and y_old.dtype == y_new.dtype
    assert same_selections(old_ctx.selections, new_ctx.selections) and same_state(g_old, g_new)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ipc", IPCS)
@pytest.mark.parametrize("p", (0.3, 0.7, 1.0))
def test_trusted_draw_as_before(seed, ipc, p):
    """DATM's ``pix_init: trusted`` init (``random_among``), short classes filling from outside included."""
    old_ctx, new_ctx = context(), context()
    g_old, g_new = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
    idx_old, info = _old_random_among(old_ctx, ipc, g_old, mask(seed, p))
    idx_new, outside = new_ctx.real_index(ipc, g_new, mask(seed, p))
    assert np.array_equal(idx_old.numpy(), idx_new) and info == {"filled_outside": outside}
    assert same_selections(old_ctx.selections, new_ctx.selections) and same_state(g_old, g_new)


@pytest.mark.parametrize("seed", SEEDS)
@pytest.mark.parametrize("ipc", IPCS)
@pytest.mark.parametrize("p", (None, 0.3, 0.7))
def test_predicted_correctly_draws_as_before(seed, ipc, p):
    net, ex = build_model(MODEL, len(SIZES), 8), experts()
    allowed = None if p is None else mask(seed, p)
    for row in (-1, 0):
        old_ctx, new_ctx = context(), context()
        g_old, g_new = torch.Generator().manual_seed(seed), torch.Generator().manual_seed(seed)
        idx_old, info_old = _old_predicted_correctly(old_ctx, ex, ipc, g_old, net, row, allowed)
        idx_new, info_new = predicted_correctly(new_ctx, ex, ipc, g_new, net, row, allowed)
        assert torch.equal(idx_old, idx_new) and info_old == info_new and list(info_old) == list(info_new)
        assert same_selections(old_ctx.selections, new_ctx.selections) and same_state(g_old, g_new)
