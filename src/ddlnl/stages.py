"""A run folder: its saved stages, its artefacts, and what sibling study cells may share.

A *stage* is one finished step of a run (a baseline trained, a set evaluated), saved as
``stages/<name>.json`` = ``{"key": K, "value": V}``. ``K`` is a hash of everything the step
depends on; a rerun whose key matches reuses ``V``, any other recomputes it. Every file is
written atomically (temp file + rename), so a kill at any moment leaves either the old or
the new file, and a rerun resumes from the last finished stage.

The cells of a study that share their data (a *group*) also share the steps that depend on
nothing else: the noise realisation, the full-noisy baseline, every other baseline on the full
noisy set (GCE, DivideMix ...) and, per IPC, the random control. :meth:`RunFolder.import_shared` and :meth:`RunFolder.export_shared` move those
between a cell folder and the study's shared folders; the executors call them and never
name a file. A shared stage still carries its key, so a cell whose configuration differs
recomputes it instead of reusing it.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ddlnl.utils.io import atomic_path, file_lock, write_json


def stage_key(obj) -> str:
    """A short stable hash of a JSON-able object (the key a stage is saved under)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class SharedPart:
    """A step sibling study cells share: its files (run folder name, shared folder name), written
    in this order (the last is the one a reader checks for), and the file that holds its value.
    A part whose names hold ``{name}`` stands for every such step (one per baseline): its
    instances are the names found on the side being copied from."""

    name: str
    folder: str  # under the study folder; {group} is filled in
    files: tuple[tuple[str, str], ...]  # {ipc} (and {name}) are filled in
    value_file: str

    def named(self, name: str) -> SharedPart:
        """The instance of a ``{name}`` part for one step (e.g. the baseline ``gce``)."""
        return SharedPart(self.name.format(name=name), self.folder,
                          tuple((m.replace("{name}", name), t.replace("{name}", name)) for m, t in self.files),
                          self.value_file.format(name=name))


SHARED_PARTS = (
    SharedPart("noise", "noise/{group}", (("noisy_labels.npy", "noisy_labels.npy"), ("noise.json", "noise.json")), "noisy_labels.npy"),
    SharedPart("full_noisy", "baseline/{group}", (("stages/full_noisy.json", "full_noisy.json"),), "stages/full_noisy.json"),
    SharedPart("baseline_{name}", "baseline/{group}", (("stages/baseline_{name}.json", "baseline_{name}.json"),),
               "stages/baseline_{name}.json"),
    SharedPart("random", "baseline/{group}",
               (("random.safetensors", "random-ipc{ipc}.safetensors"), ("stages/random.json", "random-ipc{ipc}.json")),
               "stages/random.json"),
)


