"""`ddlnl data list` / `ddlnl data check` back ends."""

from __future__ import annotations

import hashlib

import pytest

from ddlnl.data import cifar, cifarn
from ddlnl.data.check import check_data, describe_data_root, format_table
from tests.data import fixtures as fx

REAL = fx.real_data_root()
realdata = pytest.mark.skipif(REAL is None, reason="set DDLNL_DATA to the shared data folder")


def _by_name(rows):
    return {r["name"]: r for r in rows}


def test_describe_empty_root(tmp_path):
    rows = _by_name(describe_data_root(tmp_path))
    assert list(rows) == ["cifar10", "cifar100", "cifar100_coarse", "tinyimagenet", "cifar10n", "cifar100n"]
    assert all(r["status"] == "missing" for r in rows.values())
    assert rows["cifar10"]["path"] == f"{tmp_path / 'cifar10'} or {tmp_path / 'cifar-10-batches-py'}"
    assert rows["cifar10n"]["path"] == str(tmp_path / "cifar10n" / "CIFAR-10_human.pt")


def test_describe_found_and_partial(tmp_path):
    fx.write_cifar_npz(tmp_path)
    fx.write_cifar100_torchvision(tmp_path)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    fx.write_tiny(tmp_path)
    fx.write_human_labels(tmp_path, "cifar10", fx.human_label_arrays("cifar10", [1, 2]), fmt="pt")
    rows = _by_name(describe_data_root(tmp_path))
    assert (rows["cifar10"]["status"], rows["cifar10"]["layout"]) == ("found", "npz")
    assert (rows["cifar100"]["status"], rows["cifar100"]["layout"]) == ("partial", "torchvision")
    assert str(tmp_path / "cifar-100-python" / "meta") in rows["cifar100"]["detail"]
    assert rows["tinyimagenet"]["status"] == "found"
    assert rows["cifar10n"] == {"name": "cifar10n", "status": "found", "layout": "pt",
                                "path": str(tmp_path / "cifar10n" / "CIFAR-10_human.pt"), "detail": ""}
    assert rows["cifar100n"]["status"] == "missing"


def test_check_reports_count_mismatch_on_fixtures(tmp_path):
    fx.write_cifar_npz(tmp_path)
    res = _by_name(check_data(tmp_path))
    assert list(res) == ["cifar10"]
    r = res["cifar10"]
    assert r["ok"] is False
    assert "train has 20 images, expected 50000" in r["problems"]
    assert "test has 10 images, expected 10000" in r["problems"]
    assert any(p.startswith("train labels start") for p in r["problems"])
    # Same file names as the shared data, different content: the known sha256 must not match.
    assert f"sha256 of {tmp_path / 'cifar10' / 'train_part0.npz'} does not match the known value " \
           "(file altered or corrupt)" in r["problems"]


def test_check_notes_files_without_known_checksum(tmp_path):
    fx.write_cifar_npz(tmp_path, parts=0)
    r = check_data(tmp_path, ["cifar10"])[0]
    assert "no known checksum for train.npz" in r["notes"]
    assert f"sha256 of {tmp_path / 'cifar10' / 'test.npz'} does not match the known value " \
           "(file altered or corrupt)" in r["problems"]


def test_check_verifies_and_detects_sha256(tmp_path, monkeypatch):
    fx.write_cifar_npz(tmp_path, parts=0)
    digests = {f"cifar10/{n}": hashlib.sha256((tmp_path / "cifar10" / n).read_bytes()).hexdigest()
               for n in ("train.npz", "test.npz")}
    monkeypatch.setattr(cifar, "NPZ_SHA256", digests)
    r = check_data(tmp_path, ["cifar10"])[0]
    assert "sha256 verified for 2 file(s)" in r["notes"]
    monkeypatch.setattr(cifar, "NPZ_SHA256", dict(digests, **{"cifar10/test.npz": "0" * 64}))
    r = check_data(tmp_path, ["cifar10"])[0]
    assert f"sha256 of {tmp_path / 'cifar10' / 'test.npz'} does not match the known value " \
           "(file altered or corrupt)" in r["problems"]


