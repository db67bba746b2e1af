"""A run folder: its saved stages, its artefacts, and what sibling study cells may share.

A *stage* is one finished step of a run (a baseline trained, a set evaluated), saved as
``stages/<name>.json`` = ``{"key": K, "value": V}``. ``K`` is a hash of everything the step
depends on; a rerun whose key matches reuses ``V``, any other recomputes it. Every file is
written atomically (temp file + rename), so a kill at any moment leaves either the old or
the new file, and a rerun resumes from the last finished stage.

The cells of a study that share their data (a *group*) also share the steps that depend on
nothing else: the noise realisation, the full-noisy baseline and, per IPC, the random
control. :meth:`RunFolder.import_shared` and :meth:`RunFolder.export_shared` move those
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
    in this order (the last is the one a reader checks for), and the file that holds its value."""

    name: str
    folder: str  # under the study folder; {group} is filled in
    files: tuple[tuple[str, str], ...]  # {ipc} is filled in
    value_file: str


SHARED_PARTS = (
    SharedPart("noise", "noise/{group}", (("noisy_labels.npy", "noisy_labels.npy"), ("noise.json", "noise.json")), "noisy_labels.npy"),
    SharedPart("full_noisy", "baseline/{group}", (("stages/full_noisy.json", "full_noisy.json"),), "stages/full_noisy.json"),
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

    # -- sharing between the cells of a study ---------------------------------------------
    def import_shared(self, shared_root: Path, group: str, ipc: int) -> dict[str, str]:
        """Copy the parts a sibling cell already published into this folder, where it has none.

        Returns ``{part: sha256 of its value file}`` of what was copied, for :meth:`used_unchanged`."""
        imported = {}
        for part, folder, files in self._parts(shared_root, group, ipc):
            if not (self.path / part.value_file).exists() and all((folder / theirs).exists() for _, theirs in files):
                for mine, theirs in files:
                    _copy(folder / theirs, self.path / mine)
                imported[part.name] = _digest(self.path / part.value_file)
        return imported

    def used_unchanged(self, part: str, digest: str) -> bool:
        """True when an imported part was used as is (the run rewrites a stage whose key differs)."""
        path = self.path / next(p.value_file for p in SHARED_PARTS if p.name == part)
        return path.exists() and _digest(path) == digest

    def export_shared(self, shared_root: Path, group: str, ipc: int) -> None:
        """Publish this folder's shareable parts for sibling cells (first writer wins; each part's last file last)."""
        for _, folder, files in self._parts(shared_root, group, ipc):
            for mine, theirs in files:
                if (self.path / mine).exists() and not (folder / theirs).exists():
                    _copy(self.path / mine, folder / theirs)

    @staticmethod
    def _parts(shared_root: Path, group: str, ipc: int):
        for part in SHARED_PARTS:
            yield part, Path(shared_root) / part.folder.format(group=group), [(m, t.format(ipc=ipc)) for m, t in part.files]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _copy(src: Path, dst: Path) -> None:
    with atomic_path(dst) as tmp:
        shutil.copyfile(src, tmp)
