"""Contracts every registered distiller and baseline keeps, parametrised from the registries.

A newly registered method is covered here without a test of its own: the cases are built at
collection time from ``list_distillers()`` and ``list_baselines()``, with the method's block of
the ``smoke`` preset, on a tiny CIFAR-10-shaped data set (fake npz, 12 images per class).

Distillers: a smoke run gives ``ipc * C`` images; the set saves and loads identically; the same
seed gives the same set twice; an interrupted run resumes to the uninterrupted result (methods
that declare ``capabilities.checkpoints = False`` have no loop to interrupt); the declared
:class:`~ddlnl.distill.base.Capabilities` match what the method does; options are read-only;
bad options raise :class:`~ddlnl.errors.ConfigError` with a fix.

Baselines: a run returns an :class:`~ddlnl.evaluate.EvalResult` with accuracies in [0, 1];
the same seed gives the same accuracies; an unknown option raises ConfigError.
"""

from __future__ import annotations

import json
from dataclasses import FrozenInstanceError, fields
from pathlib import Path

import pytest
import torch

from ddlnl.baselines import BaselineContext, BaselineUnavailable, create_baseline, list_baselines
from ddlnl.data.noise import NoiseSpec
from ddlnl.distill import DistillContext, create_distiller, list_distillers
from ddlnl.distill.base import Capabilities
from ddlnl.distill.loop import DistillLoop
from ddlnl.errors import ConfigError
from ddlnl.evaluate import EvalResult
from ddlnl.presets import load_preset, method_options
from ddlnl.synset import SyntheticSet

IPC = 2
DISTILLERS = list_distillers()
BASELINES = list_baselines()
PRESETS = ("smoke", "quick", "paper")


@pytest.fixture(scope="module")
def preset():
    return load_preset("smoke")


@pytest.fixture(scope="module")
def data(tmp_path_factory, preset):
    """PreparedData of a fake CIFAR-10 (12 train and 4 test images per class), 20 % symmetric noise."""
    from ddlnl.experiment import prepare_data
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path_factory.mktemp("contracts_data")
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    return prepare_data("cifar10", NoiseSpec("symmetric", 0.2, 0), preset, data_root=root, seed=0)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """One expert cache for the module: experts are trained once per method and shared by its runs."""
    return tmp_path_factory.mktemp("contracts_experts")


def make_ctx(data, preset, cache_dir, checkpoint: Path | None = None) -> DistillContext:
    """A context as ``ddlnl run`` builds it (run._distill_context), checkpointing every iteration if asked."""
    return DistillContext("cifar10", data.x_train, data.noisy.labels, data.num_classes, data.preprocess, preset["model"],
                          seed=0, cache_dir=cache_dir, log=lambda m: None, noise=data.noisy.spec,
                          checkpoint=checkpoint, checkpoint_every_s=0.0)


def distiller(preset, name, **extra):
    return create_distiller(name, **{**method_options(preset, name), **extra})


@pytest.fixture(scope="module")
def reference(data, preset, cache_dir, tmp_path_factory):
    """One smoke run per method (checkpointing every iteration), shared by the tests below."""
    runs = {}

    def get(name):
        if name not in runs:
            ckpt = tmp_path_factory.mktemp(f"ref_{name}") / "ckpt.pt"
            d = distiller(preset, name)
            before = d.options_dict()
            synset = d.run(make_ctx(data, preset, cache_dir, ckpt), IPC)
            runs[name] = {"synset": synset, "checkpoint_written": ckpt.exists(), "options_before": before,
                          "options_after": d.options_dict()}
        return runs[name]

    return get


def assert_same_set(a: SyntheticSet, b: SyntheticSet) -> None:
    assert a.images.shape == b.images.shape and torch.equal(a.images, b.images)
    assert a.labels.dtype == b.labels.dtype and torch.equal(a.labels, b.labels)
    assert a.lr == b.lr


def jsonable(x):
    return json.loads(json.dumps(x, default=str))


# ----------------------------------------------------------------------------------- distillers


@pytest.mark.parametrize("name", DISTILLERS)
def test_smoke_run_gives_ipc_images_per_class(name, reference, data):
    ref = reference(name)
    s, C = ref["synset"], data.num_classes
    assert isinstance(s, SyntheticSet)
    assert s.images.shape[0] == IPC * C and s.images.shape[1:] == data.x_train.shape[1:]
    assert torch.isfinite(s.images).all() and torch.isfinite(s.labels.float()).all()
    if s.label_kind == "hard":
        assert s.labels.shape == (IPC * C,) and torch.equal(torch.bincount(s.labels, minlength=C), torch.full((C,), IPC))
    else:
        assert s.labels.shape == (IPC * C, C)
    assert s.meta["method"] == name and s.meta["ipc"] == IPC
    # options are as configured before and after the run (a run never changes its distiller's options)
    assert ref["options_before"] == ref["options_after"] == s.meta["options"]


