"""Study files: a validated YAML grid that expands to cells (one :class:`ExperimentSpec` each).

A study file looks like this (every key but ``grid`` is optional)::

    name: cifar10-symmetric-quick
    description: CIFAR-10, symmetric noise 0.2-0.8, DM at IPC 1/10/50
    preset: quick                # smoke, quick, paper or a preset YAML path
    overrides: []                # preset overrides, as ``ddlnl run --set``; {noise}, {rate}, {dataset},
                                 # {seed}, {method}, {ipc}, {imbalance} are filled in per cell
    baselines: []                # extra noisy-label baselines, as ``ddlnl run --baselines`` (CE always runs)
    privacy: null                # a membership-inference audit of each cell: true, or {shadows: 8, ...} (docs/privacy.md)
    data_root: null              # default: $DDLNL_DATA, else ./data
    device: null                 # cpu / cuda / auto
    max_workers: 2               # default concurrency of --executor processes / slurm
    slurm: {partition: gpu, gpus: 1, cpus: 8, mem_gb: 32, time_min: 120,
            by_method: {datm: {time_min: 720}}}
    grid:                        # a mapping, or a list of mappings (their union)
      datasets: [cifar10]
      noise:
        - {type: symmetric, rates: [0.2, 0.4, 0.6, 0.8]}
        - aggre                  # human label sets take no rate
      methods: [dm]              # the random control and full-noisy baseline come with every cell
      ipc: [1, 10, 50]
      seeds: [0]
      imbalance: [null]          # long-tailed ratios (null = balanced)
      clean_first: [null]        # cleaners the method distils after (ddlnl run --clean-first; null = none)

A grid entry may also set ``preset``, ``overrides``, ``baselines`` and ``privacy`` for its own cells. The cells are
the Cartesian product datasets x noise x seeds x imbalance x methods x ipc of each grid
entry; identical cells from several entries are run once.

Cells of one *group* (same dataset, imbalance, noise realisation, seed, preset and
overrides) share the saved noise realisation and the full-noisy-set baseline; cells of one
group and IPC share the random control (see :mod:`ddlnl.study.executors`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import asdict, dataclass, field
from fnmatch import fnmatchcase
from pathlib import Path

import yaml

from ddlnl.data.noise import NoiseSpec
from ddlnl.errors import ConfigError, yaml_error
from ddlnl.privacy.options import OPTION_NAMES as PRIVACY_KEYS, AuditOptions
from ddlnl.spec import ExperimentSpec
from ddlnl.utils.seeds import SCHEME as SEED_SCHEME
from ddlnl.utils.yamlio import load_yaml

_SPECS: dict = {}  # Cell -> ExperimentSpec (a spec resolves its preset once; cells are hashed often)

TOP_KEYS = {"name", "description", "preset", "overrides", "baselines", "data_root", "device", "max_workers", "slurm", "grid",
            "privacy"}
GRID_KEYS = {"datasets", "dataset", "noise", "methods", "ipc", "seeds", "imbalance", "preset", "overrides", "baselines",
             "clean_first", "privacy"}
NOISE_KEYS = {"type", "rate", "rates"}
SLURM_KEYS = {"partition", "gpus", "cpus", "mem_gb", "time_min", "account", "qos", "constraint", "setup", "extra", "by_method"}
SLURM_CELL_KEYS = SLURM_KEYS - {"by_method"}


@dataclass(frozen=True)
class Cell:
    """One experiment of a study: its grid values, the identity and group they give, and its :meth:`spec`."""

    dataset: str
    noise: str
    rate: float
    seed: int
    method: str
    ipc: int
    preset: str
    imbalance: float | None = None
    overrides: tuple[str, ...] = ()
    data_root: str | None = None
    device: str | None = None
    baselines: tuple[str, ...] = ()  # extra noisy-label baselines (``ddlnl run --baselines``); () = the run default
    clean_first: str | None = None  # the cleaner whose kept samples the method distils (``ddlnl run --clean-first``)
    privacy: AuditOptions | None = None  # audit the finished run (``ddlnl privacy``); None = no audit

    # -- identity ---------------------------------------------------------------------------
    def config(self) -> dict:
        d = asdict(self)
        d["overrides"] = list(self.overrides)
        d["baselines"] = list(self.baselines)
        if not self.baselines:
            del d["baselines"]  # keeps the identity of cells written before the field existed
        if self.clean_first is None:
            del d["clean_first"]  # likewise
        if self.privacy is None:
            del d["privacy"]  # likewise: a study without an audit keeps its cells' identity
        else:
            d["privacy"] = self.privacy.to_dict()  # part of the identity: the cell is done when its audit is
        return d

    def identity(self) -> dict:
        """What makes the cell's result: its config without where the data lives or which device runs it."""
        return {k: v for k, v in self.config().items() if k not in ("data_root", "device")}

    def preset_parts(self) -> dict:
        """The parts of the resolved preset (after overrides) that this cell's result depends on:
        data, preprocessing, network, evaluation, baseline recipe, its method's and the random
        control's options (and the noisy-label baselines' options when the preset has them)."""
        preset = self.spec().resolved.preset
        methods = preset.get("methods") or {}
        parts = {k: preset.get(k) for k in ("version", "data", "preprocess", "model", "evaluation", "baseline")}
        parts["methods"] = {m: methods.get(m) for m in (self.method, "random")}
        if self.baselines and isinstance(preset.get("baselines"), dict):
            parts["baselines"] = {b: preset["baselines"].get(b) for b in self.baselines}
        return parts

    def full_config(self) -> dict:
        """What the results database stores: the cell and the resolved preset parts it depends on."""
        return self.config() | {"resolved_preset": self.preset_parts()}

    def config_hash(self) -> str:
        """Changes when anything the cell's result depends on changes (not the data folder or device)."""
        return _hash(self.identity() | {"resolved_preset": self.preset_parts(), "seed_scheme": SEED_SCHEME})

    @property
    def noise_spec(self) -> NoiseSpec:
        return NoiseSpec(self.noise, self.rate, self.seed)

    @property
    def noise_slug(self) -> str:
        """``symmetric-0.4``, ``aggre``, ``clean``."""
        return self.noise_spec.tag

    @property
    def group(self) -> str:
        """Cells with the same group share one noise realisation and one full-noisy baseline.

        Overrides of a distiller's options (``methods.<name>.*``, but not ``methods.random.*``)
        change neither, so they do not split a group. A method's own preprocessing
        (``methods.<name>.preprocess``) does: its baseline and random control see other images."""
        lt = f"-lt{self.imbalance:g}" if self.imbalance is not None else ""
        tag = f"{_safe(self.dataset)}{lt}-{self.noise_slug}-seed{self.seed}-{_safe(Path(self.preset).stem)}"
        try:
            own = (self.spec().resolved.preset["methods"].get(self.method) or {}).get("preprocess")
        except ConfigError:  # an invalid cell: StudySpec.check names it by this id and says why
            own = None
        if own is not None:
            tag += f"-{own}"
        shared_ov = [o for o in self.overrides if not (o.startswith("methods.") and not o.startswith("methods.random."))]
        extra = {"overrides": shared_ov, "preset": self.preset}
        if shared_ov or self.preset != Path(self.preset).stem:
            tag += "-" + _hash(extra)[:8]
        return tag

    @property
    def id(self) -> str:
        """A readable, unique folder name: ``<group>-<method>-ipc<N>`` (``-clean-<cleaner>`` after a cleaner)."""
        return f"{self.group}-{self.method}-ipc{self.ipc}" + (f"-clean-{self.clean_first}" if self.clean_first else "")

    def spec(self) -> ExperimentSpec:
        """The cell as an experiment (its noise realised with the cell's seed); cached per cell."""
        key = (self, _mtime(self.preset))  # an edited preset file is read again
        spec = _SPECS.get(key)
        if spec is None:
            spec = _SPECS[key] = ExperimentSpec(
                dataset=self.dataset, noise=self.noise_spec, method=self.method, ipc=self.ipc, preset=self.preset,
                overrides=self.overrides, seed=self.seed, imbalance=self.imbalance, baselines=self.baselines or ("ce",),
                device=self.device, data_root=self.data_root, clean_first=self.clean_first)
        return spec

    @classmethod
    def from_config(cls, d: dict) -> Cell:
        d = dict(d)
        d["overrides"] = tuple(d.get("overrides") or ())
        d["baselines"] = tuple(d.get("baselines") or ())
        if d.get("privacy") is not None:
            d["privacy"] = AuditOptions.from_dict(d["privacy"])
        return cls(**d)


