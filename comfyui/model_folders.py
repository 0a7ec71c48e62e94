# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What the loader's `model` input offers: the DiT4SR pipeline folders under ComfyUI's `diffusers` model folders
(`models/diffusers`, and those `extra_model_paths.yaml` adds), and the released weights by name.

`folder_paths.get_filename_list("diffusers")` lists no folders, so the folders are walked for `model_index.json`, as
ComfyUI's own `DiffusersLoader` does; only those whose index names the DiT4SR pipeline class are offered (the same
folder holds other Diffusers pipelines, SD3.5-medium's among them when the released weights were downloaded there).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import folder_paths

from diffusers_dit4sr.constants import RELEASED_DIT4SR_MODEL

RELEASED_MODEL = f"{RELEASED_DIT4SR_MODEL} (released)"
"""The `model` choice of the released weights (a variant of `acceptee/DiT4SR` with SD3.5-medium), downloaded into
the first `diffusers` model folder when first run."""
PIPELINE_CLASS = "StableDiffusion3SRPipeline"


@dataclass(frozen=True)
class ModelSource:
    """Where the chosen model comes from: a pipeline `folder`, or the released weights under `roots` (the
    `diffusers` model folders: a complete copy in any of them is used, or the first one gets the download)."""

    choice: str
    folder: Path | None = None
    roots: tuple[Path, ...] = ()

    @property
    def released(self) -> bool:
        return self.folder is None


def model_roots() -> list[Path]:
    """ComfyUI's `diffusers` model folders, in ComfyUI's order."""
    return [Path(path) for path in folder_paths.get_folder_paths("diffusers")]


def model_choices() -> list[str]:
    """The released weights, then every DiT4SR pipeline folder (relative to its model folder, `/`-separated)."""
    found = []
    for root in model_roots():
        for folder in _pipeline_folders(root):
            name = folder.relative_to(root).as_posix()
            if name not in found:
                found.append(name)
    return [RELEASED_MODEL, *sorted(found, key=str.lower)]


def resolve_model(choice: str) -> ModelSource:
    """The source of a `model` choice; a `ValueError` naming the input if the folder is gone."""
    roots = model_roots()
    if choice == RELEASED_MODEL:
        return ModelSource(choice, roots=tuple(roots))
    for root in roots:
        folder = root / choice
        if _is_pipeline_folder(folder):
            return ModelSource(choice, folder=folder)
    searched = ", ".join(str(root) for root in roots)
    raise ValueError(
        f"model {choice!r}: no DiT4SR pipeline folder of that name (with a model_index.json) under {searched}; "
        "reload the page (R) to refresh the list"
    )


def _pipeline_folders(root: Path) -> list[Path]:
    """The DiT4SR pipeline folders under `root`, following links; a pipeline's own subfolders are not searched."""
    found = []
    for current, subfolders, _ in os.walk(root, followlinks=True):
        folder = Path(current)
        if _is_pipeline_folder(folder):
            found.append(folder)
            subfolders.clear()
        else:
            subfolders[:] = [name for name in subfolders if not name.startswith(".")]
    return found


def _is_pipeline_folder(folder: Path) -> bool:
    """Whether `folder` holds a `model_index.json` naming the DiT4SR pipeline (saved as a class name, or as the
    `[module, class]` of its loader module)."""
    try:
        index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    class_name = index.get("_class_name") if isinstance(index, dict) else None
    if isinstance(class_name, list) and class_name:
        class_name = class_name[-1]
    return class_name == PIPELINE_CLASS
