"""`ddlnl export`: a distilled set as a PNG grid, an image folder, or DATM's files that `ddlnl evaluate` reads back."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from ddlnl import export as ex
from ddlnl.cli import main as cli_main
from ddlnl.data.preprocess import Preprocessor
from ddlnl.errors import ConfigError
from ddlnl.export import MARGIN, class_grid_png, export_set
from ddlnl.synset import SyntheticSet

PX = 8  # stored images are 8 x 8: the grid shows them 8x, so a slot is 64 + 2 * MARGIN pixels
SLOT = PX * (64 // PX) + 2 * MARGIN
CLASSES = ["cat", "dog", "bird/of prey"]


def pixels(n, seed=0):
    return torch.rand(n, 3, PX, PX, generator=torch.Generator().manual_seed(seed))


def hard_set():
    """Normalised, hard labels, 3 classes with 2, 1 and 3 images, class names in meta."""
    x = np.random.default_rng(0).integers(0, 256, (40, PX, PX, 3), dtype=np.uint8)
    pre = Preprocessor("normalize").fit(x)
    px = pixels(6)
    labels = torch.tensor([0, 2, 1, 2, 0, 2])
    return SyntheticSet(pre(px), labels, pre, meta={"method": "dm", "ipc": 2, "dataset": "cifar10", "classes": CLASSES,
                                                      "num_classes": 3}), px


def soft_set():
    """ZCA, soft-label logits and a learned lr (as DATM), no class names."""
    x = np.random.default_rng(1).integers(0, 256, (50, PX, PX, 3), dtype=np.uint8)
    pre = Preprocessor("zca").fit(x)
    px = pixels(4, 1)
    logits = torch.randn(4, 3, generator=torch.Generator().manual_seed(2))
    return SyntheticSet(pre(px), logits, pre, lr=0.0123, meta={"method": "datm", "ipc": 1}), px


def dance_set():
    """DANCE's multi-formation: each stored image decodes to 2 x 2 full-size training images."""
    s, px = hard_set()
    s.meta["decode"] = {"kind": "multiformation", "factor": 2}
    return s, px


def test_grid_png_has_a_row_per_class_and_shows_pixels(tmp_path):
    s, px = hard_set()
    out = export_set(s, "png-grid", tmp_path / "grid.png")
    img = np.asarray(Image.open(out).convert("RGB"))
    h, w = img.shape[:2]
    assert h == 3 * SLOT  # one row per class
    label_w = w - 3 * SLOT  # the widest class has 3 images
    assert 0 < label_w < 300
    # image 0 (class 0, column 0) is shown in pixels (the inverse of the normalisation), upscaled 8x
    y, x = MARGIN, label_w + MARGIN
    expected = (px[0].permute(1, 2, 0).numpy() * 255).round()
    got = img[y : y + 64 : 8, x : x + 64 : 8].astype(float)
    assert np.abs(got - expected).max() <= 1
    # the label column holds dark text (the class names)
    assert img[:, :label_w].min() < 100
    assert not list(tmp_path.glob(".*.tmp"))


