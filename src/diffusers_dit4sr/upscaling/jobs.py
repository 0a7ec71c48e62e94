# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The jobs of a folder run: which images (`find_images`), where each result goes (`plan_jobs`), whether the
outputs can be written there (`check_outputs`), whether each input can work (`screen_image`) and which images go
through the pipeline together (`plan_batches`). Nothing here loads a model."""

from __future__ import annotations

import glob
import os
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from ..constants import DEFAULT_OUTPUT_DIR, IMAGE_EXTENSIONS, MAX_OUTPUT_SIDE
from ..errors import one_line
from ..photo import check_save_options, read_photo_size

__all__ = [
    "Job",
    "JobError",
    "PlanError",
    "check_outputs",
    "find_images",
    "names_output_file",
    "plan_batches",
    "plan_jobs",
    "screen_image",
]


class PlanError(ValueError):
    """The inputs or outputs of a run cannot work (no images, two inputs for one output, an output folder that
    cannot be written): nothing was done."""


class JobError(Exception):
    """One image could not be read, upscaled or written: reported, and the other images go on."""


@dataclass(frozen=True)
class Job:
    """One image to upscale: where it is read from and where its result goes."""

    source: Path
    target: Path

    @property
    def caption_file(self) -> Path:
        """Where a generated caption of this image is kept: beside the output, `foo.png` -> `foo.txt`."""
        return self.target.with_suffix(".txt")


def find_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files, images inside folders (sorted) and glob matches (sorted), in argument order, without duplicates."""
    images = []
    for given in inputs:
        text, path = str(given), Path(given)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(child for child in path.iterdir() if child.is_file() and _is_image_name(child))
        elif any(char in text for char in "*?["):
            # Expanded here too, for shells that pass patterns through (Windows' cmd, or a quoted pattern).
            matches = [Path(match) for match in sorted(glob.glob(text, recursive=True))]
            matches = [match for match in matches if match.is_file() and _is_image_name(match)]
        else:
            raise PlanError(f"no such file or folder: {text}")
        images.extend(matches)

    unique: dict[Path, Path] = {}
    for image in images:
        unique.setdefault(image.resolve(), image)
    if not unique:
        shown = " ".join(str(given) for given in inputs)
        raise PlanError(f"no images found in {shown} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return list(unique.values())


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def names_output_file(output: str | os.PathLike | None) -> bool:
    """`output` names one output file (an image extension, not an existing folder) rather than a folder."""
    return output is not None and _is_image_name(Path(output)) and not Path(output).is_dir()


def plan_jobs(images: list[Path], output: str | os.PathLike | None) -> list[Job]:
    """Pairs each image with its output path.

    Args:
        images: The input images (`find_images`).
        output: A file for a single image (an image extension, not an existing folder), otherwise the folder of
            the `<stem>.png` outputs (default `DEFAULT_OUTPUT_DIR`).

    Raises:
        PlanError: A file `output` for several images, or two inputs whose outputs would be one file (the same
            name, or names that differ only in case).
    """
    if names_output_file(output):
        if len(images) > 1:
            raise PlanError(
                f"`output` {output} names a file, but {len(images)} images were given; pass a folder instead"
            )
        return [Job(images[0], Path(output))]

    folder = Path(output if output is not None else DEFAULT_OUTPUT_DIR)
    jobs = [Job(image, folder / f"{image.stem}.png") for image in images]
    # Compared as case-insensitive file systems (macOS, Windows, exFAT) compare names: `Photo.jpg` and `photo.png`
    # would write one file there, the second result silently replacing the first.
    jobs_by_name: dict[str, Job] = {}
    for job in jobs:
        name = unicodedata.normalize("NFC", job.target.name).casefold()
        if name in jobs_by_name:
            other = jobs_by_name[name]
            where = (
                str(job.target)
                if other.target == job.target
                else f"{other.target} and {job.target}, one file where names ignore case (macOS, Windows)"
            )
            raise PlanError(f"{other.source} and {job.source} would both be written to {where}; rename one")
        jobs_by_name[name] = job
    return jobs


def check_outputs(jobs: list[Job], output: str | os.PathLike | None, *, bit_depth: int | str = "auto") -> None:
    """Checks where the outputs go, before the model loads: otherwise a read-only output folder would only show after
    every image was denoised.

    An output folder that holds an input is refused: its outputs would replace inputs (`photo.png`), be skipped as
    existing, or be taken for inputs by the next run. A single output file (`photo_x4.png`) may sit beside its
    input, but not replace it.

    Args:
        jobs: The planned jobs (`plan_jobs`).
        output: The `output` they were planned with.
        bit_depth: One of `BIT_DEPTHS`: each output's format must take it (`photo.check_save_options`: 16 bits need
            PNG or TIFF).

    Raises:
        PlanError: An output folder that is not writable (nor creatable in a writable folder) or that holds an
            input, an output that would replace its input, a name longer than its folder takes, or a format without
            `bit_depth`.
    """
    for job in jobs:
        try:
            check_save_options(job.target, bit_depth=bit_depth)
        except ValueError as error:
            raise PlanError(f"{job.target}: {error}") from None
        longest = _longest_name(job.target.parent)
        if len(os.fsencode(job.target.name)) > longest:
            raise PlanError(
                f"{job.target}: the output's name is {len(os.fsencode(job.target.name))} bytes long, and its folder "
                f"takes names up to {longest} bytes; rename {job.source} or pass another output name"
            )
    sources = {job.source.resolve(): job.source for job in jobs}
    folders = sorted({job.target.parent for job in jobs})
    if not names_output_file(output):
        input_folders = {source.parent: shown for source, shown in sources.items()}
        for folder in folders:
            if folder.resolve() in input_folders:
                raise PlanError(
                    f"`output` {folder} is the folder of the input {input_folders[folder.resolve()]}: the outputs would "
                    "replace inputs, be skipped as existing or be taken for inputs on the next run; pass another "
                    "folder"
                )
    for job in jobs:
        if job.target.resolve() in sources:
            raise PlanError(
                f"`output` {job.target} would replace the input {job.source} with its output; pass another `output`"
            )
    for folder in folders:
        _check_writable_folder(folder, Path(output) if output is not None else folder)


def _longest_name(folder: Path) -> int:
    """The longest file name, in bytes, that `folder` (or the nearest existing folder above it) takes."""
    existing = folder.absolute()
    while not existing.is_dir() and existing.parent != existing:
        existing = existing.parent
    try:
        return os.pathconf(existing, "PC_NAME_MAX")
    except (AttributeError, OSError, ValueError):  # no pathconf (Windows), or no answer: the common limit
        return 255


def _check_writable_folder(folder: Path, shown: Path) -> None:
    """`folder` exists as a writable folder, or can be created: its nearest existing ancestor is a writable folder.
    `shown` is what the user gave (`-o`), for the message."""
    existing = folder.absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == shown.absolute():
            raise PlanError(
                f"`output` {shown}: an existing file, not a folder (for a single input, a file name with an image "
                f"extension, {', '.join(IMAGE_EXTENSIONS)}, names the output file)"
            )
        raise PlanError(f"`output` {shown}: cannot create the folder {folder}, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder.absolute() else f" ({existing}, where {folder} would be created)"
        raise PlanError(f"`output` {shown}: cannot write there{where}: permission denied or a read-only file system")


def output_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The (width, height) of an image of `width` x `height` px upscaled by `scale`, and a `ValueError` if a side
    would exceed `MAX_OUTPUT_SIDE`."""
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    if max(size) > MAX_OUTPUT_SIDE:
        raise ValueError(
            f"its output would be {size[0]}x{size[1]} px, and sides above {MAX_OUTPUT_SIDE} px are not supported; "
            "lower `scale`"
        )
    return size


def screen_image(path: Path, scale: float) -> tuple[int, int]:
    """The (width, height) of an input as it will be upscaled (EXIF orientation applied), from its header alone (no
    decoding).

    Run on every pending input before any model loads, so that a file that is no image, or an image whose output
    would be too large, is reported at once; the pipeline checks again (with the exact decoded image).

    Args:
        path: The input image.
        scale: The upscaling factor.

    Raises:
        JobError: A file that is no image, or an output side above `MAX_OUTPUT_SIDE`.
    """
    try:
        width, height = read_photo_size(path)
    except ValueError as error:  # the file's name as it is, the reason on one line
        raise JobError(f"cannot read {path}: {one_line(error.__cause__ or error)}") from None
    try:
        output_size(width, height, scale)
    except ValueError as error:
        raise JobError(f"cannot upscale {path}: {error}") from None
    return width, height


def plan_batches(jobs: list[Job], sizes: dict[Job, tuple[int, int]], batch_size: int) -> list[list[Job]]:
    """Splits `jobs` into pipeline calls of up to `batch_size` images of one input size (`sizes[job]`); batches
    follow the order of their first job (with `batch_size` 1, the order of `jobs`)."""
    by_size: dict[tuple[int, int], list[Job]] = {}
    for job in jobs:
        by_size.setdefault(sizes[job], []).append(job)
    batches = [
        group[start : start + batch_size] for group in by_size.values() for start in range(0, len(group), batch_size)
    ]
    position = {job: index for index, job in enumerate(jobs)}
    return sorted(batches, key=lambda batch: position[batch[0]])
