"""The restricted unpickler loads genuine CIFAR batches and nothing that runs code."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest

from ddlnl.data.safe_pickle import load_pickle_restricted, loads_restricted
from ddlnl.errors import DataError
from tests.data.fixtures import channel_major, py2_pickle


def _batch(n=3, seed=0):
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    return images, {"batch_label": "training batch 1 of 5", "labels": [6, 9, 9][:n],
                    "data": channel_major(images), "filenames": ["a.png", "b.png", "c.png"][:n]}


def test_py2_fixture_is_valid_for_the_stdlib_unpickler():
    images, batch = _batch()
    raw = py2_pickle(batch)
    assert raw[:2] == b"\x80\x02"
    assert b"cnumpy.core.multiarray\n_reconstruct\n" in raw
    full = pickle.loads(raw, encoding="bytes")
    assert np.array_equal(full[b"data"], batch["data"])


def test_loads_cifar_batch_with_bytes_keys(tmp_path):
    images, batch = _batch()
    path = tmp_path / "data_batch_1"
    path.write_bytes(py2_pickle(batch))
    d = load_pickle_restricted(path)
    assert set(d) == {b"batch_label", b"labels", b"data", b"filenames"}
    assert d[b"batch_label"] == b"training batch 1 of 5"
    assert d[b"labels"] == [6, 9, 9]
    data = d[b"data"]
    assert isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.shape == (3, 3072)
    assert np.array_equal(data, channel_major(images))
    assert d[b"filenames"] == [b"a.png", b"b.png", b"c.png"]


def test_numpy_core_and_numpy__core_aliases_both_load():
    _, batch = _batch()
    raw = py2_pickle(batch)
    alias = raw.replace(b"cnumpy.core.multiarray\n", b"cnumpy._core.multiarray\n")
    assert alias != raw
    assert np.array_equal(loads_restricted(alias)[b"data"], batch["data"])


def test_plain_builtin_pickles_load():
    obj = {b"labels": [1, 2, 3], b"name": "x", b"t": (1, 2.5, None)}
    assert loads_restricted(pickle.dumps(obj, protocol=4)) == obj


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def test_os_system_payload_is_refused_and_not_run(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps({b"data": _Evil(f"touch {marker}")}, protocol=2))
    with pytest.raises(DataError) as err:
        load_pickle_restricted(path)
    assert not marker.exists()
    msg = str(err.value)
    assert str(path) in msg
    assert "system" in msg
    assert "not a genuine CIFAR python batch" in msg


@pytest.mark.parametrize("module,name", [
    ("builtins", "eval"), ("subprocess", "Popen"), ("numpy", "load"), ("numpy", "frombuffer"),
    ("numpy.core.multiarray", "scalar"), ("numpy.testing", "assert_equal"), ("copy_reg", "_reconstructor"),
])
def test_any_other_global_is_refused(module, name):
    raw = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    with pytest.raises(DataError, match=f"{module}.{name}"):
        loads_restricted(raw)


def test_modern_numpy_pickle_is_refused():
    # Python 3 pickles arrays through other callables (e.g. _frombuffer / _codecs.encode).
    with pytest.raises(DataError, match="refused to load global"):
        loads_restricted(pickle.dumps({b"data": np.zeros(3, np.uint8)}, protocol=2))


def test_persistent_ids_are_refused():
    with pytest.raises(DataError, match="persistent ids"):
        loads_restricted(b"\x80\x02X\x01\x00\x00\x00aQ.")


def test_truncated_pickle_is_a_data_error(tmp_path):
    _, batch = _batch()
    path = tmp_path / "test_batch"
    path.write_bytes(py2_pickle(batch)[:500])
    with pytest.raises(DataError) as err:
        load_pickle_restricted(path)
    assert str(path) in str(err.value) and "truncated" in str(err.value)
    assert "re-obtain" in err.value.fix


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="cannot read .*nope"):
        load_pickle_restricted(tmp_path / "nope")