class RunFolder:
    """The folder of one run (``ddlnl run --out``, or a study cell)."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def file(self, name: str) -> Path:
        """An artefact of the run (``result.json``, ``random.safetensors`` ...)."""
        return self.path / name

    def lock(self, on_wait=None):
        """Held while a run uses the folder: one run at a time per folder."""
        self.path.mkdir(parents=True, exist_ok=True)
        return file_lock(self.path / ".run.lock", on_wait=on_wait)

    # -- stages ---------------------------------------------------------------------------
    def stage_path(self, name: str) -> Path:
        return self.path / "stages" / f"{name}.json"

    def load(self, name: str, key_obj) -> dict | None:
        """The saved value of stage ``name`` if it was computed under the same key."""
        path = self.stage_path(name)
        if path.exists():
            try:
                saved = json.loads(path.read_text())
            except (OSError, ValueError):
                return None  # a damaged stage is recomputed
            if isinstance(saved, dict) and saved.get("key") == stage_key(key_obj):
                return saved["value"]
        return None

    def save(self, name: str, key_obj, value) -> None:
        write_json(self.stage_path(name), {"key": stage_key(key_obj), "value": value})

    def stage(self, name: str, key_obj, compute: Callable[[], dict]) -> dict:
        """The value of stage ``name``: loaded when saved under ``key_obj``, else computed and saved."""
        value = self.load(name, key_obj)
        if value is None:
            value = compute()
            self.save(name, key_obj, value)
        return value

    # -- reuse of another folder's work ---------------------------------------------------
    RESUMABLE = ("stages/*.json", "checkpoints/*.pt", "*.safetensors", "noisy_labels.npy", "noise.json")

    def seed_from(self, other: RunFolder) -> list[str]:
        """Copy ``other``'s resumable state (saved stages, distillation checkpoints, sets, the noise realisation)
        where this folder has no file of that name; return the names copied. Never its result, done, log or
        audit files: the run here decides, stage by stage through each stage's key, what it reuses, so work
        done under another configuration is recomputed, not taken."""
        copied = []
        for pattern in self.RESUMABLE:
            for src in sorted(other.path.glob(pattern)):
                rel = src.relative_to(other.path)
                if src.is_file() and not (self.path / rel).exists():
                    _copy(src, self.path / rel)
                    copied.append(rel.as_posix())
        return copied

    # -- sharing between the cells of a study ---------------------------------------------
    def import_shared(self, shared_root: Path, group: str, ipc: int) -> dict[str, str]:
        """Copy the parts a sibling cell already published into this folder, where it has none.

        Returns ``{part: sha256 of its value file}`` of what was copied, for :meth:`used_unchanged`."""
        imported = {}
        for part, folder, files in self._parts(shared_root, group, ipc, from_shared=True):
            if not (self.path / part.value_file).exists() and all((folder / theirs).exists() for _, theirs in files):
                for mine, theirs in files:
                    _copy(folder / theirs, self.path / mine)
                imported[part.name] = _digest(self.path / part.value_file)
        return imported

    def used_unchanged(self, part: str, digest: str) -> bool:
        """True when an imported part was used as is (the run rewrites a stage whose key differs)."""
        path = self.path / _value_file(part)
        return path.exists() and _digest(path) == digest

    def export_shared(self, shared_root: Path, group: str, ipc: int) -> None:
        """Publish this folder's shareable parts for sibling cells (first writer wins; each part's last file last)."""
        for _, folder, files in self._parts(shared_root, group, ipc, from_shared=False):
            for mine, theirs in files:
                if (self.path / mine).exists() and not (folder / theirs).exists():
                    _copy(self.path / mine, folder / theirs)

    def _parts(self, shared_root: Path, group: str, ipc: int, *, from_shared: bool):
        """Each shared part with its shared folder and (mine, theirs) file names; a ``{name}`` part once
        per step found on the side copied from (the shared folder on import, this folder on export)."""
        for part in SHARED_PARTS:
            folder = Path(shared_root) / part.folder.format(group=group)
            for one in self._instances(part, folder if from_shared else self.path, from_shared):
                yield one, folder, [(m, t.format(ipc=ipc)) for m, t in one.files]

    @staticmethod
    def _instances(part: SharedPart, where: Path, from_shared: bool) -> list[SharedPart]:
        if "{name}" not in part.name:
            return [part]
        mine, theirs = part.files[-1]
        pattern = Path(theirs if from_shared else mine)
        head, tail = pattern.name.split("{name}")
        found = sorted((where / pattern.parent).glob(head + "*" + tail)) if (where / pattern.parent).is_dir() else []
        return [part.named(f.name[len(head): len(f.name) - len(tail)]) for f in found]


def _value_file(part: str) -> str:
    """The value file of the shared part (or ``{name}`` part instance, e.g. ``baseline_gce``) called ``part``."""
    for p in SHARED_PARTS:
        if p.name == part:
            return p.value_file
        if "{name}" in p.name:
            head, tail = p.name.split("{name}")
            if part.startswith(head) and part.endswith(tail) and len(part) > len(head) + len(tail):
                return p.named(part[len(head): len(part) - len(tail)]).value_file
    raise KeyError(part)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