@dataclass
class StudySpec:
    name: str
    cells: list[Cell]
    description: str = ""
    max_workers: int | None = None
    slurm: dict = field(default_factory=dict)
    source: dict = field(default_factory=dict)  # the parsed YAML, stored with the study
    where: str = "study"  # the study file, for error messages

    def select(self, patterns: list[str]) -> StudySpec:
        """The cells whose id matches any of the shell patterns, in study order: a way to run part of
        a grid (one method, one noise setting) into the same folder, or to split it across machines."""
        chosen = [c for c in self.cells if any(fnmatchcase(c.id, p) for p in patterns)]
        if not chosen:
            shown = ", ".join(c.id for c in self.cells[:3]) + (", ..." if len(self.cells) > 3 else "")
            raise ConfigError(f"{self.where}: no cell id matches --only {' '.join(patterns)}",
                              f"use a shell pattern over the cell ids (e.g. '*-dance-*'); ids look like: {shown}")
        return dataclasses.replace(self, cells=chosen)

    def with_data_root(self, data_root: str) -> StudySpec:
        """Cells that name no data folder read ``data_root``."""
        return dataclasses.replace(self, cells=[c if c.data_root else dataclasses.replace(c, data_root=data_root) for c in self.cells])

    def check(self) -> None:
        """Every cell is a valid experiment (dataset, noise, method and its options, baselines,
        preset and overrides), before any cell runs and before any SLURM job is submitted."""
        for c in self.cells:
            try:
                c.spec()
                if c.privacy is not None and "dp_sgd" in c.privacy.targets:
                    from ddlnl.privacy.dp import require_opacus

                    require_opacus()
            except ConfigError as e:
                raise ConfigError(f"{self.where}: cell {c.id}: {e.problem}", e.fix) from None

    def slurm_for(self, cell: Cell) -> dict:
        """SLURM resources of one cell: the study's defaults, then ``by_method`` for its method."""
        res = {k: v for k, v in self.slurm.items() if k != "by_method"}
        res.update((self.slurm.get("by_method") or {}).get(cell.method, {}))
        return res


