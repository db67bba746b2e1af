"""DD_LNL's experiment grid (``dd_lnl_grid.yaml``, package data) as a set of cells.

The table lists, per distiller DD_LNL ran, the datasets, noise settings and IPCs of its
experiments (where each entry comes from: the comments in the YAML file and docs/studies.md).
:func:`load_grid` expands it to :class:`GridCell` tuples (dataset, noise, rate, method, IPC), the
same fields a study cell has, so a study can be compared with it: :func:`study_cells`.
"""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from ddlnl.data.noise import NoiseSpec
from ddlnl.errors import ConfigError
from ddlnl.study.spec import StudySpec, _noise_list
from ddlnl.utils.yamlio import load_yaml

GRID_FILE = Path(__file__).with_name("dd_lnl_grid.yaml")
ENTRY_KEYS = {"dataset", "noise", "ipc"}


class GridCell(NamedTuple):
    dataset: str
    noise: str
    rate: float  # the nominal rate as NoiseSpec stores it (0.0 for human label sets)
    method: str
    ipc: int


def load_table(path: str | Path = GRID_FILE) -> dict:
    """The parsed YAML table: ``{"version", "ipcs": {dataset: [...]}, "methods": {method: [entry, ...]}}``."""
    raw = load_yaml(Path(path).read_text())
    if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict) or not isinstance(raw.get("ipcs"), dict):
        raise ConfigError(f"{path}: expected a mapping with 'ipcs' and 'methods'", "see src/ddlnl/study/dd_lnl_grid.yaml")
    return raw


def load_grid(path: str | Path = GRID_FILE) -> set[GridCell]:
    """Every (dataset, noise, rate, method, IPC) cell of DD_LNL's grid."""
    table = load_table(path)
    cells: set[GridCell] = set()
    for method, entries in table["methods"].items():
        for i, e in enumerate(entries):
            where = f"{path}: methods.{method}[{i}]"
            if not isinstance(e, dict) or set(e) != ENTRY_KEYS:
                raise ConfigError(f"{where}: an entry has exactly the keys {sorted(ENTRY_KEYS)}", "see the other entries")
            allowed = table["ipcs"].get(e["dataset"], [])
            if not set(e["ipc"]) <= set(allowed):
                raise ConfigError(f"{where}: IPC {sorted(set(e['ipc']) - set(allowed))} is not one of {e['dataset']}'s {allowed}",
                                  "add it to ipcs or fix the entry")
            for noise, rate, nw in _noise_list(e["noise"], f"{where}: noise"):
                try:
                    r = NoiseSpec.create(noise, rate).rate
                except ConfigError as err:
                    raise ConfigError(f"{nw}: {err.problem}", err.fix) from None
                cells.update(GridCell(e["dataset"], noise, r, str(method), int(ipc)) for ipc in e["ipc"])
    return cells


def study_cells(study: StudySpec) -> set[GridCell]:
    """A study's cells as grid cells (seed, preset, overrides and imbalance dropped)."""
    return {GridCell(c.dataset, c.noise, c.rate, c.method, c.ipc) for c in study.cells}
