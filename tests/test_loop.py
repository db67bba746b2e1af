"""DistillLoop: checkpoints, resume equal to an uninterrupted run, NaN rejection, and kill -9 through the CLI."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.distill import DistillContext, create_distiller
from ddlnl.distill.loop import DistillationDiverged, DistillLoop
from tests.data.fixtures import write_cifar10_npz

MODEL = {"name": "convnet", "width": 8, "depth": 2, "norm": "instance"}


def context(tmp_path=None, every=0.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = np.repeat(np.arange(3), 10)
    images = torch.randn(len(labels), 3, 16, 16, generator=g) + torch.as_tensor(labels).view(-1, 1, 1, 1).float()
    ckpt = None if tmp_path is None else tmp_path / "ckpt.pt"
    return DistillContext("toy", images, labels, 3, Preprocessor("none"), MODEL, seed=seed, log=lambda m: None,
                          checkpoint=ckpt, checkpoint_every_s=every)


class Stop(Exception):
    pass


def toy_state():
    x = torch.zeros(4, requires_grad=True)
    opt = torch.optim.SGD([x], lr=0.1, momentum=0.9)
    return x, opt, {"x": x, "opt": opt, "gen": torch.Generator().manual_seed(0), "rng": np.random.default_rng(0),
                    "log": [], "count": {"n": 0}}


def toy_step(state, it, poison=()):
    x, opt, g = state["x"], state["opt"], state["gen"]
    target = torch.randn(4, generator=g) + float(state["rng"].normal())
    loss = ((x - target) ** 2).sum()
    if it in poison:
        loss = loss * float("nan")
    opt.zero_grad()
    loss.backward()
    opt.step()
    state["log"].append(float(loss.detach()))
    state["count"]["n"] += 1
    return float(loss.detach())


def run_toy(ctx, iterations, stop_at=None, poison=()):
    x, opt, state = toy_state()
    loop = DistillLoop(ctx, iterations, state)
    for it in loop:
        if it == stop_at:
            raise Stop
        loop.report(toy_step(state, it, poison))
    return state, loop


def test_resume_equals_an_uninterrupted_run(tmp_path):
    whole, _ = run_toy(context(), 12)
    ctx = context(tmp_path, every=0.0)
    with pytest.raises(Stop):
        run_toy(ctx, 12, stop_at=7)
    assert (tmp_path / "ckpt.pt").exists()
    resumed, loop = run_toy(ctx, 12)
    assert loop.start == 7
    assert torch.equal(resumed["x"], whole["x"]) and resumed["log"] == whole["log"] and resumed["count"] == {"n": 12}


def test_checkpoints_are_read_without_pickled_code(tmp_path):
    ctx = context(tmp_path)
    run_toy(ctx, 3)
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)  # raises if anything but tensors/containers is inside
    assert saved["iteration"] == 3


def test_a_damaged_checkpoint_is_ignored_loudly(tmp_path):
    logs = []
    ctx = context(tmp_path)
    ctx.log = logs.append
    (tmp_path / "ckpt.pt").write_bytes(b"not a checkpoint")
    state, loop = run_toy(ctx, 4)
    assert loop.start == 0 and state["count"]["n"] == 4
    assert any("ignoring checkpoint" in m for m in logs)


def test_a_nan_step_is_rejected_and_the_run_continues():
    state, loop = run_toy(context(), 10, poison={3})
    assert loop.rejected == 1
    assert torch.isfinite(state["x"]).all()
    assert len(state["log"]) == 9 and all(np.isfinite(state["log"]))  # the rejected iteration's log entry rolled back


def test_repeated_faults_stop_with_the_last_good_state_saved(tmp_path):
    ctx = context(tmp_path, every=1e9)
    with pytest.raises(DistillationDiverged, match="NaN/Inf") as e:
        run_toy(ctx, 20, poison=set(range(5, 20)))
    assert "resumes" in e.value.fix
    saved = torch.load(tmp_path / "ckpt.pt", weights_only=True)
    assert saved["iteration"] == 5 and torch.isfinite(saved["state"]["x"]).all()


@pytest.mark.parametrize("method", ["dm", "mtt"])
def test_distiller_resume_equals_uninterrupted(tmp_path, monkeypatch, method):
    opts = {"dm": {"iterations": 6, "batch_real": 4}, "mtt": {"iterations": 4, "num_experts": 1, "syn_steps": 3,
                                                             "expert_epochs": 1, "max_start_epoch": 1, "lr_lr": 1e-7}}[method]
    whole_ctx = context()
    whole_ctx.cache_dir = tmp_path / "cache"  # experts (mtt) are trained once and shared by both runs
    whole = create_distiller(method, **opts).run(whole_ctx, 2)
    # interrupt in the middle of the fourth iteration (after its update, before it is checkpointed)
    ctx = context(tmp_path, every=0.0)
    ctx.cache_dir = tmp_path / "cache"
    calls = {"n": 0}
    real_report = DistillLoop.report

    def failing_report(self, loss):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Stop
        return real_report(self, loss)

    monkeypatch.setattr(DistillLoop, "report", failing_report)
    with pytest.raises(Stop):
        create_distiller(method, **opts).run(ctx, 2)
    monkeypatch.setattr(DistillLoop, "report", real_report)
    assert (tmp_path / "ckpt.pt").exists()
    resumed = create_distiller(method, **opts).run(ctx, 2)
    assert torch.equal(resumed.images, whole.images) and torch.equal(resumed.labels, whole.labels)
    assert resumed.lr == whole.lr


def test_kill_9_during_distill_then_rerun_gives_the_uninterrupted_result(tmp_path):
    """`ddlnl distill` killed with SIGKILL mid-run resumes from its checkpoint and ends with the same set."""
    root = tmp_path / "data"
    write_cifar10_npz(root, n_train_per_class=8, n_test_per_class=2)
    env = dict(os.environ, DDLNL_DATA=str(root), OMP_NUM_THREADS="1")
    base = [sys.executable, "-m", "ddlnl.cli", "distill", "--preset", "smoke", "--method", "dm", "--ipc", "2",
            "--no-progress", "--set", "methods.dm.iterations=150", "--set", "methods.dm.batch_real=4",
            "--set", "model.width=8", "--checkpoint-every", "0"]
    whole_path, cut_path = tmp_path / "whole.safetensors", tmp_path / "cut.safetensors"
    r = subprocess.run([*base, "--out", str(whole_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    ckpt = tmp_path / "cut.safetensors.checkpoint.pt"
    proc = subprocess.Popen([*base, "--out", str(cut_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if ckpt.exists() and torch.load(ckpt, weights_only=True)["iteration"] >= 20:
            break
        time.sleep(0.05)
    assert proc.poll() is None, "the run finished before it could be killed; raise methods.dm.iterations"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not cut_path.exists()
    at = torch.load(ckpt, weights_only=True)["iteration"]
    assert 0 < at < 150
    r = subprocess.run([*base, "--out", str(cut_path)], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    assert f"resuming from checkpoint {ckpt} at iteration" in r.stdout
    from ddlnl.synset import SyntheticSet

    whole, cut = SyntheticSet.load(whole_path), SyntheticSet.load(cut_path)
    assert torch.equal(whole.images, cut.images)
    assert not ckpt.exists()  # removed once the set is written


def test_a_second_run_on_the_same_folder_is_refused(tmp_path):
    from ddlnl.errors import ConfigError
    from ddlnl.run import RunConfig, run_experiment
    from ddlnl.utils.io import file_lock

    out = tmp_path / "run"
    out.mkdir()
    with file_lock(out / ".run.lock"), pytest.raises(ConfigError, match="another ddlnl run is using the run folder"):
        run_experiment(RunConfig(preset="smoke", out=str(out), data_root=str(tmp_path / "nodata")), log=lambda m: None)
