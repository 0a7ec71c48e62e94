# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Running `DiT4SRUpscale`: ComfyUI's image batch through the pipeline's own `__call__` (its tiles, tile batching
and out-of-memory retries), with ComfyUI's progress bar and interrupt, and a mask upscaled beside the image.

Each image's noise comes from its own `torch.Generator` seeded with `seed` (as `dit4sr-upscale` seeds them), so an
image's result depends neither on the other images of the batch nor on the global torch RNG, which stays untouched:
the results of other nodes that draw from it do not change either.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from dataclasses import dataclass

import comfy.model_management
import comfy.utils
import numpy as np
import torch

from diffusers_dit4sr.errors import one_line
from diffusers_dit4sr.inference_defaults import INFERENCE_DEFAULTS

from .loading import LoadedPipeline, import_library

INPUT_NAMES = {
    "image": "image",
    "prompt": "prompt",
    "upscale": "scale_by",
    "num_inference_steps": "steps",
    "guidance_scale": "guidance",
    "color_fix": "color_fix",
    "tile_size": "tile_size",
    "lr_injection_scale": "lr_injection_scale",
}
"""The node input of each pipeline argument, for error messages, which name what the user can change."""
EIGHT_BIT_TOLERANCE = 1e-4
"""How far (in 8-bit levels) from whole levels every pixel of an 8-bit image read as float may be."""


@dataclass(frozen=True)
class UpscaleSettings:
    """The node's inputs besides the pipeline and the images."""

    prompt: str
    scale_by: float
    steps: int
    seed: int
    guidance: float
    color_fix: str
    tile_size: int
    lr_injection_scale: float


