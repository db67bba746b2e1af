"""CIFAR, Tiny-ImageNet and ImageFolder loaders and the registry, on small fixtures."""

from __future__ import annotations

import os
import time
import zipfile

import numpy as np
import pytest
from PIL import Image

from ddlnl.data import tiny
from ddlnl.data.cifar import (
    CIFAR10_CLASSES,
    CIFAR100_COARSE_CLASSES,
    CIFAR100_FINE_CLASSES,
    CIFAR100_SUPERCLASS_OF_FINE,
    load_cifar,
)
from ddlnl.data.imagefolder import load_image_folder
from ddlnl.data.registry import list_datasets, load_dataset, resolve_data_root
from ddlnl.data.tiny import load_tiny_imagenet
from ddlnl.errors import ConfigError, DataError
from tests.data import fixtures as fx

REAL = fx.real_data_root()
realdata = pytest.mark.skipif(REAL is None, reason="set DDLNL_DATA to the shared data folder")


def _same(split, x, y):
    assert split.images.dtype == np.uint8 and split.labels.dtype == np.int64
    assert np.array_equal(split.images, x)
    assert np.array_equal(split.labels, y)


# ---- class tables ---------------------------------------------------------------------

def test_class_tables():
    assert CIFAR10_CLASSES[0] == "airplane" and CIFAR10_CLASSES[9] == "truck"
    assert len(CIFAR100_FINE_CLASSES) == 100 == len(set(CIFAR100_FINE_CLASSES))
    assert len(CIFAR100_COARSE_CLASSES) == 20
    assert list(CIFAR100_FINE_CLASSES) == sorted(CIFAR100_FINE_CLASSES)  # official order is alphabetical
    assert np.bincount(CIFAR100_SUPERCLASS_OF_FINE).tolist() == [5] * 20
    sup = {f: CIFAR100_COARSE_CLASSES[c] for f, c in zip(CIFAR100_FINE_CLASSES, CIFAR100_SUPERCLASS_OF_FINE)}
    assert sup["beaver"] == "aquatic_mammals" and sup["keyboard"] == "household_electrical_devices"
    assert sup["lawn_mower"] == "vehicles_2" and sup["pickup_truck"] == "vehicles_1"
    assert sup["maple_tree"] == "trees" and sup["worm"] == "non-insect_invertebrates"
    assert CIFAR100_SUPERCLASS_OF_FINE[:10].tolist() == [4, 1, 14, 8, 0, 6, 7, 7, 18, 3]
    assert not CIFAR100_SUPERCLASS_OF_FINE.flags.writeable


# ---- CIFAR torchvision layout -----------------------------------------------------------

def test_cifar10_torchvision_round_trip(tmp_path):
    a = fx.write_cifar10_torchvision(tmp_path)
    s = load_cifar("cifar10", tmp_path)
    _same(s.train, a.train_x, a.train_y)
    _same(s.test, a.test_x, a.test_y)
    assert s.train.classes == CIFAR10_CLASSES and s.name == "cifar10"
    assert s.source == f"torchvision:{tmp_path / 'cifar-10-batches-py'}"


def test_cifar_rows_are_channel_major(tmp_path):
    # Independent of the fixture writer: value at row index i of the 3072 is i % 251.
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    row = (np.arange(3072) % 251).astype(np.uint8)[None]
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(fx.py2_pickle({"data": row, "labels": [4]}))
    img = load_cifar("cifar10", tmp_path).train.images[0]
    assert img.shape == (32, 32, 3)
    y, x = 5, 7
    assert img[y, x].tolist() == [(c * 1024 + y * 32 + x) % 251 for c in range(3)]


def test_cifar100_torchvision_fine_and_coarse(tmp_path):
    a = fx.write_cifar100_torchvision(tmp_path)
    fine = load_cifar("cifar100", tmp_path)
    coarse = load_cifar("cifar100_coarse", tmp_path)
    _same(fine.train, a.train_x, a.train_y)
    _same(fine.test, a.test_x, a.test_y)
    _same(coarse.train, a.train_x, a.train_coarse)
    assert fine.train.classes == CIFAR100_FINE_CLASSES and coarse.test.classes == CIFAR100_COARSE_CLASSES


