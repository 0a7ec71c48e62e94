# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
import math

import numpy as np
import pytest
import torch

from diffusers_dit4sr.training import (
    KERNEL_TYPES,
    generalized_gaussian_kernels,
    plateau_kernels,
    random_mixed_kernels,
    random_sinc_kernels,
    sinc_kernels,
)

RELEASED_PROBS = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)


def _random_kernels(seed: int, batch: int = 64, size: int = 21, **overrides) -> torch.Tensor:
    args = {
        "kernel_list": KERNEL_TYPES,
        "kernel_prob": RELEASED_PROBS,
        "sigma_range": (0.2, 3.0),
        "betag_range": (0.5, 4.0),
        "betap_range": (1.0, 2.0),
        "sinc_prob": 0.1,
    }
    args.update(overrides)
    return random_mixed_kernels(batch, size, generator=torch.Generator().manual_seed(seed), **args)


def _support_sizes(kernels: torch.Tensor) -> list[int]:
    """Side of the centred square that holds all non-zero taps of each kernel."""
    center = kernels.shape[-1] // 2
    sizes = []
    for kernel in kernels:
        rows, cols = torch.nonzero(kernel, as_tuple=True)
        radius = int(torch.cat([(rows - center).abs(), (cols - center).abs()]).max())
        sizes.append(2 * radius + 1)
    return sizes


@pytest.mark.parametrize("size", [7, 11, 21])
def test_kernels_have_requested_odd_size_and_sum_to_one(size):
    sigma = torch.tensor([0.3, 1.0, 2.5])
    for kernels in (
        generalized_gaussian_kernels(size, sigma, sigma * 1.7, theta=0.4, beta=torch.tensor([0.5, 1.0, 3.0])),
        plateau_kernels(size, sigma, None, beta=torch.tensor([1.0, 1.5, 2.0])),
        sinc_kernels(size, torch.tensor([0.7, 1.5, math.pi])),
    ):
        assert kernels.shape == (3, size, size)
        torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(3), atol=1e-5, rtol=0)


@pytest.mark.parametrize("beta", [0.5, 1.0, 3.0])
def test_isotropic_kernels_are_rotationally_symmetric(beta):
    for kernel in (
        generalized_gaussian_kernels(21, 2.3, beta=beta)[0],
        plateau_kernels(21, 2.3, beta=beta)[0],
        sinc_kernels(21, 1.1)[0],
    ):
        torch.testing.assert_close(kernel, kernel.T, atol=1e-7, rtol=0)
        torch.testing.assert_close(kernel, kernel.flip(0), atol=1e-7, rtol=0)
        torch.testing.assert_close(kernel, kernel.flip(1), atol=1e-7, rtol=0)


def test_anisotropic_kernels_are_point_symmetric_but_not_mirror_symmetric():
    for kernel in (
        generalized_gaussian_kernels(21, 1.0, 3.0, theta=0.6)[0],
        generalized_gaussian_kernels(21, 1.0, 3.0, theta=0.6, beta=2.5)[0],
        plateau_kernels(21, 1.0, 3.0, theta=0.6, beta=1.5)[0],
    ):
        torch.testing.assert_close(kernel, kernel.flip(0, 1), atol=1e-7, rtol=0)
        assert (kernel - kernel.T).abs().max() > 1e-3
        assert (kernel - kernel.flip(0)).abs().max() > 1e-3


def test_anisotropic_gaussian_matches_covariance_formula():
    sigma_x, sigma_y, theta, size = 1.5, 3.0, 0.7, 15
    rotation = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    covariance = rotation @ np.diag([sigma_x**2, sigma_y**2]) @ rotation.T
    axis = np.arange(size) - size // 2
    xx, yy = np.meshgrid(axis, axis)  # x along columns, y along rows
    points = np.stack([xx, yy], axis=-1)
    expected = np.exp(-0.5 * np.einsum("...i,ij,...j->...", points, np.linalg.inv(covariance), points))
    expected /= expected.sum()
    actual = generalized_gaussian_kernels(size, sigma_x, sigma_y, theta)[0]
    torch.testing.assert_close(actual, torch.from_numpy(expected).float(), atol=1e-6, rtol=0)


def test_axis_aligned_gaussian_is_separable_with_sigma_x_along_columns():
    gauss_x = torch.exp(-0.5 * (torch.arange(11.0) - 5).square() / 1.2**2)
    gauss_y = torch.exp(-0.5 * (torch.arange(11.0) - 5).square() / 2.5**2)
    expected = torch.outer(gauss_y, gauss_x)
    actual = generalized_gaussian_kernels(11, 1.2, 2.5, theta=0.0)[0]
    torch.testing.assert_close(actual, expected / expected.sum(), atol=1e-6, rtol=0)
    rotated = generalized_gaussian_kernels(11, 1.2, 2.5, theta=math.pi / 2)[0]
    torch.testing.assert_close(rotated, actual.T, atol=1e-6, rtol=0)


def test_plateau_kernel_formula():
    size, sigma, beta = 9, 1.3, 1.7
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    q = (axis[:, None].square() + axis[None, :].square()) / sigma**2
    expected = 1 / (q.pow(beta) + 1)
    actual = plateau_kernels(size, sigma, beta=beta)[0]
    torch.testing.assert_close(actual, (expected / expected.sum()).float(), atol=1e-6, rtol=0)


