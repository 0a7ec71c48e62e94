# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The pipeline's defaults reproduce the released inference (`released_inference.py`) on the tiny components."""

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.models.autoencoders.vae import DiagonalGaussianDistribution

from .released_inference import released_inference, released_lr_image

STEPS = 2


@pytest.fixture(autouse=True)
def deterministic_vae(monkeypatch):
    """The VAE posterior's mean instead of a sample: the release drew its own samples from the global generator."""
    monkeypatch.setattr(DiagonalGaussianDistribution, "sample", lambda self, generator=None: self.mean)


def photo(width: int, height: int, seed: int = 0) -> PIL.Image.Image:
    """A smooth random image (a photo's spectrum rather than white noise) as uint8 RGB."""
    coarse = np.random.default_rng(seed).integers(0, 256, (max(2, height // 8), max(2, width // 8), 3), np.uint8)
    return PIL.Image.fromarray(coarse).resize((width, height), PIL.Image.BILINEAR)


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual.double() - expected.double()).norm() / expected.double().norm())


def run_pipeline(pipe, image, caption, noise, upscale):
    """Final latents and LR latents of the pipeline with default arguments (but the step count)."""
    captured = {}

    def keep_lr_latents(pipe, step, timestep, tensors):
        captured["lr_latents"] = tensors["lr_latents"]
        return {}

    latents = pipe(
        image=image,
        prompt=caption,
        upscale=upscale,
        num_inference_steps=STEPS,
        latents=noise,
        output_type="latent",
        callback_on_step_end=keep_lr_latents,
        callback_on_step_end_tensor_inputs=["lr_latents"],
    ).images
    return latents, captured["lr_latents"]


@pytest.mark.parametrize(
    "width, height, upscale, tiles",
    [
        (128, 128, 4, 1),  # 512 px: one 64-latent tile
        pytest.param(768, 768, 1, 4, marks=pytest.mark.slow),  # 96 x 96 latents: 2 x 2 tiles
        # Enlarged to 256 x 128 by the process size, then 1024 x 512 px: 1 x 3 tiles.
        pytest.param(64, 32, 4, 3, marks=pytest.mark.slow),
    ],
)
def test_pipeline_defaults_reproduce_the_released_inference(pipe, monkeypatch, width, height, upscale, tiles):
    image = photo(width, height)
    size = released_lr_image(image, upscale).size
    noise = torch.randn(1, 16, size[1] // 8, size[0] // 8, generator=torch.Generator().manual_seed(0))
    batches = []
    forward = type(pipe.transformer).forward

    def counting_forward(self, hidden_states, *args, **kwargs):
        batches.append(hidden_states.shape[0])
        return forward(self, hidden_states, *args, **kwargs)

    monkeypatch.setattr(type(pipe.transformer), "forward", counting_forward)
    latents, lr_latents = run_pipeline(pipe, image, "a red brick house by a lake", noise, upscale)
    monkeypatch.setattr(type(pipe.transformer), "forward", forward)

    # On the CPU all tiles of a step go through the transformer in one batch, twice for guidance.
    assert batches == [2 * tiles] * STEPS
    expected_latents, expected_lr_latents = released_inference(
        pipe, image, "a red brick house by a lake", noise, upscale, STEPS
    )
    assert lr_latents.shape == expected_lr_latents.shape
    assert relative_error(lr_latents, expected_lr_latents) < 1e-5
    assert latents.shape == expected_latents.shape
    assert relative_error(latents, expected_latents) < 1e-4


@pytest.mark.slow
def test_symmetric_tile_weights_differ_from_the_release(pipe):
    image = photo(768, 768)
    noise = torch.randn(1, 16, 96, 96, generator=torch.Generator().manual_seed(0))
    expected, _ = released_inference(pipe, image, "", noise, 1, 1)
    options = {"upscale": 1, "num_inference_steps": 1, "latents": noise, "output_type": "latent"}
    released = pipe(image=image, **options).images
    symmetric = pipe(image=image, symmetric_tile_weights=True, **options).images
    assert relative_error(released, expected) < 1e-4
    assert relative_error(symmetric, expected) > 10 * relative_error(released, expected)
