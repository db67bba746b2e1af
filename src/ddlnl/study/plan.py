"""What a study will cost, before it runs: ``ddlnl study FILE --dry-run``.

Each cell is planned by :func:`ddlnl.plan.plan`, the plan ``ddlnl run --dry-run`` prints (work in
images processed, times from measured figures; docs/cost.md). The study adds what one run cannot
know: which of a cell's stages a sibling makes for it, and which cells are already finished.

* **Shared parts** (:data:`ddlnl.stages.SHARED_PARTS`): each baseline on the full noisy set is
  made once per group, the random control once per group and IPC. The first cell of the study
  that would make it pays for it (the driver runs that cell before its siblings:
  :func:`~ddlnl.study.executors.dependencies`); a sibling whose stage differs (other work, other
  network) would recompute it, so it pays too. The noise realisation is drawn, not trained, and
  costs nothing in any plan.
* **Experts** (MTT, DATM and its variants, DANCE) are cached by their key
  (:func:`ddlnl.experts.expert_key`): cells of one group and cleaner whose experts have the same
  recipe and stored epochs train them once, whatever their method or IPC; a cell asking for more
  experts than were trained pays for the missing ones. DATM's paper rows store other epochs at
  other IPCs, so those cells do not share.
* **Finished cells** (recorded finished with the same config hash, or adoptable from their folder:
  :func:`~ddlnl.study.executors.finished_cells`) cost nothing, and whatever they made is there.
* **Saved stages** of a cell to run (an interrupted cell, or the same-id cell of ``--reuse-from``'s
  folder): a stage whose file (:attr:`ddlnl.plan.Stage.saved_as`) is there costs nothing. Its key is
  checked only when the run starts, so a stage saved under another configuration is counted as
  saved here and recomputed there; a distillation's checkpoint (part of its iterations) is not
  counted.
* **Privacy** (``privacy:``): each audited cell adds :func:`ddlnl.plan.audit_stages`, its own
  (an audit shares nothing).

Wall clock for ``--executor processes``: at least the larger of the total divided by the workers
and the longest chain of cells that wait for one another (the driver's dependencies), each cell
taking what it pays. A lower bound: it packs cells perfectly and assumes every worker as fast as
the measured figure, which had the whole device (two processes on the 2-core CPU gave 0.96-1.15x
one: docs/benchmarks.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ddlnl.errors import ConfigError
from ddlnl.plan import DEVICES, NOT_MEASURED, Stage, audit_stages, combined_stage, duration, plan
from ddlnl.results import format_count
from ddlnl.study.executors import dependencies, finished_cells, reuse_source
from ddlnl.study.spec import Cell, StudySpec

# ddlnl study --device -> the figures' device (ddlnl.plan.DEVICES)
FIGURE_DEVICES = {"cuda": "h100", "cpu": "cpu"}
DEFAULT_WORKERS = 2  # ProcessExecutor's default


@dataclass
class CellCost:
    """One cell in a study plan: the stages it pays for, and those a sibling (or a finished cell) makes for it."""

    cell: Cell
    number: int
    finished: bool
    stages: list[Stage] = field(default_factory=list)  # what it pays (none when finished)
    from_siblings: dict[str, str] = field(default_factory=dict)  # stage name -> the id of the cell that makes it
    saved: list[str] = field(default_factory=list)  # stages saved in its folder (or --reuse-from's): not paid

    def seconds(self, dev: str) -> float:
        return sum(s.times[dev]["seconds"] for s in self.stages if s.times.get(dev))

    def not_measured(self, dev: str) -> list[str]:
        return [s.name for s in self.stages if not s.times.get(dev)]

    def extrapolated(self, dev: str) -> bool:
        return any(s.times[dev]["extrapolated"] for s in self.stages if s.times.get(dev))

    def images(self) -> int | None:
        return None if any(s.images is None for s in self.stages) else sum(s.images for s in self.stages)

    def privacy_seconds(self, dev: str) -> float:
        return sum(s.times[dev]["seconds"] for s in self.stages if s.stage == "privacy" and s.times.get(dev))


@dataclass
class StudyPlan:
    spec: StudySpec  # the selected cells
    out: Path | None
    cells: list[CellCost]
    workers: int
    devices: tuple[str, ...]
    finished_elsewhere: set[str] = field(default_factory=set)  # finished cells outside --only that made shared parts

    def chain(self, dev: str) -> tuple[float, list[str]]:
        """The longest chain of cells that wait for one another (seconds, ids first to last). A cell starts
        when the runs of the cells it waits for are done: their privacy audits run beside it."""
        cost = {c.cell.id: c.seconds(dev) for c in self.cells}
        run = {c.cell.id: c.seconds(dev) - c.privacy_seconds(dev) for c in self.cells}
        deps = dependencies(self.spec.cells)
        start: dict[str, tuple[float, list[str]]] = {}  # when a cell can start, and the chain before it
        for c in self.spec.cells:  # a cell waits only for earlier cells
            start[c.id] = max(((start[d][0] + run[d], start[d][1] + [d]) for d in deps[c.id]),
                              default=(0.0, []), key=lambda b: b[0])
        return max(((s + cost[i], before + [i]) for i, (s, before) in start.items()), key=lambda b: b[0], default=(0.0, []))

    def totals(self) -> dict:
        todo = [c for c in self.cells if not c.finished]
        images = [c.images() for c in todo]
        out = {"cells": len(self.cells), "finished": len(self.cells) - len(todo), "to_run": len(todo),
               "images": None if None in images else sum(images),
               "privacy_cells": sum(1 for c in todo if c.cell.privacy is not None)}
        for dev in self.devices:
            total = sum(c.seconds(dev) for c in todo)
            chain_s, chain = self.chain(dev)
            spread = total / self.workers
            out[dev] = {"seconds": total, "extrapolated": any(c.extrapolated(dev) for c in todo),
                        "not_measured": {c.cell.id: c.not_measured(dev) for c in todo if c.not_measured(dev)},
                        "privacy_seconds": sum(c.privacy_seconds(dev) for c in todo),
                        "wall": {"workers": self.workers, "total_over_workers_s": spread, "longest_chain_s": chain_s,
                                 "longest_chain": chain, "at_least_s": max(spread, chain_s),
                                 "bound": "longest chain" if chain_s > spread else "total / workers"}}
        return out


# --------------------------------------------------------------------------- planning


def plan_study(spec: StudySpec, out: str | Path | None = None, only: list[str] | None = None,
               max_workers: int | None = None, device: str | None = None, reuse_from: str | Path | None = None) -> StudyPlan:
    """The cost of running ``spec`` (its cells matching ``only``) into ``out`` (taking saved stages from
    ``reuse_from``'s cells, as ``ddlnl study --reuse-from`` would); reads no image, writes nothing."""
    if device is not None and device not in FIGURE_DEVICES:
        raise ConfigError(f"--device {device!r} has no measured figures", f"use one of: {', '.join(FIGURE_DEVICES)}")
    selected = spec.select(only) if only else spec
    out = None if out is None else Path(out)
    reuse_from = None if reuse_from is None else reuse_source(reuse_from, out)
    done = finished_cells(spec.cells, out) if out is not None else set()
    makers: dict[tuple, str] = {}  # a shared stage's key -> the cell that makes it
    experts: dict[tuple, tuple[int, str]] = {}  # an expert cache key -> (experts made, the first cell making them)
    for c in spec.cells:  # what finished cells made is there, for every selected cell
        if c.id in done:
            _claim(c, cell_stages(c), makers, experts)
    costs = []
    for number, c in enumerate(selected.cells, start=1):
        if c.id in done:
            costs.append(CellCost(c, number, finished=True))
            continue
        cost = CellCost(c, number, finished=False)
        saved = saved_stages(c, out, reuse_from)
        for st in cell_stages(c):
            _pay(cost, st, makers, experts, saved)
        costs.append(cost)
    devices = (FIGURE_DEVICES[device],) if device else tuple(DEVICES)
    return StudyPlan(selected, out, costs, max(1, int(max_workers or spec.max_workers or DEFAULT_WORKERS)), devices,
                     finished_elsewhere={c.id for c in spec.cells if c.id in done} - {c.id for c in selected.cells})


def cell_stages(cell: Cell) -> list[Stage]:
    """Every stage the cell's run would execute (``ddlnl run --dry-run``'s), then its privacy audit's."""
    try:
        pl = plan(cell.spec())
    except ConfigError as e:
        raise ConfigError(f"cell {cell.id}: {e.problem}", e.fix) from None
    audit = [] if cell.privacy is None else audit_stages(pl, cell.privacy.shadows, cell.privacy.targets)
    return [s for s in pl.stages if not s.skipped] + audit


def shared_part(stage: Stage) -> str | None:
    """The :data:`ddlnl.stages.SHARED_PARTS` entry a plan stage is (None: the cell makes it itself)."""
    if stage.stage == "baseline":
        name = stage.name.removeprefix("baseline ")
        return "full_noisy" if name == "ce" else f"baseline_{name}"
    return "random" if stage.name == "random control" else None


def share_key(cell: Cell, stage: Stage) -> tuple | None:
    """What the same stage of a sibling must equal for one of the two to make it for both (None: never shared).

    A shared part: the group (and the IPC, for the random control) and the stage's work and figure inputs;
    experts: the group, the cleaner the method distils after, and the cache key less the data."""
    part = shared_part(stage)
    if part is not None:
        where = (cell.group, cell.ipc) if part == "random" else (cell.group,)
        return (part, *where, stage.images, _canonical(stage.match), _canonical(stage.shape))
    if stage.expert_cache is not None:
        cleaner = cell.spec().clean_key() if cell.clean_first else None
        return ("experts", cell.group, _canonical(cleaner), _canonical(stage.expert_cache["key"]))
    return None


def _claim(cell: Cell, stages: list[Stage], makers: dict, experts: dict) -> None:
    """Record what a finished cell made (its shared stages and its experts)."""
    for st in stages:
        key = share_key(cell, st)
        if key is None:
            continue
        if st.expert_cache is not None:
            had = experts.get(key, (0, cell.id))
            experts[key] = (max(had[0], st.expert_cache["experts"]), had[1])
        else:
            makers.setdefault(key, cell.id)


def saved_stages(cell: Cell, out: Path | None, reuse_from: str | Path | None) -> set[str]:
    """The stage files (names) the cell's run would find: in its own folder under ``out``, and in the
    same-id cell of ``reuse_from`` (which ``--reuse-from`` copies in before the run)."""
    found = set()
    for root in (out, reuse_from):
        if root is not None:
            found |= {p.stem for p in (Path(root) / "cells" / cell.id / "stages").glob("*.json")}
    return found


def _pay(cost: CellCost, st: Stage, makers: dict, experts: dict, saved: set[str] = frozenset()) -> None:
    """Add ``st`` to what the cell pays, unless it is saved for the cell or a sibling made it (experts: only
    the ones not made yet)."""
    key = share_key(cost.cell, st)
    if st.saved_as is not None and st.saved_as in saved:
        cost.saved.append(st.name)
        if key is not None:
            makers.setdefault(key, cost.cell.id)  # the cell publishes it for its siblings as if it had made it
        return
    if key is None:
        cost.stages.append(st)
    elif st.expert_cache is not None:
        want = st.expert_cache["experts"]
        made, first = experts.get(key, (0, cost.cell.id))
        experts[key] = (max(made, want), first)
        if made >= want:
            cost.from_siblings[st.name] = first
        elif made == 0:
            cost.stages.append(st)
        else:  # the cache trains only the missing ones
            cost.stages.append(combined_stage(st.stage, st.name, f"the {want - made} missing of {st.work}",
                                              [(st, (want - made) / want)], note=st.note))
            cost.from_siblings[f"{made} of the {want} {st.name}"] = first
    elif key in makers:
        cost.from_siblings[st.name] = makers[key]
    else:
        makers[key] = cost.cell.id
        cost.stages.append(st)


def _canonical(obj) -> str:
    return json.dumps(obj, sort_keys=True, default=str)


# --------------------------------------------------------------------------- output


def _time(c: CellCost, dev: str) -> str:
    """A cell's time on ``dev``: its measured stages' sum, and how many stages have no figure."""
    missing = len(c.not_measured(dev))
    if missing and missing == len(c.stages):
        return NOT_MEASURED
    text = f"{'~' if c.extrapolated(dev) else ''}{duration(c.seconds(dev))}"
    return text + (f" + {missing} not measured" if missing else "")


def format_study_plan(sp: StudyPlan) -> str:
    """The table ``ddlnl study --dry-run`` prints: one row per cell, then the totals and the wall-clock bound."""
    tot = sp.totals()
    number = {c.cell.id: c.number for c in sp.cells}
    groups = len({c.cell.group for c in sp.cells})
    where = (f"folder {sp.out}: {tot['finished']} finished (counted as 0), {tot['to_run']} to run"
             if sp.out is not None else f"no --out: all {tot['to_run']} cells counted as to run")
    lines = ["dry run: nothing is trained, no data is loaded and nothing is written", "",
             f"study: {sp.spec.name} ({sp.spec.where}); {len(sp.cells)} cells in {groups} group{'' if groups == 1 else 's'}; {where}",
             "each cell: the stages `ddlnl run --dry-run` plans for it (docs/cost.md); a baseline is made once per group, "
             "the random control once per group and IPC, experts once per cache key: a row lists what it takes "
             "from an earlier cell (#) instead of making it, and the stages saved in its folder (or --reuse-from's)", ""]
    header = (["#", "cell", "status", "images processed"] + [f"time, {DEVICES[d]}" for d in sp.devices]
              + ["made by another cell, or saved"])
    lines += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for c in sp.cells:
        taken = ", ".join([f"{name} (#{number[who]})" if who in number else f"{name} (finished {who})"
                           for name, who in c.from_siblings.items()] + [f"{name} (saved)" for name in c.saved])
        if c.finished:
            row = [str(c.number), c.cell.id, "finished", "0"] + ["0 s"] * len(sp.devices) + [""]
        else:
            images = c.images()
            row = ([str(c.number), c.cell.id, "to resume" if c.saved else "to run", "unknown" if images is None else format_count(images)]
                   + [_time(c, d) for d in sp.devices] + [taken])
        lines.append("| " + " | ".join(row) + " |")
    lines += ["", f"total: {tot['to_run']} of {tot['cells']} cells to run, "
                  f"{'unknown' if tot['images'] is None else format_count(tot['images'])} images processed"]
    for dev in sp.devices:
        lines += _device_totals(sp, tot, dev, number)
    lines += ["", "~: includes times scaled from a figure measured at another configuration "
                  "(`ddlnl run --dry-run` on one cell shows each stage and its figure)."]
    if any(c.saved for c in sp.cells):
        lines.append("saved: the stage's file is in the cell's folder (or --reuse-from's); its key is checked when the run "
                     "starts, and a stage saved under another configuration is recomputed. A distillation's checkpoint is not counted.")
    return "\n".join(lines)


def _device_totals(sp: StudyPlan, tot: dict, dev: str, number: dict) -> list[str]:
    t, approx = tot[dev], "~" if tot[dev]["extrapolated"] else ""
    todo = [c for c in sp.cells if not c.finished and c.stages]
    if todo and all(len(c.not_measured(dev)) == len(c.stages) for c in todo):
        return [f"  {DEVICES[dev]}: no stage of these cells was measured on it"]
    hours = t["seconds"] / 3600
    amount = (f"{approx}{hours:.2f} GPU-hours ({approx}{t['seconds']:,.0f} GPU-seconds)" if dev == "h100" else
              f"{approx}{hours:.2f} hours of the whole machine ({approx}{t['seconds']:,.0f} s)")
    lines = [f"  {DEVICES[dev]}: {amount}" + (" for the measured stages" if t["not_measured"] else "")]
    if t["not_measured"]:
        stages = sorted({s for names in t["not_measured"].values() for s in names})
        lines.append(f"    not measured, so not included: {', '.join(stages)} (in {len(t['not_measured'])} of {tot['to_run']} cells)")
    if tot["privacy_cells"]:
        lines.append(f"    of which the privacy audit of {tot['privacy_cells']} cells: {approx}{duration(t['privacy_seconds'])} "
                     "(docs/privacy.md's networks per target at the cell's own stage costs: an estimate)")
    else:
        lines.append("    privacy audit: not planned (no cell to run sets privacy)")
    w = t["wall"]
    chain = " -> ".join(f"#{number[i]}" for i in w["longest_chain"]) or "none"
    lines += [f"    wall clock with --executor processes, {w['workers']} workers: at least {approx}{duration(w['at_least_s'])}, "
              f"the {w['bound']}",
              f"      (total / {w['workers']} = {duration(w['total_over_workers_s'])}; longest chain of cells that wait for "
              f"one another, {chain}: {duration(w['longest_chain_s'])}; workers sharing one device are slower than its figure)"]
    return lines


def study_plan_dict(sp: StudyPlan) -> dict:
    """The plan as JSON (``--json``): each cell's paid stages with their estimates, what siblings make, and the totals."""
    def estimate(s: Stage) -> dict:
        return {DEVICES[d]: NOT_MEASURED if not s.times.get(d) else
                {"seconds": round(s.times[d]["seconds"], 1), "extrapolated": s.times[d]["extrapolated"]} for d in sp.devices}

    cells = [{"number": c.number, "id": c.cell.id, "group": c.cell.group, "status": "finished" if c.finished else "to run",
              "images_processed": 0 if c.finished else c.images(),
              "seconds": {DEVICES[d]: round(c.seconds(d), 1) for d in sp.devices},
              "stages_not_measured": {DEVICES[d]: c.not_measured(d) for d in sp.devices},
              "stages": [{"stage": s.stage, "name": s.name, "work": s.work, "images_processed": s.images, "estimate": estimate(s)}
                         for s in c.stages],
              "made_by_another_cell": c.from_siblings, "saved": c.saved} for c in sp.cells]
    tot = sp.totals()
    totals = {k: tot[k] for k in ("cells", "finished", "to_run", "privacy_cells")} | {"images_processed": tot["images"]}
    for d in sp.devices:
        t = tot[d]
        totals[DEVICES[d]] = {"seconds": round(t["seconds"], 1), "hours": round(t["seconds"] / 3600, 3),
                              "includes_extrapolations": t["extrapolated"], "stages_not_measured": t["not_measured"],
                              "privacy_seconds": round(t["privacy_seconds"], 1),
                              "wall_clock_processes": {k: round(v, 1) if isinstance(v, float) else v for k, v in t["wall"].items()}}
    return {"dry_run": True, "study": sp.spec.name, "file": sp.spec.where, "out": None if sp.out is None else str(sp.out),
            "cells": cells, "totals": totals}


def write_json_text(sp: StudyPlan) -> str:
    return json.dumps(study_plan_dict(sp), indent=2, default=str, ensure_ascii=False)
