"""Shared caches: concurrent runs, damaged entries, interrupted expert training, verified noise files."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from ddlnl.data.noise import NoiseSpec, make_noisy_labels
from ddlnl.data.preprocess import Preprocessor
from ddlnl.data.types import DatasetSplits, LabeledImages
from ddlnl.distill import DistillContext
from ddlnl.experiment import PreparedData, load_saved_noise, save_noise
from ddlnl.experts import (
    ExpertConfig,
    cache_root,
    expert_key,
    key_hash,
    load_or_train_experts,
)
from ddlnl.utils.io import (
    file_lock,
    sha256_file,
    sidecar,
    verify_sidecar,
    write_sidecar,
)

MODEL = {"name": "convnet", "width": 8, "depth": 1, "norm": "instance"}
CFG = {"num_experts": 2, "epochs": 2, "batch_size": 16}


def toy_context(cache, logs=None):
    g = torch.Generator().manual_seed(0)
    labels = np.repeat(np.arange(3), 8)
    images = torch.randn(len(labels), 3, 8, 8, generator=g)
    log = logs.append if logs is not None else (lambda m: None)
    return DistillContext("toy", images, labels, 3, Preprocessor("none"), MODEL, seed=0, cache_dir=Path(cache), log=log)


def expert_folder(ctx, cfg) -> Path:
    key = expert_key(ctx.dataset, ctx.images, ctx.labels, ctx.model, ctx.preprocess.meta(), cfg, ctx.seed)
    return cache_root(ctx.cache_dir) / "experts" / key_hash(key)


# ---------------------------------------------------------------------------- helpers


def test_sidecar_roundtrip_and_mismatch(tmp_path):
    f = tmp_path / "x.bin"
    f.write_bytes(b"hello")
    assert "no .sha256" in verify_sidecar(f)
    write_sidecar(f)
    assert sidecar(f).read_text().strip() == sha256_file(f) and verify_sidecar(f) is None
    f.write_bytes(b"hellO")
    assert "mismatch" in verify_sidecar(f)
    assert verify_sidecar(tmp_path / "none") == "file missing"


# ---------------------------------------------------------------------------- experts


def test_damaged_expert_is_rebuilt_with_a_warning(tmp_path):
    cfg = ExpertConfig(**CFG)
    first = load_or_train_experts(toy_context(tmp_path), cfg)
    folder = expert_folder(toy_context(tmp_path), cfg)
    path = folder / "expert_0.safetensors"
    assert verify_sidecar(path) is None and verify_sidecar(folder / "expert_1.safetensors") is None
    raw = bytearray(path.read_bytes())
    raw[-20:-10] = bytes(b ^ 0xFF for b in raw[-20:-10])  # flip bytes inside the tensor data
    path.write_bytes(bytes(raw))
    logs = []
    again = load_or_train_experts(toy_context(tmp_path, logs), cfg)
    warnings = [m for m in logs if "warning" in m]
    assert len(warnings) == 1 and "expert_0.safetensors" in warnings[0] and "sha256 mismatch" in warnings[0], logs
    assert any("1 loaded, 1 trained" in m for m in logs), logs
    assert verify_sidecar(path) is None
    assert all(torch.equal(a, b) for a, b in zip(first, again))  # rebuilt deterministically


def test_truncated_expert_without_sidecar_is_rebuilt(tmp_path):
    cfg = ExpertConfig(**CFG)
    load_or_train_experts(toy_context(tmp_path), cfg)
    path = expert_folder(toy_context(tmp_path), cfg) / "expert_1.safetensors"
    path.write_bytes(path.read_bytes()[:50])
    sidecar(path).unlink()  # as if written by an older ddlnl: checked by loading instead
    logs = []
    load_or_train_experts(toy_context(tmp_path, logs), cfg)
    assert any("warning" in m and "unreadable" in m for m in logs), logs
    assert any("1 loaded, 1 trained" in m for m in logs) and verify_sidecar(path) is None


def test_interrupted_expert_training_keeps_finished_experts(tmp_path, monkeypatch):
    """A run killed while training expert 2 of 3 retrains only experts 2 and 3 when restarted."""
    from ddlnl import experts

    cfg = ExpertConfig(num_experts=3, epochs=2, batch_size=16)
    real = experts.train_experts
    calls = []

    def dies_on_second(*a, **kw):  # on a CPU experts train one at a time (batch_networks: auto)
        calls.extend(a[5])
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user's Ctrl-C (or a SLURM preemption) mid-expert
        return real(*a, **kw)

    monkeypatch.setattr(experts, "train_experts", dies_on_second)
    with pytest.raises(KeyboardInterrupt):
        load_or_train_experts(toy_context(tmp_path), cfg)
    folder = expert_folder(toy_context(tmp_path), cfg)
    assert verify_sidecar(folder / "expert_0.safetensors") is None  # saved as soon as it was done
    assert not (folder / "expert_1.safetensors").exists()
    assert not [p for p in folder.iterdir() if p.suffix == ".tmp"]  # no half-written file left behind
    monkeypatch.setattr(experts, "train_experts", real)
    logs = []
    trajs = load_or_train_experts(toy_context(tmp_path, logs), cfg)
    assert len(trajs) == 3 and any("1 loaded, 2 trained" in m for m in logs), logs


WORKER = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[3])
    from tests.test_cache import CFG, toy_context
    from ddlnl.experts import ExpertConfig, load_or_train_experts
    cache, me = Path(sys.argv[1]), sys.argv[2]
    (cache / f"ready_{me}").touch()
    deadline = time.time() + 60
    while len(list(cache.glob("ready_*"))) < 2 and time.time() < deadline:  # start together
        time.sleep(0.01)
    logs = []
    trajs = load_or_train_experts(toy_context(cache, logs), ExpertConfig(**CFG))
    line = [m for m in logs if "expert cache" in m][-1]
    waited = any("being trained by another run" in m for m in logs)
    print(json.dumps({"line": line, "sums": [float(t.double().sum()) for t in trajs], "waited": waited}))
""")


