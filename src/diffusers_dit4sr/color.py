# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Color correction of a super-resolved image against its low-resolution input.

Diffusion SR models tend to drift in global color and contrast. The usual remedy (StableSR, SeeSR, DiT4SR)
is to take the low frequencies, or the per-channel statistics, from the bicubic-upscaled LR image and keep
only the detail from the model's output: `adain_color_fix` and `wavelet_color_fix` (`apply_color_fix` picks one by
name). They work on batches of images (or on latents) and do not clamp their output: the caller decides the value
range.
"""

import torch
import torch.nn.functional as F

__all__ = [
    "COLOR_FIX_METHODS",
    "adain_color_fix",
    "apply_color_fix",
    "wavelet_color_fix",
    "wavelet_decomposition",
]

COLOR_FIX_METHODS = ("adain", "wavelet")
"""Names accepted by :func:`apply_color_fix` (besides ``None``, which disables the correction)."""

# 3x3 binomial kernel, the "a trous" B1-spline scaling function used by StableSR/SeeSR.
_BINOMIAL_KERNEL = ((1.0, 2.0, 1.0), (2.0, 4.0, 2.0), (1.0, 2.0, 1.0))


def adain_color_fix(content: torch.Tensor, reference: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Match the per-image, per-channel mean and standard deviation of ``content`` to those of ``reference``.

    This is adaptive instance normalization: ``(content - mean_c) / std_c * std_r + mean_r``, with
    ``std = sqrt(var + eps)`` and sample (unbiased, ``N - 1``) variances over the spatial dimensions, as in the
    released StableSR/SeeSR/DiT4SR color fix. Only statistics are taken from ``reference``, so its spatial size may
    differ from ``content``'s.

    Args:
        content: Image(s) to correct, shaped (B, C, H, W) or (C, H, W), any floating dtype.
        reference: Image(s) whose color statistics are imposed, with the same number of dimensions, batch size
            and channels as ``content``.
        eps: Added to both variances before the square root, so flat channels do not divide by zero.

    Returns:
        The corrected ``content``, with its shape and dtype. Statistics are computed in at least float32.
    """
    _check_images(content, reference, same_size=False)
    if eps < 0:
        raise ValueError(f"`eps` must be non-negative, got {eps}.")
    compute_dtype = torch.promote_types(content.dtype, torch.float32)
    content_f = content.to(compute_dtype)
    reference_f = reference.to(compute_dtype)

    dims = (-2, -1)
    content_var, content_mean = torch.var_mean(content_f, dim=dims, correction=1, keepdim=True)
    reference_var, reference_mean = torch.var_mean(reference_f, dim=dims, correction=1, keepdim=True)
    scale = torch.sqrt((reference_var + eps) / (content_var + eps))
    return ((content_f - content_mean) * scale + reference_mean).to(content.dtype)


def wavelet_decomposition(image: torch.Tensor, levels: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``image`` into high and low frequencies with an "a trous" (stationary) wavelet transform.

    Level ``i`` blurs the previous low-pass image with the 3x3 binomial kernel ``[[1, 2, 1], [2, 4, 2],
    [1, 2, 1]] / 16`` dilated by ``2**i`` (replicate padding, as in StableSR/SeeSR). The detail bands
    ``previous - blurred`` are summed into the high-frequency part, so ``high + low == image`` up to
    floating-point rounding.

    Args:
        image: Images shaped (B, C, H, W) or (C, H, W), any floating dtype.
        levels: Number of blur levels; ``levels`` blurs give the low-frequency residual.

    Returns:
        ``(high, low)``, each with the shape of ``image``, in at least float32.
    """
    _check_image(image, "image")
    if not isinstance(levels, int) or isinstance(levels, bool) or levels < 1:
        raise ValueError(f"`levels` must be a positive integer, got {levels!r}.")
    compute_dtype = torch.promote_types(image.dtype, torch.float32)
    low = image.to(compute_dtype)
    squeeze = low.ndim == 3
    if squeeze:
        low = low.unsqueeze(0)

    channels = low.shape[1]
    kernel = torch.tensor(_BINOMIAL_KERNEL, dtype=compute_dtype, device=low.device) / 16.0
    kernel = kernel.expand(channels, 1, 3, 3)
    high = torch.zeros_like(low)
    for level in range(levels):
        dilation = 2**level
        padded = F.pad(low, (dilation, dilation, dilation, dilation), mode="replicate")
        blurred = F.conv2d(padded, kernel, groups=channels, dilation=dilation)
        high = high + (low - blurred)
        low = blurred

    if squeeze:
        high, low = high.squeeze(0), low.squeeze(0)
    return high, low


def wavelet_color_fix(content: torch.Tensor, reference: torch.Tensor, levels: int = 5) -> torch.Tensor:
    """Combine the high frequencies of ``content`` with the low frequencies of ``reference``.

    Both images are split by :func:`wavelet_decomposition`; the result is ``high(content) + low(reference)``,
    i.e. ``content - low(content) + low(reference)``. A global color shift of ``content`` relative to
    ``reference`` is therefore removed exactly, while detail finer than about ``2**levels`` pixels is kept.

    Args:
        content: Image(s) to correct, shaped (B, C, H, W) or (C, H, W), any floating dtype.
        reference: Image(s) of exactly the same shape providing the low frequencies (the upscaled LR image).
        levels: Number of wavelet levels.

    Returns:
        The corrected ``content``, with its shape and dtype.
    """
    _check_images(content, reference, same_size=True)
    content_high, _ = wavelet_decomposition(content, levels)
    _, reference_low = wavelet_decomposition(reference, levels)
    return (content_high + reference_low).to(content.dtype)


def apply_color_fix(content: torch.Tensor, reference: torch.Tensor, method: str | None) -> torch.Tensor:
    """Apply the color correction named ``method``.

    Args:
        content: The images to correct.
        reference: The bicubic-upscaled LR images they are corrected against.
        method: ``"adain"``, ``"wavelet"``, or ``None``, which returns ``content`` unchanged (the same tensor
            object).
    """
    if method is None:
        return content
    if method == "adain":
        return adain_color_fix(content, reference)
    if method == "wavelet":
        return wavelet_color_fix(content, reference)
    raise ValueError(f"`method` must be one of {COLOR_FIX_METHODS} or None, got {method!r}.")


def _check_image(image: torch.Tensor, name: str) -> None:
    if not isinstance(image, torch.Tensor):
        raise TypeError(f"`{name}` must be a torch.Tensor, got {type(image).__name__}.")
    if not image.is_floating_point():
        raise TypeError(f"`{name}` must have a floating-point dtype, got {image.dtype}.")
    if image.ndim not in (3, 4):
        raise ValueError(f"`{name}` must be shaped (B, C, H, W) or (C, H, W), got shape {tuple(image.shape)}.")


def _check_images(content: torch.Tensor, reference: torch.Tensor, same_size: bool) -> None:
    _check_image(content, "content")
    _check_image(reference, "reference")
    if same_size:
        if content.shape != reference.shape:
            raise ValueError(
                f"`content` and `reference` must have the same shape, got {tuple(content.shape)} and "
                f"{tuple(reference.shape)}."
            )
    elif content.ndim != reference.ndim or content.shape[:-2] != reference.shape[:-2]:
        raise ValueError(
            "`content` and `reference` must have the same number of dimensions, batch size and channels, got "
            f"shapes {tuple(content.shape)} and {tuple(reference.shape)}."
        )
