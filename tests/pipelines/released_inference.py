# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""A plain re-statement of the released DiT4SR inference, the reference the pipeline's defaults are tested against.

Written from the specification (`dit4sr-spec.md`, section 4) and a reading of the authors' test script and tiled
pipeline, step by step and without any of the library's helpers: PIL resizing of the uint8 LR image (process-size
enlargement, x upscale, then down to a multiple of 8), the VAE encode of that image, SD3's prompt encoding with its
default T5 length, and the tile loop: tiles one at a time in the release's order, blended with the release's gaussian
weights (rows centred at h / 2), guidance applied after blending.
"""

import math

import numpy as np
import PIL.Image
import torch
from diffusers import FlowMatchEulerDiscreteScheduler, StableDiffusion3Pipeline

ADDED_PROMPT = (
    "Cinematic, hyper sharpness, highly detailed, perfect without deformations, camera, hyper detailed photo - "
    "realistic maximum detail, 32k, Color Grading, ultra HD, extreme meticulous detailing, skin pore detailing. "
)
NEGATIVE_PROMPT = (
    "motion blur, noisy, dotted, bokeh, pointed, CG Style, 3D render, unreal engine, blurring, dirty, messy, "
    "worst quality, low quality, frames, watermark, signature, jpeg artifacts, deformed, lowres, chaotic"
)
TILE_SIZE, TILE_OVERLAP = 64, 24  # latents
GUIDANCE_SCALE, LR_INJECTION_SCALE = 8.0, 1.2


def released_lr_image(image: PIL.Image.Image, upscale: int, process_size: int = 512) -> PIL.Image.Image:
    """The uint8 LR image the release encodes: enlarged when small, times `upscale`, down to a multiple of 8."""
    width, height = image.size
    if width < process_size // upscale or height < process_size // upscale:
        scale = (process_size // upscale) / min(width, height)
        image = image.resize((int(scale * width), int(scale * height)), PIL.Image.BICUBIC)
    image = image.resize((image.size[0] * upscale, image.size[1] * upscale), PIL.Image.BICUBIC)
    return image.resize((image.size[0] // 8 * 8, image.size[1] // 8 * 8), PIL.Image.BICUBIC)


def released_lr_latents(vae, image: PIL.Image.Image) -> torch.Tensor:
    """VaeImageProcessor's preprocessing (x / 255, then 2x - 1) and the shifted, scaled VAE latent."""
    pixels = torch.from_numpy(np.array(image).astype(np.float32) / 255.0).permute(2, 0, 1)[None]
    latents = vae.encode(2.0 * pixels - 1.0).latent_dist.sample()
    return (latents - vae.config.shift_factor) * vae.config.scaling_factor


def released_prompt_embeddings(pipe, caption: str) -> tuple[torch.Tensor, torch.Tensor]:
    """`(negative; positive)` embeddings and pooled embeddings, as SD3's pipeline encodes them by default."""
    sd3 = StableDiffusion3Pipeline(
        transformer=None,
        scheduler=None,
        vae=None,
        text_encoder=pipe.text_encoder,
        tokenizer=pipe.tokenizer,
        text_encoder_2=pipe.text_encoder_2,
        tokenizer_2=pipe.tokenizer_2,
        text_encoder_3=pipe.text_encoder_3,
        tokenizer_3=pipe.tokenizer_3,
    )
    prompt = caption + " " + ADDED_PROMPT
    embeds, negative, pooled, negative_pooled = sd3.encode_prompt(
        prompt=prompt, prompt_2=None, prompt_3=None, negative_prompt=NEGATIVE_PROMPT
    )
    return torch.cat([negative, embeds]), torch.cat([negative_pooled, pooled])


def released_tile_weights(tile_size: int) -> torch.Tensor:
    """The release's `_gaussian_weights`: x centred at (w - 1) / 2, y at h / 2, variance 0.01, in float64."""
    var = 0.01
    xs = [
        math.exp(-((x - (tile_size - 1) / 2) ** 2) / (tile_size * tile_size) / (2 * var))
        / math.sqrt(2 * math.pi * var)
        for x in range(tile_size)
    ]
    ys = [
        math.exp(-((y - tile_size / 2) ** 2) / (tile_size * tile_size) / (2 * var)) / math.sqrt(2 * math.pi * var)
        for y in range(tile_size)
    ]
    return torch.tensor(np.outer(ys, xs))


def released_tile_offsets(height: int, width: int, tile_size: int) -> list[tuple[int, int]]:
    """`(top, left)` of every tile, in the release's order: the outer loop walks along x, the inner along y."""

    def count(size: int) -> int:
        tiles, end = 0, 0
        while end < size:
            end = max(tiles * tile_size - TILE_OVERLAP * tiles, 0) + tile_size
            tiles += 1
        return tiles

    columns, rows = count(width), count(height)
    offsets = []
    for column in range(columns):
        for row in range(rows):
            left = width - tile_size if column == columns - 1 else column * (tile_size - TILE_OVERLAP)
            top = height - tile_size if row == rows - 1 else row * (tile_size - TILE_OVERLAP)
            offsets.append((top, left))
    return offsets


def released_velocity(transformer, latents, lr_latents, timestep, text, pooled) -> torch.Tensor:
    """The guided velocity of one step: untiled when the latent's area fits a tile, else tile by tile."""
    model_input, lr_input = torch.cat([latents] * 2), torch.cat([lr_latents] * 2)

    def predict(hidden, lr_hidden):
        return transformer(
            hidden_states=hidden,
            lr_hidden_states=lr_hidden,
            encoder_hidden_states=text,
            pooled_projections=pooled,
            timestep=timestep.expand(hidden.shape[0]),
            lr_injection_scale=LR_INJECTION_SCALE,
            return_dict=False,
        )[0]

    height, width = latents.shape[-2:]
    if height * width <= TILE_SIZE * TILE_SIZE:
        velocity = predict(model_input, lr_input)
    else:
        tile_size = min(TILE_SIZE, height, width)
        weights = released_tile_weights(tile_size)
        velocity = torch.zeros(model_input.shape)
        contributors = torch.zeros(model_input.shape)
        for top, left in released_tile_offsets(height, width, tile_size):
            rows, columns = slice(top, top + tile_size), slice(left, left + tile_size)
            prediction = predict(model_input[..., rows, columns], lr_input[..., rows, columns])
            velocity[..., rows, columns] += prediction * weights
            contributors[..., rows, columns] += weights
        velocity /= contributors
    unconditional, conditional = velocity.chunk(2)
    return unconditional + GUIDANCE_SCALE * (conditional - unconditional)


@torch.no_grad()
def released_inference(
    pipe, image: PIL.Image.Image, caption: str, noise: torch.Tensor, upscale: int, num_inference_steps: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """`(final latents, LR latents)` of the released inference with the pipeline's components and this noise."""
    lr_latents = released_lr_latents(pipe.vae, released_lr_image(image, upscale))
    text, pooled = released_prompt_embeddings(pipe, caption)
    scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config)
    scheduler.set_timesteps(num_inference_steps)
    latents = noise.clone()
    for timestep in scheduler.timesteps:
        velocity = released_velocity(pipe.transformer, latents, lr_latents, timestep, text, pooled)
        latents = scheduler.step(velocity, timestep, latents, return_dict=False)[0]
    return latents, lr_latents
