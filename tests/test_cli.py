"""The CLI as a user meets it: subprocesses, exit codes, messages, no tracebacks."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REAL = os.environ.get("DDLNL_DATA")
needs_real = pytest.mark.skipif(not (REAL and Path(REAL, "cifar10").exists()), reason="needs $DDLNL_DATA with cifar10/")


def ddlnl(*args, env=None, timeout=300):
    e = dict(os.environ)
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ddlnl.cli", *args], capture_output=True, text=True, env=e, timeout=timeout)


def assert_clean_error(r, *needles):
    assert r.returncode == 2, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr and "Traceback" not in r.stdout
    for n in needles:
        assert n in r.stderr, (n, r.stderr)


@pytest.fixture
def root(tmp_path):
    """A small CIFAR-10 in the npz layout, with a matching CIFAR-10N label file."""
    from tests.data.fixtures import write_cifar10_npz, write_cifar10n_npz

    labels = write_cifar10_npz(tmp_path, n_train_per_class=12, n_test_per_class=4)
    write_cifar10n_npz(tmp_path, labels)
    return tmp_path


def test_unknown_dataset(root):
    assert_clean_error(ddlnl("noise", "--dataset", "mnist", "--data-root", str(root)), "mnist", "cifar10")


def test_missing_data_root(tmp_path):
    r = ddlnl("noise", "--dataset", "cifar10", "--data-root", str(tmp_path / "nowhere"))
    assert_clean_error(r, "cifar10", "cifar-10-batches-py")


@pytest.mark.parametrize("rate", ["1.0", "-0.2", "1.5"])
def test_rate_outside_unit_interval(root, rate):
    assert_clean_error(ddlnl("noise", "--rate", rate, "--data-root", str(root)), "outside [0, 1)")


def test_unknown_noise(root):
    assert_clean_error(ddlnl("noise", "--noise", "salt", "--data-root", str(root)), "salt", "symmetric")


def test_unknown_method_and_preset(root):
    assert_clean_error(ddlnl("run", "--method", "magic", "--preset", "smoke", "--data-root", str(root), "--out", str(root / "r")), "magic")
    assert_clean_error(ddlnl("run", "--preset", "huge", "--data-root", str(root), "--out", str(root / "r")), "huge", "quick")


def test_bad_override(root):
    r = ddlnl("run", "--preset", "smoke", "--set", "evaluation.runs=0", "--data-root", str(root), "--out", str(root / "r"))
    assert_clean_error(r, "runs")
    r = ddlnl("run", "--preset", "smoke", "--set", "evaluation.train.epochz=3", "--data-root", str(root), "--out", str(root / "r"))
    assert_clean_error(r, "epochz")


def test_ipc_larger_than_a_class(root):
    r = ddlnl("run", "--preset", "smoke", "--ipc", "50", "--data-root", str(root), "--out", str(root / "r"), "--no-progress")
    assert_clean_error(r, "IPC 50", "--ipc")


def test_mismatched_label_file(root):
    from tests.data.fixtures import write_cifar10n_npz

    clean = np.load(root / "cifar10n" / "CIFAR-10_human.npz")["clean_label"].copy()
    clean[0] = (clean[0] + 1) % 10
    write_cifar10n_npz(root, clean)
    assert_clean_error(ddlnl("noise", "--noise", "worst", "--data-root", str(root)), "differ")


def test_evaluate_missing_and_corrupt_files(tmp_path):
    assert_clean_error(ddlnl("evaluate", str(tmp_path / "none.safetensors")), "does not exist")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 10)
    assert_clean_error(ddlnl("evaluate", str(bad)), "safetensors")


def test_noise_json_on_fixture(root):
    r = ddlnl("noise", "--dataset", "cifar10", "--noise", "symmetric", "--rate", "0.4", "--seed", "0", "--json", "--data-root", str(root))
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) >= {"nominal_rate", "actual_rate", "transition", "seed"}
    assert out["nominal_rate"] == 0.4 and out["seed"] == 0 and len(out["transition"]) == 10


def test_smoke_run_writes_result_and_resumes(root):
    out = root / "run"
    r = ddlnl("run", "--preset", "smoke", "--ipc", "2", "--data-root", str(root), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "result.json").read_text())
    for key in ("dataset", "noise", "method", "ipc", "preset", "results", "timings_s", "versions"):
        assert key in res
    assert set(res["noise"]) >= {"type", "nominal_rate", "actual_rate", "seed"}
    for row in ("full_noisy", "random", "distilled"):
        assert set(res["results"][row]) >= {"acc_mean", "acc_std", "runs", "per_class"}
        assert 0.0 <= res["results"][row]["acc_mean"] <= 1.0 and len(res["results"][row]["per_class"]) == 10
    assert set(res["timings_s"]) >= {"experts", "distill", "evaluate", "baselines", "total"}
    assert "| full noisy set (CE) |" in r.stdout
    # a rerun reuses every finished stage: identical accuracies, nothing retrained
    r2 = ddlnl("run", "--preset", "smoke", "--ipc", "2", "--data-root", str(root), "--out", str(out), "--no-progress")
    assert r2.returncode == 0 and "training on the full noisy set" not in r2.stdout
    res2 = json.loads((out / "result.json").read_text())
    assert res2["results"]["distilled"]["accs"] == res["results"]["distilled"]["accs"]
    # -q: the result table and nothing of the progress (the stdlib logger 'ddlnl' at WARNING)
    assert "[ddlnl] loading cifar10" in r.stdout
    r_quiet = ddlnl("run", "-q", "--preset", "smoke", "--ipc", "2", "--data-root", str(root), "--out", str(out), "--no-progress")
    assert r_quiet.returncode == 0 and "[ddlnl]" not in r_quiet.stdout and "| full noisy set (CE) |" in r_quiet.stdout
    # the saved distilled set evaluates through `ddlnl evaluate`
    r3 = ddlnl("evaluate", str(out / "distilled.safetensors"), "--data-root", str(root), "--json", "--no-progress")
    assert r3.returncode == 0, r3.stderr
    ev = json.loads(r3.stdout)
    assert ev["dataset"] == "cifar10" and ev["runs"] == 1 and 0 <= ev["acc_mean"] <= 1


@needs_real
def test_smoke_run_on_real_cifar10(tmp_path):
    out = tmp_path / "run"
    r = ddlnl("run", "--preset", "smoke", "--out", str(out), "--no-progress", env={"DDLNL_DATA": REAL})
    assert r.returncode == 0, r.stderr
    res = json.loads((out / "result.json").read_text())
    assert res["num_train"] == 200 and res["num_test"] == 500 and res["method"] == "datm" and res["ipc"] == 10
    assert res["timings_s"]["total"] < 60


@needs_real
def test_noise_on_real_cifar10n_worst():
    r = ddlnl("noise", "--noise", "worst", "--json", env={"DDLNL_DATA": REAL})
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["actual_rate"] == pytest.approx(0.4021, abs=1e-4)


def test_evaluate_datm_folder_with_zca(root, tmp_path):
    import torch

    folder = tmp_path / "datm"
    folder.mkdir()
    torch.save(torch.randn(20, 3, 32, 32), folder / "images_best.pt")
    torch.save(torch.randn(20, 10), folder / "labels_best.pt")
    torch.save(torch.tensor(0.02), folder / "lr_best.pt")
    r = ddlnl("evaluate", str(folder), "--dataset", "cifar10", "--preset", "smoke", "--data-root", str(root), "--json", "--no-progress")
    assert r.returncode == 0, r.stderr
    ev = json.loads(r.stdout)
    assert ev["label_kind"] == "soft" and ev["train"]["lr"] == pytest.approx(0.02) and ev["runs"] == 1
    # without --dataset a foreign file cannot be evaluated
    assert_clean_error(ddlnl("evaluate", str(folder), "--data-root", str(root)), "--dataset")
    r = ddlnl("evaluate", str(folder), "--dataset", "cifar10", "--preset", "smoke", "--hard-labels", "--data-root", str(root), "--json", "--no-progress")
    assert r.returncode == 0 and json.loads(r.stdout)["label_kind"] == "hard"


def test_data_list_names_a_missing_root(tmp_path):
    r = ddlnl("data", "list", "--data-root", str(tmp_path / "nowhere"))
    assert r.returncode == 0 and "does not exist" in r.stderr and "cifar-10-batches-py" in r.stdout


def test_yaml_1_2_floats_are_numbers_in_overrides_and_preset_files(tmp_path):
    """``--set lr_lr=1e-4`` and ``lr_lr: 1e-4`` in a preset file are floats (PyYAML alone reads them as strings)."""
    from ddlnl.presets import PRESET_DIR, apply_overrides, load_preset
    from ddlnl.utils.yamlio import load_yaml

    assert load_yaml("[1e-4, 5E3, -2.5e+3, .5, 3, 1e, abc]") == [1e-4, 5e3, -2.5e3, 0.5, 3, "1e", "abc"]
    assert isinstance(load_yaml("3"), int)
    out, applied = apply_overrides(load_preset("smoke"), ["methods.datm.lr_lr=1e-4", "evaluation.train.lr=2E-2"])
    assert out["methods"]["datm"]["lr_lr"] == 1e-4 and applied["evaluation.train.lr"] == 0.02
    path = tmp_path / "mine.yaml"
    path.write_text((PRESET_DIR / "smoke.yaml").read_text().replace("lr_lr: 1.0e-7, lr_y", "lr_lr: 1e-7, lr_y"))
    assert load_preset(str(path))["methods"]["datm"]["lr_lr"] == 1e-7


def test_bare_ddlnl_prints_help_and_version(capsys):
    from ddlnl import __version__
    from ddlnl.cli import main

    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: ddlnl") and "preset" in out and "study" in out
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == f"ddlnl {__version__}"


def test_every_option_help_shows_its_default(capsys):
    from ddlnl.cli import main

    with pytest.raises(SystemExit):
        main(["run", "--help"])
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for shown in ("run seed (python, numpy, torch) (default: 0)", "(default: quick)", "(default: datm)", "{common,native}"):
        assert shown in out, shown
    assert "(default: False)" not in out  # flags say nothing


def test_preset_list_and_show_print_the_file_with_its_comments(capsys):
    from ddlnl.cli import main
    from ddlnl.presets import PRESET_DIR

    assert main(["preset", "list"]) == 0
    out = capsys.readouterr().out
    assert "quick  version" in out and "smoke  version" in out and "2-core CPU" in out
    assert main(["preset", "show", "quick"]) == 0
    assert capsys.readouterr().out == (PRESET_DIR / "quick.yaml").read_text()
    assert main(["preset", "show", "fast"]) == 2
    assert "unknown preset 'fast'" in capsys.readouterr().err


def test_studies_ship_with_the_package_and_load_by_name_anywhere(tmp_path, monkeypatch, capsys):
    """`ddlnl study smoke` (or studies/smoke.yaml) works from any folder, as after `pip install`."""
    from ddlnl.cli import main
    from ddlnl.study.spec import BUILTIN_STUDIES, load_study

    monkeypatch.chdir(tmp_path)  # no studies/ folder here
    assert main(["study", "list"]) == 0
    out = capsys.readouterr().out
    assert "smoke" in out and "cifar10-findings-quick" in out
    assert load_study("smoke").cells == load_study("studies/smoke.yaml").cells == load_study(BUILTIN_STUDIES / "smoke.yaml").cells
    assert main(["study", "smoke", "--out", str(tmp_path / "s"), "--list"]) == 0
    assert "smoke: 7 cells" in capsys.readouterr().out
    # a running cell shows the last line it logged (what it is doing now), cut to one screen line
    from ddlnl.study.store import Store

    cells = load_study("smoke").cells
    with Store(tmp_path / "s") as store:
        store.sync_cells("smoke", cells, {c.id: tmp_path / "s" / "cells" / c.id for c in cells})
        store.mark_submitted(cells[0].id, "processes")
        store.mark_submitted(cells[1].id, "processes")
    log = tmp_path / "s" / "cells" / cells[0].id / "log.txt"
    log.parent.mkdir(parents=True)
    log.write_text("10:00:00 [ddlnl] distilling with dm (IPC 1)\n10:00:05 [ddlnl] dm it 40/200: loss 0.3 " + "x" * 200 + "\n\n")
    assert main(["study", "smoke", "--out", str(tmp_path / "s"), "--list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    first = next(ln for ln in lines if cells[0].id in ln)
    assert first.split("| ")[1].startswith("10:00:05 dm it 40/200: loss 0.3 xxx") and first.endswith("…")
    assert len(first.split("| ")[1]) == 100
    assert next(ln for ln in lines if cells[1].id in ln).endswith("| no log yet")
    # a pending cell names the unfinished cells it waits for; a running one waits for nothing any more
    from ddlnl.study.executors import dependencies

    deps = dependencies(cells)
    assert cells[0].id in deps[cells[1].id] and "(after" not in next(ln for ln in lines if f" {cells[1].id} " in ln)
    pending = [c for c in cells[2:] if deps[c.id]]
    assert pending and all(f"(after {', '.join(sorted(deps[c.id]))})" in next(ln for ln in lines if f" {c.id} " in ln)
                           for c in pending)
    assert main(["study", "nosuch", "--out", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert "no built-in study is called 'nosuch'" in err and "smoke" in err
    assert main(["study", "smoke"]) == 2 and "needs --out" in capsys.readouterr().err
    import tomllib

    root = Path(__file__).resolve().parents[1]
    patterns = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["ddlnl"]
    files = list(BUILTIN_STUDIES.glob("*.yaml"))
    assert len(files) >= 16 and all(any(f.relative_to(root / "src" / "ddlnl").match(p) for p in patterns) for f in files)
