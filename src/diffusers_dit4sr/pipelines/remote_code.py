# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What lets Diffusers' generic loader, `DiffusionPipeline.from_pretrained`, load a saved `StableDiffusion3SRPipeline`.

Diffusers looks a string `_class_name` of `model_index.json` up in its own namespace, where our class is not. For a
class that lives elsewhere it reads `_class_name` as `[module_file, ClassName]` with `module_file.py` beside the index,
and imports that file when the caller passes `trust_remote_code=True`. So a saved pipeline holds a loader module,
`pipeline_dit4sr.py`, whose only code imports our class from the installed library (and names
`pip install diffusers-dit4sr` when it is missing), and its index names that module.

Diffusers also takes that list form as remote code when `StableDiffusion3SRPipeline.from_pretrained` loads the folder,
and refuses it without `trust_remote_code`. Our class needs no code from the folder, so it reads the list that names
it as its plain class name (`local_class_name`), and loads both these folders and those written before the loader.

Diffusers' Hub download accepts a component only if its library is one it knows (`LOADABLE_CLASSES`), and our
transformer is recorded by its own module path; `register_component_libraries` adds that module to the libraries
Diffusers knows (loaded with `ModelMixin`'s methods, as every Diffusers model), once this library is imported.
"""

from __future__ import annotations

import os
from typing import Any

from ..file_utils import atomic_write_path

__all__ = [
    "COMPONENT_LIBRARIES",
    "LOADER_MODULE",
    "LOADER_SOURCE",
    "local_class_name",
    "register_component_libraries",
    "remote_class_name",
    "write_loader_module",
]

COMPONENT_LIBRARIES = ("diffusers_dit4sr.models.transformer_dit4sr",)
"""The modules `model_index.json` records for our components (their paths are public API)."""

PIPELINE_CLASS_NAME = "StableDiffusion3SRPipeline"
LOADER_MODULE = "pipeline_dit4sr"
"""The loader module's name: `model_index.json`'s `_class_name` is `[LOADER_MODULE, PIPELINE_CLASS_NAME]`."""
LOADER_SOURCE = f'''\
"""Lets `DiffusionPipeline.from_pretrained(this_folder_or_repo, trust_remote_code=True)` load this DiT4SR pipeline.

It holds no pipeline code: it imports {PIPELINE_CLASS_NAME} from the installed diffusers-dit4sr library
(https://pypi.org/project/diffusers-dit4sr/). Without this file, load the pipeline with
`diffusers_dit4sr.{PIPELINE_CLASS_NAME}.from_pretrained`, which needs no `trust_remote_code`.
"""

try:
    from diffusers_dit4sr import {PIPELINE_CLASS_NAME}
except ModuleNotFoundError as error:
    if error.name != "diffusers_dit4sr":
        raise
    raise ImportError(
        "This DiT4SR pipeline needs the diffusers-dit4sr library: pip install diffusers-dit4sr"
    ) from None

__all__ = ["{PIPELINE_CLASS_NAME}"]
'''
"""The loader module's text, written as `pipeline_dit4sr.py` beside `model_index.json`."""


def remote_class_name(pipeline_class: type) -> str | list[str]:
    """
    The `_class_name` to save for `pipeline_class`: `[LOADER_MODULE, "StableDiffusion3SRPipeline"]` for our class,
    the plain name for a subclass (the loader would give Diffusers our class in its place).
    """
    if pipeline_class.__module__.startswith("diffusers_dit4sr.") and pipeline_class.__name__ == PIPELINE_CLASS_NAME:
        return [LOADER_MODULE, PIPELINE_CLASS_NAME]
    return pipeline_class.__name__


def local_class_name(config: dict[str, Any]) -> dict[str, Any]:
    """`config` (a `model_index.json`) with a `_class_name` that names our class through the loader module read as
    the plain class name; any other `_class_name` is left as it is."""
    if config.get("_class_name") == [LOADER_MODULE, PIPELINE_CLASS_NAME]:
        return {**config, "_class_name": PIPELINE_CLASS_NAME}
    return config


def write_loader_module(save_directory: str | os.PathLike) -> None:
    """Writes the loader module into `save_directory` (created if needed), atomically."""
    with atomic_write_path(os.path.join(save_directory, f"{LOADER_MODULE}.py")) as path:
        path.write_text(LOADER_SOURCE, encoding="utf-8")


def register_component_libraries() -> None:
    """Lets Diffusers download a Hub repository whose components live in `COMPONENT_LIBRARIES`: its download refuses
    a component library it does not know, even one it would then load (our models are `ModelMixin`s)."""
    from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES

    for library in COMPONENT_LIBRARIES:
        LOADABLE_CLASSES.setdefault(library, {"ModelMixin": ["save_pretrained", "from_pretrained"]})