def test_two_processes_share_one_expert_cache(tmp_path):
    """Both succeed, each expert is trained once, and every entry verifies."""
    cache = tmp_path / "cache"
    cache.mkdir()
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS="1")
    folder = expert_folder(toy_context(cache), ExpertConfig(**CFG))
    with file_lock(folder / "expert_0.safetensors.lock"):  # as if a third run were training expert 0
        procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(cache), str(i), root], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True, env=env) for i in range(2)]
        deadline = time.time() + 120
        while len(list(cache.glob("ready_*"))) < 2 and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(2.0)  # both are now blocked on expert 0's lock
    outs = [p.communicate(timeout=240) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outs]
    trained = [int(r["line"].split(" trained")[0].rsplit(", ", 1)[-1]) for r in results]
    assert sum(trained) == CFG["num_experts"], results  # nothing trained twice
    assert results[0]["sums"] == results[1]["sums"]
    assert all(r["waited"] for r in results)  # each said it was waiting for another run
    for k in range(CFG["num_experts"]):
        assert verify_sidecar(folder / f"expert_{k}.safetensors") is None


def test_file_lock_serialises_processes(tmp_path):
    lock, log = tmp_path / "x.lock", tmp_path / "log"
    code = textwrap.dedent("""
        import sys, time
        sys.path.insert(0, sys.argv[3])
        from ddlnl.utils.io import file_lock
        def note(s):
            with open(sys.argv[2], "a") as f:
                f.write(s + "\\n")
        with file_lock(sys.argv[1], on_wait=lambda: note("wait")):
            note("in"); time.sleep(0.3); note("out")
    """)
    root = str(Path(__file__).resolve().parents[1])
    with file_lock(lock):  # hold it until both are waiting for it
        procs = [subprocess.Popen([sys.executable, "-c", code, str(lock), str(log), root]) for _ in range(2)]
        deadline = time.time() + 60
        while (not log.exists() or log.read_text().split().count("wait") < 2) and time.time() < deadline:
            time.sleep(0.05)
        assert log.read_text().split() == ["wait", "wait"]
    assert all(p.wait(timeout=60) == 0 for p in procs)
    assert log.read_text().split() == ["wait", "wait", "in", "out", "in", "out"]


# ---------------------------------------------------------------------------- noise realisation


def _prepared(spec):
    clean = np.repeat(np.arange(4), 10)
    images = np.zeros((len(clean), 8, 8, 3), np.uint8)
    split = LabeledImages(images, clean, ("a", "b", "c", "d"))
    noisy = make_noisy_labels("toy", clean, 4, spec)
    return PreparedData("toy", DatasetSplits("toy", split, split, "test"), noisy, Preprocessor("none"), None, None, None), clean


