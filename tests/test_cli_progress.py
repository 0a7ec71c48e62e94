# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The command line's progress bar over denoising steps (`cli.progress`)."""

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from diffusers_dit4sr.cli import progress as cli_progress
from diffusers_dit4sr.upscaling import Job


def test_the_step_bar_follows_the_scheduler_and_failures():
    progress = cli_progress.StepProgress(num_images=2, steps_per_image=4, disable=False)
    job = Job(Path("a.png"), Path("out/a.png"))
    progress.start_batch(0, [job])
    progress.on_step(SimpleNamespace(num_timesteps=7))  # e.g. a second-order scheduler: 7 steps for 4
    assert (progress.bar.n, progress.bar.total) == (1, 14)
    progress.finish_batch()  # failed after one step: the bar moves on to the next image
    progress.start_batch(1, [job])
    for _ in range(7):
        progress.on_step(SimpleNamespace(num_timesteps=7))
    progress.finish_batch()
    assert (progress.bar.n, progress.bar.total) == (14, 14)
    progress.close()


def test_the_step_bar_counts_every_image_of_a_batch():
    progress = cli_progress.StepProgress(num_images=3, steps_per_image=4, disable=False)
    jobs = [Job(Path(f"{name}.png"), Path(f"out/{name}.png")) for name in "abc"]
    progress.start_batch(0, jobs[:2])
    assert progress.bar.desc.startswith("Upscaling 1-2/3 a.png (+1)")
    progress.on_step(SimpleNamespace(num_timesteps=4))
    assert progress.bar.n == 2  # one step of two images
    progress.finish_batch()
    assert progress.bar.n == 8
    progress.start_batch(2, jobs[2:])
    assert progress.bar.desc.startswith("Upscaling 3/3 c.png:")
    progress.finish_batch()
    assert (progress.bar.n, progress.bar.total) == (12, 12)
    progress.close()


@pytest.mark.parametrize(
    "name, shown",
    [
        ("photo.png", "photo.png"),
        ("été 😀 photo (2).png", "été 😀 photo (2).png"),
        ("a\n0 upscaled, 0 skipped (exist), 0 failed.png", "a\\n0 upscaled, 0 skipped (exist), 0 failed.png"),
        ("a\rb\tc.png", "a\\rb\\tc.png"),
        ("\x1b[2K\x1b[1Afake.png", "\\x1b[2K\\x1b[1Afake.png"),
        ("invoice\u202egnp.exe", "invoice\\u202egnp.exe"),
        ("line\u2028break.png", "line\\u2028break.png"),
        (os.fsdecode(b"latin-1 caf\xe9.png"), "latin-1 caf\\xe9.png"),
    ],
)
def test_names_are_printed_so_that_they_cannot_forge_output(name, shown):
    assert cli_progress.printable(name) == shown


def test_skipped_lines_reports_and_the_bar_escape_names(capsys):
    job = Job(Path("in/a\nb.png"), Path("out/a\nb.png"))
    events = cli_progress.TerminalEvents(quiet=False)
    events.skipped(job)
    events.error(f"cannot read {job.source}: truncated")
    captured = capsys.readouterr()
    assert captured.out == "skipped in/a\\nb.png: out/a\\nb.png exists (pass --overwrite to replace it)\n"
    assert captured.err == "dit4sr-upscale: error: cannot read in/a\\nb.png: truncated\n"
    progress = cli_progress.StepProgress(num_images=1, steps_per_image=1, disable=True)
    progress.start_batch(0, [job])
    assert progress.bar.desc.startswith("Upscaling 1/1 a\\nb.png")
    progress.close()
