# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Blur kernels of the Real-ESRGAN degradation, built in batches with torch.

All kernels live on a square grid of odd size centred on the origin, with x along columns and y along rows.
A kernel may have a smaller odd *support*: values outside the central `support x support` window are zero,
which is how Real-ESRGAN zero-pads kernels of random size to one fixed size so that a batch shares one shape.
Every kernel is normalized to sum to 1.

The Gaussian family uses the quadratic form `q = [x, y] S^-1 [x, y]^T` with covariance
`S = R(theta) diag(sigma_x^2, sigma_y^2) R(theta)^T`:

- generalized Gaussian: `exp(-q^beta / 2)` (the plain Gaussian is `beta = 1`),
- plateau: `1 / (q^beta + 1)`,
- sinc (circular low-pass, ringing and overshoot artifacts): `cutoff * J1(cutoff * r) / (2 pi r)`.
"""

import math
from collections.abc import Sequence

import torch

from .sampling import categorical, uniform

__all__ = [
    "KERNEL_TYPES",
    "generalized_gaussian_kernels",
    "plateau_kernels",
    "random_mixed_kernels",
    "random_sinc_kernels",
    "sinc_kernels",
]

KERNEL_TYPES = ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")
"""Kernel names accepted by :func:`random_mixed_kernels`, as in Real-ESRGAN's `kernel_list`."""

# Real-ESRGAN draws the sinc cutoff from [pi/3, pi] for kernels smaller than 13 taps and from the wider
# [pi/5, pi] for larger ones (a larger kernel can hold the longer ringing of a lower cutoff).
_SMALL_SINC_SIZE = 13
_SINC_CUTOFF_SMALL = (math.pi / 3, math.pi)
_SINC_CUTOFF_LARGE = (math.pi / 5, math.pi)

_Scalar = float | torch.Tensor


def _check_kernel_size(kernel_size: int) -> None:
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"`kernel_size` must be a positive odd integer, got {kernel_size!r}.")


def _batch(*values: _Scalar | None) -> list[torch.Tensor | None]:
    """Broadcast scalar or 1-D parameters to float32 vectors of one length, on the first tensor's device."""
    device = next((v.device for v in values if isinstance(v, torch.Tensor)), torch.device("cpu"))
    present = [torch.as_tensor(v, dtype=torch.float32, device=device).reshape(-1) for v in values if v is not None]
    broadcast = iter(torch.broadcast_tensors(*present))
    return [None if v is None else next(broadcast) for v in values]


