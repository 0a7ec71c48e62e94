# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Upscaling files and folders with the guarantees of `dit4sr-upscale`, from Python: `upscale_files`.

Existing outputs are skipped (unless `overwrite`), inputs that cannot work are reported before any model loads,
every image is upscaled with its noise seeded afresh (so a result depends neither on the other images nor on how
they were batched) and written atomically with what its photo had besides colour (alpha, colour profile, EXIF,
16 bits: `photo.save_upscaled`), a failure is reported and the other images go on, and a run killed
half-way resumes where it stopped (its temporary files are removed). With a captioner, every pending image is
captioned first (the caption saved as `<output name>.txt`, reused on later runs) and the captioner is freed before
the SR pipeline loads. Started by a launcher (`processes`), each process does its share of the images and every
process gets the counts of the whole run. Progress and messages go to a `RunEvents`; nothing is printed.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..captioning import Captioner
from ..constants import SEED_RANGE, color_fix_argument
from ..distributed import ONE_PROCESS, Processes
from ..errors import one_line
from ..inference_defaults import INFERENCE_DEFAULTS
from ..photo import Photo, read_photo, save_upscaled
from ..pipelines import StableDiffusion3SRPipeline
from ..runtime import LoadError
from .captions import CaptionCounts, CaptionSource, caption_jobs, read_caption
from .events import RunEvents
from .jobs import Job, JobError, check_outputs, find_images, plan_batches, plan_jobs, screen_image
from .outputs import keep_existing_output, remove_stale_outputs

__all__ = ["RunCounts", "UpscaleSettings", "run_jobs", "upscale_files"]


