# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What an earlier run left in the output folders: the temporary files of a killed run (`remove_stale_outputs`), and
outputs that exist, which a rerun keeps when they are whole (`keep_existing_output`).

The results themselves are written by `photo.save_upscaled`, atomically and durably; an output can still be damaged
by what happens outside the run (a power cut before the disk had it, a copy cut short), so a rerun does not take an
existing file for a finished output without looking at it: its header must decode, its dimensions must be the ones
the run makes, and its data must be all there (cheap checks of the format's end or length fields, no decoding).
"""

from __future__ import annotations

import os
import struct
import warnings
from pathlib import Path

import PIL.Image

from ..constants import OUTPUT_SUFFIXES
from ..errors import one_line
from ..file_utils import remove_stale_temporary_files
from .events import RunEvents
from .jobs import Job, JobError, output_size, screen_image

__all__ = ["damaged_output", "keep_existing_output", "remove_stale_outputs"]

_PNG_END = struct.pack(">I", 0) + b"IEND" + struct.pack(">I", 0xAE426082)
"""The last 12 bytes of every PNG: the empty IEND chunk and its CRC."""
_JPEG_END = b"\xff\xd9"
_TIFF_DATA_TAGS = ((273, 279), (324, 325))
"""TIFF (offsets, byte counts) tags: strips, tiles."""


def remove_stale_outputs(folders: list[Path]) -> list[Path]:
    """Removes the temporary files that a killed earlier run left in the output `folders` (never a running one's);
    returns their paths."""
    return [path for folder in sorted(set(folders)) for path in remove_stale_temporary_files(folder, OUTPUT_SUFFIXES)]


def keep_existing_output(job: Job, scale: float, events: RunEvents) -> bool:
    """Whether `job`'s output exists and is to be kept: a whole image.

    Args:
        job: The image and its output.
        scale: The run's upscaling factor.
        events: Told why a damaged output is made again, or that an output of other dimensions is kept.

    Returns:
        False for a missing or damaged output (`damaged_output`; made again); True for a whole image, also one of
        other dimensions than `scale` makes of the input (an earlier run with other settings: replacing it is what
        `overwrite` is for).
    """
    if not job.target.exists():
        return False
    damage = damaged_output(job.target)
    if damage is not None:
        events.warning(f"{job.target} is damaged ({damage}): upscaling {job.source} again")
        return False
    try:
        expected = output_size(*screen_image(job.source, scale), scale)
    except (JobError, ValueError):  # the input cannot be upscaled now: the existing output is all there is
        return True
    with PIL.Image.open(job.target) as image:
        found = image.size
    if found != expected:
        events.warning(
            f"kept {job.target}: {found[0]}x{found[1]} px, made with other settings than this run's "
            f"{expected[0]}x{expected[1]} px (overwrite replaces it)"
        )
    return True


def damaged_output(path: str | os.PathLike) -> str | None:
    """Why the image file at `path` is not whole, or None: its header must decode and its data must all be there
    (PNG: the end chunk; JPEG: the end marker; WebP, BMP: the length in the header; TIFF: every strip or tile within
    the file). Reads the header and the file's end, never the pixels."""
    path = Path(path)
    try:
        with warnings.catch_warnings(), PIL.Image.open(path) as image:
            warnings.simplefilter("ignore")  # e.g. "Corrupt EXIF data" of a cut file: the answer is the damage
            file_format = image.format
            tiff_extents = _tiff_data_end(image) if file_format == "TIFF" else None
        size = path.stat().st_size
        with path.open("rb") as file:
            start = file.read(16)
            file.seek(max(0, size - len(_PNG_END)))
            end = file.read()
    except Exception as error:  # noqa: BLE001 (PIL reports unreadable files with many exception types)
        return f"it does not decode: {one_line(error)}"
    if file_format == "PNG" and end != _PNG_END:
        return "cut short: no PNG end chunk"
    if file_format == "JPEG" and not end.endswith(_JPEG_END):
        return "cut short: no JPEG end marker"
    if file_format == "WEBP" and struct.unpack("<I", start[4:8])[0] + 8 > size:
        return f"cut short: {size} bytes of the {struct.unpack('<I', start[4:8])[0] + 8} its header gives"
    if file_format == "BMP" and struct.unpack("<I", start[2:6])[0] > size:
        return f"cut short: {size} bytes of the {struct.unpack('<I', start[2:6])[0]} its header gives"
    if tiff_extents is not None and tiff_extents > size:
        return f"cut short: {size} bytes, its image data reaches byte {tiff_extents}"
    return None


def _tiff_data_end(image: PIL.Image.Image) -> int:
    """Where a TIFF's strips or tiles end, from its first page's header."""
    end = 0
    for offsets_tag, counts_tag in _TIFF_DATA_TAGS:
        offsets, counts = image.tag_v2.get(offsets_tag), image.tag_v2.get(counts_tag)
        if offsets is not None and counts is not None:
            pairs = zip(_values(offsets), _values(counts), strict=False)
            end = max([end, *(offset + count for offset, count in pairs)])
    return end


def _values(tag: int | tuple[int, ...]) -> tuple[int, ...]:
    return tag if isinstance(tag, tuple) else (tag,)
