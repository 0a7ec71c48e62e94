# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The defaults of `StableDiffusion3SRPipeline.__call__`, which reproduce the released inference (the authors' test
script), as plain data importable without torch.

They are the one source of these settings: the pipeline's signature takes its defaults from `INFERENCE_DEFAULTS`, and
so do the command line (whose `--help` must not import torch), the demo and `upscaling.UpscaleSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["INFERENCE_DEFAULTS", "InferenceDefaults"]


@dataclass(frozen=True)
class InferenceDefaults:
    """The pipeline's default call, field by field under the name of its `__call__` parameter.

    Attributes:
        upscale: The upscaling factor (released: 4).
        process_size: Outputs whose short side is below it are made at this short side and resized back (released:
            512, the crop size the models were trained on).
        num_inference_steps: Denoising steps of SD3.5's flow-matching Euler scheduler (released: 40).
        guidance_scale: Classifier-free guidance scale (released: 8.0).
        strength: 1.0 starts from pure noise, as released.
        lr_injection_scale: Strength of the LR injection (released inference: 1.2; training: 1.0).
        tile_size: Side of the denoising tiles in output pixels (released: 64 latents, 512 px).
        tile_overlap: Overlap of neighbouring tiles in output pixels (released: 24 latents, 192 px).
        tile_batch_size: Tiles per transformer call; `"auto"` fills the available memory (the released script ran
            one tile at a time, which changes speed, not the result).
        color_fix: Colour correction against the bicubic-upscaled input (released: AdaIN).
        max_sequence_length: T5 tokens (released inference: SD3's default of 256; the released training used 77).
        added_prompt: The released positive prompt, appended to every caption after a space (its trailing space is
            the release's).
        negative_prompt: The released negative prompt.
    """

    upscale: float = 4.0
    process_size: int = 512
    num_inference_steps: int = 40
    guidance_scale: float = 8.0
    strength: float = 1.0
    lr_injection_scale: float = 1.2
    tile_size: int = 512
    tile_overlap: int = 192
    tile_batch_size: int | str = "auto"
    color_fix: str | None = "adain"
    max_sequence_length: int = 256
    added_prompt: str = (
        "Cinematic, hyper sharpness, highly detailed, perfect without deformations, camera, hyper detailed photo - "
        "realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore detailing. "
    )
    negative_prompt: str = (
        "motion blur, noisy, dotted, bokeh, pointed, CG Style, 3D render, unreal engine, blurring, dirty, messy, "
        "worst quality, low quality, frames, watermark, signature, jpeg artifacts, deformed, lowres, chaotic"
    )


INFERENCE_DEFAULTS = InferenceDefaults()
"""The released inference settings, the defaults of every program of the library."""