def test_cifar100_coarse_disagreeing_with_superclass_is_refused(tmp_path):
    fx.write_cifar100_torchvision(tmp_path)
    path = tmp_path / "cifar-100-python" / "test"
    d = {"fine_labels": [0, 1], "coarse_labels": [4, 2], "data": np.zeros((2, 3072), np.uint8)}
    path.write_bytes(fx.py2_pickle(d))
    with pytest.raises(DataError, match="1 coarse labels disagree"):
        load_cifar("cifar100", tmp_path)


# ---- CIFAR npz layout ------------------------------------------------------------------

def test_cifar10_npz_parts_follow_start_not_file_names(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=3)
    folder = tmp_path / "cifar10"
    # Scramble names: part0 <-> part2. Loading must still follow `start`.
    os.rename(folder / "train_part0.npz", folder / "tmp.npz")
    os.rename(folder / "train_part2.npz", folder / "train_part0.npz")
    os.rename(folder / "tmp.npz", folder / "train_part2.npz")
    s = load_cifar("cifar10", tmp_path)
    _same(s.train, a.train_x, a.train_y)
    _same(s.test, a.test_x, a.test_y)
    assert s.source == f"npz:{folder}"


def test_cifar10_single_train_npz(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=0)
    _same(load_cifar("cifar10", tmp_path).train, a.train_x, a.train_y)


def test_cifar100_npz_fine_and_coarse(tmp_path):
    a = fx.write_cifar_npz(tmp_path, "cifar100", parts=2)
    _same(load_cifar("cifar100", tmp_path).train, a.train_x, a.train_y)
    _same(load_cifar("cifar100_coarse", tmp_path).test, a.test_x, a.test_coarse)


def test_npz_preferred_when_both_layouts_complete(tmp_path):
    tv = fx.write_cifar10_torchvision(tmp_path, seed=10)
    npz = fx.write_cifar_npz(tmp_path, seed=11)
    s = load_cifar("cifar10", tmp_path)
    assert s.source.startswith("npz:")
    _same(s.train, npz.train_x, npz.train_y)
    assert not np.array_equal(s.train.images, tv.train_x)


def test_complete_torchvision_beats_partial_npz(tmp_path):
    tv = fx.write_cifar10_torchvision(tmp_path)
    fx.write_cifar_npz(tmp_path)
    (tmp_path / "cifar10" / "test.npz").unlink()
    s = load_cifar("cifar10", tmp_path)
    assert s.source.startswith("torchvision:")
    _same(s.test, tv.test_x, tv.test_y)


def test_missing_cifar_names_both_layouts(tmp_path):
    with pytest.raises(DataError) as err:
        load_cifar("cifar100", tmp_path)
    msg = str(err.value)
    assert f"cifar100 not found under {tmp_path}" in msg
    assert str(tmp_path / "cifar100") + "/train.npz" in msg
    assert str(tmp_path / "cifar100") + "/test.npz" in msg
    assert str(tmp_path / "cifar-100-python") in msg and "train, test" in msg


