"""Named, versioned presets (``smoke``, ``quick``, ``paper``) and their validation.

A preset is a YAML file: the data subsample, preprocessing, the network, the common
evaluation protocol, the full-noisy-set baseline, and one options block per method.
A path to your own YAML file works wherever a preset name does. Every result records
the preset's name and version and every value the command line changed.
"""

from __future__ import annotations

import copy
from pathlib import Path

import yaml

from ddlnl.errors import ConfigError

PRESET_DIR = Path(__file__).parent
SECTIONS = {"name", "version", "description", "data", "preprocess", "model", "evaluation", "baseline", "methods"}
REQUIRED = ("name", "data", "preprocess", "model", "evaluation", "baseline", "methods")
DATA_KEYS = {"train_per_class", "test_size"}
EVAL_KEYS = {"runs", "use_learned_lr", "train"}


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def load_preset(name_or_path: str) -> dict:
    """Load a built-in preset by name, or a YAML file by path, and validate its shape."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown preset {name_or_path!r}",
                f"use one of: {', '.join(list_presets())}, or the path of a preset YAML file",
            )
    try:
        preset = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"preset file {path} is not valid YAML ({e})", "fix the YAML syntax") from None
    validate_preset(preset, str(path))
    return preset


def validate_preset(preset, where: str = "preset") -> None:
    if not isinstance(preset, dict):
        raise ConfigError(f"{where}: a preset must be a mapping, got {type(preset).__name__}", "see src/ddlnl/presets/quick.yaml")
    unknown = set(preset) - SECTIONS
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", f"valid keys: {', '.join(sorted(SECTIONS))}")
    missing = [k for k in REQUIRED if k not in preset]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}", "copy src/ddlnl/presets/quick.yaml and edit it")
    _keys(preset["data"], DATA_KEYS, f"{where}: data")
    for section in ("evaluation", "baseline"):
        _keys(preset[section], EVAL_KEYS, f"{where}: {section}")
        if not isinstance(preset[section].get("train"), dict):
            raise ConfigError(f"{where}: {section}.train must be a mapping of training options", "see quick.yaml")
        from ddlnl.train import TrainConfig

        TrainConfig.from_dict(preset[section]["train"])  # unknown keys and out-of-range values fail here
        runs = preset[section].get("runs", 1)
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
            raise ConfigError(f"{where}: {section}.runs must be a positive integer, got {runs!r}", "set runs: 1 or more")
    if not isinstance(preset["model"], dict) or "name" not in preset["model"]:
        raise ConfigError(f"{where}: model must be a mapping with a 'name'", "e.g. model: {name: convnet, width: 128}")
    if not isinstance(preset["methods"], dict):
        raise ConfigError(f"{where}: methods must be a mapping of method name to options", "see quick.yaml")


def _keys(section, allowed: set, where: str) -> None:
    if not isinstance(section, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(section).__name__}", "see src/ddlnl/presets/quick.yaml")
    unknown = set(section) - allowed
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", f"valid keys: {', '.join(sorted(allowed))}")


def apply_overrides(preset: dict, overrides: list[str]) -> tuple[dict, dict]:
    """Apply ``a.b.c=value`` strings (value parsed as YAML); return (new preset, applied overrides)."""
    out, applied = copy.deepcopy(preset), {}
    for item in overrides or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} has no '='", "write overrides as KEY.PATH=VALUE, e.g. evaluation.runs=5")
        key, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node, parts = out, key.split(".")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                raise ConfigError(f"override {key!r}: {p!r} is not a section of the preset", "check the key path against the preset YAML")
            node = node[p]
        node[parts[-1]] = value
        applied[key] = value
    validate_preset(out, "preset after overrides")
    return out, applied
