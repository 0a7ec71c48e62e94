# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Unsharp masking of the HR training target, as Real-ESRGAN (and SeeSR, DiT4SR) sharpen ground truth.

Training against a slightly sharpened HR pushes the model towards crisper output. The residual against a wide
Gaussian blur is added back with `weight`, but only where it is large (above `threshold` 8-bit levels); the
hard threshold mask is itself blurred into a soft mask so the sharpened regions blend in smoothly.
"""

import torch

from .filtering import separable_filter

__all__ = ["gaussian_kernel_1d", "unsharp_mask"]


def gaussian_kernel_1d(size: int, sigma: float = 0.0, device: torch.device | str | None = None) -> torch.Tensor:
    """Normalized 1-D Gaussian of odd `size`; `sigma <= 0` picks OpenCV's `0.3 * ((size - 1) / 2 - 1) + 0.8`."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1 or size % 2 == 0:
        raise ValueError(f"`size` must be a positive odd integer, got {size!r}.")
    if sigma <= 0:
        sigma = 0.3 * ((size - 1) * 0.5 - 1) + 0.8
    axis = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    kernel = torch.exp(-axis.square() / (2 * sigma**2))
    return (kernel / kernel.sum()).to(device=device, dtype=torch.float32)


def unsharp_mask(images: torch.Tensor, weight: float = 0.5, radius: int = 50, threshold: float = 10) -> torch.Tensor:
    """Real-ESRGAN's USM sharpening of (B, C, H, W) images in [0, 1].

    Args:
        images: Floating images in [0, 1].
        weight: Amount of the high-pass residual added back; 0 returns `images` unchanged.
        radius: Gaussian blur size in pixels (an even value is bumped to the next odd one, as Real-ESRGAN does).
        threshold: Minimal absolute residual, in 8-bit levels, that gets sharpened.

    Returns:
        The sharpened images, same shape and dtype, in [0, 1].
    """
    if weight < 0:
        raise ValueError(f"`weight` must be non-negative, got {weight}.")
    if weight == 0:
        return images
    size = radius + 1 if radius % 2 == 0 else radius
    kernel = gaussian_kernel_1d(size, device=images.device)
    residual = images - separable_filter(images, kernel)
    mask = (residual.abs() * 255 > threshold).to(images.dtype)
    soft_mask = separable_filter(mask, kernel)
    sharp = (images + weight * residual).clamp(0, 1)
    return soft_mask * sharp + (1 - soft_mask) * images
