# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What a folder run tells its caller while it works: `RunEvents`, whose methods do nothing until a program (the
command line's progress bars, a GUI, a log) overrides them. The run itself never prints."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..pipelines import StableDiffusion3SRPipeline
    from .jobs import Job

__all__ = ["RunEvents"]


class RunEvents:
    """Callbacks of a folder run, called in the process that does the work; override the ones you need.

    Messages are single lines without a program name: `note` for what a user may want to know (files removed,
    phases), `warning` for what may be a mistake, `error` for a failure the run went on after (a file skipped, a
    model that could not load).
    """

    def note(self, message: str) -> None:
        """Something done on the way, e.g. a temporary file of an interrupted run removed."""

    def warning(self, message: str) -> None:
        """Something that may not be what the caller meant, e.g. a missing caption file."""

    def error(self, message: str) -> None:
        """A failure: an image, a caption or a model; the run goes on with the rest."""

    def skipped(self, job: Job) -> None:
        """`job`'s output exists and is kept (no overwriting)."""

    def captioning_started(self, count: int) -> None:
        """`count` images are about to be captioned (the captioner loads next)."""

    def captioned(self, count: int) -> None:
        """`count` more images were captioned (or failed to be)."""

    def captioning_finished(self) -> None:
        """The captioning phase is over, the captioner unloaded."""

    def upscaling_started(self, count: int, steps_per_image: int) -> None:
        """`count` images are about to be upscaled with `steps_per_image` denoising steps each."""

    def batch_started(self, index: int, batch: list[Job]) -> None:
        """One pipeline call on `batch` starts; `index` images came before it."""

    def step(self, pipe: StableDiffusion3SRPipeline) -> None:
        """A denoising step of the current batch is done (`pipe.num_timesteps` steps in all)."""

    def batch_finished(self) -> None:
        """The current batch is done, written or failed."""

    def upscaling_finished(self) -> None:
        """Every batch was done (also after an exception)."""