def test_partial_layout_lists_missing_files(tmp_path):
    fx.write_cifar10_torchvision(tmp_path)
    (tmp_path / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", tmp_path)
    assert str(tmp_path / "cifar-10-batches-py" / "data_batch_3") in str(err.value)
    assert "incomplete" in str(err.value)


def test_unknown_cifar_name(tmp_path):
    with pytest.raises(ConfigError, match="cifar10, cifar100, cifar100_coarse"):
        load_cifar("cifar1000", tmp_path)


# ---- corrupt files -------------------------------------------------------------------------

def _expect_corrupt(root, path, *fragments):
    with pytest.raises(DataError) as err:
        load_cifar("cifar10", root)
    msg = str(err.value)
    assert str(path) in msg, msg
    assert "re-obtain" in err.value.fix
    for f in fragments:
        assert f in msg, msg


def test_truncated_npz(tmp_path):
    fx.write_cifar_npz(tmp_path)
    path = tmp_path / "cifar10" / "train_part1.npz"
    path.write_bytes(path.read_bytes()[:300])
    _expect_corrupt(tmp_path, path, "corrupt")


def test_npz_with_damaged_member(tmp_path):
    fx.write_cifar_npz(tmp_path)
    path = tmp_path / "cifar10" / "test.npz"
    raw = bytearray(path.read_bytes())
    with zipfile.ZipFile(path) as z:
        info = z.getinfo("x.npy")
    start = info.header_offset + 30 + len(info.filename) + 40
    raw[start:start + 200] = bytes(200)  # zero part of the compressed stream
    path.write_bytes(bytes(raw))
    _expect_corrupt(tmp_path, path)


def test_npz_labels_out_of_range(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=0)
    y = a.test_y.copy()
    y[3] = 10
    np.savez(tmp_path / "cifar10" / "test.npz", x=a.test_x, y=y)
    _expect_corrupt(tmp_path, tmp_path / "cifar10" / "test.npz", "outside 0..9", "max 10")


def test_npz_wrong_image_shape(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=0)
    np.savez(tmp_path / "cifar10" / "test.npz", x=a.test_x[..., 0], y=a.test_y)
    _expect_corrupt(tmp_path, tmp_path / "cifar10" / "test.npz", "(N, 32, 32, 3)")


def test_npz_label_count_mismatch(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=0)
    np.savez(tmp_path / "cifar10" / "train.npz", x=a.train_x, y=a.train_y[:-1])
    _expect_corrupt(tmp_path, tmp_path / "cifar10" / "train.npz", "expected (20,)")


def test_npz_missing_key(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=0)
    np.savez(tmp_path / "cifar10" / "test.npz", images=a.test_x, y=a.test_y)
    _expect_corrupt(tmp_path, tmp_path / "cifar10" / "test.npz", "missing key(s) x")


def test_npz_parts_must_be_contiguous(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=2)
    np.savez(tmp_path / "cifar10" / "train_part1.npz", x=a.train_x[10:], y=a.train_y[10:], start=np.int64(12))
    _expect_corrupt(tmp_path, tmp_path / "cifar10" / "train_part1.npz", "contiguous")


def test_npz_pickled_object_array_is_refused(tmp_path):
    a = fx.write_cifar_npz(tmp_path, parts=0)
    np.savez(tmp_path / "cifar10" / "test.npz", x=a.test_x, y=np.array(list(a.test_y), dtype=object))
    _expect_corrupt(tmp_path, tmp_path / "cifar10" / "test.npz")


def test_truncated_python_batch(tmp_path):
    fx.write_cifar10_torchvision(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:1000])
    _expect_corrupt(tmp_path, path, "truncated")


