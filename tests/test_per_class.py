"""scripts/per_class.py: head and tail class accuracy by training-class size."""

import json

import numpy as np
import pytest

from tests.scripts_loader import load_script

per_class = load_script("per_class")


def test_head_and_tail_follow_the_class_sizes_not_the_class_order():
    sizes = [10, 500, 40, 300, 20, 100]
    acc = [0.1, 0.9, 0.3, 0.8, 0.2, 0.7]
    head, tail = per_class.head_tail(acc, sizes, k=2)
    assert head == pytest.approx((0.9 + 0.8) / 2) and tail == pytest.approx((0.1 + 0.2) / 2)


def test_a_result_without_its_noisy_labels_is_refused(tmp_path, monkeypatch, capsys):
    skipped = {"skipped": "not run"}
    result = {"method": "dm", "ipc": 10, "results": {"full_noisy": skipped, "random": skipped, "distilled": skipped}}
    (tmp_path / "result.json").write_text(json.dumps(result))
    monkeypatch.setattr("sys.argv", ["per_class.py", str(tmp_path / "result.json")])
    with pytest.raises(SystemExit, match="noisy_labels.npy"):
        per_class.main()
    np.save(tmp_path / "noisy_labels.npy", np.array([0, 1, 1]))
    per_class.main()  # every stage skipped: header only
    assert "| training set | 0 (1) | 1 (2) |" in capsys.readouterr().out
