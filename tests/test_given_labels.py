"""A user's own labels (--labels FILE, --noise given, --clean-labels FILE): read, checked, run end to end."""

import json

import numpy as np
import pytest

from ddlnl.data.given import read_label_file
from ddlnl.errors import ConfigError, DataError
from tests.data.fixtures import IMAGEFOLDER_CLASSES, real_data_root, write_image_folder
from tests.test_cli import assert_clean_error, ddlnl

CLASSES = ("cat", "dog", "zebra")
PATHS = ("cat/a0.png", "cat/a1.PNG", "dog/a0.png", "dog/a1.PNG", "zebra/a0.png", "zebra/a1.PNG")


def _read(path, **kw):
    return read_label_file(path, classes=CLASSES, n=6, **kw)


def test_npy_and_csv_forms_read_the_same_labels(tmp_path):
    want = np.array([0, 2, 1, 1, 0, 2])
    np.save(tmp_path / "l.npy", want.astype(np.int32))
    (tmp_path / "index.csv").write_text("index,label\n" + "".join(f"{i},{v}\n" for i, v in reversed(list(enumerate(want)))))
    (tmp_path / "names.csv").write_text("".join(f"{i},{CLASSES[v]}\n" for i, v in enumerate(want)))  # no header, class names
    (tmp_path / "paths.csv").write_text("path,label\n" + "".join(f"train/{p},{CLASSES[v]}\n" for p, v in zip(PATHS, want)))
    for name in ("l.npy", "index.csv", "names.csv"):
        got = _read(tmp_path / name)
        assert got.dtype == np.int64 and got.tolist() == want.tolist(), name
    assert _read(tmp_path / "paths.csv", image_paths=PATHS).tolist() == want.tolist()


@pytest.mark.parametrize("name, content, needle", [
    ("short.npy", np.array([0, 1, 2]), "holds 3 labels, but the dataset has 6"),
    ("class.npy", np.array([0, 1, 2, 3, 0, 1]), "label 3 (position 3"),
    ("float.npy", np.zeros(6), "not a 1-D integer array"),
    ("negative.csv", "-1,0\n", "index -1 is not a training-image position"),
    ("beyond.csv", "6,0\n", "index 6 is not a training-image position"),
    ("unknown.csv", "0,horse\n", "label 'horse' is not a class"),
    ("twice.csv", "0,0\n0,1\n", "labelled twice"),
    ("missing.csv", "0,0\n1,1\n", "labels 2 of the 6 training images; 4 have no row (first: 2)"),
    ("fields.csv", "0,0,1\n", "3 fields"),
    ("path.csv", "cat/a0.png,0\n", "this dataset has no image paths"),
    ("labels.txt", "0\n", "unknown label file type '.txt'"),
])
def test_bad_label_files_get_clear_errors(tmp_path, name, content, needle):
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content)
    else:
        np.save(path, content)
        path = path.with_suffix(".npy")
    with pytest.raises(DataError) as e:
        _read(path)
    assert needle in str(e.value), str(e.value)


def test_unknown_path_names_an_example(tmp_path):
    (tmp_path / "p.csv").write_text("cat/nope.png,cat\n")
    with pytest.raises(DataError, match="no training image 'cat/nope.png'.*cat/a0.png"):
        _read(tmp_path / "p.csv", image_paths=PATHS)


def test_label_files_fit_the_noise(tmp_path):
    from ddlnl.data.noise import NoiseSpec
    from ddlnl.spec import label_file_digests

    np.save(tmp_path / "l.npy", np.zeros(6, dtype=np.int64))
    with pytest.raises(ConfigError, match="no synthetic noise on top"):
        label_file_digests("cifar10", NoiseSpec("symmetric", 0.4), str(tmp_path / "l.npy"), None)
    with pytest.raises(ConfigError, match="needs the labels to use"):
        label_file_digests("cifar10", NoiseSpec("given"), None, None)
    with pytest.raises(DataError, match="no such file"):
        label_file_digests("cifar10", NoiseSpec("given"), str(tmp_path / "nope.npy"), None)
    with pytest.raises(ConfigError, match="takes no rate"):
        NoiseSpec("given", 0.2)
    digests = label_file_digests("folder:x", NoiseSpec("given"), str(tmp_path / "l.npy"), None)
    assert len(digests["labels"]) == 64