def upscale(
    loaded: LoadedPipeline, image: torch.Tensor, settings: UpscaleSettings, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Upscales ComfyUI's `IMAGE` batch `(B, H, W, C)` (and its `MASK`); returns both at `round(scale_by x size)`.

    Bad input raises a `ValueError` naming the node input: a bad mask, or an image too large for the settings, before
    the models move; what the pipeline checks (a `tile_size` that is not a multiple of 16, ...), before any denoising.
    An interrupt raises ComfyUI's `InterruptProcessingException` within one denoising step, and no image is returned.
    """
    library = import_library()
    images = _pipeline_images(image)
    masks = _check_mask(mask, image)
    pipe = loaded.pipe
    constants = library.constants
    arguments = {
        "prompt": settings.prompt.strip() or None,
        "upscale": settings.scale_by,
        "num_inference_steps": settings.steps,
        "guidance_scale": settings.guidance,
        "color_fix": constants.color_fix_argument(settings.color_fix),
        "tile_size": settings.tile_size,
        "lr_injection_scale": settings.lr_injection_scale,
    }
    height, width = image.shape[1:3]
    process_size = INFERENCE_DEFAULTS.process_size
    plan = library.image_processing.plan_sizes(height, width, settings.scale_by, process_size, pipe.pixel_multiple)
    with _node_input_names():
        pipe.check_sizes([plan], settings.scale_by, process_size)

    comfy.model_management.throw_exception_if_processing_interrupted()
    loaded.ready(loaded.activation_bytes(settings.tile_size))
    device = pipe._execution_device
    generators = [torch.Generator(device=device).manual_seed(settings.seed) for _ in range(len(images))]
    progress = _Progress()
    with _node_input_names():
        try:
            upscaled = pipe(
                image=images,
                generator=generators,
                output_type="pt",
                callback_on_step_end=progress.step,
                callback_on_step_end_tensor_inputs=[],
                **arguments,
            ).images
        except torch.OutOfMemoryError as error:  # still an out-of-memory error: ComfyUI then unloads every model
            raise torch.OutOfMemoryError(
                f"DiT4SR ran out of GPU memory ({one_line(error)}). Denoising tiles that do not fit "
                "are retried in smaller batches, down to one at a time; beyond that, lower tile_size, or load the "
                "pipeline with offload 'model' or a quantization preset"
            ) from error
    output_device = comfy.model_management.intermediate_device()
    upscaled = upscaled.permute(0, 2, 3, 1).to(output_device, torch.float32).contiguous()
    resize = library.image_processing.pil_bicubic_resize
    if masks is None:
        masks = torch.zeros((len(images), *plan.output_size))
    else:
        masks = resize(masks[:, None].float(), plan.output_size)[:, 0]
    return upscaled, masks.to(output_device).contiguous()


class _Progress:
    """Advances ComfyUI's progress bar after every denoising step (the pipeline calls back once per step, when every
    tile of every image has taken it) and stops at an interrupt (the bar's update raises it)."""

    def __init__(self) -> None:
        self.bar: comfy.utils.ProgressBar | None = None

    def step(self, pipe, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
        if self.bar is None:  # the number of steps is the scheduler's, known once the call starts
            self.bar = comfy.utils.ProgressBar(pipe.num_timesteps)
        comfy.model_management.throw_exception_if_processing_interrupted()
        self.bar.update(1)
        return {}


def _pipeline_images(image: torch.Tensor) -> np.ndarray:
    """ComfyUI's float `(B, H, W, C)` batch as the pipeline's input: an 8-bit image read as float (every value a
    whole number of 255ths, as `LoadImage` makes them) goes back to `uint8`, which the pipeline resizes exactly as the
    released inference did; other images stay float (float32)."""
    if not isinstance(image, torch.Tensor) or image.ndim != 4 or image.shape[-1] not in (1, 3, 4):
        shape = tuple(image.shape) if isinstance(image, torch.Tensor) else type(image).__name__
        raise ValueError(f"image: expected a ComfyUI IMAGE batch (batch, height, width, channels), got {shape}")
    pixels = image.detach().to("cpu", torch.float32)
    if not torch.isfinite(pixels).all():
        raise ValueError("image: contains NaN or infinite values")
    pixels = pixels.clamp(0, 1)  # float rounding in other nodes can overshoot by an ulp
    levels = pixels * 255
    if (levels - levels.round()).abs().max() <= EIGHT_BIT_TOLERANCE:
        return levels.round().to(torch.uint8).numpy()
    return pixels.numpy()


def _check_mask(mask: torch.Tensor | None, image: torch.Tensor) -> torch.Tensor | None:
    """The mask as `(B, H, W)`: one mask for the batch or one per image, of the image's size. An all-zero mask of
    another size is `LoadImage`'s stand-in for an image without alpha (64 x 64 zeros): no mask."""
    if mask is None:
        return None
    masks = mask[None] if mask.ndim == 2 else mask
    if masks.ndim != 3:
        raise ValueError(f"mask: expected a ComfyUI MASK (batch, height, width), got shape {tuple(mask.shape)}")
    if tuple(masks.shape[1:]) != tuple(image.shape[1:3]):
        if not masks.any():
            return None
        raise ValueError(
            f"mask: must have the image's size, {image.shape[2]}x{image.shape[1]} px, got "
            f"{masks.shape[2]}x{masks.shape[1]} px"
        )
    if masks.shape[0] not in (1, image.shape[0]):
        raise ValueError(f"mask: {masks.shape[0]} masks for {image.shape[0]} images; give one, or one per image")
    return masks.detach().cpu()


@contextlib.contextmanager
def _node_input_names() -> Iterator[None]:
    """Re-raises the pipeline's `ValueError`s and `TypeError`s as one line with the node's input names in place of
    its argument names (`upscale` is `scale_by` here)."""
    try:
        yield
    except (ValueError, TypeError) as error:
        message = " ".join(str(error).split())
        message = re.sub(r"`(\w+)`", lambda match: f"`{INPUT_NAMES.get(match.group(1), match.group(1))}`", message)
        raise ValueError(message) from error
