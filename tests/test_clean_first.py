"""Clean first, then distil (``--clean-first``): the cleaners find planted mislabelled samples, every
registered distiller distils only the kept samples, and a run keys, costs and scores the cleaning."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from ddlnl.baselines import BaselineContext
from ddlnl.baselines.cleaners import Cleaned, check_kept, create_cleaner, list_cleaners, loss_gmm_split
from ddlnl.distill import list_distillers
from ddlnl.distill.base import Distiller
from ddlnl.errors import ConfigError
from ddlnl.spec import ExperimentSpec
from ddlnl.train import TrainConfig
from tests.test_baselines import fake_cleanlab

PRESET = {"model": {"name": "convnet", "width": 8, "depth": 1, "norm": "instance"},
          "baseline": {"runs": 1, "train": {"epochs": 4, "batch_size": 16, "lr": 0.05, "schedule": "cosine", "augment": "none"}}}


def planted(seed: int, n_per_class: int = 60, c: int = 3, rate: float = 0.3, side: int = 8):
    """Separable images (the first channel's mean tells the class) with ``rate`` of the labels moved to
    another class. The data carries no clean labels, so a cleaner that reached for them would fail."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(c).repeat_interleave(n_per_class)
    x = torch.randn(len(y), 3, side, side, generator=g) * 0.5
    x[:, 0] += (y.float() - 1).view(-1, 1, 1) * 2
    rng = np.random.default_rng(seed)
    flip = rng.permutation(len(y))[: int(rate * len(y))]
    noisy = y.numpy().copy()
    noisy[flip] = (noisy[flip] + rng.integers(1, c, flip.size)) % c
    data = SimpleNamespace(num_classes=c, x_train=x, y_train_noisy=torch.as_tensor(noisy), noisy=SimpleNamespace(labels=noisy))
    return data, noisy == y.numpy()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("name", ["loss_gmm", "dividemix"])
def test_the_cleaners_find_planted_mislabelled_samples_far_better_than_chance(name, seed):
    """30 % of the labels are wrong: chance keeps 70 % correct ones and removes 30 % wrong ones. Thresholds:
    the kept samples >= 85 % correct, >= 85 % of the correct ones kept, the removed ones >= 60 % wrong."""
    data, correct = planted(seed)
    cleaned = create_cleaner(name).clean(BaselineContext(data, PRESET, seed=seed))
    kept = np.zeros(correct.size, dtype=bool)
    kept[cleaned.kept] = True
    assert correct[kept].mean() >= 0.85 and kept[correct].mean() >= 0.85 and (~correct[~kept]).mean() >= 0.6
    assert cleaned.seconds > 0 and cleaned.images_processed >= 4 * correct.size  # the warm-up epochs, then the losses
    assert cleaned.details["kept"] == kept.sum() and sum(cleaned.details["kept_per_class"]) == kept.sum()


def test_the_trusted_split_is_a_reusable_function_and_is_deterministic():
    data, correct = planted(0)
    cfg = TrainConfig.from_dict(PRESET["baseline"]["train"])
    a = loss_gmm_split(BaselineContext(data, PRESET, seed=3), cfg, threshold=0.5)
    b = loss_gmm_split(BaselineContext(data, PRESET, seed=3), cfg, threshold=0.5)
    assert np.array_equal(a.trusted, b.trusted) and np.allclose(a.clean_prob, b.clean_prob)
    assert a.losses[~correct].mean() > a.losses[correct].mean()  # wrong labels cost more after the warm-up
    one = loss_gmm_split(BaselineContext(data, PRESET, seed=3), cfg, per_class=False)
    assert correct[one.trusted].mean() >= 0.85


def test_the_cleanlab_cleaner_keeps_what_cleanlab_does_not_flag_and_needs_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "cleanlab", None)
    with pytest.raises(ConfigError, match="pip install cleanlab"):
        ExperimentSpec.create(method="dm", preset="smoke", clean_first="cleanlab")
    fake_cleanlab(monkeypatch)
    data, correct = planted(0)
    cleaned = create_cleaner("cleanlab", folds=2).clean(BaselineContext(data, PRESET, seed=0))
    assert cleaned.details["flagged"] + cleaned.details["kept"] == correct.size
    assert correct[cleaned.kept].mean() >= 0.85


