# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Real-ESRGAN's second-order degradation: synthetic real-world LR images from HR crops, on the training device.

The pipeline (Wang et al., "Real-ESRGAN", 2021) as DiT4SR trained with it, with SeeSR's parameters:

    HR -> unsharp mask (the training target)
       -> blur -> random resize -> noise -> JPEG                          (first stage)
       -> [blur] -> random resize -> noise                                (second stage)
       -> either [resize to LR + sinc] -> JPEG, or JPEG -> [resize to LR + sinc]
       -> clamp and round to 8-bit levels                                 (LR)

As in Real-ESRGAN, kernels, noise levels, gray-noise flags and JPEG qualities are drawn per image, while the
resize factors and modes, the noise type, the second-blur decision and the order of the final stage are
shared by the batch (they decide tensor shapes or are drawn once per iteration there). With probability
`no_degradation_prob` an image's LR is instead the plain bicubic downscale of its target.
"""

import torch
import torch.nn.functional as F

from .config import DegradationConfig
from .filtering import filter2d
from .jpeg import jpeg_compress
from .kernels import random_mixed_kernels, random_sinc_kernels
from .noise import gaussian_noise, poisson_noise
from .sampling import categorical, resolve_generator, uniform, uniform_scalar
from .sharpen import unsharp_mask

__all__ = ["RealESRGANDegradation"]


class RealESRGANDegradation(torch.nn.Module):
    """Turns a batch of HR crops into (LR, sharpened HR) training pairs.

    Args:
        config: Degradation parameters; the default is the released DiT4SR / SeeSR setting.

    Example:
        >>> degrade = RealESRGANDegradation()
        >>> lr, hr = degrade(torch.rand(4, 3, 512, 512), generator=torch.Generator().manual_seed(0))
        >>> lr.shape, hr.shape
        (torch.Size([4, 3, 128, 128]), torch.Size([4, 3, 512, 512]))
    """

    def __init__(self, config: DegradationConfig | None = None) -> None:
        super().__init__()
        if config is not None and not isinstance(config, DegradationConfig):
            raise TypeError(f"`config` must be a DegradationConfig or None, got {type(config).__name__}.")
        self.config = config or DegradationConfig()

    def extra_repr(self) -> str:
        return f"scale={self.config.scale}"

    def forward(self, hr: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Degrade a batch.

        Args:
            hr: (B, 3, H, W) floating RGB in [0, 1], H and W divisible by `config.scale`.
            generator: Source of every random draw; the same seed gives the same batch. `None` draws a fresh
                seed from the OS (the global torch, numpy and `random` generators are never used).

        Returns:
            `(lr, hr_sharpened)`: the LR, (B, 3, H / scale, W / scale) on 8-bit levels in [0, 1], and the
            unsharp-masked HR target, (B, 3, H, W); both in the dtype of `hr`.
        """
        config = self.config
        _check_hr(hr, config.scale)
        generator = resolve_generator(generator, hr.device)
        batch, _, height, width = hr.shape
        lr_size = (height // config.scale, width // config.scale)
        work_dtype = torch.promote_types(hr.dtype, torch.float32)

        def on_device(kernels: torch.Tensor) -> torch.Tensor:
            return kernels.to(device=hr.device, dtype=work_dtype)

        keep_clean = uniform(generator, (batch,), 0, 1, hr.device) < config.no_degradation_prob
        kernels1 = on_device(
            random_mixed_kernels(
                batch,
                config.blur_kernel_size,
                config.kernel_list,
                config.kernel_prob,
                config.blur_sigma,
                config.betag_range,
                config.betap_range,
                config.sinc_prob,
                generator,
                config.min_kernel_size,
            )
        )
        kernels2 = on_device(
            random_mixed_kernels(
                batch,
                config.blur_kernel_size2,
                config.kernel_list2,
                config.kernel_prob2,
                config.blur_sigma2,
                config.betag_range2,
                config.betap_range2,
                config.sinc_prob2,
                generator,
                config.min_kernel_size,
            )
        )
        sinc = on_device(
            random_sinc_kernels(
                batch, config.final_sinc_kernel_size, config.final_sinc_prob, generator, config.min_kernel_size
            )
        )

        target = unsharp_mask(hr.to(work_dtype), config.usm_weight, config.usm_radius, config.usm_threshold)

        # First stage.
        out = filter2d(target, kernels1)
        factor = _random_factor(generator, config.resize_prob, config.resize_range)
        out = _resize(out, (int(height * factor), int(width * factor)), _random_mode(generator, config.resize_modes))
        out = _add_noise(
            out,
            generator,
            config.gaussian_noise_prob,
            config.noise_range,
            config.poisson_scale_range,
            config.gray_noise_prob,
        )
        out = jpeg_compress(out, uniform(generator, (batch,), *config.jpeg_range, hr.device))

        # Second stage.
        if uniform_scalar(generator, 0, 1) < config.second_blur_prob:
            out = filter2d(out, kernels2)
        factor = _random_factor(generator, config.resize_prob2, config.resize_range2)
        size = (int(lr_size[0] * factor), int(lr_size[1] * factor))
        out = _resize(out, size, _random_mode(generator, config.resize_modes))
        out = _add_noise(
            out,
            generator,
            config.gaussian_noise_prob2,
            config.noise_range2,
            config.poisson_scale_range2,
            config.gray_noise_prob2,
        )

        # Final stage: resize to the LR size + sinc filter, and JPEG, in a random order.
        sinc_first = uniform_scalar(generator, 0, 1) < config.final_sinc_first_prob
        final_mode = _random_mode(generator, config.resize_modes)
        quality = uniform(generator, (batch,), *config.jpeg_range2, hr.device)
        if sinc_first:
            out = filter2d(_resize(out, lr_size, final_mode), sinc)
            out = jpeg_compress(out, quality)
        else:
            out = jpeg_compress(out, quality)
            out = filter2d(_resize(out, lr_size, final_mode), sinc)

        if bool(keep_clean.any()):
            clean = F.interpolate(target, size=lr_size, mode="bicubic", align_corners=False, antialias=True)
            out = torch.where(keep_clean[:, None, None, None], clean, out)
        lr = (out.clamp(0, 1) * 255).round() / 255
        return lr.to(hr.dtype), target.to(hr.dtype)


def _check_hr(hr: torch.Tensor, scale: int) -> None:
    if not isinstance(hr, torch.Tensor):
        raise TypeError(f"`hr` must be a torch.Tensor, got {type(hr).__name__}.")
    if hr.ndim != 4 or hr.shape[1] != 3:
        raise ValueError(f"`hr` must have shape (B, 3, H, W), got {tuple(hr.shape)}.")
    if not hr.is_floating_point():
        raise TypeError(f"`hr` must be a floating tensor with values in [0, 1], got {hr.dtype}.")
    batch, _, height, width = hr.shape
    if batch == 0 or height < scale or width < scale:
        raise ValueError(f"`hr` must hold at least one image of at least {scale}x{scale}, got {tuple(hr.shape)}.")
    if height % scale or width % scale:
        raise ValueError(f"`hr` height and width must be divisible by scale={scale}, got {height}x{width}.")
    low, high = torch.aminmax(hr)
    if not (bool(low >= 0) and bool(high <= 1)):
        raise ValueError(f"`hr` values must lie in [0, 1], got [{float(low)}, {float(high)}].")


def _random_factor(generator: torch.Generator, probs: tuple[float, ...], value_range: tuple[float, float]) -> float:
    """Resize factor for the batch: up from [1, max], down from [min, 1] or keep (1), with `probs`."""
    direction = int(categorical(generator, probs, ()))
    if direction == 0:
        return uniform_scalar(generator, 1.0, value_range[1])
    if direction == 1:
        return uniform_scalar(generator, value_range[0], 1.0)
    return 1.0


def _random_mode(generator: torch.Generator, modes: tuple[str, ...]) -> str:
    return modes[int(categorical(generator, [1 / len(modes)] * len(modes), ()))]


def _resize(images: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize without antialiasing (aliasing is part of the degradation), at least to 1x1."""
    size = (max(size[0], 1), max(size[1], 1))
    if tuple(images.shape[-2:]) == size:
        return images
    align = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    return F.interpolate(images, size=size, mode=mode, **align)


def _add_noise(
    images: torch.Tensor,
    generator: torch.Generator,
    gaussian_prob: float,
    sigma_range: tuple[float, float],
    poisson_range: tuple[float, float],
    gray_prob: float,
) -> torch.Tensor:
    """Gaussian (with `gaussian_prob`, for the whole batch) or Poisson noise, per-image levels, clamped to [0, 1]."""
    batch = images.shape[0]
    use_gaussian = uniform_scalar(generator, 0, 1) < gaussian_prob
    value_range = sigma_range if use_gaussian else poisson_range
    level = uniform(generator, (batch,), *value_range, images.device)
    gray = uniform(generator, (batch,), 0, 1, images.device) < gray_prob
    noise_fn = gaussian_noise if use_gaussian else poisson_noise
    return (images + noise_fn(images, level, gray, generator)).clamp(0, 1)
