# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Training checkpoints that a crash cannot take away: a checkpoint folder exists under its name only when it is
whole, and older ones go only after a newer one is.

`save_checkpoint` has every process write its part of `accelerator.save_state` into `checkpoint-{step}.incomplete`;
then one process lists every file with its size in `checkpoint.json`, flushes them all to the disk and renames the
folder to `checkpoint-{step}` (`file_utils.replace_folder`); only then are checkpoints beyond the limit removed,
oldest first. Killed at any point, the output folder keeps its last whole checkpoint: the worst a crash leaves is an
`.incomplete` folder, removed by the next save. `latest_checkpoint` finds the newest whole checkpoint and says why it passed over any newer one;
`check_checkpoint` is that check for one folder (the files of `checkpoint.json` are there with their sizes).
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..file_utils import INCOMPLETE_SUFFIX, atomic_write_path, replace_folder

__all__ = [
    "CHECKPOINT_MANIFEST",
    "LatestCheckpoint",
    "SavedCheckpoint",
    "check_checkpoint",
    "checkpoint_step",
    "latest_checkpoint",
    "list_checkpoints",
    "save_checkpoint",
]

CHECKPOINT_MANIFEST = "checkpoint.json"
"""The file that makes a checkpoint folder whole: the step and every file with its size, written last."""
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(?P<step>[0-9]+)$")
_INCOMPLETE_NAME = re.compile(rf"^checkpoint-[0-9]+(\.replaced)?{re.escape(INCOMPLETE_SUFFIX)}$")


@dataclass(frozen=True)
class SavedCheckpoint:
    """What `save_checkpoint` did: the new checkpoint, and the folders it removed (older checkpoints beyond the limit,
    and what interrupted saves left)."""

    path: Path
    removed: list[Path] = field(default_factory=list)


@dataclass(frozen=True)
class LatestCheckpoint:
    """What `latest_checkpoint` found: the newest whole checkpoint (None if there is none) and the newer folders it
    passed over, each with why."""

    path: Path | None
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    @property
    def step(self) -> int | None:
        return None if self.path is None else checkpoint_step(self.path)


def checkpoint_step(path: str | os.PathLike) -> int:
    """The training step of a `checkpoint-{step}` folder, from its name."""
    match = _CHECKPOINT_NAME.match(Path(path).name)
    if match is None:
        raise ValueError(f"{path} is not named checkpoint-<step>")
    return int(match["step"])


def list_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """The `checkpoint-{step}` folders in `output_dir`, whole or not, oldest step first."""
    folder = Path(output_dir)
    if not folder.is_dir():
        return []
    found = [path for path in folder.iterdir() if _CHECKPOINT_NAME.match(path.name) and path.is_dir()]
    return sorted(found, key=checkpoint_step)


def check_checkpoint(path: str | os.PathLike) -> str | None:
    """Why the checkpoint folder at `path` is not whole, or None: its `checkpoint.json` must be readable, name its
    step, and every file it lists must be there with its size."""
    path = Path(path)
    try:
        manifest = json.loads((path / CHECKPOINT_MANIFEST).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return (
            f"it has no {CHECKPOINT_MANIFEST}: its save was interrupted, or an older train_dit4sr.py wrote it (resume "
            "from it by its path to use it anyway)"
        )
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        return f"its {CHECKPOINT_MANIFEST} cannot be read: {error}"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not files:
        return f"its {CHECKPOINT_MANIFEST} lists no files"
    if manifest.get("step") != checkpoint_step(path):
        return f"its {CHECKPOINT_MANIFEST} is that of step {manifest.get('step')}"
    for name, size in sorted(files.items()):
        file = path / name
        if not file.is_file():
            return f"{name} is missing"
        if file.stat().st_size != size:
            return f"{name} is {file.stat().st_size} bytes, not the {size} it was saved with"
    return None


def latest_checkpoint(output_dir: str | os.PathLike) -> LatestCheckpoint:
    """The newest whole checkpoint in `output_dir` (`check_checkpoint`), with the newer ones it passed over and why."""
    skipped = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = check_checkpoint(path)
        if problem is None:
            return LatestCheckpoint(path, skipped)
        skipped.append((path, problem))
    return LatestCheckpoint(None, skipped)


def save_checkpoint(
    accelerator: Any, output_dir: str | os.PathLike, step: int, *, total_limit: int | None = None
) -> SavedCheckpoint:
    """
    Saves `accelerator`'s training state (`save_state`: models, optimizers, schedulers, random states, registered
    objects) as `output_dir/checkpoint-{step}`, whole or not at all; call it on every process.

    Every process writes its part into `checkpoint-{step}.incomplete`; after all have, the process that owns the
    files (the main one; each node's with `save_on_each_node`) writes `checkpoint.json`, flushes every file to the
    disk and renames the folder into place (an existing `checkpoint-{step}`, of an earlier run, is replaced only
    then). Then the oldest whole checkpoints beyond `total_limit` are removed, never the new one, with the folders
    interrupted saves left behind.

    Args:
        accelerator: The run's `accelerate.Accelerator`.
        output_dir: The training run's output folder.
        step: The global step, in the checkpoint's name.
        total_limit: How many whole checkpoints to keep (`None`: all).

    Returns:
        The new checkpoint and what was removed, on every process.
    """
    if total_limit is not None and total_limit < 1:
        raise ValueError(f"total_limit must be a positive number of checkpoints, got {total_limit}")
    output_dir = Path(output_dir)
    final = output_dir / f"checkpoint-{step}"
    incomplete = final.with_name(final.name + INCOMPLETE_SUFFIX)
    owner = _owns_files(accelerator)
    if owner:
        if incomplete.exists():
            shutil.rmtree(incomplete)  # a save of this step that a crash interrupted
        incomplete.mkdir(parents=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(incomplete))
    accelerator.wait_for_everyone()
    removed = []
    if owner:
        _write_manifest(incomplete, step)
        replace_folder(incomplete, final)
        removed = _prune(output_dir, keep=final, total_limit=total_limit)
    accelerator.wait_for_everyone()
    return SavedCheckpoint(final, removed)


def _owns_files(accelerator: Any) -> bool:
    """Whether this process renames and prunes: the one that writes the shared files of `save_state`."""
    if getattr(accelerator.project_configuration, "save_on_each_node", False):
        return accelerator.is_local_main_process
    return accelerator.is_main_process


def _write_manifest(folder: Path, step: int) -> None:
    """Lists every file of `folder` with its size in its `checkpoint.json`."""
    files = {
        path.relative_to(folder).as_posix(): path.stat().st_size
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }
    with atomic_write_path(folder / CHECKPOINT_MANIFEST) as manifest:
        manifest.write_text(json.dumps({"step": step, "files": files}, indent=2) + "\n", encoding="utf-8")


def _prune(output_dir: Path, keep: Path, total_limit: int | None) -> list[Path]:
    """Removes the folders interrupted saves left, then the oldest whole checkpoints beyond `total_limit` (`keep`
    counts and stays); folders that are not whole checkpoints are left to the user."""
    removed = [path for path in sorted(output_dir.iterdir()) if _INCOMPLETE_NAME.match(path.name) and path.is_dir()]
    if total_limit is not None:
        whole = [path for path in list_checkpoints(output_dir) if path == keep or check_checkpoint(path) is None]
        removed += [path for path in whole[: max(0, len(whole) - total_limit)] if path != keep]
    for path in removed:
        shutil.rmtree(path)
    return removed