def test_check_torchvision_md5_and_meta(tmp_path, monkeypatch):
    fx.write_cifar100_torchvision(tmp_path)
    res = _by_name(check_data(tmp_path, ["cifar100", "cifar100_coarse"]))
    probs = res["cifar100"]["problems"]
    assert any(p.startswith(f"md5 of {tmp_path / 'cifar-100-python' / 'train'} does not match") for p in probs)
    assert not any("meta file" in p for p in probs)  # fixture meta holds the official names
    assert "train has 20 images, expected 50000" in res["cifar100_coarse"]["problems"]
    digests = {f"cifar-100-python/{n}": hashlib.md5((tmp_path / "cifar-100-python" / n).read_bytes()).hexdigest()
               for n in ("train", "test", "meta")}
    monkeypatch.setattr(cifar, "TORCHVISION_MD5", digests)
    r = check_data(tmp_path, ["cifar100"])[0]
    assert "md5 verified for 3 file(s)" in r["notes"]


def test_check_meta_names(tmp_path):
    fx.write_cifar10_torchvision(tmp_path)
    names = list(cifar.CIFAR10_CLASSES)
    names[0] = "plane"
    (tmp_path / "cifar-10-batches-py" / "batches.meta").write_bytes(fx.py2_pickle({"label_names": names}))
    r = check_data(tmp_path, ["cifar10"])[0]
    assert "label_names in the meta file differ from the official class names" in r["problems"]


def test_check_missing_and_broken(tmp_path):
    fx.write_cifar_npz(tmp_path)
    (tmp_path / "cifar10" / "test.npz").write_bytes(b"garbage")
    res = _by_name(check_data(tmp_path, ["cifar10", "tinyimagenet", "cifar100n"]))
    assert res["cifar10"]["ok"] is False
    assert any("test.npz is corrupt" in p for p in res["cifar10"]["problems"])
    assert res["tinyimagenet"]["problems"] == [f"not found at {tmp_path / 'tiny-imagenet-200'}"]
    assert res["cifar100n"]["ok"] is False and res["cifar100n"]["problems"][0].startswith("not found")


def test_check_human_labels_on_fixture(tmp_path):
    a = fx.write_cifar_npz(tmp_path)
    fx.write_human_labels(tmp_path, "cifar10", fx.human_label_arrays("cifar10", a.train_y), fmt="pt")
    r = check_data(tmp_path, ["cifar10n"])[0]
    assert "no known checksum for CIFAR-10_human.pt" not in r["notes"]  # official name: checksum known
    assert f"sha256 of {tmp_path / 'cifar10n' / 'CIFAR-10_human.pt'} does not match the official file" in r["problems"]
    assert "clean_label has 20 labels, expected 50000" in r["problems"]
    assert ("cifar10 noise rates vs cifar10 train labels: aggre 50.00%, random1 35.00%, random2 25.00%, "
            "random3 20.00%, worst 20.00%") in r["notes"]


def test_check_cifar100n_without_images(tmp_path, monkeypatch):
    clean = fx.random_arrays(20, 1, 100, 0).train_y
    fx.write_human_labels(tmp_path, "cifar100", fx.human_label_arrays("cifar100", clean))
    monkeypatch.setitem(cifarn.HUMAN_LABEL_SHA256, "CIFAR-100_human.npz",
                        hashlib.sha256((tmp_path / "cifar100n" / "CIFAR-100_human.npz").read_bytes()).hexdigest())
    r = check_data(tmp_path, ["cifar100n"])[0]
    assert "sha256 verified" in r["notes"]
    assert any(n.startswith("cifar100 noise rates vs its own clean_label (cifar100 images not found")
               and "noisy100 50.00%" in n for n in r["notes"])
    assert any(p.startswith("clean_label starts") for p in r["problems"])


def test_format_table():
    text = format_table([{"name": "a", "ok": True, "problems": []},
                         {"name": "longer", "ok": False, "problems": ["x", "y"], "extra": 1}])
    lines = text.splitlines()
    assert lines[0] == "name    ok   problems  extra"
    assert lines[1] == "------  ---  --------  -----"
    assert lines[2] == "a       yes"
    assert lines[3] == "longer  no   x; y      1"
    assert format_table([]) == "(nothing)"


@pytest.mark.realdata
@realdata
def test_real_check():
    rows = _by_name(describe_data_root(REAL))
    assert rows["cifar10"]["status"] == "found" and rows["cifar10n"]["status"] == "found"
    res = _by_name(check_data(REAL))
    assert res["cifar10"]["ok"], res["cifar10"]
    assert "sha256 verified for 3 file(s)" in res["cifar10"]["notes"]
    assert res["cifar10n"]["ok"] and "sha256 verified" in res["cifar10n"]["notes"]
    assert res["cifar100n"]["ok"], res["cifar100n"]