@pytest.mark.skipif(real_data_root() is None, reason="needs $DDLNL_DATA with CIFAR-10 and CIFAR-10N")
def test_cifar10n_worst_as_a_users_file_is_the_worst_label_set(tmp_path):
    """The human 'worst' labels handed over as a file: the same labels, rate and transition as --noise worst."""
    from ddlnl.data.noise import NoiseSpec
    from ddlnl.experiment import prepare_noise_only

    root = real_data_root()
    _, worst = prepare_noise_only("cifar10", NoiseSpec("worst"), data_root=root)
    np.save(tmp_path / "worst.npy", worst.labels)
    splits, given = prepare_noise_only("cifar10", NoiseSpec("given"), data_root=root, labels=tmp_path / "worst.npy")
    assert np.array_equal(given.labels, worst.labels) and given.actual_rate == pytest.approx(worst.actual_rate)
    assert given.actual_rate == pytest.approx(0.40208)  # CIFAR-10N's published worst rate: 40.21 %
    assert np.allclose(given.transition, worst.transition)
    assert not np.array_equal(splits.train.labels, given.labels)  # the benchmark's own labels stay the clean ones


def _folder(tmp_path):
    data = write_image_folder(tmp_path / "pets", side=16)
    rng = np.random.default_rng(0)
    noisy = data.train_y.copy()
    flip = np.array([1, 4, 7])  # three of the nine training images get another class
    noisy[flip] = (noisy[flip] + 1 + rng.integers(0, 2, flip.size)) % len(IMAGEFOLDER_CLASSES)
    paths = [f"{c}/{f}" for c in IMAGEFOLDER_CLASSES for f in ("a0.png", "a1.PNG", "a2.bmp")]
    (tmp_path / "noisy.csv").write_text("path,label\n" + "".join(f"{p},{IMAGEFOLDER_CLASSES[v]}\n" for p, v in zip(paths, noisy)))
    np.save(tmp_path / "clean.npy", data.train_y)
    return noisy, data.train_y


def _run(tmp_path, out, *extra):
    return ddlnl("run", "--dataset", f"folder:{tmp_path / 'pets'}", "--labels", str(tmp_path / "noisy.csv"), *extra,
                 "--method", "dm", "--ipc", "1", "--preset", "smoke", "--out", str(tmp_path / out), "--no-progress")


def test_folder_dataset_with_own_labels_runs_end_to_end(tmp_path):
    """A folder dataset, the user's labels as path,label CSV, a clean test folder: the whole pipeline runs;
    without clean training labels the rate is null and result.json says why; with them it is measured."""
    noisy, clean = _folder(tmp_path)
    r = _run(tmp_path, "own")
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "own" / "result.json").read_text())
    assert res["noise"]["type"] == "given" and res["noise"]["actual_rate"] is None
    assert any("no clean training labels" in n for n in res["notes"])
    assert "rate unknown" in r.stdout and "note: no clean training labels" in r.stdout
    assert {"full_noisy", "random", "distilled"} <= set(res["results"])
    cfg = json.loads((tmp_path / "own" / "config.json").read_text())
    assert cfg["labels"]["path"].endswith("noisy.csv") and len(cfg["labels"]["sha256"]) == 64
    saved = np.load(tmp_path / "own" / "noisy_labels.npy")
    assert saved.tolist() == noisy.tolist()  # the training labels are the file's, not the folders'

    r = _run(tmp_path, "with-clean", "--clean-labels", str(tmp_path / "clean.npy"))
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads((tmp_path / "with-clean" / "result.json").read_text())
    assert res["noise"]["actual_rate"] == pytest.approx(float(np.mean(noisy != clean))) and res["notes"] == []


def test_bad_label_file_on_the_command_line(tmp_path):
    _folder(tmp_path)
    (tmp_path / "noisy.csv").write_text("path,label\ncat/a0.png,horse\n")
    r = _run(tmp_path, "bad")
    assert_clean_error(r, "label 'horse' is not a class", "noisy.csv")
    r = ddlnl("run", "--dataset", "cifar10", "--labels", str(tmp_path / "noisy.csv"), "--noise", "asymmetric", "--preset", "smoke",
              "--out", str(tmp_path / "x"))
    assert_clean_error(r, "no synthetic noise on top", "--noise given")
