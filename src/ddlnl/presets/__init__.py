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

from ddlnl.errors import ConfigError, yaml_error
from ddlnl.models import model_spec
from ddlnl.utils.yamlio import load_yaml

PRESET_DIR = Path(__file__).parent
SECTIONS = {"name", "version", "description", "data", "preprocess", "model", "evaluation", "baseline", "methods", "baselines"}
REQUIRED = ("name", "data", "preprocess", "model", "evaluation", "baseline", "methods")
DATA_KEYS = {"train_per_class", "test_size", "validation"}  # validation: images per noisy class held out
EVAL_KEYS = {"runs", "use_learned_lr", "train"}
# cross_arch: a model name (or mapping) for the cross-architecture control, or null;
# model: the evaluation network when it differs from the preset's (distillation) network.
EVALUATION_KEYS = EVAL_KEYS | {"cross_arch", "model", "checkpoint_every"}  # checkpoint_every: also test every k epochs
# A method's own evaluation recipe (`--eval native`), under methods.<name>.native_eval.
NATIVE_KEYS = {"train", "model", "runs"}
PROTOCOLS = ("common", "native")
# methods.<name>.preprocess: the preprocessing of every cell of that method (DATM/RCIG whiten, DANCE normalises)
METHOD_PREPROCESS = ("normalize", "zca")
# keys of methods.<name> that describe the cell, not the distiller: method_options() drops them
CELL_KEYS = ("native_eval", "preprocess")


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))


def preset_file(name_or_path: str) -> Path:
    """The YAML file of a built-in preset name, or the given preset path."""
    path = Path(name_or_path)
    if not (path.suffix in (".yaml", ".yml") and path.exists()):
        path = PRESET_DIR / f"{name_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown preset {name_or_path!r}",
                f"use one of: {', '.join(list_presets())}, or the path of a preset YAML file",
            )
    return path


def load_preset(name_or_path: str) -> dict:
    """Load a built-in preset by name, or a YAML file by path, and validate its shape."""
    path = preset_file(name_or_path)
    try:
        preset = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise yaml_error(f"preset file {path}", e) from None
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
    for key in sorted(DATA_KEYS):
        v = preset["data"].get(key)
        if v is not None and (not isinstance(v, int) or isinstance(v, bool) or v < 1):
            raise ConfigError(f"{where}: data.{key} must be a positive integer or null, got {v!r}", f"set {key}: null (all) or e.g. 100")
    if not isinstance(preset["preprocess"], str):
        raise ConfigError(f"{where}: preprocess must be a name, got {preset['preprocess']!r}", "use normalize, zca or none")
    for section in ("evaluation", "baseline"):
        _keys(preset[section], EVALUATION_KEYS if section == "evaluation" else EVAL_KEYS, f"{where}: {section}")
        if not isinstance(preset[section].get("train"), dict):
            raise ConfigError(f"{where}: {section}.train must be a mapping of training options", "see quick.yaml")
        from ddlnl.train import TrainConfig

        try:
            TrainConfig.from_dict(preset[section]["train"])  # unknown keys and out-of-range values fail here
        except ConfigError as e:
            raise ConfigError(f"{where}: {section}.train: {e.problem}", e.fix) from None
        runs = preset[section].get("runs", 1)
        if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
            raise ConfigError(f"{where}: {section}.runs must be a positive integer, got {runs!r}", "set runs: 1 or more")
    if not isinstance(preset["model"], dict) or "name" not in preset["model"]:
        raise ConfigError(f"{where}: model must be a mapping with a 'name'", "e.g. model: {name: convnet, width: 128}")
    _check_model(preset["model"], f"{where}: model")
    if not isinstance(preset["methods"], dict):
        raise ConfigError(f"{where}: methods must be a mapping of method name to options", "see quick.yaml")
    for name, opts in preset["methods"].items():
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"{where}: methods.{name} must be a mapping of options, got {opts!r}", "e.g. dm: {iterations: 400}")
        if opts and "native_eval" in opts:
            _check_native(opts["native_eval"], f"{where}: methods.{name}.native_eval")
        if opts and "preprocess" in opts and opts["preprocess"] not in METHOD_PREPROCESS:
            raise ConfigError(f"{where}: methods.{name}.preprocess must be one of {', '.join(METHOD_PREPROCESS)}, "
                              f"got {opts['preprocess']!r}", f"set methods.{name}.preprocess: zca (DATM, MTT, RCIG) or normalize, "
                              "or drop it to use the preset's preprocess")
    _check_cross_arch(preset["evaluation"].get("cross_arch"), where)
    from ddlnl.evaluate import check_checkpoint_every

    check_checkpoint_every(preset["evaluation"].get("checkpoint_every"), f"{where}: evaluation.checkpoint_every")
    if preset["evaluation"].get("model") is not None:
        _check_model(preset["evaluation"]["model"], f"{where}: evaluation.model")
    _check_baselines(preset.get("baselines"), preset["baseline"]["train"], where)


