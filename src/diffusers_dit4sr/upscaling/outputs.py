# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What a killed run left in the output folders: `remove_stale_outputs`. The results themselves are written by
`photo.save_upscaled`, atomically, so that an interrupted run never leaves a partial file."""

from __future__ import annotations

from pathlib import Path

from ..constants import OUTPUT_SUFFIXES
from ..file_utils import remove_stale_temporary_files

__all__ = ["remove_stale_outputs"]


def remove_stale_outputs(folders: list[Path]) -> list[Path]:
    """Removes the temporary files that a killed earlier run left in the output `folders` (never a running one's);
    returns their paths."""
    return [path for folder in sorted(set(folders)) for path in remove_stale_temporary_files(folder, OUTPUT_SUFFIXES)]
