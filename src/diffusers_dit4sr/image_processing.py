# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Image inputs and sizes of the super-resolution pipeline.

Turns what users pass (PIL images, numpy arrays, tensors, lists of them) into RGB float tensors, plans the
working size of each image (spec: "process size") and pads it to the grid the latent space needs, so that any
input size, odd and non-square included, comes back at exactly `round(W * upscale) x round(H * upscale)`.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
"""Image files the command line and the training data pick up (any case)."""
MAX_OUTPUT_SIDE = 16384
"""Largest output side in pixels the pipeline accepts (tiled denoising and VAE tiling keep memory bounded)."""


def load_image(path: str | os.PathLike) -> PIL.Image.Image:
    """An image file, fully decoded as RGB and turned upright as its EXIF orientation says.

    Raises a `ValueError` naming the file when it cannot be decoded (PIL reports corrupt or truncated data with many
    exception types).
    """
    try:
        with PIL.Image.open(path) as image:
            return PIL.ImageOps.exif_transpose(image).convert("RGB")
    except Exception as error:
        raise ValueError(f"cannot read {path}: {error}") from error


def to_rgb_tensors(image: ImageInput | list[ImageInput], name: str = "image") -> list[torch.Tensor]:
    """
    Converts the pipeline's image input into a list of `(3, H, W)` float32 tensors in [0, 1].

    Accepts a PIL image (any mode; grayscale and RGBA become RGB), a numpy array `(H, W)`, `(H, W, C)` or
    `(B, H, W, C)` (uint8, or float in [0, 1]), a tensor `(C, H, W)` or `(B, C, H, W)` in [0, 1], or a list of
    these. One or four channels become RGB (alpha is dropped). Images of a list may differ in size.
    """
    if isinstance(image, (list, tuple)):
        if len(image) == 0:
            raise ValueError(f"`{name}` is an empty list; pass at least one image.")
        return [tensor for item in image for tensor in _to_rgb_tensors(item, name)]
    return _to_rgb_tensors(image, name)


def _to_rgb_tensors(image: ImageInput, name: str) -> list[torch.Tensor]:
    if isinstance(image, PIL.Image.Image):
        if image.width == 0 or image.height == 0:
            raise ValueError(f"`{name}` contains an empty {image.width}x{image.height} image.")
        array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
        return [torch.from_numpy(array).permute(2, 0, 1).contiguous()]
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim not in (3, 4):
            raise ValueError(f"`{name}` arrays must be (H, W), (H, W, C) or (B, H, W, C), got shape {image.shape}.")
        if image.dtype == np.uint8:
            image = image.astype(np.float32) / 255.0
        elif not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"`{name}` arrays must be uint8 or float in [0, 1], got dtype {image.dtype}.")
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))
        tensor = tensor.permute(2, 0, 1) if tensor.ndim == 3 else tensor.permute(0, 3, 1, 2)
        return _split_tensor(tensor, name)
    if isinstance(image, torch.Tensor):
        if not image.is_floating_point():
            raise TypeError(f"`{name}` tensors must be floating point in [0, 1], got dtype {image.dtype}.")
        if image.ndim not in (3, 4):
            raise ValueError(f"`{name}` tensors must be (C, H, W) or (B, C, H, W), got shape {tuple(image.shape)}.")
        return _split_tensor(image.detach().to("cpu", torch.float32), name)
    raise TypeError(
        f"`{name}` must be a PIL image, numpy array, torch tensor or a list of them, got {type(image).__name__}."
    )


def _split_tensor(tensor: torch.Tensor, name: str) -> list[torch.Tensor]:
    """`(C, H, W)` or `(B, C, H, W)` in [0, 1] -> list of `(3, H, W)`, after checking values and sizes."""
    batch = tensor if tensor.ndim == 4 else tensor[None]
    if batch.shape[0] == 0:
        raise ValueError(f"`{name}` has a batch of size 0.")
    channels, height, width = batch.shape[1:]
    if height == 0 or width == 0:
        raise ValueError(f"`{name}` contains an empty {width}x{height} image (shape {tuple(tensor.shape)}).")
    if channels not in (1, 3, 4):
        raise ValueError(
            f"`{name}` must have 1 (gray), 3 (RGB) or 4 (RGBA) channels, got {channels} (shape "
            f"{tuple(tensor.shape)}); channels come first in tensors and last in arrays."
        )
    if not torch.isfinite(batch).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    if batch.min() < 0 or batch.max() > 1:
        raise ValueError(
            f"`{name}` values must lie in [0, 1], got [{batch.min().item():.3g}, {batch.max().item():.3g}]."
        )
    if channels == 1:
        batch = batch.expand(-1, 3, -1, -1)
    return [rgb.contiguous() for rgb in batch[:, :3]]


@dataclass(frozen=True)
class SizePlan:
    """Sizes, in pixels, of one image on its way through the pipeline."""

    input_size: tuple[int, int]
    """(height, width) of the LR input."""
    output_size: tuple[int, int]
    """(height, width) returned: `round(H * upscale), round(W * upscale)`."""
    process_size: tuple[int, int]
    """(height, width) the model works at: the output size, enlarged so its short side reaches `process_size`."""
    padded_size: tuple[int, int]
    """`process_size` padded up to a multiple of the latent grid (`multiple` pixels)."""


def plan_sizes(height: int, width: int, upscale: float, process_size: int, multiple: int = 16) -> SizePlan:
    """
    Plans the sizes of one image (spec: "process size").

    The output is `round(H * upscale) x round(W * upscale)`. If its short side is below `process_size`, the model
    works on a bicubic enlargement whose short side is `process_size` (the released models were trained on 512 px
    crops) and the result is resized back at the end. The working image is reflect-padded to a multiple of
    `multiple` pixels (VAE factor x patch size) and cropped back after decoding.
    """
    output_size = (max(1, round(height * upscale)), max(1, round(width * upscale)))
    short_side = min(output_size)
    if short_side < process_size:
        factor = process_size / short_side
        working = (
            max(process_size, round(output_size[0] * factor)),
            max(process_size, round(output_size[1] * factor)),
        )
    else:
        working = output_size
    padded = (math.ceil(working[0] / multiple) * multiple, math.ceil(working[1] / multiple) * multiple)
    return SizePlan((height, width), output_size, working, padded)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bicubic resize of `(B, C, H, W)` images in [0, 1], antialiased when shrinking, clamped to [0, 1]."""
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    shrinking = size[0] < image.shape[-2] or size[1] < image.shape[-1]
    resized = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=shrinking)
    return resized.clamp(0, 1)


def pad_to(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Pads `(B, C, H, W)` images at the bottom and right to `size`: reflect where possible, else replicate."""
    pad_height, pad_width = size[0] - image.shape[-2], size[1] - image.shape[-1]
    if pad_height == 0 and pad_width == 0:
        return image
    mode = "reflect" if pad_height < image.shape[-2] and pad_width < image.shape[-1] else "replicate"
    return F.pad(image, (0, pad_width, 0, pad_height), mode=mode)