def cross_arch_model(evaluation: dict) -> dict | None:
    """The model recipe of the cross-architecture control, or None when it is off."""
    return model_spec(evaluation.get("cross_arch"))


def method_options(preset: dict, method: str) -> dict:
    """The distiller's options from ``methods.<method>``, without the cell keys (``native_eval``, ``preprocess``)."""
    if method not in preset["methods"]:
        raise ConfigError(f"preset {preset.get('name')!r} has no settings for method {method!r}",
                          f"use one of: {', '.join(sorted(preset['methods']))}")
    return {k: v for k, v in (preset["methods"][method] or {}).items() if k not in CELL_KEYS}


def cell_preprocess(preset: dict, method: str | None) -> str:
    """The preprocessing of a cell of ``method``: ``methods.<method>.preprocess`` if set, else the preset's.

    It is the whole cell's (experts, distillation, controls, baselines, evaluation), so that the
    controls see the same images as the method.
    """
    own = (preset["methods"].get(method) or {}).get("preprocess") if method is not None else None
    return preset["preprocess"] if own is None else own


def evaluation_for(preset: dict, method: str, protocol: str = "common") -> dict:
    """The evaluation section for ``protocol``: the preset's common one, or ``method``'s native recipe.

    The native recipe keeps the common section's controls (``cross_arch``, ``use_learned_lr``)
    and replaces the training recipe, and the network and number of runs where it names them.
    """
    from ddlnl.errors import check_choice

    check_choice("evaluation protocol", protocol, PROTOCOLS)
    ev = dict(preset["evaluation"])
    if protocol == "common":
        return ev
    native = (preset["methods"].get(method) or {}).get("native_eval")
    if not native:
        have = sorted(m for m, o in preset["methods"].items() if o and o.get("native_eval"))
        raise ConfigError(f"method {method!r} has no native evaluation recipe in preset {preset.get('name')!r}",
                          f"use --eval common, or a method with one: {', '.join(have) or 'none in this preset'}")
    ev["train"] = dict(native["train"])
    for key in ("model", "runs"):
        if native.get(key) is not None:
            ev[key] = native[key]
    ev["protocol"] = "native"
    return ev


def _check_native(section, where: str) -> None:
    _keys(section, NATIVE_KEYS, where)
    if not isinstance(section.get("train"), dict):
        raise ConfigError(f"{where}.train must be a mapping of training options", "e.g. train: {epochs: 1500, cutmix_prob: 0.5}")
    from ddlnl.train import TrainConfig

    TrainConfig.from_dict(section["train"])
    runs = section.get("runs", 1)
    if not isinstance(runs, int) or isinstance(runs, bool) or runs < 1:
        raise ConfigError(f"{where}.runs must be a positive integer, got {runs!r}", "set runs: 1 or more")
    if section.get("model") is not None:
        _check_model(section["model"], f"{where}.model")


def _check_cross_arch(spec, where: str) -> None:
    if spec in (None, False, "", "null", "none"):
        return
    _check_model(spec, f"{where}: evaluation.cross_arch")


def _check_model(spec, where: str) -> None:
    """A model name or a mapping with 'name' and that model's options."""
    from ddlnl.models import list_models, model_options

    model = {"name": spec} if isinstance(spec, str) else spec
    if not isinstance(model, dict) or "name" not in model:
        raise ConfigError(f"{where} must be a model name or a model mapping, got {spec!r}", "e.g. resnet18, or {name: convnet, width: 128}")
    if model["name"] not in list_models():
        raise ConfigError(f"{where}: unknown model {model['name']!r}", f"use one of: {', '.join(list_models())}")
    unknown = set(model) - {"name"} - set(model_options(model["name"]))
    if unknown:
        raise ConfigError(f"{where}: unknown option(s) {', '.join(sorted(unknown))}",
                          f"valid options: {', '.join(model_options(model['name']))}")


def _check_baselines(section, base_train: dict, where: str) -> None:
    """``baselines:`` maps baseline names to option mappings; names and options are checked."""
    if section is None:
        return
    if not isinstance(section, dict):
        raise ConfigError(f"{where}: baselines must be a mapping of baseline name to options", "see src/ddlnl/presets/quick.yaml")
    from ddlnl.baselines import create_baseline

    for name, opts in section.items():
        if opts is not None and not isinstance(opts, dict):
            raise ConfigError(f"{where}: baselines.{name} must be a mapping of options, got {opts!r}", "e.g. gce: {q: 0.7}")
        b = create_baseline(name, **(opts or {}))  # unknown names/options fail here
        train = getattr(b.options, "train", None)
        if train is not None and not isinstance(train, dict):
            raise ConfigError(f"{where}: baselines.{name}.train must be a mapping of training options", "e.g. train: {epochs: 200}")
        if train:
            from ddlnl.train import TrainConfig

            TrainConfig.from_dict(dict(base_train) | train)


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
            value = load_yaml(raw)
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
