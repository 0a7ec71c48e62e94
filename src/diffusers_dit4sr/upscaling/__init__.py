# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Folder jobs: upscale files and folders with skipping, atomic writes, resuming, captions and several processes.

`upscale_files` is the entry point (`docs/api.md`); `jobs` plans and checks the work, `captions` reads, generates
and reuses captions, `outputs` cleans up after killed runs and decides whether an existing output is kept, `runner`
runs it all and `events` is how a run reports.
"""

from .captions import CaptionCounts, CaptionSource
from .events import RunEvents
from .jobs import Job, JobError, PlanError
from .runner import RunCounts, UpscaleSettings, run_jobs, upscale_files

__all__ = [
    "CaptionCounts",
    "CaptionSource",
    "Job",
    "JobError",
    "PlanError",
    "RunCounts",
    "RunEvents",
    "UpscaleSettings",
    "run_jobs",
    "upscale_files",
]