# -- loading and validation ---------------------------------------------------------------

BUILTIN_STUDIES = Path(__file__).parent / "studies"  # package data; the repository's studies/ links here


def list_studies() -> list[str]:
    """The names of the studies that ship with ddlnl (``ddlnl study list``)."""
    return sorted(p.stem for p in BUILTIN_STUDIES.glob("*.yaml"))


def study_path(name_or_path: str | Path) -> Path:
    """A study file: the path when it exists, else the built-in study of that name (``smoke``, or
    ``studies/smoke.yaml`` outside a checkout: the file name picks the built-in one)."""
    path = Path(name_or_path)
    if path.exists():
        return path
    name = path.name.removesuffix(".yaml").removesuffix(".yml")
    if (BUILTIN_STUDIES / f"{name}.yaml").is_file():
        return BUILTIN_STUDIES / f"{name}.yaml"
    raise ConfigError(f"study file {path} does not exist and no built-in study is called {name!r}",
                      f"pass the path of a study YAML file, or a built-in study: {', '.join(list_studies())} (ddlnl study list)")


def load_study(path: str | Path) -> StudySpec:
    """A study by path, or a built-in one by name (:func:`study_path`)."""
    path = study_path(path)
    try:
        raw = load_yaml(path.read_text())
    except yaml.YAMLError as e:
        raise yaml_error(f"study file {path}", e) from None
    return parse_study(raw, where=str(path), default_name=path.stem)