def test_saved_noise_is_verified_and_damage_is_rebuilt(tmp_path, capsys):
    spec = NoiseSpec("symmetric", 0.5, 3)
    data, clean = _prepared(spec)
    save_noise(tmp_path, data)
    assert json.loads((tmp_path / "noise.json").read_text())["labels_sha256"] == sha256_file(tmp_path / "noisy_labels.npy")
    got = load_saved_noise(tmp_path, spec, clean)
    assert got is not None and np.array_equal(got.labels, data.noisy.labels)
    labels = np.load(tmp_path / "noisy_labels.npy")
    labels[0] = (labels[0] + 1) % 4
    np.save(tmp_path / "noisy_labels.npy", labels)  # silently damaged on disk
    warned = []
    assert load_saved_noise(tmp_path, spec, clean, log=warned.append) is None
    assert warned and "warning" in warned[0] and "sha256" in warned[0]
    (tmp_path / "noise.json").write_text("{not json")
    assert load_saved_noise(tmp_path, spec, clean) is None
    assert "unreadable" in capsys.readouterr().err


def test_damaged_tiny_imagenet_cache_is_rebuilt_with_a_warning(tmp_path, capsys):
    from ddlnl.data.tiny import load_tiny_imagenet
    from tests.data.fixtures import write_tiny

    fx = write_tiny(tmp_path)
    first = load_tiny_imagenet(tmp_path)
    cache = fx.base / "ddlnl_cache_train.npz"
    assert cache.is_file() and (fx.base / "ddlnl_cache_train.npz.lock").is_file()
    cache.write_bytes(cache.read_bytes()[:100])  # truncated (newer than wnids.txt, so not just stale)
    again = load_tiny_imagenet(tmp_path)
    assert "ddlnl_cache_train.npz is damaged" in capsys.readouterr().err
    assert np.array_equal(first.train.images, again.train.images) and np.array_equal(first.train.labels, again.train.labels)


@pytest.mark.parametrize("gsam", [False, True])
def test_expert_killed_mid_training_resumes_to_the_same_trajectory(tmp_path, gsam):
    """A partial expert (saved every epoch here) continues where it stopped and ends equal to an uninterrupted one."""
    from ddlnl.experts import train_expert

    g = torch.Generator().manual_seed(0)
    labels = torch.arange(3).repeat_interleave(8)
    images = torch.randn(24, 3, 8, 8, generator=g)
    cfg = ExpertConfig(num_experts=1, epochs=4, batch_size=8, gsam=gsam)
    whole = train_expert(images, labels, MODEL, 3, cfg, seed=5)
    partial = tmp_path / "expert_0.safetensors.partial.pt"

    class Killed(Exception):
        pass

    seen = []
    real_save = torch.save

    def save_then_die(obj, f, *a, **k):
        if obj["epoch"] == 2:
            raise Killed  # dies during epoch 3 of 4, after the checkpoint of epoch 2 was written
        real_save(obj, f, *a, **k)
        seen.append(obj["epoch"])

    torch.save = save_then_die
    try:
        with pytest.raises(Killed):
            train_expert(images, labels, MODEL, 3, cfg, seed=5, partial=partial, partial_every_s=0.0)
    finally:
        torch.save = real_save
    assert partial.exists() and seen == [0, 1]
    logs = []
    resumed = train_expert(images, labels, MODEL, 3, cfg, seed=5, partial=partial, partial_every_s=1e9, log=logs.append)
    assert any("after epoch 2/4" in m for m in logs)
    assert torch.equal(resumed, whole)


def test_empty_compiled_kernels_left_by_a_killed_compile_are_removed(tmp_path, monkeypatch):
    """A run killed while Inductor's compiler writes a kernel leaves an empty .so that would make every
    resumed run fail ('file too short'); stale empty ones go, fresh (in progress) and intact ones stay."""
    from ddlnl.utils.runtime import remove_broken_compiled_kernels

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    (tmp_path / "4w").mkdir()
    stale, fresh, intact = tmp_path / "4w" / "a.main.so", tmp_path / "4w" / "b.main.so", tmp_path / "4w" / "c.main.so"
    stale.touch()
    fresh.touch()
    intact.write_bytes(b"\x7fELF" + bytes(100))
    old = time.time() - 3600
    os.utime(stale, (old, old))
    os.utime(intact, (old, old))
    logged = []
    assert remove_broken_compiled_kernels(log=logged.append) == [stale]
    assert not stale.exists() and fresh.exists() and intact.exists()
    assert "1 empty compiled kernel" in logged[0]
