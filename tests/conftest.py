# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Fixtures shared by the test modules: the tiny random pipeline (built offline, runs on a CPU), and the same saved as
a pipeline folder and laid out as the released weights."""

from pathlib import Path

import pytest

from diffusers_dit4sr import StableDiffusion3SRPipeline
from diffusers_dit4sr.tiny import make_tiny_pipeline


@pytest.fixture(scope="module")
def pipe() -> StableDiffusion3SRPipeline:
    """The tiny pipeline, one per test module (tests may set caches or attention backends on it), without its
    progress bar."""
    pipe = make_tiny_pipeline()
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="session")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """The tiny pipeline written by `save_pretrained`, shared by the whole session: read it, never write into it."""
    path = tmp_path_factory.mktemp("tiny-pipeline")
    make_tiny_pipeline().save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def released_dit4sr_dir(tiny_pipeline_dir, tmp_path_factory) -> Path:
    """A folder laid out like the released DiT4SR repository (`dit4sr_q/transformer`), holding the tiny transformer:
    with `tiny_pipeline_dir` as SD3.5, `from_released` composes the released pipeline from local folders."""
    path = tmp_path_factory.mktemp("dit4sr")
    StableDiffusion3SRPipeline.from_pretrained(tiny_pipeline_dir).transformer.save_pretrained(
        path / "dit4sr_q" / "transformer"
    )
    return path
