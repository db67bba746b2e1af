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
