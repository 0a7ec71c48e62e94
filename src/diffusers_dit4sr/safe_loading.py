# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Loading weights without running code: safetensors only, unless the caller allows pickle files.

Pickle weights (`.bin`, `.pt`, `.ckpt`) can run any code when they are loaded, and Diffusers falls back to them
silently where a folder has no safetensors. The library's `from_pretrained` methods therefore ask for safetensors
(`use_safetensors=True`) unless the caller passes `allow_pickle=True` (or `use_safetensors` itself), and a local
folder that holds only pickle weights is refused before anything is read, with a message that says how to convert
it or allow it. torch 2.6 or later (the floor in `pyproject.toml`) loads pickle weights with `weights_only=True`,
which earlier versions let a crafted file bypass.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

__all__ = ["PICKLE_SUFFIXES", "pickle_only_weights", "safetensors_options"]

PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
"""Weight files in Python's pickle format."""
PICKLE_RISK = "which can run any code when they are loaded"


def pickle_only_weights(path: str | os.PathLike) -> list[Path]:
    """The pickle weight files of the folders under `path` (itself included) that have no safetensors: a model
    folder, or the component folders of a pipeline; relative to `path`. Empty for a Hub id or a folder of
    safetensors."""
    root = Path(path)
    if not root.is_dir():
        return []
    found = []
    for folder in [root, *sorted(child for child in root.iterdir() if child.is_dir())]:
        files = sorted(child for child in folder.iterdir() if child.is_file())
        if not any(child.suffix == ".safetensors" for child in files):
            found += [child.relative_to(root) for child in files if child.suffix in PICKLE_SUFFIXES]
    return found


def safetensors_options(cls: type, path: str | os.PathLike, kwargs: dict[str, Any]) -> dict[str, Any]:
    """
    The keyword arguments for Diffusers' `from_pretrained(path, **kwargs)` of `cls`, loading safetensors only.

    `allow_pickle=True` (taken out of `kwargs`) gives Diffusers' own behaviour back: safetensors where there are
    some, else pickle files; so does any `use_safetensors` the caller passes (`False`: pickle files only; a pipeline
    passes its own to each component it loads, after checking the whole folder). Otherwise `use_safetensors=True`,
    and a local folder (or its `subfolder`) with only pickle weights is refused with a `ValueError` that names the
    files and says how to convert them or allow them.
    """
    kwargs = dict(kwargs)
    if kwargs.pop("allow_pickle", False) or "use_safetensors" in kwargs:
        return kwargs
    kwargs["use_safetensors"] = True
    subfolder = kwargs.get("subfolder")
    folder = Path(path) / subfolder if subfolder else Path(path)
    pickles = pickle_only_weights(folder)
    if pickles:
        arguments = f"{str(path)!r}" + (f", subfolder={subfolder!r}" if subfolder else "")
        raise ValueError(
            f"{folder} holds weights only as pickle files ({', '.join(map(str, pickles))}), {PICKLE_RISK}; this "
            "library loads safetensors unless told otherwise. If you trust where the folder came from, convert it "
            f"once: `{cls.__name__}.from_pretrained({arguments}, allow_pickle=True).save_pretrained(...)` writes "
            "safetensors; or load it as it is with `allow_pickle=True`."
        )
    return kwargs