def parse_study(raw, where: str = "study", default_name: str = "study") -> StudySpec:
    """Validate a parsed study document and expand it to cells."""
    _mapping(raw, where, "see studies/smoke.yaml")
    _unknown(raw, TOP_KEYS, where)
    if "grid" not in raw:
        raise ConfigError(f"{where}: missing key 'grid'", "add a grid: {datasets, noise, methods, ipc, seeds} mapping")
    name = _str(raw.get("name", default_name), f"{where}: name")
    desc = raw.get("description") or ""
    if not isinstance(desc, str):
        raise ConfigError(f"{where}: description must be a string, got {type(desc).__name__}", "quote the value in the YAML")
    preset = _str(raw.get("preset", "quick"), f"{where}: preset")
    overrides = _str_list(raw.get("overrides") or [], f"{where}: overrides")
    baselines = _str_list(raw.get("baselines") or [], f"{where}: baselines")
    data_root = _opt_str(raw.get("data_root"), f"{where}: data_root")
    device = _opt_str(raw.get("device"), f"{where}: device")
    max_workers = raw.get("max_workers")
    if max_workers is not None:
        max_workers = _int(max_workers, f"{where}: max_workers", minimum=1)
    slurm = _slurm(raw.get("slurm") or {}, f"{where}: slurm")
    privacy = _privacy(raw.get("privacy"), f"{where}: privacy")
    grids = raw["grid"]
    if isinstance(grids, dict):
        grids = [grids]
    if not isinstance(grids, list) or not grids:
        raise ConfigError(f"{where}: grid must be a mapping or a non-empty list of mappings, got {type(grids).__name__}",
                          "see studies/smoke.yaml")
    cells: dict[str, Cell] = {}
    for i, g in enumerate(grids):
        gw = f"{where}: grid" if len(grids) == 1 and isinstance(raw["grid"], dict) else f"{where}: grid[{i}]"
        for cell in _expand(g, gw, preset, overrides, baselines, data_root, device, privacy):
            prev = cells.get(cell.id)
            if prev is not None and prev != cell:
                raise ConfigError(f"{gw}: two different cells share the name {cell.id}", "make the grid entries differ in a named field")
            cells[cell.id] = cell
    return StudySpec(name, list(cells.values()), desc, max_workers, slurm, raw, where)