def test_a_soft_labelled_set_is_drawn_by_the_class_each_slot_was_made_for(tmp_path):
    """DATM's slots are stored class by class; after distillation a soft label may argmax elsewhere, and
    the grid keeps the slot's row (here every logit points at class 0, yet each row holds its 2 slots)."""
    x = np.random.default_rng(1).integers(0, 256, (50, PX, PX, 3), dtype=np.uint8)
    pre = Preprocessor("normalize").fit(x)
    px = pixels(6, 3)
    logits = torch.zeros(6, 3)
    logits[:, 0] = 5.0
    s = SyntheticSet(pre(px), logits, pre, meta={"method": "datm", "ipc": 2, "classes": CLASSES, "num_classes": 3})
    img = np.asarray(Image.open(export_set(s, "png-grid", tmp_path / "g.png")).convert("RGB"))
    assert img.shape[0] == 3 * SLOT and img.shape[1] - 2 * SLOT < 300  # three rows of two slots, none of six
    label_w = img.shape[1] - 2 * SLOT
    for slot in range(6):  # slot k sits in row k // 2, column k % 2
        y, x = (slot // 2) * SLOT + MARGIN, label_w + (slot % 2) * SLOT + MARGIN
        expected = (px[slot].permute(1, 2, 0).numpy() * 255).round()
        assert np.abs(img[y : y + 64 : 8, x : x + 64 : 8].astype(float) - expected).max() <= 1


def test_grid_frames_images_whose_label_is_wrong_in_red(tmp_path):
    s, _ = hard_set()
    wrong = np.zeros(6, dtype=bool)
    wrong[3] = True  # image 3: class 2, second in its row
    path = class_grid_png(s, tmp_path / "distilled.png", wrong=wrong)
    img = np.asarray(Image.open(path).convert("RGB")).astype(int)
    label_w = img.shape[1] - 3 * SLOT

    def frame(row, col):  # the pixels of the 2-px band just outside the image in slot (row, col)
        y0, x0 = row * SLOT + MARGIN, label_w + col * SLOT + MARGIN
        top = img[y0 - 2 : y0, x0 - 2 : x0 + 66]
        bottom = img[y0 + 64 : y0 + 66, x0 - 2 : x0 + 66]
        left = img[y0 - 2 : y0 + 66, x0 - 2 : x0]
        right = img[y0 - 2 : y0 + 66, x0 + 64 : x0 + 66]
        return np.concatenate([a.reshape(-1, 3) for a in (top, bottom, left, right)])

    red = frame(2, 1)
    assert (red[:, 0] == 255).all() and (red[:, 1:] == 0).all()
    for row, col in [(0, 0), (0, 1), (1, 0), (2, 0), (2, 2)]:  # the others: white around them
        assert (frame(row, col) == 255).all()
    with pytest.raises(ValueError, match="6 stored images"):
        class_grid_png(s, tmp_path / "x.png", wrong=[True])


def test_imagefolder_hard_labels(tmp_path):
    s, px = hard_set()
    out = export_set(s, "imagefolder", tmp_path / "set")
    doc = json.loads((out / "labels.json").read_text())
    assert doc["classes"] == CLASSES and doc["folders"] == ["cat", "dog", "bird_of_prey"]
    assert doc["label_kind"] == "hard" and doc["lr"] is None
    assert [e["label"] for e in doc["images"]] == [0, 2, 1, 2, 0, 2]
    assert all("soft_label" not in e for e in doc["images"])
    assert sorted(p.name for p in (out / "cat").iterdir()) == ["0.png", "4.png"]
    assert len(list((out / "bird_of_prey").iterdir())) == 3 and len(list((out / "dog").iterdir())) == 1
    first = np.asarray(Image.open(out / doc["images"][1]["file"])).astype(float)
    assert first.shape == (PX, PX, 3)
    assert np.abs(first - (px[1].permute(1, 2, 0).numpy() * 255).round()).max() <= 1  # pixel space
    assert not list(tmp_path.glob(".*"))  # the staging folder was renamed into place


def test_imagefolder_soft_labels_and_lr(tmp_path):
    s, px = soft_set()
    out = export_set(s, "imagefolder", tmp_path / "set")
    doc = json.loads((out / "labels.json").read_text())
    assert doc["label_kind"] == "soft" and doc["lr"] == pytest.approx(0.0123)
    assert doc["folders"] == ["0", "1", "2"]  # no class names in meta: indices
    probs = torch.softmax(s.labels, dim=1)
    for i, e in enumerate(doc["images"]):
        assert e["label"] == int(s.labels[i].argmax()) and e["file"] == f"{e['label']}/{i}.png"
        assert e["soft_label"] == pytest.approx(probs[i].tolist(), abs=1e-6)
    img = np.asarray(Image.open(out / doc["images"][0]["file"])).astype(float)
    assert np.abs(img - (px[0].permute(1, 2, 0).numpy() * 255).round()).max() <= 1  # ZCA inverted


def test_imagefolder_decodes_multiformation(tmp_path):
    s, _ = dance_set()
    out = export_set(s, "imagefolder", tmp_path / "set")
    doc = json.loads((out / "labels.json").read_text())
    assert len(doc["images"]) == 4 * 6 and doc["stored_images"] == 6
    assert [e["label"] for e in doc["images"]] == [0, 2, 1, 2, 0, 2] * 4
    assert len(list(out.rglob("*.png"))) == 24 and len(list((out / "bird_of_prey").iterdir())) == 12


@pytest.mark.parametrize("make", [hard_set, soft_set, dance_set])
def test_datm_round_trips_through_the_evaluate_reader(tmp_path, make):
    s, _ = make()
    out = export_set(s, "datm", tmp_path / "datm")
    for f in out.iterdir():
        assert isinstance(torch.load(f, weights_only=True), torch.Tensor)
    back = SyntheticSet.load(out)  # what `ddlnl evaluate OUT` reads
    images, labels = s.training_data()
    assert back.meta["format"] == "datm" and back.label_kind == s.label_kind
    assert torch.equal(back.images, images) and torch.equal(back.labels, labels)
    assert (back.lr is None) if s.lr is None else back.lr == pytest.approx(s.lr)
    assert (out / "lr_best.pt").exists() == (s.lr is not None)
    if make is dance_set:
        assert back.images.shape[0] == 24  # DATM knows no decoding: the decoded training set


def test_refuses_a_non_empty_out_unless_forced(tmp_path):
    s, _ = hard_set()
    out = tmp_path / "set"
    out.mkdir()
    export_set(s, "datm", out)  # an empty folder is fine
    with pytest.raises(ConfigError, match="not empty") as e:
        export_set(s, "imagefolder", out)
    assert "--force" in e.value.fix
    assert sorted(p.name for p in out.iterdir()) == ["images_best.pt", "labels_best.pt"]  # untouched
    export_set(s, "imagefolder", out, force=True)
    assert (out / "labels.json").exists() and not (out / "images_best.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["set"]
    (tmp_path / "f").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        export_set(s, "datm", tmp_path / "f", force=True)
    export_set(s, "png-grid", tmp_path / "g.png")
    with pytest.raises(ConfigError, match="exists"):
        export_set(s, "png-grid", tmp_path / "g.png")
    with pytest.raises(ConfigError, match="is a folder"):
        export_set(s, "png-grid", out)


def test_a_failed_export_leaves_nothing(tmp_path, monkeypatch):
    s, _ = hard_set()

    def boom(synset, folder):
        (folder / "half").write_text("x")
        raise KeyboardInterrupt

    monkeypatch.setattr(ex, "write_imagefolder", boom)
    with pytest.raises(KeyboardInterrupt):
        export_set(s, "imagefolder", tmp_path / "set")
    assert list(tmp_path.iterdir()) == []


def test_cli_export_and_its_errors(tmp_path, capsys):
    s, _ = soft_set()
    path = s.save(tmp_path / "set.safetensors")
    assert cli_main(["export", str(path), "--to", "datm", "--out", str(tmp_path / "d")]) == 0
    assert "ddlnl evaluate" in capsys.readouterr().out
    assert torch.equal(SyntheticSet.load(tmp_path / "d").labels, s.labels)
    assert cli_main(["export", str(path), "--to", "png-grid", "--out", str(tmp_path / "g.png")]) == 0
    assert Image.open(tmp_path / "g.png").size[1] == 3 * SLOT
    capsys.readouterr()
    assert cli_main(["export", str(path), "--to", "zip", "--out", str(tmp_path / "z")]) == 2
    assert "unknown export format" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="does not exist"):
        ex.load_set(tmp_path / "missing.safetensors")
    (tmp_path / "bad.safetensors").write_bytes(b"not a set")
    assert cli_main(["export", str(tmp_path / "bad.safetensors"), "--to", "datm", "--out", str(tmp_path / "b")]) == 2
    err = capsys.readouterr().err
    assert "cannot export" in err and "fix:" in err
    assert cli_main(["export", str(path), "--to", "imagefolder", "--out", str(tmp_path / "d")]) == 2
    assert "not empty" in capsys.readouterr().err
