"""A distillation's history: every iteration's loss, quick evaluations every N iterations, resumed
whole from a checkpoint, in result.json, and as TensorBoard scalars."""

import json

import numpy as np
import pytest
import torch

from ddlnl.errors import ConfigError
from tests.test_cli import ddlnl, root  # noqa: F401 - the small CIFAR-10 fixture
from tests.test_loop import Stop, context, toy_state, toy_step


class Recorder:
    """A monitor that keeps what it is told and scores a set by its mean pixel (no training)."""

    def __init__(self, every):
        self.every, self.scalars, self.sets = every, [], 0

    def scalar(self, tag, value, step):
        self.scalars.append((tag, value, step))

    def evaluate(self, synset):
        self.sets += 1
        return {"test_acc": float(synset.images.mean())}


def run_toy(ctx, iterations, stop_at=None, poison=()):
    from ddlnl.distill.loop import DistillLoop
    from ddlnl.synset import SyntheticSet

    x, _, state = toy_state()
    loop = DistillLoop(ctx, iterations, state,
                       snapshot=lambda: SyntheticSet(x.detach().view(1, 1, 2, 2).expand(1, 3, 2, 2).clone(), torch.tensor([0]), ctx.preprocess))
    for it in loop:
        if it == stop_at:
            raise Stop
        loop.report(toy_step(state, it, poison))
    return state, loop


def test_history_records_each_loss_and_evaluates_every_n_iterations():
    ctx = context()
    ctx.monitor = Recorder(every=4)
    state, loop = run_toy(ctx, 10, poison={5})  # iteration 5's step is rejected: it leaves no entry
    h = ctx.history
    assert h is loop.history and h["iteration"] == [i for i in range(10) if i != 5]
    assert h["loss"] == state["log"] and len(h["loss"]) == 9
    assert [e["iteration"] for e in h["eval"]] == [4, 8, 10]  # every 4 done iterations, and the last
    assert ctx.monitor.sets == 3
    losses = [(v, s) for tag, v, s in ctx.monitor.scalars if tag == "distill/loss"]
    assert losses == list(zip(h["loss"], h["iteration"]))
    assert ("distill/test_acc", h["eval"][-1]["test_acc"], 10) in ctx.monitor.scalars


def test_a_resumed_history_is_the_uninterrupted_one(tmp_path):
    whole_ctx = context()
    whole_ctx.monitor = Recorder(every=3)
    run_toy(whole_ctx, 9)
    ctx = context(tmp_path, every=0.0)
    ctx.monitor = Recorder(every=3)
    with pytest.raises(Stop):
        run_toy(ctx, 9, stop_at=5)
    ctx.monitor = Recorder(every=3)
    _, loop = run_toy(ctx, 9)
    assert loop.start == 5 and ctx.history == whole_ctx.history


def test_run_puts_the_history_in_result_json(root):  # noqa: F811
    out = root / "run"
    r = ddlnl("run", "--method", "dm", "--ipc", "2", "--preset", "smoke", "--eval-every", "2", "--data-root", str(root),
              "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    h = json.loads((out / "result.json").read_text())["results"]["distilled"]["history"]
    assert h["iteration"] == list(range(5)) and len(h["loss"]) == 5 and np.isfinite(h["loss"]).all()  # smoke dm: 5 iterations
    assert [e["iteration"] for e in h["eval"]] == [2, 4, 5] and all(0 <= e["test_acc"] <= 1 for e in h["eval"])
    assert "after 4/5 iterations: test_acc" in r.stdout
    bad = ddlnl("run", "--method", "dm", "--preset", "smoke", "--eval-every", "-1", "--data-root", str(root), "--out", str(out))
    assert bad.returncode == 2 and "--eval-every must be a whole number" in bad.stderr


def test_tensorboard_scalars(root, tmp_path):  # noqa: F811
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    logs = tmp_path / "tb"
    r = ddlnl("run", "--method", "dm", "--ipc", "2", "--preset", "smoke", "--eval-every", "5", "--log-dir", str(logs),
              "--data-root", str(root), "--out", str(root / "run"), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    acc = EventAccumulator(str(logs))
    acc.Reload()
    tags = set(acc.Tags()["scalars"])
    assert {"distill/loss", "distill/test_acc", "result/distilled", "result/random", "result/full_noisy"} <= tags
    assert [e.step for e in acc.Scalars("distill/loss")] == list(range(5))
    res = json.loads((root / "run" / "result.json").read_text())
    assert acc.Scalars("result/distilled")[0].value == pytest.approx(res["results"]["distilled"]["acc_mean"])


def test_log_dir_without_tensorboard_is_a_clear_error(monkeypatch, tmp_path):
    import sys

    from ddlnl.monitor import tensorboard_writer

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # as if the extra were not installed
    with pytest.raises(ConfigError, match="tensorboard package is not installed"):
        tensorboard_writer(tmp_path)