def test_bad_cleaners_and_options_fail_when_the_spec_is_made():
    for kw, match in (({"clean_first": "nope"}, "unknown cleaner"), ({"clean_first": "loss_gmm", "clean_options": ("thr=1",)}, "thr"),
                      ({"clean_options": ("threshold=0.6",)}, "without a cleaner"),
                      ({"clean_first": "loss_gmm", "clean_options": ("threshold=1.5",)}, "threshold"),
                      ({"clean_first": "loss_gmm", "clean_options": ("train={epochz: 1}",)}, "epochz")):
        with pytest.raises(ConfigError, match=match):
            ExperimentSpec.create(method="dm", preset="smoke", **kw)
    assert set(list_cleaners()) >= {"loss_gmm", "dividemix", "cleanlab"}


def test_too_few_kept_samples_for_the_ipc_is_a_config_error():
    labels = np.array([0, 0, 0, 1, 1, 1])
    check_kept(Cleaned(np.array([0, 1, 3, 4]), 0.0, 0), labels, 2, 2, "loss_gmm")
    with pytest.raises(ConfigError, match="class 1 keeps 1") as e:
        check_kept(Cleaned(np.array([0, 1, 3]), 0.0, 0), labels, 2, 2, "loss_gmm")
    assert "--ipc 1" in e.value.fix


# -- every registered distiller on the kept subset ----------------------------------------------
@pytest.fixture(scope="module")
def root(tmp_path_factory):
    from tests.data.fixtures import write_cifar10_npz

    root = tmp_path_factory.mktemp("clean_first_data")
    write_cifar10_npz(root, n_train_per_class=12, n_test_per_class=4)
    return root


def smoke_spec(root, method="dm", **kw) -> ExperimentSpec:
    return ExperimentSpec.create(method=method, ipc=2, preset="smoke", data_root=str(root), rate=0.2,
                                 clean_first=kw.pop("clean_first", "loss_gmm"), clean_options=kw.pop("clean_options", ("threshold=0.3",)),
                                 overrides=("evaluation.train.epochs=2", "baseline.train.epochs=1"), **kw)


@pytest.mark.parametrize("name", list_distillers())
def test_every_distiller_distils_only_the_kept_samples(name, root, monkeypatch, tmp_path_factory):
    from ddlnl.api import distill

    monkeypatch.setenv("DDLNL_CACHE", str(tmp_path_factory.mktemp("experts")))
    seen = []
    run = Distiller.run
    monkeypatch.setattr(Distiller, "run", lambda self, ctx, ipc: seen.append(ctx) or run(self, ctx, ipc))
    spec = smoke_spec(root, name)
    data = spec.prepare_data()
    synset = distill(spec, data=data, log=lambda m: None)
    kept = spec.clean(data, "cpu", log=lambda m: None).kept  # deterministic: the kept set distill used
    assert 0 < kept.size < len(data.noisy.labels)
    (ctx,) = seen
    assert np.array_equal(ctx.positions, kept) and torch.equal(ctx.images, data.x_train[kept])
    assert np.array_equal(ctx.labels, data.noisy.labels[kept])
    for s in ctx.selections.values():  # recorded in full-training-set positions, all among the kept ones
        assert set(s["kept"].tolist()) <= set(kept.tolist())
    if "init_index" in synset.meta:
        init = np.asarray(synset.meta["init_index"])
        assert set(init.tolist()) <= set(kept.tolist())
        assert np.array_equal(data.noisy.labels[init], np.repeat(np.arange(data.num_classes), 2))  # the class of its slot
    assert synset.images.shape[0] >= 2 * data.num_classes and synset.meta["clean_first"]["kept"] == kept.size
    assert synset.meta["timings_s"]["clean_first"] > 0


# -- a run: stage keys, cost, selection, the cleaned random control -------------------------------
def stage_key(run: Path, name: str) -> str:
    return json.loads((run / "stages" / f"{name}.json").read_text())["key"]


