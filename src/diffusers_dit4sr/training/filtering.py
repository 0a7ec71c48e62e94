# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Spatial filtering of image batches with reflect padding.

`filter2d` applies one kernel per image in a single grouped convolution, the way the degradation blurs a
batch whose images each drew their own kernel. Reflect padding (the edge sample is not repeated, OpenCV's
`BORDER_REFLECT_101`, as BasicSR's `filter2D`) is extended periodically, so kernels may be wider than the
image: the second degradation stage can shrink a crop to a few pixels.
"""

import torch
import torch.nn.functional as F

__all__ = ["filter2d", "reflect_pad", "separable_filter"]


def reflect_pad(images: torch.Tensor, pad_h: int, pad_w: int) -> torch.Tensor:
    """Reflect-pad (B, C, H, W) images by `pad_h` rows and `pad_w` columns on each side, for any pad width.

    Pads wider than the image repeat the reflection: each pass pads by at most the current size minus one, so
    its new edges stay on symmetry axes of the periodic reflection and the result is the same as one wide pad.
    A dimension of size 1 is replicated.
    """
    if images.shape[-2] == 1:
        images, pad_h = F.pad(images, (0, 0, pad_h, pad_h), mode="replicate"), 0
    if images.shape[-1] == 1:
        images, pad_w = F.pad(images, (pad_w, pad_w, 0, 0), mode="replicate"), 0
    while pad_h > 0 or pad_w > 0:
        step_h = min(pad_h, images.shape[-2] - 1)
        step_w = min(pad_w, images.shape[-1] - 1)
        images = F.pad(images, (step_w, step_w, step_h, step_h), mode="reflect")
        pad_h, pad_w = pad_h - step_h, pad_w - step_w
    return images


def filter2d(images: torch.Tensor, kernels: torch.Tensor) -> torch.Tensor:
    """Correlate every channel of each image with its kernel, keeping the image size.

    Args:
        images: (B, C, H, W) floating images.
        kernels: (B, K, K) one kernel per image, or (K, K) shared by the batch; K odd.

    Returns:
        The filtered images, (B, C, H, W).
    """
    batch, channels, height, width = images.shape
    size = kernels.shape[-1]
    if kernels.shape[-2] != size or size % 2 == 0 or kernels.ndim not in (2, 3):
        raise ValueError(f"`kernels` must be (B, K, K) or (K, K) with K odd, got {tuple(kernels.shape)}.")
    if kernels.ndim == 3 and kernels.shape[0] != batch:
        raise ValueError(f"`kernels` holds {kernels.shape[0]} kernels for a batch of {batch} images.")
    kernels = kernels.to(images.dtype)
    padded = reflect_pad(images, size // 2, size // 2)
    if kernels.ndim == 2:
        weight = kernels.view(1, 1, size, size)
        padded = padded.reshape(batch * channels, 1, *padded.shape[-2:])
        return F.conv2d(padded, weight).view(batch, channels, height, width)
    weight = kernels.repeat_interleave(channels, dim=0).unsqueeze(1)
    padded = padded.reshape(1, batch * channels, *padded.shape[-2:])
    return F.conv2d(padded, weight, groups=batch * channels).view(batch, channels, height, width)


def separable_filter(images: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Filter (B, C, H, W) images with the outer product of the odd 1-D `kernel` with itself.

    Runs as two depthwise 1-D convolutions (rows, then columns): far cheaper than one wide 2-D kernel.
    """
    batch, channels, height, width = images.shape
    size = kernel.numel()
    if kernel.ndim != 1 or size % 2 == 0:
        raise ValueError(f"`kernel` must be 1-D with an odd length, got shape {tuple(kernel.shape)}.")
    groups = batch * channels
    weight = kernel.to(images.dtype).view(1, 1, 1, size).expand(groups, 1, 1, size)
    padded = reflect_pad(images, size // 2, size // 2).reshape(1, groups, height + size - 1, width + size - 1)
    rows = F.conv2d(padded, weight, groups=groups)
    return F.conv2d(rows, weight.transpose(-2, -1), groups=groups).view(batch, channels, height, width)