def _expand(g, where, preset, overrides, baselines, data_root, device, privacy) -> list[Cell]:
    _mapping(g, where, "a grid entry is a mapping with datasets, noise, methods, ipc and seeds")
    _unknown(g, GRID_KEYS, where)
    if "datasets" in g and "dataset" in g:
        raise ConfigError(f"{where}: both 'dataset' and 'datasets' are set", "keep one of them")
    datasets = _str_list(g.get("datasets", g.get("dataset", ["cifar10"])), f"{where}: " + ("dataset" if "dataset" in g else "datasets"))
    noises = _noise_list(g.get("noise", [{"type": "symmetric", "rates": [0.4]}]), f"{where}: noise")
    methods = _str_list(g.get("methods", ["dm"]), f"{where}: methods")
    if "random" in methods:
        raise ConfigError(f"{where}: methods: 'random' is the control run beside every method", "remove it from methods")
    ipcs = [_int(v, f"{where}: ipc[{j}]", minimum=1) for j, v in enumerate(_list(g.get("ipc", [10]), f"{where}: ipc"))]
    seeds = [_int(v, f"{where}: seeds[{j}]", minimum=0) for j, v in enumerate(_list(g.get("seeds", [0]), f"{where}: seeds"))]
    imbs = []
    for j, v in enumerate(_list(g.get("imbalance", [None]), f"{where}: imbalance")):
        if v is not None:
            v = _num(v, f"{where}: imbalance[{j}]")
            if v < 1:
                raise ConfigError(f"{where}: imbalance[{j}] must be >= 1, got {v}", "use null (balanced) or a ratio such as 10 or 100")
        imbs.append(v)
    p = _str(g.get("preset", preset), f"{where}: preset")
    ov = tuple(overrides + _str_list(g.get("overrides") or [], f"{where}: overrides"))
    bl = tuple(_str_list(g["baselines"], f"{where}: baselines")) if "baselines" in g else tuple(baselines)
    audit = _privacy(g["privacy"], f"{where}: privacy") if "privacy" in g else privacy
    cleaners = [None if v is None else _str(v, f"{where}: clean_first[{j}]")
                for j, v in enumerate(_list(g.get("clean_first", [None]), f"{where}: clean_first"))]
    cells = []
    for ds in datasets:
        for ntype, rate, nw in noises:
            for seed in seeds:
                try:
                    r = NoiseSpec.create(ntype, rate, seed).rate
                except ConfigError as e:
                    raise ConfigError(f"{nw}: {e.problem}", e.fix) from None
                for imb in imbs:
                    for m in methods:
                        for ipc in ipcs:
                            fields = {"dataset": ds, "noise": ntype, "rate": f"{r:g}", "seed": seed, "method": m, "ipc": ipc,
                                      "imbalance": imb}
                            cov = tuple(_fill(o, fields, f"{where}: overrides") for o in ov)
                            cells += [Cell(ds, ntype, r, seed, m, ipc, p, imb, cov, data_root, device, bl, cf, audit)
                                      for cf in cleaners]
    return cells


def _fill(override: str, fields: dict, where: str) -> str:
    """Expand ``{noise}``, ``{rate}``, ``{dataset}``, ``{seed}``, ``{method}``, ``{ipc}``, ``{imbalance}`` in an override."""
    if "{" not in override:
        return override
    try:
        return override.format_map(fields)
    except (KeyError, ValueError, IndexError) as e:
        raise ConfigError(f"{where}: {override!r} has an unknown placeholder ({e})",
                          f"use only {{{'}, {'.join(fields)}}} in overrides") from None


def _noise_list(v, where) -> list[tuple[str, float | None, str]]:
    out = []
    for j, item in enumerate([v] if isinstance(v, dict) else _list(v, where)):
        w = f"{where}[{j}]"
        if isinstance(item, str):
            out.append((item, None, w))  # a human label set (or clean): the rate comes from NoiseSpec
            continue
        _mapping(item, w, "write {type: symmetric, rates: [0.2, 0.4]} or a human label set name such as aggre")
        _unknown(item, NOISE_KEYS, w)
        if "type" not in item:
            raise ConfigError(f"{w}: missing key 'type'", "e.g. {type: symmetric, rates: [0.2, 0.4]}")
        t = _str(item["type"], f"{w}: type")
        if "rate" in item and "rates" in item:
            raise ConfigError(f"{w}: both 'rate' and 'rates' are set", "keep one of them")
        if "rates" in item:
            rates = [_num(r, f"{w}: rates[{k}]") for k, r in enumerate(_list(item["rates"], f"{w}: rates"))]
        else:
            rates = [_num(item["rate"], f"{w}: rate") if "rate" in item else None]
        out.extend((t, r, w) for r in rates)
    return out