def _grid(kernel_size: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Column (x) and row (y) coordinates of the kernel taps, centred on 0."""
    axis = torch.arange(kernel_size, dtype=torch.float32, device=device) - (kernel_size - 1) / 2
    y, x = torch.meshgrid(axis, axis, indexing="ij")
    return x, y


def _normalize(kernels: torch.Tensor, support: torch.Tensor | None) -> torch.Tensor:
    """Zero the taps outside each kernel's support, then scale each kernel to sum to 1."""
    if support is not None:
        x, y = _grid(kernels.shape[-1], kernels.device)
        half = (support // 2)[:, None, None]
        kernels = kernels * ((x.abs() <= half) & (y.abs() <= half))
    return kernels / kernels.sum(dim=(-2, -1), keepdim=True)


def _check_support(support: torch.Tensor | None, kernel_size: int) -> None:
    if support is None:
        return
    if ((support < 1) | (support > kernel_size) | (support.remainder(2) != 1)).any():
        raise ValueError(f"`support` must hold odd sizes in [1, {kernel_size}], got {support.tolist()}.")


def _quadratic_form(
    kernel_size: int, sigma_x: _Scalar, sigma_y: _Scalar | None, theta: _Scalar, beta: _Scalar, support: _Scalar | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`q = [x, y] S^-1 [x, y]^T` per kernel, with the matching `beta` and `support` vectors."""
    _check_kernel_size(kernel_size)
    sigma_x, sigma_y, theta, beta, support = _batch(sigma_x, sigma_y, theta, beta, support)
    sigma_y = sigma_x if sigma_y is None else sigma_y
    if (sigma_x <= 0).any() or (sigma_y <= 0).any():
        raise ValueError("`sigma_x` and `sigma_y` must be positive.")
    if (beta <= 0).any():
        raise ValueError("`beta` must be positive.")
    _check_support(support, kernel_size)
    x, y = _grid(kernel_size, sigma_x.device)
    cos, sin = torch.cos(theta)[:, None, None], torch.sin(theta)[:, None, None]
    along = (cos * x + sin * y) / sigma_x[:, None, None]
    across = (cos * y - sin * x) / sigma_y[:, None, None]
    return along.square() + across.square(), beta[:, None, None], support


def generalized_gaussian_kernels(
    kernel_size: int,
    sigma_x: _Scalar,
    sigma_y: _Scalar | None = None,
    theta: _Scalar = 0.0,
    beta: _Scalar = 1.0,
    support: _Scalar | None = None,
) -> torch.Tensor:
    """Generalized Gaussian kernels `exp(-q^beta / 2)`; `beta = 1` is the ordinary Gaussian.

    Args:
        kernel_size: Odd grid size K.
        sigma_x: Standard deviation along the rotated x axis, scalar or (N,).
        sigma_y: Standard deviation along the rotated y axis; `None` makes the kernel isotropic.
        theta: Rotation angle in radians (counter-clockwise from the x axis towards +y).
        beta: Shape exponent; below 1 gives heavier tails, above 1 a flatter top.
        support: Odd sizes (scalar or (N,)) of the non-zero window; `None` uses the whole grid.

    Returns:
        Float32 kernels of shape (N, K, K), N the broadcast length of the parameters, each summing to 1.
    """
    q, beta, support = _quadratic_form(kernel_size, sigma_x, sigma_y, theta, beta, support)
    return _normalize(torch.exp(-0.5 * q.pow(beta)), support)


def plateau_kernels(
    kernel_size: int,
    sigma_x: _Scalar,
    sigma_y: _Scalar | None = None,
    theta: _Scalar = 0.0,
    beta: _Scalar = 1.0,
    support: _Scalar | None = None,
) -> torch.Tensor:
    """Plateau-shaped kernels `1 / (q^beta + 1)`: a flat top and slowly decaying tails.

    Arguments as in :func:`generalized_gaussian_kernels`. Returns (N, K, K) float32 kernels summing to 1.
    """
    q, beta, support = _quadratic_form(kernel_size, sigma_x, sigma_y, theta, beta, support)
    return _normalize(torch.reciprocal(q.pow(beta) + 1), support)


def sinc_kernels(kernel_size: int, cutoff: _Scalar, support: _Scalar | None = None) -> torch.Tensor:
    """Circular low-pass (2-D sinc) kernels `cutoff * J1(cutoff * r) / (2 pi r)`, truncated and normalized.

    Args:
        kernel_size: Odd grid size K.
        cutoff: Angular cutoff frequency in radians per pixel, in (0, pi]; scalar or (N,).
        support: Odd sizes of the non-zero window; `None` uses the whole grid.

    Returns:
        Float32 kernels of shape (N, K, K) summing to 1 (they have negative lobes).
    """
    _check_kernel_size(kernel_size)
    cutoff, support = _batch(cutoff, support)
    if ((cutoff <= 0) | (cutoff > math.pi)).any():
        raise ValueError(f"`cutoff` must lie in (0, pi], got {cutoff.tolist()}.")
    _check_support(support, kernel_size)
    x, y = _grid(kernel_size, cutoff.device)
    radius = torch.hypot(x, y)
    safe_radius = torch.where(radius == 0, torch.ones_like(radius), radius)
    cutoff = cutoff[:, None, None]
    kernels = cutoff * torch.special.bessel_j1(cutoff * safe_radius) / (2 * math.pi * safe_radius)
    kernels = torch.where(radius == 0, cutoff.square() / (4 * math.pi), kernels)
    return _normalize(kernels, support)


def _random_odd_sizes(generator: torch.Generator, batch_size: int, low: int, high: int) -> torch.Tensor:
    """Odd kernel sizes drawn uniformly from {low, low + 2, ..., high}."""
    _check_kernel_size(low)
    _check_kernel_size(high)
    if low > high:
        raise ValueError(f"`min_kernel_size` ({low}) must not exceed `kernel_size` ({high}).")
    count = (high - low) // 2 + 1
    index = uniform(generator, (batch_size,), 0, count).floor().clamp_(max=count - 1)
    return low + 2 * index


def _random_beta(generator: torch.Generator, batch_size: int, beta_range: Sequence[float]) -> torch.Tensor:
    """Real-ESRGAN's shape exponent: with prob 0.5 from [low, 1], else from [1, high] (1 clipped to the range)."""
    low, high = beta_range
    pivot = min(max(1.0, low), high)
    below = uniform(generator, (batch_size,), low, pivot)
    above = uniform(generator, (batch_size,), pivot, high)
    return torch.where(uniform(generator, (batch_size,), 0, 1) < 0.5, below, above)


def random_mixed_kernels(
    batch_size: int,
    kernel_size: int,
    kernel_list: Sequence[str],
    kernel_prob: Sequence[float],
    sigma_range: Sequence[float],
    betag_range: Sequence[float],
    betap_range: Sequence[float],
    sinc_prob: float,
    generator: torch.Generator,
    min_kernel_size: int = 7,
) -> torch.Tensor:
    """One random blur kernel per image, as Real-ESRGAN's dataset draws them.

    Args:
        batch_size: Kernels to draw, one per image.
        kernel_size: Side of every kernel (odd); each has a random odd support in [min_kernel_size, kernel_size],
            zero-padded to it.
        kernel_list: The kernel types to draw from (`KERNEL_TYPES`).
        kernel_prob: Their probabilities.
        sigma_range: Where the sigmas come from; anisotropic kernels get an independent `sigma_y` and a rotation
            in [-pi, pi].
        betag_range: The shape exponents of generalized Gaussian kernels.
        betap_range: The shape exponents of plateau kernels.
        sinc_prob: The probability of a sinc kernel instead (cutoff from [pi/3, pi], or [pi/5, pi] for supports of
            13 and more).
        generator: Where every draw comes from.
        min_kernel_size: The smallest support.

    Returns:
        Float32 kernels of shape (batch_size, kernel_size, kernel_size) on the generator's device.
    """
    unknown = sorted(set(kernel_list) - set(KERNEL_TYPES))
    if unknown:
        raise ValueError(f"`kernel_list` has unknown kernel types {unknown}; choose from {KERNEL_TYPES}.")
    if len(kernel_list) != len(kernel_prob):
        raise ValueError("`kernel_list` and `kernel_prob` must have the same length.")

    def draw(low: float, high: float) -> torch.Tensor:
        return uniform(generator, (batch_size,), low, high)

    support = _random_odd_sizes(generator, batch_size, min_kernel_size, kernel_size)
    kind = categorical(generator, kernel_prob, (batch_size,))

    def per_image(flags: list[bool]) -> torch.Tensor:
        return torch.tensor(flags, device=kind.device)[kind]

    isotropic = per_image([name.rsplit("_", 1)[-1] == "iso" for name in kernel_list])
    generalized = per_image([name.startswith("generalized") for name in kernel_list])
    plateau = per_image([name.startswith("plateau") for name in kernel_list])

    sigma_x = draw(*sigma_range)
    sigma_y = torch.where(isotropic, sigma_x, draw(*sigma_range))
    theta = torch.where(isotropic, torch.zeros_like(sigma_x), draw(-math.pi, math.pi))
    beta_g = _random_beta(generator, batch_size, betag_range)
    beta_p = _random_beta(generator, batch_size, betap_range)
    beta = torch.where(generalized, beta_g, torch.where(plateau, beta_p, torch.ones_like(beta_g)))

    gaussian = generalized_gaussian_kernels(kernel_size, sigma_x, sigma_y, theta, beta, support)
    flat_top = plateau_kernels(kernel_size, sigma_x, sigma_y, theta, beta, support)
    kernels = torch.where(plateau[:, None, None], flat_top, gaussian)

    small = support < _SMALL_SINC_SIZE
    cutoff_low = torch.where(small, _SINC_CUTOFF_SMALL[0], _SINC_CUTOFF_LARGE[0])
    cutoff = cutoff_low + (math.pi - cutoff_low) * draw(0, 1)
    use_sinc = draw(0, 1) < sinc_prob
    return torch.where(use_sinc[:, None, None], sinc_kernels(kernel_size, cutoff, support), kernels)


def random_sinc_kernels(
    batch_size: int, kernel_size: int, prob: float, generator: torch.Generator, min_kernel_size: int = 7
) -> torch.Tensor:
    """Real-ESRGAN's final sinc filter: per image, a sinc kernel or the identity (a centred unit pulse).

    Args:
        batch_size: Kernels to draw, one per image.
        kernel_size: Side of every kernel (odd).
        prob: The probability of a sinc kernel (random odd support in [min_kernel_size, kernel_size], cutoff from
            [pi/3, pi]).
        generator: Where every draw comes from.
        min_kernel_size: The smallest support.

    Returns:
        Float32 kernels of shape (batch_size, kernel_size, kernel_size) on the generator's device.
    """
    support = _random_odd_sizes(generator, batch_size, min_kernel_size, kernel_size)
    cutoff = uniform(generator, (batch_size,), *_SINC_CUTOFF_SMALL)
    use_sinc = uniform(generator, (batch_size,), 0, 1) < prob
    pulse = torch.zeros(kernel_size, kernel_size, device=generator.device)
    pulse[kernel_size // 2, kernel_size // 2] = 1
    return torch.where(use_sinc[:, None, None], sinc_kernels(kernel_size, cutoff, support), pulse)
