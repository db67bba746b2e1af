"""scripts/flip_confusion.py: what share of the flipped classes a network predicts as the flip target."""

import json

import numpy as np
import pytest

from tests.scripts_loader import load_script

flip_confusion = load_script("flip_confusion")


def test_profile_splits_source_and_other_classes():
    # 3 classes, class 0 flips to 1; rows are true classes
    c = np.array([[6, 3, 1],
                  [0, 10, 0],
                  [2, 0, 8]])
    p = flip_confusion.flip_profile(c, {0: 1})
    assert p["acc"] == pytest.approx(24 / 30)
    assert p["acc_source"] == pytest.approx(0.6)
    assert p["acc_rest"] == pytest.approx((1.0 + 0.8) / 2)
    assert p["to_target"] == pytest.approx(0.3)


def test_a_file_that_is_not_a_result_is_refused_by_name(tmp_path):
    bad = tmp_path / "result.json"
    bad.write_text(json.dumps({"dataset": "cifar10"}))
    with pytest.raises(SystemExit, match="not a ddlnl result.json"):
        flip_confusion.read_result(bad)
    with pytest.raises(SystemExit, match="cannot read it as JSON"):
        flip_confusion.read_result(tmp_path / "missing.json")
    bad.write_text(json.dumps({"dataset": "cifar10", "method": "dm", "ipc": 10, "results": []}))
    with pytest.raises(SystemExit, match="no results.full_noisy, results.random, results.distilled"):
        flip_confusion.read_result(bad)


def _result(seed: int, acc_distilled: float) -> dict:
    """A 10-class result whose rows predict every test image as its true class, except that the
    distilled set sends a share ``1 - acc_distilled`` of every class to class 0."""
    def row(acc):
        c = np.eye(10) * 100 * acc
        c[:, 0] += 100 * (1 - acc)
        return {"acc_mean": float(np.trace(c) / c.sum()), "confusion": c.tolist()}
    return {"dataset": "cifar10", "method": "datm", "ipc": 10, "seed": seed, "noise": {"type": "asymmetric", "nominal_rate": 0.4},
            "results": {"full_noisy": row(1.0), "random": row(1.0), "distilled": row(acc_distilled)}}


def test_over_seeds_averages_each_training_set_and_refuses_a_repeated_seed(capsys, tmp_path):
    flip_confusion.print_over_seeds([(tmp_path / "a", _result(0, 0.8)), (tmp_path / "b", _result(1, 0.6))])
    out = capsys.readouterr().out
    line = next(ln for ln in out.splitlines() if "| datm, IPC 10 |" in ln)
    # class 0 keeps all its images (82 % and 64 % overall). Of the five flipped source classes only bird -> airplane (2 -> 0)
    # reaches its target: 20 % and 40 % of birds, so 4 % and 8 % of all source-class images
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3] == "0, 1"
    mean_acc, half = (float(x) for x in cells[4].split(" ± "))
    assert mean_acc == pytest.approx(73.0) and half == pytest.approx(12.706 * np.std([82.0, 64.0], ddof=1) / np.sqrt(2), abs=0.01)
    assert float(cells[7].split(" ± ")[0]) == pytest.approx(6.0)
    with pytest.raises(SystemExit, match="two runs of seed 0"):
        flip_confusion.print_over_seeds([(tmp_path / "a", _result(0, 0.8)), (tmp_path / "b", _result(0, 0.6))])