def test_python_batch_label_count_mismatch(tmp_path):
    fx.write_cifar10_torchvision(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "test_batch"
    path.write_bytes(fx.py2_pickle({"data": np.zeros((3, 3072), np.uint8), "labels": [1, 2]}))
    _expect_corrupt(tmp_path, path, "labels has shape (2,), expected (3,)")


def test_python_batch_wrong_data_shape(tmp_path):
    fx.write_cifar10_torchvision(tmp_path)
    path = tmp_path / "cifar-10-batches-py" / "data_batch_1"
    path.write_bytes(fx.py2_pickle({"data": np.zeros((3, 3000), np.uint8), "labels": [1, 2, 3]}))
    _expect_corrupt(tmp_path, path, "(N, 3072)")


# ---- Tiny-ImageNet -----------------------------------------------------------------------

def test_tiny_imagenet_layout(tmp_path):
    t = fx.write_tiny(tmp_path)
    s = load_tiny_imagenet(tmp_path)
    assert s.name == "tinyimagenet" and s.train.image_size == 64
    assert s.train.classes == ("goldfish", "European fire salamander", "n01641577")
    names = [p.name for p in t.train_files[:4]]
    assert names == ["n01443537_0.JPEG", "n01443537_1.JPEG", "n01443537_2.JPEG", "n01443537_10.JPEG"]
    _same(s.train, fx.decode_rgb(t.train_files), t.train_labels)
    _same(s.test, fx.decode_rgb(t.val_files), t.val_labels)
    assert s.test.labels.tolist() == [2, 0, 1, 1, 0, 2]
    gray = s.train.images[6]  # class 1, file _2 was saved as a grayscale JPEG
    assert np.array_equal(gray[..., 0], gray[..., 1]) and np.array_equal(gray[..., 1], gray[..., 2])


def test_tiny_imagenet_cache_is_written_and_reused(tmp_path, monkeypatch):
    t = fx.write_tiny(tmp_path)
    first = load_tiny_imagenet(tmp_path)
    for split in ("train", "val"):
        assert (t.base / f"ddlnl_cache_{split}.npz").is_file()
    assert not list(t.base.glob("*.tmp"))

    def boom(path):
        raise AssertionError("decoded although the cache is fresh")

    monkeypatch.setattr(tiny, "_decode", boom)
    again = load_tiny_imagenet(tmp_path)
    assert np.array_equal(again.train.images, first.train.images)
    assert np.array_equal(again.test.labels, first.test.labels)


def test_tiny_imagenet_cache_rebuilt_when_wnids_newer(tmp_path, monkeypatch):
    t = fx.write_tiny(tmp_path)
    load_tiny_imagenet(tmp_path)
    later = time.time() + 10
    os.utime(t.base / "wnids.txt", (later, later))
    calls = []
    real = tiny._decode
    monkeypatch.setattr(tiny, "_decode", lambda p: calls.append(p) or real(p))
    s = load_tiny_imagenet(tmp_path)
    assert len(calls) == len(t.train_files) + len(t.val_files)
    _same(s.train, fx.decode_rgb(t.train_files), t.train_labels)


def test_tiny_imagenet_missing(tmp_path):
    with pytest.raises(DataError) as err:
        load_tiny_imagenet(tmp_path)
    assert str(tmp_path / "tiny-imagenet-200" / "wnids.txt") in str(err.value)
    assert "val_annotations.txt" in err.value.fix


def test_tiny_imagenet_val_without_annotation(tmp_path):
    t = fx.write_tiny(tmp_path)
    Image.new("RGB", (64, 64)).save(t.base / "val" / "images" / "val_99.JPEG")
    with pytest.raises(DataError, match="1 val images have no line in .*val_annotations.txt \\(first: val_99.JPEG\\)"):
        load_tiny_imagenet(tmp_path)


def test_tiny_imagenet_wrong_size(tmp_path):
    t = fx.write_tiny(tmp_path)
    bad = t.train_files[5]
    Image.new("RGB", (32, 32)).save(bad, "JPEG")
    with pytest.raises(DataError) as err:
        load_tiny_imagenet(tmp_path)
    assert str(bad) in str(err.value) and "32x32, expected 64x64" in str(err.value)


# ---- ImageFolder ----------------------------------------------------------------------------

def test_image_folder_round_trip(tmp_path):
    a = fx.write_image_folder(tmp_path / "toy")
    s = load_image_folder(tmp_path / "toy")
    assert s.train.classes == fx.IMAGEFOLDER_CLASSES
    _same(s.train, a.train_x, a.train_y)
    _same(s.test, a.test_x, a.test_y)
    assert s.name == f"folder:{tmp_path / 'toy'}"


def test_image_folder_class_sets_must_match(tmp_path):
    fx.write_image_folder(tmp_path)
    (tmp_path / "test" / "zebra").rename(tmp_path / "test" / "horse")
    with pytest.raises(DataError, match=r"only in train: \['zebra'\]; only in test: \['horse'\]"):
        load_image_folder(tmp_path)


def test_image_folder_sizes_must_agree(tmp_path):
    fx.write_image_folder(tmp_path)
    odd = tmp_path / "train" / "dog" / "a1.PNG"
    Image.new("RGB", (16, 16)).save(odd, "PNG")
    with pytest.raises(DataError) as err:
        load_image_folder(tmp_path)
    msg = str(err.value)
    assert str(odd) in msg and "16x16" in msg and "8x8" in msg


def test_image_folder_square_required(tmp_path):
    fx.write_image_folder(tmp_path)
    odd = tmp_path / "train" / "cat" / "a0.png"
    Image.new("RGB", (8, 6)).save(odd, "PNG")
    with pytest.raises(DataError, match="same square size"):
        load_image_folder(tmp_path)


def test_image_folder_missing_split(tmp_path):
    (tmp_path / "train" / "a").mkdir(parents=True)
    with pytest.raises(DataError) as err:
        load_image_folder(tmp_path)
    assert str(tmp_path / "test") in str(err.value) and "<class>/<image>" in err.value.fix


# ---- registry -------------------------------------------------------------------------------

def test_resolve_data_root_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("DDLNL_DATA", str(tmp_path / "env"))
    assert resolve_data_root(tmp_path / "arg") == (tmp_path / "arg").resolve()
    assert resolve_data_root(None) == (tmp_path / "env").resolve()
    monkeypatch.delenv("DDLNL_DATA")
    monkeypatch.chdir(tmp_path)
    assert resolve_data_root(None) == (tmp_path / "data").resolve()


def test_list_datasets():
    assert list_datasets() == ["cifar10", "cifar100", "cifar100_coarse", "tinyimagenet"]


def test_unknown_dataset_lists_valid_names(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset("imagenet", tmp_path)
    msg = str(err.value)
    assert "unknown dataset 'imagenet'" in msg
    assert "cifar10, cifar100, cifar100_coarse, tinyimagenet" in msg and "folder:<path>" in msg


def test_registry_caches_and_freezes(tmp_path):
    fx.write_cifar_npz(tmp_path)
    a = load_dataset("cifar10", tmp_path)
    b = load_dataset("cifar10", str(tmp_path))
    assert a is b
    assert not a.train.images.flags.writeable
    with pytest.raises(ValueError):
        a.train.images[0, 0, 0, 0] = 1


def test_registry_coarse_shares_cifar100_images(tmp_path):
    a = fx.write_cifar_npz(tmp_path, "cifar100")
    fine = load_dataset("cifar100", tmp_path)
    coarse = load_dataset("cifar100_coarse", tmp_path)
    assert np.shares_memory(fine.train.images, coarse.train.images)
    assert coarse.train.labels.tolist() == a.train_coarse.tolist()
    assert coarse.num_classes == 20 and coarse.name == "cifar100_coarse"


def test_registry_folder_relative_to_root(tmp_path):
    a = fx.write_image_folder(tmp_path / "mine")
    s = load_dataset("folder:mine", tmp_path)
    assert s.name == "folder:mine"
    _same(s.train, a.train_x, a.train_y)
    assert load_dataset(f"folder:{tmp_path / 'mine'}", "/nonexistent").num_classes == 3


def test_registry_tiny(tmp_path):
    t = fx.write_tiny(tmp_path)
    assert load_dataset("tinyimagenet", tmp_path).train.labels.tolist() == t.train_labels.tolist()


def test_registry_imbalance(tmp_path):
    fx.write_cifar_npz(tmp_path, n_train=400, n_test=10, seed=5)
    full = load_dataset("cifar10", tmp_path)
    lt = load_dataset("cifar10", tmp_path, imbalance=10, seed=3)
    idx = lt.train_index
    assert idx is not None and np.all(np.diff(idx) > 0)
    assert np.array_equal(lt.train.images, full.train.images[idx])
    assert np.array_equal(lt.train.labels, full.train.labels[idx])
    assert lt.test is full.test
    counts = np.bincount(lt.train.labels, minlength=10)
    assert counts[0] == np.bincount(full.train.labels)[0] and counts[0] > counts[-1]
    again = load_dataset("cifar10", tmp_path, imbalance=10, seed=3)
    assert np.array_equal(again.train_index, idx)
    assert full.train_index is None


# ---- real data ------------------------------------------------------------------------------

@pytest.mark.realdata
@realdata
def test_real_cifar10():
    s = load_dataset("cifar10", REAL)
    assert s.train.images.shape == (50000, 32, 32, 3) and s.test.images.shape == (10000, 32, 32, 3)
    assert np.bincount(s.train.labels).tolist() == [5000] * 10
    assert np.bincount(s.test.labels).tolist() == [1000] * 10
    assert s.train.images[0, 0, 0].tolist() == [59, 62, 63]
    assert s.test.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]
    assert s.train.labels[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert s.source == f"npz:{REAL.resolve() / 'cifar10'}"


def test_balanced_cifar10_fixture_helper(tmp_path):
    labels = fx.write_cifar10_npz(tmp_path, n_train_per_class=3, n_test_per_class=2)
    s = load_cifar("cifar10", tmp_path)
    assert s.train.labels.tolist() == labels.tolist()
    assert np.bincount(s.train.labels).tolist() == [3] * 10 and np.bincount(s.test.labels).tolist() == [2] * 10