@pytest.mark.parametrize("name", DISTILLERS)
def test_the_set_saves_and_loads_identically(name, reference, tmp_path):
    s = reference(name)["synset"]
    loaded = SyntheticSet.load(s.save(tmp_path / f"{name}.safetensors"))
    assert_same_set(loaded, s)
    assert loaded.label_kind == s.label_kind
    assert loaded.meta == jsonable(s.meta)
    assert loaded.preprocess.meta() == s.preprocess.meta()
    x = torch.rand(2, *s.images.shape[1:])
    assert torch.equal(loaded.preprocess(x), s.preprocess(x))


@pytest.mark.parametrize("name", DISTILLERS)
def test_the_same_seed_gives_the_same_set(name, reference, data, preset, cache_dir):
    again = distiller(preset, name).run(make_ctx(data, preset, cache_dir), IPC)  # and without checkpoints
    assert_same_set(again, reference(name)["synset"])


class Interrupted(Exception):
    pass


@pytest.mark.parametrize("name", DISTILLERS)
def test_an_interrupted_run_resumes_to_the_uninterrupted_result(name, reference, data, preset, cache_dir, tmp_path,
                                                                 monkeypatch):
    if not type(create_distiller(name)).capabilities.checkpoints:
        pytest.skip(f"{name!r} has no iterative loop (capabilities.checkpoints is false): it is one draw, "
                    "so running it again is the resume")
    whole = reference(name)["synset"]
    ckpt = tmp_path / "ckpt.pt"
    real_report = DistillLoop.report

    def report(self, loss):
        # the first report after a checkpoint exists: mid-way through the second iteration or later,
        # after that iteration's work and before it is checkpointed
        if ckpt.exists():
            raise Interrupted
        return real_report(self, loss)

    monkeypatch.setattr(DistillLoop, "report", report)
    with pytest.raises(Interrupted):
        distiller(preset, name).run(make_ctx(data, preset, cache_dir, ckpt), IPC)
    monkeypatch.setattr(DistillLoop, "report", real_report)
    assert ckpt.exists()
    resumed_from = torch.load(ckpt, weights_only=True)["iteration"]
    assert resumed_from >= 1
    logs = []
    ctx = make_ctx(data, preset, cache_dir, ckpt)
    ctx.log = logs.append
    resumed = distiller(preset, name).run(ctx, IPC)
    assert any("resuming from checkpoint" in m for m in logs)
    assert_same_set(resumed, whole)


@pytest.mark.parametrize("name", DISTILLERS)
def test_declared_capabilities_match_what_the_method_does(name, reference, data, preset, cache_dir):
    d = distiller(preset, name)
    caps = d.capabilities
    assert isinstance(caps, Capabilities) and caps is type(d).capabilities
    ref = reference(name)
    s = ref["synset"]
    assert (s.label_kind == "soft") == caps.soft_labels, f"{name}: label kind {s.label_kind}, declared {caps}"
    assert (s.lr is not None) == caps.learned_lr, f"{name}: lr {s.lr}, declared {caps}"
    assert ref["checkpoint_written"] == caps.checkpoints, f"{name}: checkpoint written {ref['checkpoint_written']}, declared {caps}"
    for p in PRESETS:
        block = load_preset(p)["methods"].get(name) or {}
        assert ("native_eval" in block) == caps.native_eval, f"{name}: native_eval in preset {p!r}, declared {caps}"
    ctx = make_ctx(data, preset, cache_dir)
    if caps.init_only:
        init = d.init_only(ctx, IPC)
        assert isinstance(init, SyntheticSet) and init.images.shape[0] == IPC * data.num_classes
        assert torch.isfinite(init.images).all()
    else:
        with pytest.raises(ConfigError) as e:
            d.init_only(ctx, IPC)
        assert "init-only" in e.value.problem and e.value.fix


def test_a_component_with_mutable_options_is_refused_when_defined():
    from dataclasses import dataclass

    from ddlnl.distill.base import Distiller

    with pytest.raises(TypeError, match="frozen dataclass"):
        class Mutable(Distiller):  # noqa: F841 - defining it is the test
            name = "mutable"

            @dataclass
            class Options:
                steps: int = 1

            def distill(self, ctx, ipc):
                raise AssertionError


@pytest.mark.parametrize("name", DISTILLERS)
def test_options_are_read_only(name, preset):
    d = distiller(preset, name)
    before = d.options_dict()
    for f in fields(d.options) or [None]:
        with pytest.raises(FrozenInstanceError):
            setattr(d.options, f.name if f else "anything", None)
    assert d.options_dict() == before


