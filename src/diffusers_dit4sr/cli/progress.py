# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What `dit4sr-upscale` shows while it works: tqdm bars over the captioned images and the denoising steps, and the
run's messages on stderr (`TerminalEvents`, the command's `upscaling.RunEvents`); file names are shown `printable`."""

from __future__ import annotations

import sys
import unicodedata
from collections.abc import Callable

from tqdm import tqdm

from ..pipelines import StableDiffusion3SRPipeline
from ..upscaling import Job, RunEvents
from .options import PROG

__all__ = ["StepProgress", "TerminalEvents", "printable", "report"]

_BIDI_CONTROLS = frozenset("\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
"""Characters that reorder the text after them on the terminal (right-to-left overrides and isolates)."""
_ESCAPED_CATEGORIES = frozenset({"Cc", "Cs", "Zl", "Zp"})
"""Control characters (newline, carriage return, escape, ...), undecodable bytes, line and paragraph separators."""


def printable(text: str) -> str:
    """`text` with the characters that could forge terminal output escaped as Python writes them (`\\n`, `\\x1b`,
    `\\u202e`): control characters, line separators, bidirectional overrides, and the undecodable bytes of a file
    name (as `\\xff`). A file name printed through it stays on its line and cannot fake a summary or move the cursor;
    other names print unchanged."""
    if text.isprintable():
        return text
    return "".join(_escaped(char) for char in text)


def _escaped(char: str) -> str:
    if char not in _BIDI_CONTROLS and unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    if "\udc80" <= char <= "\udcff":  # a byte of a name that is not valid in the file system's encoding
        return f"\\x{ord(char) - 0xDC00:02x}"
    return repr(char)[1:-1]


def report(message: str) -> None:
    """A line on stderr that does not break the progress bar; the names in it are shown `printable`."""
    tqdm.write(printable(message), file=sys.stderr)


class StepProgress:
    """A progress bar over the denoising steps of every image ("Upscaling 2/3 photo.png"), so that a single image
    shows progress too; a step of a batch of k images counts k steps. Call `on_step` after each step; a scheduler
    that takes another number of steps than `--steps` corrects the total."""

    def __init__(self, num_images: int, steps_per_image: int, disable: bool) -> None:
        self.bar = tqdm(
            total=num_images * steps_per_image, desc="Upscaling", unit="step", disable=disable, file=sys.stderr
        )
        self.num_images, self.steps_per_image = num_images, steps_per_image
        self.index = self.size = self.start = self.steps_done = 0

    def start_batch(self, index: int, batch: list[Job]) -> None:
        """`batch` starts; `index` images came before it."""
        self.index, self.size, self.start, self.steps_done = index, len(batch), self.bar.n, 0
        first = f"{index + 1}" if len(batch) == 1 else f"{index + 1}-{index + len(batch)}"
        others = f" (+{len(batch) - 1})" if len(batch) > 1 else ""
        self.bar.set_description(f"Upscaling {first}/{self.num_images} {printable(batch[0].source.name)}{others}")

    def on_step(self, pipe: StableDiffusion3SRPipeline) -> None:
        if self.steps_done == 0:
            steps = getattr(pipe, "num_timesteps", None)
            if isinstance(steps, int) and steps != self.steps_per_image:
                self.steps_per_image = steps
                self.bar.total = self.start + steps * (self.num_images - self.index)
        self.steps_done += 1
        self.bar.update(self.size)

    def finish_batch(self) -> None:
        """Moves on to the next batch's steps, also after a failure (or a batch retried image by image)."""
        self.bar.update(self.start + self.steps_per_image * self.size - self.bar.n)

    def close(self) -> None:
        self.bar.close()


class TerminalEvents(RunEvents):
    """A run's events on the terminal: errors and warnings always, on stderr; notes, skipped files (on stdout) and
    progress bars unless `quiet`. `caption_model` names the captioner in the captioning line; `terms` rewrites the
    library's parameter names in messages into the command's options."""

    def __init__(
        self, quiet: bool, caption_model: str | None = None, terms: Callable[[str], str] = lambda message: message
    ) -> None:
        self.quiet, self.caption_model, self.terms = quiet, caption_model, terms
        self.steps: StepProgress | None = None
        self.captions: tqdm | None = None

    def note(self, message: str) -> None:
        if not self.quiet:
            report(self.terms(message))

    def warning(self, message: str) -> None:
        report(self.terms(message))

    def error(self, message: str) -> None:
        report(f"{PROG}: error: {self.terms(message)}")

    def skipped(self, job: Job) -> None:
        if not self.quiet:
            print(printable(f"skipped {job.source}: {job.target} exists (pass --overwrite to replace it)"))

    def captioning_started(self, count: int) -> None:
        self.note(f"captioning {count} image{'s' if count != 1 else ''} with {self.caption_model}")
        self.captions = tqdm(total=count, desc="Captioning", unit="image", disable=self.quiet, file=sys.stderr)

    def captioned(self, count: int) -> None:
        self.captions.update(count)

    def captioning_finished(self) -> None:
        self.captions.close()

    def upscaling_started(self, count: int, steps_per_image: int) -> None:
        self.steps = StepProgress(count, steps_per_image, disable=self.quiet)

    def batch_started(self, index: int, batch: list[Job]) -> None:
        self.steps.start_batch(index, batch)

    def step(self, pipe: StableDiffusion3SRPipeline) -> None:
        if not self.quiet:
            self.steps.on_step(pipe)

    def batch_finished(self) -> None:
        self.steps.finish_batch()

    def upscaling_finished(self) -> None:
        self.steps.close()