def _privacy(v, where) -> AuditOptions | None:
    """``true`` (``ddlnl privacy``'s defaults), ``false``/``null`` (no audit) or a mapping of its options."""
    if v is None or v is False:
        return None
    if v is True:
        return AuditOptions()
    _mapping(v, where, "write privacy: true (the defaults) or e.g. privacy: {shadows: 8, audit_points: 500, targets: [full_noisy, distilled]}")
    _unknown(v, set(PRIVACY_KEYS), where)
    try:
        return AuditOptions(**v).checked({k: f"{where}.{k}" for k in PRIVACY_KEYS})
    except ConfigError as e:
        raise ConfigError(e.problem, f"{e.fix}; these are the options of `ddlnl privacy` (docs/privacy.md)") from None


def _slurm(v, where) -> dict:
    _mapping(v, where, "e.g. slurm: {partition: gpu, gpus: 1, mem_gb: 32, time_min: 120}")
    _unknown(v, SLURM_KEYS, where)
    out = _slurm_cell(v, where)
    if "by_method" in v:
        bm = v["by_method"]
        _mapping(bm, f"{where}: by_method", "e.g. by_method: {datm: {time_min: 720}}")
        out["by_method"] = {}
        for m, res in bm.items():
            _mapping(res, f"{where}: by_method.{m}", "e.g. {time_min: 720, gpus: 1}")
            _unknown(res, SLURM_CELL_KEYS, f"{where}: by_method.{m}")
            out["by_method"][str(m)] = _slurm_cell(res, f"{where}: by_method.{m}")
    return out


def _slurm_cell(v: dict, where) -> dict:
    out = {}
    for k in ("partition", "account", "qos", "constraint"):
        if k in v:
            out[k] = _opt_str(v[k], f"{where}: {k}")
    for k in ("gpus", "cpus", "mem_gb", "time_min"):
        if k in v:
            out[k] = _int(v[k], f"{where}: {k}", minimum=0 if k == "gpus" else 1)
    if "setup" in v:
        out["setup"] = _str_list(v["setup"], f"{where}: setup")
    if "extra" in v:
        _mapping(v["extra"], f"{where}: extra", "a mapping of extra sbatch options, e.g. {exclusive: true}")
        out["extra"] = dict(v["extra"])
    return out


# -- typed getters that name the key --------------------------------------------------------

def _mapping(v, where, fix):
    if not isinstance(v, dict):
        raise ConfigError(f"{where} must be a mapping, got {type(v).__name__}", fix)


def _unknown(d: dict, allowed: set, where: str) -> None:
    unknown = sorted(str(k) for k in set(d) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}", f"valid keys: {', '.join(sorted(allowed))}")


def _list(v, where) -> list:
    if isinstance(v, (list, tuple)):
        return list(v)
    if isinstance(v, dict):
        raise ConfigError(f"{where} must be a list (or one value), got a mapping", "write e.g. [1, 10, 50]")
    return [v]


def _str(v, where) -> str:
    if not isinstance(v, str) or not v:
        raise ConfigError(f"{where} must be a non-empty string, got {v!r} ({type(v).__name__})", "quote the value in the YAML")
    return v


def _opt_str(v, where):
    return None if v is None else _str(v, where)


def _str_list(v, where) -> list[str]:
    return [_str(x, f"{where}[{j}]") for j, x in enumerate(_list(v, where))]


def _int(v, where, minimum: int | None = None) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise ConfigError(f"{where} must be an integer, got {v!r} ({type(v).__name__})", "write a whole number, e.g. 10")
    if minimum is not None and v < minimum:
        raise ConfigError(f"{where} must be >= {minimum}, got {v}", f"use a value of {minimum} or more")
    return v


def _num(v, where) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{where} must be a number, got {v!r} ({type(v).__name__})", "write a number, e.g. 0.4")
    return float(v)


def _safe(s: str) -> str:
    return "".join(c if c.isalnum() or c in "._" else "_" for c in str(s))


def _mtime(preset: str):
    p = Path(preset)
    try:
        return p.stat().st_mtime_ns if p.suffix in (".yaml", ".yml") and p.exists() else None
    except OSError:
        return None


def _hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]
