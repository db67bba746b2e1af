"""The Python API (docs/api.md): what ``import ddlnl`` gives, a distiller from another package found
through its entry point and run by ``ddlnl run``, and the page's example, run as written."""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import ddlnl

REPO = Path(__file__).resolve().parents[1]


def python(*args, cwd=None, env=None, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=cwd, env=os.environ | (env or {}),
                          timeout=timeout)


@pytest.fixture
def data_root(tmp_path):
    from tests.data.fixtures import write_cifar10_npz

    write_cifar10_npz(tmp_path / "data", n_train_per_class=12, n_test_per_class=4)
    return tmp_path / "data"


def test_import_ddlnl_exposes_the_api_without_torch():
    r = python("-c", "import sys, ddlnl; print('torch' in sys.modules, sorted(m for m in sys.modules if m.startswith('ddlnl')))")
    assert r.returncode == 0 and r.stdout.split()[0] == "False", r.stdout + r.stderr
    for name in ddlnl.__all__:
        assert getattr(ddlnl, name) is not None, name
    assert callable(ddlnl.run_experiment) and callable(ddlnl.api.distill) and callable(ddlnl.api.evaluate)
    assert ddlnl.register_distiller == ddlnl.DISTILLERS.register and ddlnl.register_baseline == ddlnl.BASELINES.register
    assert {"dm", "datm"} <= set(ddlnl.list_distillers()) and "ce" in ddlnl.BASELINES
    with pytest.raises(AttributeError):
        ddlnl.no_such_name  # noqa: B018
    # the type stub declares the same names as the lazy table
    stub = ast.parse((REPO / "src/ddlnl/__init__.pyi").read_text())
    declared = {a.asname for node in stub.body if isinstance(node, ast.ImportFrom) for a in node.names}
    assert declared == set(ddlnl.__all__) - {"__version__"}
    assert (REPO / "src/ddlnl/py.typed").exists()


def test_registering_checks_the_class():
    with pytest.raises(TypeError, match="subclass"):
        ddlnl.register_distiller(object)
    with pytest.raises(TypeError, match="taken"):
        ddlnl.register_distiller(type("NotDm", (type(ddlnl.DISTILLERS.create("dm")),), {"name": "dm"}))
    with pytest.raises(ddlnl.ConfigError, match="unknown method 'nope'"):
        ddlnl.DISTILLERS.get("nope")


PLUGIN = '''
from dataclasses import dataclass

import torch

from ddlnl import Capabilities, Distiller, SyntheticSet


class Mine(Distiller):
    """Not registered here: ddlnl registers it from the entry point."""

    name = "mine"
    capabilities = Capabilities(checkpoints=False)
    preset_options = {"smoke": {"draws": 2}}

    @dataclass(frozen=True)
    class Options:
        draws: int = 5

    def distill(self, ctx, ipc):
        g = ctx.generator("mine")
        xs, ys = [], []
        for c in range(ctx.num_classes):
            members = torch.as_tensor(ctx.class_indices(c))
            xs.append(ctx.images[members[torch.randint(len(members), (ipc, self.options.draws), generator=g)]].mean(1))
            ys.append(torch.full((ipc,), c))
        return SyntheticSet(torch.cat(xs), torch.cat(ys), ctx.preprocess)
'''

PYPROJECT = '''
[build-system]
requires = ["setuptools"]
build-backend = "setuptools.build_meta"

[project]
name = "ddlnl-test-plugin"
version = "0.1"

[project.entry-points."ddlnl.distillers"]
mine = "ddlnl_test_plugin:Mine"
broken = "ddlnl_test_plugin_missing:Broken"
misnamed = "ddlnl_test_plugin:Mine"

[tool.setuptools]
py-modules = ["ddlnl_test_plugin"]
'''


