# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Sensor noise of the Real-ESRGAN degradation: additive Gaussian and signal-dependent Poisson (shot) noise.

Both functions return the noise only (the caller adds it and clamps). Parameters are per image; an image
flagged `gray` gets one noise map shared by its three channels (luminance noise), the others independent
noise per channel (color noise). Random draws come from the caller's generator, on its device.
"""

import torch

__all__ = ["gaussian_noise", "poisson_noise"]

# ITU-R BT.601 luma weights, as torchvision's `rgb_to_grayscale` used by Real-ESRGAN.
_LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def _per_image(value: float | bool | torch.Tensor, images: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A scalar or (B,) parameter as a (B, 1, 1, 1) tensor on the images' device."""
    value = torch.as_tensor(value, device=images.device).to(dtype)
    if value.numel() not in (1, images.shape[0]):
        raise ValueError(f"per-image parameters need 1 or {images.shape[0]} values, got {value.numel()}.")
    return value.reshape(-1, 1, 1, 1).expand(images.shape[0], 1, 1, 1)


def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}.")
    if not images.is_floating_point():
        raise TypeError(f"`images` must be a floating tensor, got {images.dtype}.")


def gaussian_noise(
    images: torch.Tensor,
    sigma: float | torch.Tensor,
    gray: bool | torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Zero-mean Gaussian noise with per-image standard deviation `sigma / 255`.

    Args:
        images: (B, 3, H, W) floating images; only their shape, device and dtype are used.
        sigma: Standard deviation in 8-bit levels, scalar or (B,).
        gray: Whether each image gets channel-shared noise, scalar or (B,).
        generator: Source of the random draws.

    Returns:
        Noise with the shape and dtype of `images`.
    """
    _check_images(images)
    batch, channels, height, width = images.shape
    sigma = _per_image(sigma, images, images.dtype) / 255
    gray = _per_image(gray, images, torch.bool)

    def normal(size: tuple[int, ...]) -> torch.Tensor:
        draw = torch.randn(size, generator=generator, device=generator.device, dtype=torch.float32)
        return draw.to(device=images.device, dtype=images.dtype)

    noise = normal((batch, channels, height, width))
    if bool(gray.any()):
        noise = torch.where(gray, normal((batch, 1, height, width)), noise)
    return noise * sigma


def _shot_noise(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Poisson noise of images quantized to 8 bits, with as many photon levels as the image has gray levels.

    As Real-ESRGAN: the count of distinct 8-bit values of each image, rounded up to a power of two, sets the
    number of photon levels `n`; the noise is `Poisson(n * x) / n - x` on the quantized image `x`.
    """
    batch = images.shape[0]
    levels = (images * 255).round().clamp(0, 255)
    present = torch.zeros(batch, 256, device=images.device, dtype=images.dtype)
    present.scatter_(1, levels.long().flatten(1), 1)
    photons = torch.exp2(torch.log2(present.sum(1)).ceil()).view(batch, 1, 1, 1)
    quantized = levels / 255
    rate = (quantized * photons).to(device=generator.device, dtype=torch.float32)
    counts = torch.poisson(rate, generator=generator).to(device=images.device, dtype=images.dtype)
    return counts / photons - quantized


def poisson_noise(
    images: torch.Tensor,
    scale: float | torch.Tensor,
    gray: bool | torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """Signal-dependent Poisson noise, multiplied by a per-image `scale`.

    Its variance at a pixel of value `x` is `scale^2 * x / n`, with `n` the image's distinct 8-bit levels
    rounded up to a power of two. Gray images use the noise of their luma, shared by the three channels.

    Args:
        images: (B, 3, H, W) floating images in [0, 1].
        scale: Noise amplitude, scalar or (B,).
        gray: Whether each image gets channel-shared noise, scalar or (B,).
        generator: Source of the random draws.

    Returns:
        Noise with the shape and dtype of `images`.
    """
    _check_images(images)
    scale = _per_image(scale, images, images.dtype)
    gray = _per_image(gray, images, torch.bool)
    noise = _shot_noise(images, generator)
    if bool(gray.any()):
        weights = torch.tensor(_LUMA_WEIGHTS, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)
        luma = (images * weights).sum(1, keepdim=True)
        noise = torch.where(gray, _shot_noise(luma, generator), noise)
    return noise * scale
