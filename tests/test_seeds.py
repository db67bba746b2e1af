"""Seed streams by purpose: no evaluation network starts from the weights of a network that
made the set (an expert, a distiller's network) or of a baseline, for every registered method."""

from __future__ import annotations

import hashlib
import inspect
import sys

import pytest

import ddlnl.models
from ddlnl.distill import create_distiller, list_distillers
from ddlnl.run import run_experiment
from ddlnl.spec import ExperimentSpec
from ddlnl.utils.seeds import stream_seed

FAST = ["evaluation.train.epochs=2", "baseline.train.epochs=1", "evaluation.runs=2"]


def test_streams_differ_by_purpose_and_index():
    seeds = {stream_seed(0, p, i) for p in ("expert", "evaluation", "baseline", "dm.network") for i in range(50)}
    assert len(seeds) == 200
    assert stream_seed(3, "evaluation", 1) == stream_seed(3, "evaluation", 1)
    assert all(0 <= s < 2**63 for s in seeds)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path_factory.mktemp("data")
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    return root


def _cases():
    for m in list_distillers():
        if m == "random":
            continue  # the control beside every method: it runs in every case below
        yield m, "common"
        if create_distiller(m).capabilities.native_eval:
            yield m, "native"


@pytest.mark.parametrize("method,protocol", list(_cases()))
def test_no_evaluation_network_starts_from_another_network(method, protocol, data_root, tmp_path, monkeypatch):
    inits: dict[str, set] = {"evaluation": set(), "other": set()}
    real = ddlnl.models.create_model

    def recording(*args, **kwargs):
        net = real(*args, **kwargs)
        digest = hashlib.sha256(b"".join(p.detach().cpu().numpy().tobytes() for p in net.parameters())).hexdigest()
        evaluating = any(f.function == "evaluate_sets" and f.filename.endswith("ddlnl/evaluate.py") for f in inspect.stack(0))
        inits["evaluation" if evaluating else "other"].add(digest)
        return net

    for name, module in list(sys.modules.items()):  # every module that bound create_model by name
        if name.startswith("ddlnl") and getattr(module, "create_model", None) is real:
            monkeypatch.setattr(module, "create_model", recording)
    overrides = FAST + [f"methods.{method}.iterations=2"]
    spec = ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method=method, ipc=1, preset="smoke",
                                 overrides=tuple(overrides), eval_protocol=protocol, data_root=str(data_root))
    result = run_experiment(spec, tmp_path / "run", log=lambda m: None, progress=False)
    assert inits["evaluation"] and inits["other"]  # both kinds were built and recorded
    assert not inits["evaluation"] & inits["other"], "an evaluation network starts from another network's weights"
    row = result["results"]["distilled"]["seed_stream"]
    assert row["purpose"] == "evaluation" and len(row["run_seeds"]) == result["results"]["distilled"]["runs"]
    assert result["seed_scheme"] == 2
    assert result["results"]["full_noisy"]["seed_stream"]["purpose"] == "baseline"


def test_dm_starts_from_the_random_controls_images(data_root):
    """The paired comparison the protocol promises: DM's starting images are the random control's."""
    spec = ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.4, method="dm", ipc=2, preset="smoke",
                                 overrides=("methods.dm.iterations=0",), data_root=str(data_root))
    data = spec.prepare_data()
    dm = spec.distiller().run(spec.distill_context(data, "cpu", progress=False), 2)
    rnd = spec.random_control().run(spec.distill_context(data, "cpu", progress=False), 2)
    assert (dm.images == rnd.images).all() and (dm.labels == rnd.labels).all()


def test_evaluate_tests_a_run_set_on_the_runs_test_images(data_root, tmp_path, capsys):
    """``ddlnl evaluate`` draws a preset's test subset as ``ddlnl run`` does, so it reproduces the run's row."""
    import json

    from ddlnl.cli import main

    overrides = ["--set", "data.test_size=20", "--set", "evaluation.train.epochs=2", "--set", "baseline.train.epochs=1",
                 "--set", "methods.dm.iterations=2"]
    run = tmp_path / "run"
    assert main(["run", "--method", "dm", "--ipc", "2", "--preset", "smoke", "--data-root", str(data_root), "--out", str(run),
                 "--no-progress", *overrides]) == 0
    row = json.loads((run / "result.json").read_text())["results"]["distilled"]
    capsys.readouterr()
    assert main(["evaluate", str(run / "distilled.safetensors"), "--data-root", str(data_root), "--json", "--no-progress",
                 *overrides]) == 0
    again = json.loads(capsys.readouterr().out)
    assert sum(map(sum, again["confusion"])) == 20 and again["accs"] == row["accs"] and again["confusion"] == row["confusion"]
