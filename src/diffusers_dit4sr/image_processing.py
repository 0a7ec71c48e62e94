# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Image inputs and sizes of the super-resolution pipeline.

Turns what users pass (PIL images, numpy arrays, tensors, lists of them) into RGB tensors, plans the working size
of each image (spec: "process size") and pads it to the grid the latent space needs, so that any input size, odd and
non-square included, comes back at exactly `round(W * upscale) x round(H * upscale)`.

8-bit inputs stay 8-bit until they are resized, and are resized by PIL itself, as the released inference did: the LR
latents of a PIL image are then exactly the released ones. Other inputs are resized in torch with the same kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
import torch.nn.functional as F

from .constants import IMAGE_EXTENSIONS, MAX_OUTPUT_SIDE  # noqa: F401 (their home before `constants`)

ImageInput = PIL.Image.Image | np.ndarray | torch.Tensor
HIGH_PRECISION_MODES = {"I;16": 65535, "I;16L": 65535, "I;16B": 65535, "I;16N": 65535, "I": 65535, "F": 1}
"""PIL modes (gray, 16-bit integer or float) read at full precision, with the value that maps to white."""


def to_rgb_tensors(image: ImageInput | list[ImageInput], name: str = "image") -> list[torch.Tensor]:
    """
    Converts the pipeline's image input into a list of `(3, H, W)` tensors: uint8 for 8-bit inputs (PIL images,
    uint8 arrays), float32 in [0, 1] otherwise.

    Args:
        image: A PIL image (any mode; grayscale and RGBA become RGB; 16-bit modes are scaled from [0, 65535] and
            float ones read as they are, both at full precision), a numpy array `(H, W)`, `(H, W, C)` or
            `(B, H, W, C)` (uint8, uint16, or float in [0, 1]), a tensor `(C, H, W)` or `(B, C, H, W)` in [0, 1], or
            a list of these. One or four channels become RGB (alpha is dropped). Images of a list may differ in
            size.
        name: How messages name the argument.

    Raises:
        ValueError, TypeError: An input of another kind, shape or range, naming `name`.
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
        if image.mode in HIGH_PRECISION_MODES:
            gray = np.asarray(image, dtype=np.float64) / HIGH_PRECISION_MODES[image.mode]
            return _split_tensor(torch.from_numpy(gray.astype(np.float32))[None], name)
        return [torch.from_numpy(np.array(image.convert("RGB"))).permute(2, 0, 1).contiguous()]
    if isinstance(image, np.ndarray):
        if image.ndim == 2:
            image = image[..., None]
        if image.ndim not in (3, 4):
            raise ValueError(f"`{name}` arrays must be (H, W), (H, W, C) or (B, H, W, C), got shape {image.shape}.")
        if image.dtype == np.uint16:
            image = image / 65535.0
        elif image.dtype != np.uint8 and not np.issubdtype(image.dtype, np.floating):
            raise TypeError(f"`{name}` arrays must be uint8, uint16 or float in [0, 1], got dtype {image.dtype}.")
        dtype = np.uint8 if image.dtype == np.uint8 else np.float32
        tensor = torch.from_numpy(np.ascontiguousarray(image, dtype=dtype))
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
    """`(C, H, W)` or `(B, C, H, W)` (uint8 or float) -> list of `(3, H, W)`, after checking values and sizes."""
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
    if batch.is_floating_point() and not torch.isfinite(batch).all():
        raise ValueError(f"`{name}` contains NaN or infinite values.")
    if batch.is_floating_point() and (batch.min() < 0 or batch.max() > 1):
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
    enlarged_size: tuple[int, int]
    """(height, width) of the LR after the process-size enlargement (`input_size` when there is none)."""
    process_size: tuple[int, int]
    """(height, width) the model works at: the enlarged LR times `upscale`."""
    padded_size: tuple[int, int]
    """`process_size` padded up to a multiple of the latent grid (`multiple` pixels)."""


def plan_sizes(height: int, width: int, upscale: float, process_size: int, multiple: int = 16) -> SizePlan:
    """
    Plans the sizes of one image as the released inference did (spec: "process size").

    The output is `round(H * upscale) x round(W * upscale)`. An LR whose short side is below
    `process_size // upscale` is first enlarged (bicubic) by `k = (process_size // upscale) / min(H, W)` to
    `int(k * H) x int(k * W)`, because the released models were trained on 512 px crops; the model works on the
    enlarged LR times `upscale` and the result is resized back to the output size at the end. The working image is
    reflect-padded to a multiple of `multiple` pixels (VAE factor x patch size) and cropped back after decoding (the
    release resized it to a multiple of 8 instead, losing the exact output size).

    Args:
        height, width: The LR input's size, in pixels.
        upscale: The upscaling factor.
        process_size: The short side, in output pixels, below which the LR is first enlarged (0: never).
        multiple: The working image is padded to a multiple of this many pixels.
    """
    output_size = (max(1, round(height * upscale)), max(1, round(width * upscale)))
    short_lr_side = process_size // upscale
    if min(height, width) < short_lr_side:
        factor = short_lr_side / min(height, width)
        enlarged = (int(factor * height), int(factor * width))
    else:
        enlarged = (height, width)
    working = (max(1, round(enlarged[0] * upscale)), max(1, round(enlarged[1] * upscale)))
    padded = (math.ceil(working[0] / multiple) * multiple, math.ceil(working[1] / multiple) * multiple)
    return SizePlan((height, width), output_size, enlarged, working, padded)


def upscale_lr(image: torch.Tensor, plan: SizePlan) -> torch.Tensor:
    """
    The LR image as the model sees it: enlarged to `plan.enlarged_size`, then to `plan.process_size`, both bicubic.

    A uint8 `(3, H, W)` image is resized by PIL's BICUBIC with its uint8 rounding after each resize, exactly as the
    released inference prepared its PIL inputs; a float image by :func:`pil_bicubic_resize`, the same kernel without
    the rounding. Returns a `(1, 3, h, w)` float32 tensor in [0, 1].
    """
    if image.dtype == torch.uint8:
        pil_image = PIL.Image.fromarray(image.permute(1, 2, 0).numpy())
        for height, width in (plan.enlarged_size, plan.process_size):
            pil_image = pil_image.resize((width, height), PIL.Image.Resampling.BICUBIC)
        array = np.asarray(pil_image, dtype=np.float32) / 255.0
        return torch.from_numpy(array).permute(2, 0, 1)[None].contiguous()
    upscaled = image[None].float()
    for size in (plan.enlarged_size, plan.process_size):
        upscaled = pil_bicubic_resize(upscaled, size)
    return upscaled


def pil_bicubic_resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    PIL's bicubic resize (Keys kernel, a = -0.5, widened when shrinking) of `(B, C, H, W)` images in [0, 1], clamped.

    Torch's antialiased bicubic is that kernel: on float images it agrees with PIL's to float round-off, up- and
    downsampling. The inference pipeline resizes with it, as the released inference resized with PIL.
    """
    if tuple(image.shape[-2:]) == tuple(size):
        return image
    resized = F.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
    return resized.clamp(0, 1)


def resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """
    Torch's bicubic resize (a = -0.75) of `(B, C, H, W)` images in [0, 1], antialiased when shrinking, clamped.

    The released training data were made with this kernel (the LR upscaled back to the HR size); inference uses
    :func:`pil_bicubic_resize`.
    """
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