def test_sinc_kernel_matches_bessel_integral():
    size, cutoff = 13, 1.2
    # J1(z) = 1/pi * integral_0^pi cos(t - z sin t) dt, independent of torch.special.
    t = torch.linspace(0, math.pi, 4001, dtype=torch.float64)
    axis = torch.arange(size, dtype=torch.float64) - size // 2
    radius = torch.hypot(axis[:, None], axis[None, :])
    bessel = torch.trapezoid(torch.cos(t - cutoff * radius[..., None] * torch.sin(t)), t, dim=-1) / math.pi
    expected = cutoff * bessel / (2 * math.pi * radius)
    expected[size // 2, size // 2] = cutoff**2 / (4 * math.pi)
    expected /= expected.sum()
    actual = sinc_kernels(size, cutoff)[0]
    torch.testing.assert_close(actual, expected.float(), atol=1e-6, rtol=0)
    assert actual.min() < 0  # ringing lobes


def test_support_zeroes_taps_outside_the_window():
    support = torch.tensor([7.0, 11.0, 21.0])
    for kernels in (
        generalized_gaussian_kernels(21, 3.0, support=support),
        plateau_kernels(21, 3.0, support=support),
        sinc_kernels(21, 1.0, support=support),
    ):
        assert _support_sizes(kernels) == [7, 11, 21]
        torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(3), atol=1e-5, rtol=0)
    # A kernel built on its own small grid equals the zero-padded one.
    small = generalized_gaussian_kernels(7, 3.0)[0]
    torch.testing.assert_close(generalized_gaussian_kernels(21, 3.0, support=7.0)[0, 7:14, 7:14], small)


def test_random_mixed_kernels_shape_normalization_and_reproducibility():
    kernels = _random_kernels(seed=0, size=21)
    assert kernels.shape == (64, 21, 21)
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(64), atol=1e-5, rtol=0)
    torch.testing.assert_close(kernels, kernels.flip(-2, -1), atol=1e-7, rtol=0)  # every type is point-symmetric
    assert torch.equal(kernels, _random_kernels(seed=0, size=21))
    assert not torch.equal(kernels, _random_kernels(seed=1, size=21))
    assert _random_kernels(seed=0, batch=4, size=11).shape == (4, 11, 11)


def test_random_kernel_sizes_are_odd_and_uniform_over_the_range():
    # Wide isotropic Gaussians have no zero taps inside their support, so the support is measurable.
    kernels = _random_kernels(seed=3, batch=2000, kernel_list=("iso",), kernel_prob=(1.0,), sigma_range=(3, 3))
    sizes = torch.tensor(_support_sizes(kernels))
    values, counts = torch.unique(sizes, return_counts=True)
    assert values.tolist() == [7, 9, 11, 13, 15, 17, 19, 21]
    assert (counts / 2000 - 1 / 8).abs().max() < 0.03
    small = _random_kernels(seed=3, batch=500, size=11, kernel_list=("iso",), kernel_prob=(1.0,), sigma_range=(3, 3))
    assert sorted(set(_support_sizes(small))) == [7, 9, 11]


def test_random_kernels_sinc_probability():
    # Only sinc kernels have negative taps (every sinc of the sampled cutoffs and sizes reaches its first lobe).
    kernels = _random_kernels(seed=5, batch=4000)
    sinc_fraction = float((kernels.amin(dim=(-2, -1)) < 0).float().mean())
    assert abs(sinc_fraction - 0.1) < 0.02
    assert (_random_kernels(seed=5, batch=200, sinc_prob=1.0).amin(dim=(-2, -1)) < 0).all()
    assert (_random_kernels(seed=5, batch=200, sinc_prob=0.0).amin(dim=(-2, -1)) >= 0).all()


def test_random_kernel_types_follow_kernel_list():
    isotropic = _random_kernels(seed=2, kernel_list=("iso", "plateau_iso"), kernel_prob=(0.5, 0.5), sinc_prob=0.0)
    torch.testing.assert_close(isotropic, isotropic.transpose(-2, -1), atol=1e-7, rtol=0)
    anisotropic = _random_kernels(seed=2, kernel_list=("aniso",), kernel_prob=(1.0,), sinc_prob=0.0)
    asymmetry = (anisotropic - anisotropic.transpose(-2, -1)).abs().amax(dim=(-2, -1))
    assert (asymmetry > 1e-4).float().mean() > 0.8


def test_random_sinc_kernels_probability_and_identity():
    generator = torch.Generator().manual_seed(0)
    kernels = random_sinc_kernels(1000, 21, 0.8, generator)
    assert kernels.shape == (1000, 21, 21)
    torch.testing.assert_close(kernels.sum(dim=(-2, -1)), torch.ones(1000), atol=1e-5, rtol=0)
    is_pulse = (kernels[:, 10, 10] == 1) & (kernels.abs().sum(dim=(-2, -1)) == 1)
    assert abs(float(is_pulse.float().mean()) - 0.2) < 0.04
    assert (kernels[~is_pulse].amin(dim=(-2, -1)) < 0).all()


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: generalized_gaussian_kernels(8, 1.0), "kernel_size"),
        (lambda: plateau_kernels(0, 1.0), "kernel_size"),
        (lambda: generalized_gaussian_kernels(7, 0.0), "sigma"),
        (lambda: generalized_gaussian_kernels(7, 1.0, beta=0.0), "beta"),
        (lambda: sinc_kernels(7, 4.0), "cutoff"),
        (lambda: sinc_kernels(7, 1.0, support=9.0), "support"),
        (lambda: _random_kernels(0, kernel_list=("box",), kernel_prob=(1.0,)), "kernel_list"),
        (lambda: _random_kernels(0, kernel_list=("iso",), kernel_prob=(0.5, 0.5)), "kernel_prob"),
        (lambda: _random_kernels(0, size=5), "min_kernel_size"),
    ],
)
def test_invalid_arguments_raise(call, message):
    with pytest.raises(ValueError, match=message):
        call()
