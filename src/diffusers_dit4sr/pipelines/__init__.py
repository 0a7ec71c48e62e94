# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`StableDiffusion3SRPipeline` (`pipeline_stable_diffusion_3_sr`) and the loader module that lets Diffusers'
generic `DiffusionPipeline.from_pretrained` load a saved one (`remote_code`)."""

from .pipeline_stable_diffusion_3_sr import (
    DEFAULT_ADDED_PROMPT,
    DEFAULT_MAX_SEQUENCE_LENGTH,
    DEFAULT_NEGATIVE_PROMPT,
    StableDiffusion3SRPipeline,
    StableDiffusion3SRPipelineOutput,
)

__all__ = [
    "DEFAULT_ADDED_PROMPT",
    "DEFAULT_MAX_SEQUENCE_LENGTH",
    "DEFAULT_NEGATIVE_PROMPT",
    "StableDiffusion3SRPipeline",
    "StableDiffusion3SRPipelineOutput",
]