def test_a_run_keys_costs_and_scores_the_cleaning(root, tmp_path):
    from ddlnl.results import evaluated_rows
    from ddlnl.run import run_experiment

    out, logged = tmp_path / "run", []
    res = run_experiment(smoke_spec(root), out, log=logged.append, progress=False)
    assert sum("distilling with" in m for m in logged) == 1 and sum("cleaning first" in m for m in logged) == 1
    on_disk = json.loads((out / "result.json").read_text())
    r, cf = on_disk["results"], on_disk["clean_first"]
    # each evaluated set logs its result when its runs are done (a long evaluation is not silent)
    d = r["distilled"]
    assert f"[ddlnl] evaluated distilled: {100 * d['acc_mean']:.2f} ± {100 * d['acc_std']:.2f} % ({d['runs']} run" in "\n".join(logged)
    rnd = r["random"]
    assert f"[ddlnl] evaluated random: {100 * rnd['acc_mean']:.2f} ± {100 * rnd['acc_std']:.2f} %" in "\n".join(logged)
    kept = set(json.loads((out / "stages" / "clean_first.json").read_text())["value"]["kept"])
    assert cf["cleaner"] == "loss_gmm" and cf["kept"] == len(kept) < cf["of"] and cf["key"]["options"]["threshold"] == 0.3
    # the cleaning's cost is in the distilled row's, with a breakdown, and in the run's timings
    cost = r["distilled"]["cost"]
    assert cost["breakdown"]["clean_seconds"] == cf["cost"]["seconds"] > 0
    assert cost["breakdown"]["clean_images_processed"] == cf["cost"]["images_processed"] > 0
    assert cost["images_processed"] == sum(cost["breakdown"][k] for k in ("clean_images_processed", "distill_images_processed",
                                                                         "eval_images_processed"))
    assert on_disk["timings_s"]["clean_first"] == cf["cost"]["seconds"] and "clean_seconds" not in r["random"]["cost"].get("breakdown", {})
    # the kept set's precision/recall against the clean labels, and the set made from kept samples only
    sel = r["distilled"]["selection"]
    assert sel["clean_first"] == cf["selection"] and 0 <= sel["clean_first"]["precision"] <= 1
    from ddlnl.synset import SyntheticSet

    init = SyntheticSet.load(out / "distilled.safetensors").meta["init_index"]
    assert set(init) <= kept and sel["init"]["judged"] == len(kept)
    # the random control is random real images of the whole noisy set; its cleaned twin is a control
    assert "clean_first" not in r["random"].get("selection", {})
    twin = r["controls"]["clean_first"]["random"]
    assert set(SyntheticSet.load(out / "random_cleaned.safetensors").meta["init_index"]) <= kept
    assert "random real, IPC 2, clean first (control)" in [row.label for row in evaluated_rows(res)]
    assert twin["cost"]["breakdown"]["clean_seconds"] == cf["cost"]["seconds"]
    # toggling the cleaner remakes the distilled set only: the random control and the baseline keep their keys
    before = {s: stage_key(out, s) for s in ("random_set", "full_noisy", "distilled_set", "clean_first")}
    run_experiment(smoke_spec(root, clean_first=None, clean_options=()), out, log=lambda m: None, progress=False)
    after = {s: stage_key(out, s) for s in ("random_set", "full_noisy", "distilled_set")}
    assert after["random_set"] == before["random_set"] and after["full_noisy"] == before["full_noisy"]
    assert after["distilled_set"] != before["distilled_set"]
    assert "clean_first" not in json.loads((out / "result.json").read_text())
    # another option of the cleaner: another cleaning and another distilled set
    spec = smoke_spec(root, clean_options=("threshold=0.2",))
    run_experiment(spec, out, log=lambda m: None, progress=False)
    assert stage_key(out, "clean_first") != before["clean_first"] and stage_key(out, "distilled_set") not in before.values()


def test_the_command_line_flags_reach_the_spec():
    from ddlnl.cli import build_parser
    from ddlnl.cli.common import experiment_spec

    args = build_parser().parse_args(["distill", "--method", "dm", "--preset", "smoke", "--out", "x.safetensors",
                                      "--clean-first", "dividemix", "--clean-option", "p_threshold=0.6", "--clean-option", "epochs=3"])
    spec = experiment_spec(args)
    assert spec.clean_first == "dividemix" and spec.clean_key()["options"]["p_threshold"] == 0.6
    assert spec.clean_key()["recipe"]["epochs"] == 3
    assert experiment_spec(build_parser().parse_args(["run", "--preset", "smoke"])).clean_first is None