@pytest.mark.parametrize("name", DISTILLERS)
def test_an_unknown_option_is_refused_with_a_fix(name, preset):
    with pytest.raises(ConfigError) as e:
        distiller(preset, name, no_such_option=1)
    assert "no_such_option" in e.value.problem and e.value.fix


@pytest.mark.parametrize("name", DISTILLERS)
def test_a_wrong_value_is_refused_with_a_fix(name, preset):
    typed = [f for f in fields(create_distiller(name).Options) if isinstance(f.default, (bool, int, float, str))]
    if not typed:
        pytest.skip(f"{name!r} has no options with a typed default to give a wrong value (unknown names are tested above)")
    for f in typed:  # a value of the wrong kind, for every option with a typed default
        with pytest.raises(ConfigError) as e:
            distiller(preset, name, **{f.name: ["wrong"]})
        assert f.name in e.value.problem and e.value.fix, (name, f.name)
    if any(f.name == "iterations" for f in typed):  # the right kind, out of range
        with pytest.raises(ConfigError) as e:
            distiller(preset, name, iterations=-1)
        assert "iterations" in e.value.problem and e.value.fix


def test_an_undeclared_init_only_is_refused_when_the_class_is_made():
    from ddlnl.distill.base import Distiller

    with pytest.raises(TypeError, match="init_only"):
        class Undeclared(Distiller):  # noqa: F841
            name = "undeclared"

            def distill(self, ctx, ipc):
                ...

            def init_only(self, ctx, ipc):
                ...

    with pytest.raises(TypeError, match="init_only"):
        class Unimplemented(Distiller):  # noqa: F841
            name = "unimplemented"
            capabilities = Capabilities(init_only=True)

            def distill(self, ctx, ipc):
                ...


def test_the_context_takes_a_noise_spec():
    ctx_args = ("toy", torch.zeros(3, 3, 8, 8), torch.arange(3).numpy(), 3, None, {})
    assert DistillContext(*ctx_args, noise=NoiseSpec("worst", 0.0)).noise.is_human
    with pytest.raises(TypeError, match="NoiseSpec"):
        DistillContext(*ctx_args, noise={"type": "symmetric", "rate": 0.4})


# ----------------------------------------------------------------------------------- baselines


def baseline(preset, name, **extra):
    return create_baseline(name, **{**(preset.get("baselines", {}).get(name) or {}), **extra})


def available(preset, name):
    b = baseline(preset, name)
    try:
        b.check()
    except BaselineUnavailable as e:
        pytest.skip(f"baseline {name!r} is unavailable here: {e}")
    return b


@pytest.fixture(scope="module")
def data_with_validation(tmp_path_factory, preset):
    """The same fake CIFAR-10 with 2 images per noisy class held out (for a baseline that needs a validation split)."""
    from ddlnl.experiment import prepare_data
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path_factory.mktemp("contracts_data_val")
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    return prepare_data("cifar10", NoiseSpec("symmetric", 0.2, 0), preset | {"data": preset["data"] | {"validation": 2}},
                        data_root=root, seed=0)


@pytest.fixture(scope="module")
def baseline_data(data, data_with_validation):
    """The tiny data, or the one with a validation split for a baseline whose ``check_data`` asks for one."""
    def get(b):
        try:
            b.check_data(data)
        except BaselineUnavailable:
            return data_with_validation
        return data

    return get


@pytest.fixture(scope="module")
def baseline_results(preset, baseline_data):
    results = {}

    def get(name):
        if name not in results:
            b = available(preset, name)
            results[name] = b.run(BaselineContext(baseline_data(b), preset, seed=0, log=lambda m: None))
        return results[name]

    return get


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_trains_on_the_tiny_data_and_reports_accuracy(name, baseline_results, preset):
    ev = baseline_results(name)
    runs = int(preset["baseline"].get("runs", 1))
    assert isinstance(ev, EvalResult) and ev.runs == runs and len(ev.accs) == runs
    assert all(0.0 <= a <= 1.0 for a in ev.accs) and 0.0 <= ev.acc_mean <= 1.0
    assert ev.images_processed > 0


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_same_seed_gives_the_same_accuracies(name, baseline_results, baseline_data, preset):
    first = baseline_results(name)
    b = available(preset, name)
    again = b.run(BaselineContext(baseline_data(b), preset, seed=0, log=lambda m: None))
    assert again.accs == first.accs and again.confusion == first.confusion


@pytest.mark.parametrize("name", BASELINES)
def test_baseline_unknown_option_is_refused_with_a_fix(name, preset):
    with pytest.raises(ConfigError) as e:
        baseline(preset, name, no_such_option=1)
    assert "no_such_option" in e.value.problem and e.value.fix
