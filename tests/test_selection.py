"""Selections of training samples scored against the clean labels, and the framed distilled.png of a run."""

import json

import numpy as np
import pytest
from PIL import Image

from ddlnl.data.noise import selection_scores
from tests.test_cli import ddlnl, root  # noqa: F401 - the small CIFAR-10 fixture


def test_selection_scores_by_mask_indices_and_among():
    correct = np.array([1, 1, 0, 1, 0, 0, 1, 1], dtype=bool)  # 5 correctly labelled
    s = selection_scores(np.array([0, 1, 2]), correct)
    assert s == {"precision": pytest.approx(2 / 3), "recall": pytest.approx(2 / 5), "kept_fraction": pytest.approx(3 / 8)}
    assert selection_scores(np.isin(np.arange(8), [0, 1, 2]), correct) == s
    # judged only positions 2..5 (correct: 0, 1, 0, 0), kept 3 and 4: precision 1/2, recall 1/1
    s = selection_scores(np.array([3, 4]), correct, among=np.array([2, 3, 4, 5]))
    assert s == {"precision": 0.5, "recall": 1.0, "kept_fraction": 0.5, "judged": 4}
    assert selection_scores(np.array([], dtype=np.int64), correct)["precision"] is None


def test_pseudo_labels_are_scored_against_the_clean_labels():
    """A selection a method relabels (TAD's recalled samples): precision still judges the noisy labels, and
    label_accuracy the labels the method gave them."""
    clean = np.array([0, 1, 2, 0, 1, 2])
    noisy = np.array([0, 2, 2, 1, 1, 0])  # wrong at 1, 3 and 5
    kept = np.array([1, 3, 5, 0])
    s = selection_scores(kept, noisy == clean, assigned=np.array([1, 0, 1, 0]), clean=clean)  # right at 1, 3 and 0
    assert s["label_accuracy"] == 0.75 and s["precision"] == 0.25
    assert "label_accuracy" not in selection_scores(kept, noisy == clean)
    assert selection_scores(np.array([], dtype=np.int64), noisy == clean, assigned=np.array([]), clean=clean)["label_accuracy"] is None


def test_a_run_scores_its_selections_and_frames_mislabelled_slots(root):  # noqa: F811
    """DATM (smoke): the initial images and its expert filter are scored against the clean labels in
    result.json (the distiller never sees them), and distilled.png frames exactly the slots whose
    source image's noisy label is wrong."""
    from ddlnl.spec import ExperimentSpec
    from ddlnl.synset import SyntheticSet

    out = root / "run"
    args = ("--method", "datm", "--noise", "symmetric", "--rate", "0.6", "--ipc", "3", "--preset", "smoke")
    r = ddlnl("run", *args, "--data-root", str(root), "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((out / "result.json").read_text())
    data = ExperimentSpec.create(dataset="cifar10", noise="symmetric", rate=0.6, method="datm", ipc=3, preset="smoke",
                                 data_root=str(root)).prepare_data()
    correct = data.noisy.labels == data.splits.train.labels

    distilled = SyntheticSet.load(out / "distilled.safetensors")
    init = np.asarray(distilled.meta["init_index"])
    assert init.shape == (30,) and (data.noisy.labels[init] == np.repeat(np.arange(10), 3)).all()  # slot order: class by class
    sel = res["results"]["distilled"]["selection"]
    assert sel["init"]["precision"] == pytest.approx(correct[init].mean())
    assert sel["filter"]["judged"] >= 30 and 0 <= sel["filter"]["precision"] <= 1 and 0 < sel["filter"]["recall"] <= 1
    assert res["results"]["controls"]["init_only"]["selection"]["init"] == sel["init"]  # the same starting images
    rnd = SyntheticSet.load(out / "random.safetensors")
    assert res["results"]["random"]["selection"]["init"]["precision"] == pytest.approx(correct[rnd.meta["init_index"]].mean())

    # DD-Ranking's scores from the run's own rows
    res_rows, dd = res["results"], res["dd_ranking"]
    assert dd["hard_label_recovery"] == pytest.approx(res_rows["full_noisy"]["acc_mean"] - res_rows["controls"]["hard_labels"]["acc_mean"])
    assert dd["improvement_over_random"] == pytest.approx(res_rows["distilled"]["acc_mean"] - res_rows["random"]["acc_mean"])
    a = 0.5 * dd["improvement_over_random"] - 0.5 * dd["hard_label_recovery"]
    assert dd["label_robust_score"] == pytest.approx(100 * (np.exp(a) - np.exp(-1)) / (np.e - np.exp(-1)))
    assert "label-robust score" in r.stdout and "init: " in r.stdout

    png = np.asarray(Image.open(out / "distilled.png").convert("RGB"))
    red = int(((png[..., 0] == 255) & (png[..., 1] == 0) & (png[..., 2] == 0)).sum())
    side = 64  # 32-px images drawn at twice their size, a 2-px frame around each framed one
    assert red == int((~correct[init]).sum()) * ((side + 4) ** 2 - side ** 2) > 0