@pytest.fixture
def plugin_site(tmp_path):
    """The test package, installed by pip into its own folder (a real install with its entry points;
    the environment's site-packages is left alone): what goes on PYTHONPATH to have it installed."""
    pkg, site = tmp_path / "plugin", tmp_path / "site"
    pkg.mkdir()
    (pkg / "pyproject.toml").write_text(PYPROJECT)
    (pkg / "ddlnl_test_plugin.py").write_text(textwrap.dedent(PLUGIN))
    r = python("-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index", "--target", str(site), str(pkg))
    assert r.returncode == 0, r.stdout + r.stderr
    assert (site / "ddlnl_test_plugin-0.1.dist-info" / "entry_points.txt").exists()
    return site


@pytest.mark.slow
def test_a_distiller_from_another_package_runs_through_ddlnl_run(plugin_site, data_root, tmp_path):
    env = {"PYTHONPATH": str(plugin_site)}
    r = python("-m", "ddlnl.cli", "methods", env=env)
    assert r.returncode == 0 and "mine" in r.stdout and "broken" in r.stdout, r.stdout + r.stderr

    out = tmp_path / "run"
    r = python("-m", "ddlnl.cli", "run", "--method", "mine", "--preset", "smoke", "--ipc", "2", "--data-root", str(data_root),
               "--out", str(out), "--no-progress", env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    res = json.loads((out / "result.json").read_text())
    assert res["method"] == "mine" and 0.0 <= res["results"]["distilled"]["acc_mean"] <= 1.0
    assert set(res["results"]) >= {"full_noisy", "random", "distilled"}
    config = json.loads((out / "config.json").read_text())
    assert config["resolved_preset"]["methods"]["mine"] == {"draws": 2}  # its preset_options for smoke
    # a value on top with --set, as for the built-in methods; at a preset it has no block for, its defaults
    for preset, overrides, options in (("smoke", ["--set", "methods.mine.draws=3"], "draws=3"), ("quick", [], "draws=5")):
        r = python("-m", "ddlnl.cli", "run", "--method", "mine", "--preset", preset, *overrides, "--dry-run",
                   "--out", str(tmp_path / "dry"), env=env)
        assert r.returncode == 0 and f"options: {options}" in r.stdout, r.stdout + r.stderr

    # a broken plugin fails its own runs with one clear message naming it, not a traceback
    for name, needles in (("broken", ["'broken'", "ddlnl_test_plugin_missing:Broken", "ddlnl-test-plugin", "ModuleNotFoundError"]),
                          ("misnamed", ["'misnamed'", "ddlnl_test_plugin:Mine", "whose 'name' is 'misnamed'"])):
        r = python("-m", "ddlnl.cli", "run", "--method", name, "--preset", "smoke", "--data-root", str(data_root),
                   "--out", str(tmp_path / name), env=env)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stdout + r.stderr
        for needle in needles:
            assert needle in r.stderr, (needle, r.stderr)


@pytest.mark.slow
def test_the_api_page_example_runs(data_root, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (REPO / "docs/api.md").read_text(), re.S)
    assert len(blocks) >= 2
    (tmp_path / "example.py").write_text("\n".join(blocks))
    r = python(str(tmp_path / "example.py"), cwd=tmp_path, env={"DDLNL_DATA": str(data_root)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert "clean test accuracy" in r.stdout and "mean_of_draws:" in r.stdout and "'distilled'" in r.stdout
    assert (tmp_path / "dm.safetensors").exists() and (tmp_path / "runs/dm/result.json").exists()


def test_a_builtin_method_missing_from_a_preset_is_an_error_not_its_defaults(tmp_path):
    """Only a user's own method may run without a preset block (at its preset_options or defaults): a
    built-in one's defaults are paper-scale, so a preset that lacks it is refused with the fix."""
    import yaml

    from ddlnl.errors import ConfigError
    from ddlnl.presets import load_preset
    from ddlnl.spec import ExperimentSpec

    doc = load_preset("smoke")
    del doc["methods"]["dm"]
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(ConfigError, match="has no settings for method 'dm'"):
        ExperimentSpec.create(method="dm", preset=str(path))
