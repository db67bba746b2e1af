import json

import numpy as np
import pytest
import torch

from ddlnl.data.preprocess import Preprocessor
from ddlnl.errors import DataError
from ddlnl.synset import SyntheticSet


def make_set(soft=False):
    x = np.random.default_rng(0).integers(0, 256, (50, 8, 8, 3), dtype=np.uint8)
    pre = Preprocessor("zca").fit(x)
    labels = torch.randn(4, 3) if soft else torch.tensor([0, 1, 2, 1])
    return SyntheticSet(torch.randn(4, 3, 8, 8), labels, pre, lr=0.0123, meta={"method": "dm", "ipc": 1, "noise": {"type": "symmetric"}})


@pytest.mark.parametrize("soft", [False, True])
def test_round_trip(tmp_path, soft):
    s = make_set(soft)
    path = s.save(tmp_path / "set.safetensors")
    t = SyntheticSet.load(path)
    assert torch.equal(t.images, s.images) and torch.equal(t.labels, s.labels)
    assert t.lr == pytest.approx(0.0123) and t.meta["method"] == "dm" and t.label_kind == ("soft" if soft else "hard")
    assert t.preprocess.kind == "zca" and torch.equal(t.preprocess.tensors["transform"], s.preprocess.tensors["transform"])
    assert torch.equal(t.hard_labels(), s.labels.argmax(1) if soft else s.labels)


def test_file_is_plain_safetensors_with_json_header(tmp_path):
    from safetensors import safe_open

    path = make_set().save(tmp_path / "set.safetensors")
    with safe_open(str(path), framework="pt") as f:
        header = json.loads(f.metadata()["ddlnl"])
        assert set(f.keys()) >= {"images", "labels", "lr", "preprocess.mean", "preprocess.transform"}
    assert header["format"] == "ddlnl.synthetic_set" and header["label_kind"] == "hard"


def test_truncated_file_is_refused(tmp_path):
    path = make_set().save(tmp_path / "set.safetensors")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="safetensors"):
        SyntheticSet.load(path)


def test_datm_files_load_with_weights_only(tmp_path):
    torch.save(torch.randn(20, 3, 8, 8), tmp_path / "images_best.pt")
    torch.save(torch.randn(20, 10), tmp_path / "labels_best.pt")
    torch.save(torch.tensor(0.01), tmp_path / "lr_best.pt")
    s = SyntheticSet.load(tmp_path)
    assert s.images.shape == (20, 3, 8, 8) and s.label_kind == "soft" and s.lr == pytest.approx(0.01)
    assert s.meta["format"] == "datm"


def test_datm_file_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            import os

            return (os.system, (f"touch {tmp_path}/pwned",))

    torch.save(torch.randn(2, 3, 8, 8), tmp_path / "images_best.pt")
    torch.save({"x": Evil()}, tmp_path / "labels_best.pt")
    with pytest.raises(DataError):
        SyntheticSet.load(tmp_path)
    assert not (tmp_path / "pwned").exists()


def test_missing_is_refused(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        SyntheticSet.load(tmp_path / "nope.safetensors")
    with pytest.raises(DataError, match="images_best.pt"):
        SyntheticSet.load(tmp_path)