@dataclass(frozen=True)
class UpscaleSettings:
    """How each image is upscaled (the pipeline's arguments, by default the released ones: `INFERENCE_DEFAULTS`),
    batched and saved. Checked on creation (`ValueError`).

    Attributes:
        scale: The pipeline's `upscale`.
        steps: Its `num_inference_steps`.
        guidance: Its `guidance_scale`.
        seed: Seeds every image's noise afresh, so a result depends neither on the other images nor on the batches.
        color_fix: One of `constants.COLOR_FIXES` (`"none"`: no correction).
        process_size, tile_size, tile_overlap, tile_batch_size: The pipeline's arguments of these names.
        batch_size: Images of one input size that go through one pipeline call, with results equal to one image at
            a time to float round-off.
        bit_depth: One of `constants.BIT_DEPTHS` (checked with the outputs by `jobs.check_outputs`).
        strip_metadata: Write no EXIF and no XMP (`photo.save_upscaled`).
    """

    scale: float = INFERENCE_DEFAULTS.upscale
    steps: int = INFERENCE_DEFAULTS.num_inference_steps
    guidance: float = INFERENCE_DEFAULTS.guidance_scale
    seed: int = 0
    color_fix: str = INFERENCE_DEFAULTS.color_fix
    process_size: int = INFERENCE_DEFAULTS.process_size
    tile_size: int = INFERENCE_DEFAULTS.tile_size
    tile_overlap: int = INFERENCE_DEFAULTS.tile_overlap
    tile_batch_size: int | str = INFERENCE_DEFAULTS.tile_batch_size
    batch_size: int = 1
    bit_depth: int | str = "auto"
    strip_metadata: bool = False

    def __post_init__(self) -> None:
        color_fix_argument(self.color_fix)
        for name in ("steps", "batch_size", "tile_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if not 0 <= self.tile_overlap < self.tile_size:
            raise ValueError(f"tile_overlap ({self.tile_overlap}) must be in [0, tile_size ({self.tile_size}))")
        if not SEED_RANGE[0] <= self.seed <= SEED_RANGE[1]:
            raise ValueError(f"seed must be in [{SEED_RANGE[0]}, {SEED_RANGE[1]}], got {self.seed}")
        if not 0 < self.scale < float("inf"):
            raise ValueError(f"scale must be a positive number, got {self.scale}")

    def pipeline_arguments(self) -> dict:
        """The keyword arguments of the pipeline call, generators and images aside."""
        return {
            "upscale": self.scale,
            "num_inference_steps": self.steps,
            "guidance_scale": self.guidance,
            "color_fix": color_fix_argument(self.color_fix),
            "process_size": self.process_size,
            "tile_size": self.tile_size,
            "tile_overlap": self.tile_overlap,
            "tile_batch_size": self.tile_batch_size,
        }


@dataclass
class RunCounts:
    """What one process did with its images (or, added up, the whole run). `stopped`: a model could not be loaded
    or prepared, so the process's pending images count as failed."""

    upscaled: int = 0
    skipped: int = 0
    failed: int = 0
    captions: CaptionCounts = field(default_factory=CaptionCounts)
    stopped: bool = False

    def __add__(self, other: RunCounts) -> RunCounts:
        return RunCounts(
            self.upscaled + other.upscaled,
            self.skipped + other.skipped,
            self.failed + other.failed,
            self.captions + other.captions,
            self.stopped or other.stopped,
        )

    @property
    def ok(self) -> bool:
        """Nothing failed: no image, no caption, no model."""
        return not (self.failed or self.captions.failed or self.stopped)


PipelineOrLoader = StableDiffusion3SRPipeline | Callable[[], StableDiffusion3SRPipeline]


def upscale_files(
    inputs: Sequence[str | os.PathLike],
    output: str | os.PathLike | None = None,
    *,
    pipeline: PipelineOrLoader,
    settings: UpscaleSettings | None = None,
    prompt: str | None = None,
    captions_dir: str | os.PathLike | None = None,
    captioner: Captioner | Callable[[], Captioner] | None = None,
    overwrite: bool = False,
    processes: Processes = ONE_PROCESS,
    events: RunEvents | None = None,
    raise_errors: bool = False,
) -> RunCounts:
    """Upscales image files, the images inside folders and glob matches (`inputs`) into `output` and returns the
    counts of the whole run.

    Args:
        inputs: files, folders (the images directly inside) and glob patterns.
        output: a folder (created if needed; default `dit4sr_outputs`) where each input becomes `<stem>.png`; with a
            single input, also a file path whose extension picks the format.
        pipeline: a pipeline ready on its device, or a function that loads one (called only if an image needs
            upscaling; it may raise `runtime.LoadError`, which is reported and counts the pending images as failed).
        settings: the upscaling settings (default: the released ones, seed 0, one image per call).
        prompt: a caption for every image (default: none). Excludes `captions_dir` and `captioner`.
        captions_dir: a folder of `<stem>.txt` captions, which win over `captioner`.
        captioner: a `Captioner`, or a function that loads one, to caption the images that have no caption yet; the
            captions are written beside the outputs and reused by later runs.
        overwrite: replace existing outputs instead of skipping them.
        processes: this process's place in a multi-process run (`distributed.Processes.from_environment()`): each
            process upscales its share and the counts are those of the whole run.
        events: what to tell while working (default: nothing).
        raise_errors: raise the first failure instead of reporting it and going on.

    Inputs and outputs that cannot work (no images, two inputs for one output, an output folder that cannot be
    written, an output format without `settings.bit_depth`) raise a `jobs.PlanError` (a `ValueError`) before anything
    is done. Each result keeps what its photo had besides colour (`photo.save_upscaled`).
    """
    settings = settings or UpscaleSettings()
    jobs = plan_jobs(find_images(list(inputs)), output)
    check_outputs(jobs, output, bit_depth=settings.bit_depth)
    source = CaptionSource(
        prompt=prompt,
        captions_dir=Path(captions_dir) if captions_dir is not None else None,
        generated=captioner is not None,
    )
    return run_jobs(
        jobs,
        pipeline=pipeline,
        settings=settings,
        captions=source,
        captioner=captioner,
        overwrite=overwrite,
        processes=processes,
        events=events,
        raise_errors=raise_errors,
    )


def run_jobs(
    jobs: list[Job],
    *,
    pipeline: PipelineOrLoader,
    settings: UpscaleSettings,
    captions: CaptionSource | None = None,
    captioner: Captioner | Callable[[], Captioner] | None = None,
    overwrite: bool = False,
    processes: Processes = ONE_PROCESS,
    events: RunEvents | None = None,
    raise_errors: bool = False,
) -> RunCounts:
    """Runs jobs already planned and checked (`jobs.plan_jobs`, `jobs.check_outputs`): the main process removes the
    temporary files of an interrupted run, each process does its share, and every process returns the counts of the
    whole run.

    Args:
        jobs: The planned jobs.
        captions: Where captions come from (default: none, or generated with a `captioner`).
        pipeline, settings, captioner, overwrite, processes, events, raise_errors: As in `upscale_files`.
    """
    events = events or RunEvents()
    captions = captions or CaptionSource(generated=captioner is not None)
    if processes.is_main:
        for path in remove_stale_outputs([job.target.parent for job in jobs]):
            events.note(f"removed {path}, a temporary file left by an interrupted run")
    processes.barrier()  # no process writes before the clean-up is done
    share = processes.share(sorted(jobs, key=lambda job: str(job.target))) if processes.several else jobs
    if processes.several:
        events.note(f"{_count(jobs)} split among {processes.count} processes, {len(share)} for the main process")
    counts = _run_share(share, pipeline, settings, captions, captioner, overwrite, events, raise_errors)
    return sum(processes.gather(counts), RunCounts())


def _run_share(
    jobs: list[Job],
    pipeline: PipelineOrLoader,
    settings: UpscaleSettings,
    captions: CaptionSource,
    captioner: Captioner | Callable[[], Captioner] | None,
    overwrite: bool,
    events: RunEvents,
    raise_errors: bool,
) -> RunCounts:
    """Skips existing outputs, reports inputs that cannot work (from their headers), captions the rest with the
    captioner, then loads the SR pipeline (only if there is work) and upscales; returns the counts."""
    counts = RunCounts()
    todo = []
    for job in jobs:
        if not overwrite and keep_existing_output(job, settings.scale, events):  # a damaged output is redone
            events.skipped(job)
            counts.skipped += 1
        else:
            todo.append(job)

    sizes = {}
    for job in todo:
        try:
            sizes[job] = screen_image(job.source, settings.scale)
        except JobError as error:
            events.error(f"{error} (skipped)")
            counts.failed += 1
    todo = [job for job in todo if job in sizes]
    if not todo:
        return counts

    if captioner is not None:
        try:
            counts.captions = caption_jobs(todo, captioner, captions, events, raise_errors)
        except LoadError as error:
            events.error(str(error))
            return _stopped(counts, todo)
        events.note(f"upscaling {_count(todo)}")
    if not isinstance(pipeline, StableDiffusion3SRPipeline):
        try:
            pipeline = pipeline()
        except LoadError as error:
            events.error(str(error))
            return _stopped(counts, todo)
    upscaled, failed = _upscale_all(pipeline, todo, sizes, settings, captions, events, raise_errors)
    counts.upscaled += upscaled
    counts.failed += failed
    return counts


def _stopped(counts: RunCounts, todo: list[Job]) -> RunCounts:
    counts.failed += len(todo)
    counts.stopped = True
    return counts


def _count(jobs: list[Job]) -> str:
    return f"{len(jobs)} image{'s' if len(jobs) != 1 else ''}"


def _upscale_all(
    pipe: StableDiffusion3SRPipeline,
    jobs: list[Job],
    sizes: dict[Job, tuple[int, int]],
    settings: UpscaleSettings,
    captions: CaptionSource,
    events: RunEvents,
    raise_errors: bool,
) -> tuple[int, int]:
    """Processes every job, `batch_size` images of one size at a time, reporting and counting failures; returns
    (upscaled, failed)."""
    upscaled = failed = 0
    events.upscaling_started(len(jobs), settings.steps)
    try:
        for batch in plan_batches(jobs, sizes, settings.batch_size):
            events.batch_started(upscaled + failed, batch)
            failures = _process_batch(batch, pipe, settings, captions, events, raise_errors)
            if failures and raise_errors:
                raise failures[0]  # with its traceback and cause
            for failure in failures:
                events.error(f"{failure} (skipped)")
            upscaled += len(batch) - len(failures)
            failed += len(failures)
            events.batch_finished()
    finally:
        events.upscaling_finished()
    return upscaled, failed


@dataclass(frozen=True)
class _Input:
    """One job's decoded photo and caption, ready for the pipeline."""

    job: Job
    photo: Photo
    caption: str | None


def _process_batch(
    batch: list[Job],
    pipe: StableDiffusion3SRPipeline,
    settings: UpscaleSettings,
    captions: CaptionSource,
    events: RunEvents,
    raise_errors: bool,
) -> list[JobError]:
    """Reads, upscales and writes the images of one batch; returns the failures, each a `JobError` naming its file
    (the other images of the batch are written all the same)."""
    failures, inputs = [], []
    for job in batch:
        try:
            inputs.append(_Input(job, read_photo(job.source), read_caption(job, captions, events)))
        except ValueError as error:  # an image that cannot be decoded
            failures.append(JobError(one_line(error)))
        except JobError as error:
            failures.append(error)
    if inputs:
        failures += _upscale_and_write(inputs, pipe, settings, events, raise_errors)
    return failures


def _upscale_and_write(
    inputs: list[_Input],
    pipe: StableDiffusion3SRPipeline,
    settings: UpscaleSettings,
    events: RunEvents,
    raise_errors: bool,
) -> list[JobError]:
    try:
        results = _upscale(pipe, inputs, settings, events)
    except JobError as error:
        if raise_errors:
            raise
        if len(inputs) == 1:
            return [error]
        # One image may be the cause, or the batch too large for the memory: each alone, so only what fails fails.
        return [failure for item in inputs for failure in _upscale_and_write([item], pipe, settings, events, False)]
    failures = []
    for item, result in zip(inputs, results, strict=True):
        try:
            save_upscaled(
                item.photo,
                result,
                item.job.target,
                bit_depth=settings.bit_depth,
                strip_metadata=settings.strip_metadata,
            )
        except (OSError, ValueError) as error:  # e.g. a full disk, or EXIF too large for a JPEG
            failures.append(JobError(f"cannot write {item.job.target}: {one_line(error)}"))
    return failures


def _upscale(
    pipe: StableDiffusion3SRPipeline, inputs: list[_Input], settings: UpscaleSettings, events: RunEvents
) -> np.ndarray | list[np.ndarray]:
    """The photos of `inputs` through one pipeline call, each with its own noise seeded afresh with the seed, so
    that a result depends neither on the order nor on the other images of the call; `events.step` is called after
    every denoising step. Returns the float outputs, `(H, W, 3)` each (16-bit files are computed from them). A
    failure is a `JobError` naming the files."""
    device = pipe._execution_device
    generators = [torch.Generator(device=device).manual_seed(settings.seed) for _ in inputs]

    def on_step_end(pipe: StableDiffusion3SRPipeline, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
        events.step(pipe)
        return {}

    names = ", ".join(str(item.job.source) for item in inputs)
    try:
        return pipe(
            image=[item.photo.pixels for item in inputs],
            prompt=[item.caption or "" for item in inputs],
            generator=generators,
            output_type="np",
            callback_on_step_end=on_step_end,
            callback_on_step_end_tensor_inputs=[],
            **settings.pipeline_arguments(),
        ).images
    except torch.cuda.OutOfMemoryError as error:
        raise JobError(
            f"out of GPU memory on {names}; try `batch_size=1`, `tile_batch_size=1`, a smaller `tile_size` or "
            "`cpu_offload=True`"
        ) from error
    except (ValueError, RuntimeError) as error:  # e.g. an output larger than the pipeline supports
        raise JobError(f"cannot upscale {names}: {error}") from error
