# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Writing the results of a folder run: `save_output` is the one place an output image is written, atomically, so
that an interrupted run never leaves a partial file; `remove_stale_outputs` removes what a killed run left."""

from __future__ import annotations

from pathlib import Path

import PIL.Image

from ..constants import OUTPUT_SUFFIXES
from ..file_utils import atomic_write_path, remove_stale_temporary_files

__all__ = ["SAVE_OPTIONS", "remove_stale_outputs", "save_output"]

SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
"""Lossy formats get a high quality: PIL's default JPEG quality (75) would blur away the restored detail."""


def save_output(source_image: PIL.Image.Image, output_image: PIL.Image.Image, target_path: Path) -> None:
    """Writes `output_image`, the result of `source_image`, to `target_path` in the format its extension names.

    Saves through a temporary file in the target's folder. `source_image` is what the output was made from (for
    what an output may carry over from its source).
    """
    image_format = PIL.Image.registered_extensions()[target_path.suffix.lower()]
    with atomic_write_path(target_path) as temporary:
        output_image.save(temporary, format=image_format, **SAVE_OPTIONS.get(image_format, {}))


def remove_stale_outputs(folders: list[Path]) -> list[Path]:
    """Removes the temporary files that a killed earlier run left in the output `folders` (never a running one's);
    returns their paths."""
    return [path for folder in sorted(set(folders)) for path in remove_stale_temporary_files(folder, OUTPUT_SUFFIXES)]
