"""Bad input through the command line: every case exits 2 with one paragraph naming the problem, no traceback.

Each case is a ``ddlnl`` command line. Starting Python and torch costs ~2 s per process, so the
cases run in one subprocess (a driver that calls the CLI's ``main`` once per case with its own
captured stderr, exactly what ``python -m ddlnl`` runs); a few cases also run as their own
``python -m ddlnl`` process to cover the real entry point and ``--debug``. Every case fails
before any training.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.data.fixtures import (
    human_label_arrays,
    py2_pickle,
    write_cifar10_npz,
    write_cifar10_torchvision,
    write_cifar10n_npz,
    write_human_labels,
    write_image_folder,
)

SMOKE = (Path(__file__).resolve().parents[1] / "src" / "ddlnl" / "presets" / "smoke.yaml").read_text()


def _root(base: Path, name: str) -> tuple[Path, np.ndarray]:
    root = base / name
    root.mkdir()
    labels = write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    write_cifar10n_npz(root, labels)
    return root, labels


def _write(path: Path, text: str) -> str:
    path.write_text(text)
    return str(path)


def build_cases(t: Path) -> dict[str, tuple[list[str], list[str]]]:
    """name -> (argv, substrings the error must contain)."""
    root, _ = _root(t, "ok")
    R = ["--data-root", str(root)]
    out = ["--out", str(t / "out")]
    smoke = ["--preset", "smoke", *out, *R]
    c: dict[str, tuple[list[str], list[str]]] = {}

    # -- wrong or missing paths ---------------------------------------------------------------
    c["missing data root"] = (["noise", "--data-root", str(t / "nowhere")], ["cifar10 not found", "--data-root"])
    c["data root is a file"] = (["distill", "--preset", "smoke", "--out", str(t / "s.safetensors"), "--data-root", SMOKE_PATH(t)],
                                ["is a file, not a folder"])
    c["run --out is a file"] = (["run", "--preset", "smoke", "--out", SMOKE_PATH(t), *R], ["is a file"])
    c["distill --out is a folder"] = (["distill", "--preset", "smoke", "--out", str(t), *R], ["is a folder"])
    c["evaluate missing file"] = (["evaluate", str(t / "none.safetensors")], ["does not exist"])
    empty_dir = t / "empty"
    empty_dir.mkdir()
    c["evaluate folder without a set"] = (["evaluate", str(empty_dir), "--dataset", "cifar10"], ["no DATM/MTT synthetic set"])
    c["preset path missing"] = (["run", "--preset", str(t / "nope.yaml"), *out, *R], ["unknown preset", "nope.yaml"])
    c["study file missing"] = (["study", str(t / "nope.yaml"), "--out", str(t / "st")], ["does not exist"])
    c["report folder missing"] = (["report", str(t / "nodir")], ["study.sqlite"])

    # -- truncated or corrupt files --------------------------------------------------------------
    r, _ = _root(t, "trunc_npz")
    p = r / "cifar10" / "train_part0.npz"
    p.write_bytes(p.read_bytes()[:300])
    c["truncated npz"] = (["noise", "--data-root", str(r)], ["train_part0.npz", "corrupt"])
    c["data check finds a corrupt file"] = (["data", "check", "cifar10", "--data-root", str(r)],
                                            ["1 of 1 checked item(s) failed: cifar10", "train_part0.npz"])
    r, _ = _root(t, "flip_npz")
    p = r / "cifar10" / "test.npz"
    raw = bytearray(p.read_bytes())
    raw[200:260] = b"\xff" * 60
    p.write_bytes(bytes(raw))
    c["bit-flipped npz"] = (["distill", "--preset", "smoke", "--out", str(t / "f.safetensors"), "--data-root", str(r)],
                            ["test.npz", "corrupt"])
    tv = t / "tv"
    write_cifar10_torchvision(tv)
    p = tv / "cifar-10-batches-py" / "data_batch_2"
    p.write_bytes(p.read_bytes()[:400])
    c["truncated CIFAR python batch"] = (["noise", "--data-root", str(tv)], ["data_batch_2", "truncated"])
    trunc = t / "trunc.safetensors"
    trunc.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\":")
    c["truncated safetensors"] = (["evaluate", str(trunc)], ["not a readable safetensors file"])
    from safetensors.torch import save_file

    header = {"format": "ddlnl.synthetic_set", "preprocess": {"kind": "zca"}, "meta": {"dataset": "cifar10"}}
    save_file({"images": torch.zeros(2, 3, 32, 32), "labels": torch.zeros(2, dtype=torch.long)}, str(t / "nozca.safetensors"),
              metadata={"ddlnl": json.dumps(header)})
    c["set without its ZCA state"] = (["evaluate", str(t / "nozca.safetensors"), *R], ["preprocessing state is incomplete"])
    garbage = t / "garbage"
    garbage.mkdir()
    (garbage / "images_best.pt").write_bytes(b"PK\x03\x04 not really a zip")
    (garbage / "labels_best.pt").write_bytes(b"garbage")
    c["corrupt .pt"] = (["evaluate", str(garbage), "--dataset", "cifar10", *R], ["images_best.pt", "corrupt, truncated or not a torch file"])
    folder = t / "imgs"
    write_image_folder(folder)
    (folder / "train" / "dog" / "a1.PNG").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    c["corrupt image"] = (["noise", "--dataset", f"folder:{folder}", "--noise", "pairflip", *R], ["cannot decode image", "a1.PNG"])
    study_dir = t / "study_bad"
    study_dir.mkdir()
    (study_dir / "study.sqlite").write_bytes(b"SQLite format 3\x00" + bytes(range(256)) * 4)
    c["corrupt study database"] = (["report", str(study_dir)], ["study database is damaged"])
    r, _ = _root(t, "trunc_n")
    p = r / "cifar10n" / "CIFAR-10_human.npz"
    p.write_bytes(p.read_bytes()[:100])
    c["truncated label file"] = (["noise", "--noise", "aggre", "--data-root", str(r)], ["CIFAR-10_human.npz", "truncated"])

    # -- label files of the wrong length or with out-of-range values ---------------------------
    r, lab = _root(t, "short_n")
    write_human_labels(r, "cifar10", {k: v[:-3] for k, v in human_label_arrays("cifar10", lab).items()})
    c["label file too short"] = (["noise", "--noise", "worst", "--data-root", str(r)], ["has 117 labels", "120"])
    r, lab = _root(t, "range_n")
    d = human_label_arrays("cifar10", lab)
    d["worse_label"][3] = 12
    write_human_labels(r, "cifar10", d)
    c["label file value out of range"] = (["noise", "--noise", "worst", "--data-root", str(r)], ["worse_label", "outside 0..9"])
    r, _ = _root(t, "range_y")
    z = dict(np.load(r / "cifar10" / "train_part0.npz"))
    z["y"] = z["y"].copy()
    z["y"][0] = 17
    np.savez(r / "cifar10" / "train_part0.npz", **z)
    c["dataset label out of range"] = (["noise", "--data-root", str(r)], ["outside 0..9"])
    for name, lab_t in (("negative", torch.full((4,), -1)), ("too large", torch.full((4,), 50))):
        f = t / f"set_{name.replace(' ', '_')}"
        f.mkdir()
        torch.save(torch.zeros(4, 3, 32, 32), f / "images_best.pt")
        torch.save(lab_t, f / "labels_best.pt")
        c[f"set labels {name}"] = (["evaluate", str(f), "--dataset", "cifar10", "--preset", "smoke", *R],
                                   ["negative" if name == "negative" else "more classes"])
    short = t / "set_short"
    short.mkdir()
    torch.save(torch.zeros(4, 3, 32, 32), short / "images_best.pt")
    torch.save(torch.zeros(3, dtype=torch.long), short / "labels_best.pt")
    c["set labels wrong length"] = (["evaluate", str(short), "--dataset", "cifar10", *R], ["4 images but labels of shape (3,)"])

    # -- unknown names ---------------------------------------------------------------------------
    c["unknown dataset"] = (["noise", "--dataset", "mnist", *R], ["unknown dataset 'mnist'", "cifar10"])
    c["unknown noise"] = (["noise", "--noise", "salt", *R], ["unknown noise type 'salt'", "symmetric"])
    c["unknown method"] = (["run", "--method", "magic", *smoke], ["magic", "dm"])
    c["unknown preset"] = (["run", "--preset", "huge", *out, *R], ["unknown preset 'huge'", "quick"])
    c["unknown baseline"] = (["run", "--baselines", "foo", *smoke], ["unknown baseline 'foo'"])
    c["unknown data check name"] = (["data", "check", "mnist", *R], ["mnist", "cifar10"])
    c["unknown model"] = (["run", "--set", "model.name=vit", *smoke], ["unknown model 'vit'"])
    c["unknown device"] = (["distill", "--device", "tpu", "--preset", "smoke", "--out", str(t / "d.safetensors"), *R],
                           ["invalid device 'tpu'"])
    c["unknown method option"] = (["distill", "--method", "dm", "--set", "methods.dm.foo=1", "--preset", "smoke", "--out", str(t / "d.safetensors"), *R],
                                  ["unknown option(s) for distiller 'dm': foo"])
    c["unknown argument"] = (["methods", "--frobnicate"], ["unrecognized arguments: --frobnicate"])

    # -- out-of-range numbers --------------------------------------------------------------------
    for rate in ("1.5", "-0.2", "nan"):
        c[f"rate {rate}"] = (["noise", "--rate", rate, *R], ["rate", rate])
    c["rate on a human label set"] = (["noise", "--noise", "worst", "--rate", "0.2", *R], ["human label set"])
    c["ipc 0"] = (["run", "--ipc", "0", *smoke], ["--ipc must be a positive integer"])
    c["ipc above class size"] = (["run", "--ipc", "50", *smoke], ["IPC 50 is larger than noisy class"])
    c["ipc not an integer"] = (["distill", "--ipc", "ten", "--out", str(t / "d.safetensors")], ["invalid int value: 'ten'"])
    c["negative seed"] = (["noise", "--seed", "-1", *R], ["--seed must be in [0, 2**32)"])
    c["huge noise seed"] = (["noise", "--noise-seed", str(2**40), *R], ["--noise-seed"])
    c["imbalance below 1"] = (["noise", "--imbalance", "0.5", *R], ["imbalance", "0.5"])
    c["evaluate runs 0"] = (["evaluate", str(trunc), "--runs", "0"], ["--runs must be a positive integer"])
    c["epochs 0"] = (["run", "--set", "evaluation.train.epochs=0", *smoke], ["epochs must be a positive integer"])
    c["lr negative"] = (["run", "--set", "evaluation.train.lr=-1", *smoke], ["lr must be a non-negative number"])
    c["lr not a number"] = (["run", "--set", "baseline.train.lr=abc", *smoke], ["lr", "'abc'"])
    c["method option wrong type"] = (["run", "--method", "dm", "--set", "methods.dm.iterations=abc", *smoke], ["iterations", "whole number", "'abc'"])
    c["method option out of range"] = (["run", "--method", "dm", "--set", "methods.dm.iterations=-5", *smoke], ["iterations=-5"])
    c["tf32 on a cpu"] = (["run", "--precision", "tf32", "--device", "cpu", *smoke], ["--precision tf32", "CUDA", "drop --precision"])
    c["data size wrong type"] = (["run", "--set", "data.train_per_class=abc", *smoke], ["data.train_per_class", "'abc'"])
    c["checkpoint interval negative"] = (["run", "--checkpoint-every", "-1", *smoke], ["--checkpoint-every"])
    c["study max workers 0"] = (["study", str(t / "x.yaml"), "--out", str(t / "st"), "--max-workers", "0"], ["--max-workers"])

    # -- malformed YAML --------------------------------------------------------------------------
    bad = _write(t / "syntax.yaml", "name: x\n  data: [1,\n")
    c["preset YAML syntax"] = (["run", "--preset", bad, *out, *R], ["not valid YAML", "line 2"])
    c["preset unknown key"] = (["run", "--preset", _write(t / "unk.yaml", SMOKE + "\nfoo: 1\n"), *out, *R], ["unknown key(s) foo"])
    c["preset wrong type"] = (["run", "--preset", _write(t / "wt.yaml", SMOKE.replace("epochs: 10,", "epochs: ten,")), *out, *R],
                              ["evaluation.train: epochs must be a positive integer", "'ten'"])
    c["preset not a mapping"] = (["run", "--preset", _write(t / "list.yaml", "- 1\n- 2\n"), *out, *R], ["must be a mapping"])
    c["preset empty"] = (["run", "--preset", _write(t / "empty.yaml", ""), *out, *R], ["must be a mapping"])
    c["study YAML syntax"] = (["study", bad, "--out", str(t / "st")], ["not valid YAML"])
    c["study unknown key"] = (["study", _write(t / "st1.yaml", "name: x\nfoo: 1\n"), "--out", str(t / "st")], ["unknown key(s) foo"])
    grid = "grid: [{datasets: [cifar10], noise: [aggre], methods: [dm], ipc: [1], seeds: [0]}]\n"
    c["study unknown method"] = (["study", _write(t / "st2.yaml", "name: x\npreset: smoke\n" + grid.replace("[dm]", "[magic]")),
                                  "--out", str(t / "st")], ["cell cifar10-aggre", "'magic'"])
    c["study unknown dataset"] = (["study", _write(t / "st3.yaml", "name: x\npreset: smoke\n" + grid.replace("[cifar10]", "[mnist]")),
                                   "--out", str(t / "st")], ["unknown dataset 'mnist'"])
    c["study bad override"] = (["study", _write(t / "st4.yaml", "name: x\npreset: smoke\noverrides: [evaluation.runs=0]\n" + grid),
                                "--out", str(t / "st")], ["runs must be a positive integer"])
    c["study wrong type"] = (["study", _write(t / "st5.yaml", "name: x\npreset: smoke\n" + grid.replace("ipc: [1]", "ipc: [one]")),
                              "--out", str(t / "st")], ["ipc[0] must be an integer", "'one'"])
    c["override without ="] = (["run", "--set", "evaluation.runs", *smoke], ["has no '='"])
    return c


def SMOKE_PATH(t: Path) -> str:  # a file that exists (and is not a folder)
    p = t / "a_file.yaml"
    if not p.exists():
        p.write_text(SMOKE)
    return str(p)


DRIVER = textwrap.dedent("""
    import contextlib, io, json, sys, time, traceback
    from ddlnl.cli import main
    cases = json.load(open(sys.argv[1]))
    results = {}
    for name, argv in cases.items():
        err, out, t0 = io.StringIO(), io.StringIO(), time.perf_counter()
        try:
            with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
                rc = main(argv)
        except SystemExit as e:  # argparse errors
            rc = e.code
        except BaseException:
            rc, err = "escaped", io.StringIO(err.getvalue() + traceback.format_exc())
        results[name] = {"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue(), "s": time.perf_counter() - t0}
    json.dump(results, open(sys.argv[2], "w"))
""")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    t = tmp_path_factory.mktemp("bad")
    cases = build_cases(t)
    (t / "cases.json").write_text(json.dumps({k: v[0] for k, v in cases.items()}))
    env = dict(os.environ, DDLNL_CACHE=str(t / "cache"), OMP_NUM_THREADS="1")
    r = subprocess.run([sys.executable, "-c", DRIVER, str(t / "cases.json"), str(t / "results.json")],
                       capture_output=True, text=True, env=env, timeout=300, check=False)
    assert r.returncode == 0, r.stderr
    got = json.loads((t / "results.json").read_text())
    return {name: (got[name], cases[name][1]) for name in cases}


ARGPARSE = {"unknown argument", "ipc not an integer"}  # refused by argparse: usage line + error, exit 2


def _case_names() -> list[str]:
    import tempfile

    with tempfile.TemporaryDirectory() as d:
        return list(build_cases(Path(d)))


@pytest.mark.parametrize("name", _case_names())
def test_bad_input_is_refused_clearly(results, name):
    res, needles = results[name]
    err = res["stderr"]
    assert res["rc"] == 2, f"{name}: exit {res['rc']}\n{err}"
    assert "Traceback" not in err and "Traceback" not in res["stdout"], err
    for n in needles:
        assert n in err, f"{name}: {n!r} not in\n{err}"
    if name not in ARGPARSE:  # one paragraph: "ddlnl CMD: error: PROBLEM" then "  fix: FIX"
        lines = [s for s in err.strip().splitlines() if s.strip()]
        assert lines[-2].startswith("ddlnl ") and ": error: " in lines[-2] and lines[-1].startswith("  fix: "), err


def ddlnl(*args, env=None):
    e = dict(os.environ, OMP_NUM_THREADS="1")
    e.update(env or {})
    return subprocess.run([sys.executable, "-m", "ddlnl", *args], capture_output=True, text=True, env=e, timeout=120, check=False)


def test_real_entry_point_exit_status_and_debug(tmp_path):
    """``python -m ddlnl``: exit 2 and one paragraph; with --debug the traceback instead."""
    r = ddlnl("noise", "--dataset", "mnist", "--data-root", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.startswith("ddlnl noise: error: unknown dataset 'mnist'") and "\n  fix: " in r.stderr
    r = ddlnl("--debug", "noise", "--dataset", "mnist", "--data-root", str(tmp_path))
    assert r.returncode != 0 and "Traceback" in r.stderr and "ConfigError" in r.stderr


def test_malformed_batch_pickle_is_refused_through_the_cli(tmp_path):
    """A CIFAR python batch that is a valid pickle of the wrong shape: named, exit 2."""
    write_cifar10_torchvision(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "test_batch").write_bytes(py2_pickle({"data": [1, 2, 3]}))
    r = ddlnl("noise", "--data-root", str(tmp_path))
    assert r.returncode == 2 and "Traceback" not in r.stderr and "test_batch" in r.stderr, r.stderr
