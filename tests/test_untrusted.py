"""Nothing a user hands in is unpickled with code execution.

Every payload below would create a marker file (or run a shell command that creates it) if
it were executed; each load must be refused with a DataError/ConfigError (exit 2 on the
command line) and the marker must not exist. The last test audits every load site in src/.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from ddlnl.data.cifar import read_npz
from ddlnl.data.cifarn import read_human_label_file
from ddlnl.data.safe_pickle import loads_restricted
from ddlnl.errors import ConfigError, DataError
from ddlnl.presets import load_preset
from ddlnl.synset import SyntheticSet
from tests.data.fixtures import channel_major, write_cifar10_torchvision

SRC = Path(__file__).resolve().parents[1] / "src" / "ddlnl"


class System:
    """Unpickling calls os.system(cmd) (pickled as posix.system)."""

    def __init__(self, marker):
        self.cmd = f"touch {marker}"

    def __reduce__(self):
        return (os.system, (self.cmd,))


class Exec:
    """Unpickling calls builtins.exec on code that writes the marker."""

    def __init__(self, marker):
        self.code = f"open({str(marker)!r}, 'w').write('pwned')"

    def __reduce__(self):
        return (exec, (self.code,))


class Popen:
    def __init__(self, marker):
        self.argv = ["touch", str(marker)]

    def __reduce__(self):
        return (subprocess.Popen, (self.argv,))


PAYLOADS = [System, Exec, Popen]


def _batch_with(payload, where: str):
    images = np.zeros((2, 32, 32, 3), np.uint8)
    batch = {b"data": channel_major(images), b"labels": [1, 2], b"batch_label": b"training batch 1 of 5"}
    if where == "value":
        batch[b"data"] = payload
    elif where == "nested":
        batch[b"labels"] = [1, [2, {b"x": payload}]]
    else:  # the whole file
        batch = payload
    return batch


@pytest.mark.parametrize("protocol", [0, 2, 4, 5])
@pytest.mark.parametrize("where", ["value", "nested", "top"])
@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda c: c.__name__)
def test_restricted_unpickler_refuses_code_in_any_protocol(tmp_path, payload, where, protocol):
    marker = tmp_path / "pwned"
    raw = pickle.dumps(_batch_with(payload(marker), where), protocol=protocol)
    with pytest.raises(DataError, match="refused to load global"):
        loads_restricted(raw, source="data_batch_1")
    assert not marker.exists()


def test_hand_written_opcodes_are_refused(tmp_path):
    """GLOBAL+REDUCE, INST, OBJ and STACK_GLOBAL all resolve callables through find_class."""
    marker = tmp_path / "pwned"
    cmd = f"touch {marker}".encode()
    variants = {
        "GLOBAL/REDUCE": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        "INST": b"(S'" + cmd + b"'\nios\nsystem\n.",
        "OBJ": b"\x80\x02(cos\nsystem\nS'" + cmd + b"'\no.",
        "STACK_GLOBAL": b"\x80\x04\x8c\x02os\x8c\x06system\x93\x8c" + bytes([len(cmd)]) + cmd + b"\x85R.",
        "builtins.getattr": b"\x80\x02cbuiltins\ngetattr\ncos\n\x86.",
    }
    for name, raw in variants.items():
        with pytest.raises(DataError, match="refused"):
            loads_restricted(raw, source=name)
    assert not marker.exists()


def test_malicious_cifar_batch_through_the_cli(tmp_path):
    """A tampered data_batch_1 in the torchvision layout: ddlnl refuses it, exit 2, and the payload never runs."""
    write_cifar10_torchvision(tmp_path)
    marker = tmp_path / "pwned"
    evil = pickle.dumps({b"data": System(marker), b"labels": [0]}, protocol=2)  # a batch dict with a payload
    (tmp_path / "cifar-10-batches-py" / "data_batch_1").write_bytes(evil)
    r = subprocess.run([sys.executable, "-m", "ddlnl", "noise", "--data-root", str(tmp_path)],
                       capture_output=True, text=True, timeout=120, check=False)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "data_batch_1" in r.stderr and "refused to load global" in r.stderr and "not a genuine CIFAR" in r.stderr
    assert not marker.exists()


@pytest.mark.parametrize("payload", PAYLOADS, ids=lambda c: c.__name__)
def test_malicious_torch_files_are_refused(tmp_path, payload):
    """DATM/MTT .pt sets and CIFAR-N .pt label files go through torch.load(weights_only=True) only."""
    marker = tmp_path / "pwned"
    datm = tmp_path / "datm"
    datm.mkdir()
    torch.save({"images": payload(marker)}, datm / "images_best.pt")
    torch.save(torch.zeros(2, dtype=torch.long), datm / "labels_best.pt")
    with pytest.raises(DataError, match="refused to load"):
        SyntheticSet.load(datm)
    label_file = tmp_path / "CIFAR-10_human.pt"
    torch.save({"clean_label": np.zeros(3, np.int64), "aggre_label": payload(marker)}, label_file)
    with pytest.raises(DataError, match="refused to load"):
        read_human_label_file(label_file)
    assert not marker.exists()


def test_npz_with_pickled_object_arrays_is_refused(tmp_path):
    """np.load(allow_pickle=False): an object array inside an npz is refused, not unpickled."""
    marker = tmp_path / "pwned"
    evil = np.empty(1, dtype=object)
    evil[0] = System(marker)
    folder = tmp_path / "cifar10"
    folder.mkdir()
    np.savez(folder / "test.npz", x=np.zeros((1, 32, 32, 3), np.uint8), y=evil)
    with pytest.raises(DataError, match="corrupt"):
        read_npz(folder / "test.npz", ("x", "y"))
    np.savez(tmp_path / "CIFAR-10_human.npz", clean_label=np.zeros(1, np.int64), aggre_label=evil)
    with pytest.raises(DataError, match="corrupt"):
        read_human_label_file(tmp_path / "CIFAR-10_human.npz")
    assert not marker.exists()


def test_yaml_python_tags_are_refused(tmp_path):
    """yaml.safe_load: a preset or study file cannot construct Python objects."""
    marker = tmp_path / "pwned"
    for text in (f"name: !!python/object/apply:os.system ['touch {marker}']\n",
                 f"!!python/object/apply:subprocess.Popen [['touch', '{marker}']]\n"):
        path = tmp_path / "evil.yaml"
        path.write_text(text)
        with pytest.raises(ConfigError, match="not valid YAML"):
            load_preset(str(path))
        from ddlnl.study.spec import load_study

        with pytest.raises(ConfigError, match="not valid YAML"):
            load_study(path)
    assert not marker.exists()


def test_yaml_loader_is_a_safe_loader():
    import yaml

    from ddlnl.utils import yamlio

    assert issubclass(yamlio._Loader, yaml.SafeLoader)
    with pytest.raises(yaml.YAMLError):
        yamlio.load_yaml("!!python/object/apply:os.getcwd []")


# Load sites: what each may look like. Anything else that loads a file must be added here on purpose.
_LOAD_RULES = [
    (re.compile(r"\btorch\.load\("), re.compile(r"weights_only=True"), "torch.load without weights_only=True"),
    (re.compile(r"\bnp\.load\("), re.compile(r"allow_pickle=False"), "np.load without allow_pickle=False"),
    # yaml.load only with utils/yamlio's SafeLoader subclass (test_yaml_loader_is_a_safe_loader)
    (re.compile(r"\byaml\.(load|unsafe_load|full_load|load_all)\("), re.compile(r"Loader=_Loader\)"),
     "yaml.load (use ddlnl.utils.yamlio.load_yaml)"),
    (re.compile(r"\bpickle\.(load|loads|Unpickler)\b"), None, "pickle outside data/safe_pickle.py"),
    (re.compile(r"\b(cloudpickle|dill|joblib|shelve|marshal)\b"), None, "a code-executing deserialiser"),
]
_PICKLE_OK = {"data/safe_pickle.py"}  # the restricted unpickler itself


def test_every_load_site_is_safe():
    problems = []
    for path in sorted(SRC.rglob("*.py")):
        rel = path.relative_to(SRC).as_posix()
        for n, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            for pattern, required, what in _LOAD_RULES:
                if not pattern.search(code):
                    continue
                if what.startswith("pickle") and rel in _PICKLE_OK:
                    continue
                if required is not None and required.search(code):
                    continue
                problems.append(f"{rel}:{n}: {what}: {line.strip()}")
    assert not problems, "\n".join(problems)
