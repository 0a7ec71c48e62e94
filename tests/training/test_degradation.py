# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
import dataclasses
import json
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from diffusers_dit4sr.training import (
    KERNEL_TYPES,
    DegradationConfig,
    RealESRGANDegradation,
    filter2d,
    gaussian_kernel_1d,
    gaussian_noise,
    poisson_noise,
    reflect_pad,
    separable_filter,
    unsharp_mask,
)


def _hr_batch(batch: int = 2, height: int = 64, width: int = 64, seed: int = 0) -> torch.Tensor:
    """Images with smooth regions, edges and texture, in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, height // 8, width // 8, generator=generator)
    smooth = F.interpolate(coarse, size=(height, width), mode="bilinear", align_corners=False)
    texture = torch.rand(batch, 3, height, width, generator=generator)
    return (0.8 * smooth + 0.2 * texture).clamp(0, 1)


# ---------------------------------------------------------------------------------------------- config


def test_config_defaults_are_the_released_setting():
    expected = {
        "scale": 4,
        "no_degradation_prob": 0.01,
        "usm_weight": 0.5,
        "usm_radius": 50,
        "usm_threshold": 10.0,
        "blur_kernel_size": 21,
        "blur_kernel_size2": 11,
        "min_kernel_size": 7,
        "final_sinc_kernel_size": 21,
        "kernel_list": KERNEL_TYPES,
        "kernel_list2": KERNEL_TYPES,
        "kernel_prob": (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        "kernel_prob2": (0.45, 0.25, 0.12, 0.03, 0.12, 0.03),
        "sinc_prob": 0.1,
        "sinc_prob2": 0.1,
        "blur_sigma": (0.2, 3.0),
        "blur_sigma2": (0.2, 1.5),
        "betag_range": (0.5, 4.0),
        "betag_range2": (0.5, 4.0),
        "betap_range": (1.0, 2.0),
        "betap_range2": (1.0, 2.0),
        "resize_prob": (0.2, 0.7, 0.1),
        "resize_range": (0.15, 1.5),
        "resize_modes": ("area", "bilinear", "bicubic"),
        "gaussian_noise_prob": 0.5,
        "noise_range": (1.0, 30.0),
        "poisson_scale_range": (0.05, 3.0),
        "gray_noise_prob": 0.4,
        "jpeg_range": (30.0, 95.0),
        "second_blur_prob": 0.8,
        "resize_prob2": (0.3, 0.4, 0.3),
        "resize_range2": (0.3, 1.2),
        "gaussian_noise_prob2": 0.5,
        "noise_range2": (1.0, 25.0),
        "poisson_scale_range2": (0.05, 2.5),
        "gray_noise_prob2": 0.4,
        "jpeg_range2": (30.0, 95.0),
        "final_sinc_prob": 0.8,
        "final_sinc_first_prob": 0.5,
    }
    assert dataclasses.asdict(DegradationConfig()) == expected
    assert KERNEL_TYPES == ("iso", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso", "plateau_aniso")


def _custom_config() -> DegradationConfig:
    return DegradationConfig(scale=2, kernel_list=["iso", "aniso"], kernel_prob=[0.3, 0.7], noise_range=[2, 7])


def test_config_dict_round_trip_is_exact_and_normalizes_types():
    config = _custom_config()
    assert config.kernel_list == ("iso", "aniso") and config.noise_range == (2.0, 7.0)
    assert isinstance(config.noise_range[0], float)
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data
    assert DegradationConfig.from_dict(data) == config
    assert DegradationConfig.from_dict({}) == DegradationConfig()


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_config_file_round_trip_is_exact(tmp_path, suffix):
    if suffix != ".json":
        pytest.importorskip("yaml")
    config = dataclasses.replace(_custom_config(), blur_sigma=(0.1 + 0.2, 2.9), jpeg_range2=(33.3, 66.6))
    path = tmp_path / f"degradation{suffix}"
    config.save(path)
    assert DegradationConfig.load(path) == config
    assert DegradationConfig.load(str(path)).to_dict() == config.to_dict()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("kernel_prob", (0.5, 0.25, 0.12, 0.03, 0.12, 0.03)),
        ("kernel_prob2", (0.5, 0.5)),
        ("resize_prob", (0.2, 0.7, 0.2)),
        ("resize_prob2", (1.2, -0.1, -0.1)),
        ("resize_range", (1.5, 0.15)),
        ("resize_range2", (1.1, 1.2)),
        ("blur_sigma", (3.0, 0.2)),
        ("blur_sigma2", (0.0, 1.5)),
        ("betag_range", (4.0, 0.5)),
        ("noise_range", (30.0, 1.0)),
        ("poisson_scale_range2", (-1.0, 2.5)),
        ("jpeg_range", (30.0, 101.0)),
        ("jpeg_range2", (95.0, 30.0)),
        ("sinc_prob", 1.5),
        ("gray_noise_prob2", -0.1),
        ("no_degradation_prob", 2.0),
        ("final_sinc_first_prob", float("nan")),
        ("blur_kernel_size", 20),
        ("blur_kernel_size2", 5),
        ("min_kernel_size", 4),
        ("scale", 0),
        ("usm_radius", 0),
        ("kernel_list", ("iso", "box", "aniso", "generalized_iso", "generalized_aniso", "plateau_iso")),
        ("resize_modes", ("area", "lanczos")),
        ("resize_modes", ()),
    ],
)
def test_invalid_config_raises_value_error_naming_the_field(field, value):
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        DegradationConfig(**{field: value})


def test_config_rejects_unknown_keys_wrong_types_and_suffixes(tmp_path):
    with pytest.raises(ValueError, match="noise_sigma"):
        DegradationConfig.from_dict({"noise_sigma": (1, 2)})
    with pytest.raises(TypeError, match="blur_kernel_size"):
        DegradationConfig(blur_kernel_size=21.0)
    with pytest.raises(TypeError, match="sinc_prob"):
        DegradationConfig(sinc_prob="0.1")
    with pytest.raises(ValueError, match="noise_range"):
        DegradationConfig(noise_range=(1.0, 2.0, 3.0))
    with pytest.raises(ValueError, match="path"):
        DegradationConfig().save(tmp_path / "config.txt")
    with pytest.raises(dataclasses.FrozenInstanceError):
        DegradationConfig().scale = 2


# ------------------------------------------------------------------------------------------- filtering


def test_reflect_pad_matches_numpy_reflect_for_any_width():
    for height, width, pad_h, pad_w in [(5, 7, 3, 2), (3, 4, 10, 9), (2, 2, 7, 7), (1, 5, 4, 12)]:
        image = torch.rand(1, 2, height, width)
        mode = {"mode": "reflect"} if height > 1 else {"mode": "edge"}
        expected = np.pad(image.numpy(), ((0, 0), (0, 0), (pad_h, pad_h), (0, 0)), **mode)
        expected = np.pad(expected, ((0, 0), (0, 0), (0, 0), (pad_w, pad_w)), mode="reflect")
        torch.testing.assert_close(reflect_pad(image, pad_h, pad_w), torch.from_numpy(expected))


def test_filter2d_applies_each_image_its_own_kernel():
    images = torch.rand(3, 3, 20, 24)
    kernels = torch.rand(3, 5, 5)
    out = filter2d(images, kernels)
    for i in range(3):
        padded = F.pad(images[i : i + 1], (2, 2, 2, 2), mode="reflect")
        expected = F.conv2d(padded.transpose(0, 1), kernels[i].view(1, 1, 5, 5)).transpose(0, 1)
        torch.testing.assert_close(out[i : i + 1], expected)
    pulse = torch.zeros(7, 7)
    pulse[3, 3] = 1
    torch.testing.assert_close(filter2d(images, pulse), images, atol=0, rtol=0)


def test_separable_filter_equals_the_2d_outer_product_filter():
    images, kernel = torch.rand(2, 3, 30, 40), gaussian_kernel_1d(11, 2.0)
    torch.testing.assert_close(separable_filter(images, kernel), filter2d(images, torch.outer(kernel, kernel)))


def test_unsharp_mask_matches_real_esrgan_formula():
    images = _hr_batch(2, 64, 64)
    kernel = gaussian_kernel_1d(51)
    axis = torch.arange(51.0) - 25
    expected_kernel = torch.exp(-axis.square() / (2 * 8.0**2))  # OpenCV's default sigma for 51 taps is 8
    torch.testing.assert_close(kernel, expected_kernel / expected_kernel.sum())
    blur2d = torch.outer(kernel, kernel)
    residual = images - filter2d(images, blur2d)
    soft_mask = filter2d((residual.abs() * 255 > 10).float(), blur2d)
    sharp = (images + 0.5 * residual).clamp(0, 1)
    expected = soft_mask * sharp + (1 - soft_mask) * images
    torch.testing.assert_close(unsharp_mask(images, 0.5, 50, 10), expected, atol=1e-5, rtol=0)


def test_unsharp_mask_sharpens_edges_and_keeps_flat_images():
    flat = torch.full((1, 3, 64, 64), 0.4)
    torch.testing.assert_close(unsharp_mask(flat), flat)
    step = torch.full((1, 3, 64, 64), 0.2)
    step[..., 32:] = 0.8
    sharpened = unsharp_mask(step)
    assert sharpened[..., 32:].max() > 0.85 and sharpened[..., :32].min() < 0.15
    assert unsharp_mask(step, weight=0.0) is step


# ----------------------------------------------------------------------------------------------- noise


def test_gaussian_noise_std_matches_sigma_per_image():
    # Flat mid-gray: even sigma = 30 levels stays 4 sigma away from the clamp at 0 and 1.
    images = torch.full((3, 3, 128, 128), 0.5)
    generator = torch.Generator().manual_seed(0)
    sigma = 1 + 29 * torch.rand(3, generator=generator)
    noise = gaussian_noise(images, sigma, gray=False, generator=generator)
    assert noise.shape == images.shape
    noisy = (images + noise).clamp(0, 1)
    std = (noisy - images).flatten(1).std(dim=1) * 255
    torch.testing.assert_close(std, sigma, rtol=0.03, atol=0)
    assert (noise.flatten(1).mean(dim=1) * 255).abs().max() < 0.3
    correlation = torch.corrcoef(noise[0].flatten(1))
    assert (correlation - torch.eye(3)).abs().max() < 0.05


def test_gray_noise_is_identical_across_channels():
    images = torch.full((2, 3, 32, 32), 0.5)
    gray = torch.tensor([True, False])
    for noise in (
        gaussian_noise(images, 10.0, gray, torch.Generator().manual_seed(1)),
        poisson_noise(images, 1.0, gray, torch.Generator().manual_seed(1)),
    ):
        assert torch.equal(noise[0, 0], noise[0, 1]) and torch.equal(noise[0, 0], noise[0, 2])
        assert not torch.equal(noise[1, 0], noise[1, 1])


def test_poisson_noise_variance_scales_with_signal_levels_and_scale():
    # 256 distinct 8-bit levels (one row holds all of them) -> 256 photon levels; variance = scale^2 * x / 256.
    images = torch.full((2, 3, 128, 256), 0.5)
    images[:, :, 0, :] = torch.arange(256) / 255
    scale = torch.tensor([1.0, 2.0])
    noise = poisson_noise(images, scale, gray=False, generator=torch.Generator().manual_seed(0))
    variance = noise[:, :, 1:].flatten(1).var(dim=1)
    torch.testing.assert_close(variance, scale.square() * 0.5 / 256, rtol=0.05, atol=0)
    # Two distinct levels -> 2 photon levels: much stronger noise.
    two_levels = torch.full((1, 3, 64, 64), 0.5)
    two_levels[..., 0, 0] = 0.0
    noise = poisson_noise(two_levels, 1.0, gray=False, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(noise.flatten()[1:].var(), torch.tensor(0.5 / 2), rtol=0.05, atol=0)


def test_noise_is_reproducible_from_the_generator():
    images = torch.rand(2, 3, 16, 16)
    first = gaussian_noise(images, 5.0, False, torch.Generator().manual_seed(7))
    assert torch.equal(first, gaussian_noise(images, 5.0, False, torch.Generator().manual_seed(7)))
    assert not torch.equal(first, gaussian_noise(images, 5.0, False, torch.Generator().manual_seed(8)))


# -------------------------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize("seed", range(8))
def test_pipeline_output_sizes_range_and_8bit_levels(seed):
    hr = _hr_batch(2, 64, 96, seed)
    lr, target = RealESRGANDegradation()(hr, generator=torch.Generator().manual_seed(seed))
    assert lr.shape == (2, 3, 16, 24) and target.shape == hr.shape
    assert lr.dtype == hr.dtype and target.dtype == hr.dtype
    assert lr.min() >= 0 and lr.max() <= 1 and target.min() >= 0 and target.max() <= 1
    torch.testing.assert_close(lr * 255, (lr * 255).round(), atol=1e-4, rtol=0)
    torch.testing.assert_close(target, unsharp_mask(hr))


def test_same_seed_reproduces_and_other_seeds_differ():
    hr = _hr_batch(2, 64, 64)
    degrade = RealESRGANDegradation()
    lr, target = degrade(hr, generator=torch.Generator().manual_seed(123))
    lr_again, target_again = degrade(hr, generator=torch.Generator().manual_seed(123))
    assert torch.equal(lr, lr_again) and torch.equal(target, target_again)
    others = [degrade(hr, generator=torch.Generator().manual_seed(seed))[0] for seed in (124, 125)]
    assert all(not torch.equal(lr, other) for other in others)


def test_global_random_generators_are_neither_used_nor_advanced():
    hr = _hr_batch(2, 32, 32)
    degrade = RealESRGANDegradation()
    torch.manual_seed(0)
    states = (torch.get_rng_state(), np.random.get_state()[1].copy(), random.getstate())
    lr = degrade(hr, generator=torch.Generator().manual_seed(5))[0]
    assert torch.equal(torch.get_rng_state(), states[0])
    assert np.array_equal(np.random.get_state()[1], states[1]) and random.getstate() == states[2]
    torch.manual_seed(99)
    assert torch.equal(lr, degrade(hr, generator=torch.Generator().manual_seed(5))[0])


def test_images_of_a_batch_are_degraded_independently():
    hr = _hr_batch(1, 64, 64).expand(4, -1, -1, -1)
    lr, _ = RealESRGANDegradation()(hr, generator=torch.Generator().manual_seed(0))
    assert all(not torch.equal(lr[0], lr[i]) for i in range(1, 4))


def test_degradation_differs_from_bicubic_and_no_degradation_is_bicubic():
    hr = _hr_batch(2, 64, 64)
    degraded, _ = RealESRGANDegradation()(hr, generator=torch.Generator().manual_seed(3))
    clean_config = DegradationConfig(no_degradation_prob=1.0)
    lr, target = RealESRGANDegradation(clean_config)(hr, generator=torch.Generator().manual_seed(3))
    bicubic = F.interpolate(target, size=(16, 16), mode="bicubic", antialias=True)
    torch.testing.assert_close(lr, (bicubic.clamp(0, 1) * 255).round() / 255, atol=1e-6, rtol=0)
    assert (degraded - lr).abs().mean() > 0.01


def test_other_scales_dtypes_and_tiny_images():
    lr, target = RealESRGANDegradation(DegradationConfig(scale=2))(_hr_batch(1, 32, 48), torch.Generator())
    assert lr.shape == (1, 3, 16, 24)
    hr = _hr_batch(2, 16, 16).double()
    for seed in range(4):
        lr, target = RealESRGANDegradation()(hr, generator=torch.Generator().manual_seed(seed))
        assert lr.shape == (2, 3, 4, 4) and lr.dtype == torch.float64 and target.dtype == torch.float64
    lr_unseeded, _ = RealESRGANDegradation()(hr)
    assert lr_unseeded.shape == (2, 3, 4, 4)


@pytest.mark.parametrize(
    ("hr", "error", "message"),
    [
        (torch.rand(3, 64, 64), ValueError, "hr"),
        (torch.rand(1, 1, 64, 64), ValueError, "hr"),
        (torch.randint(0, 255, (1, 3, 64, 64)), TypeError, "floating"),
        (torch.rand(1, 3, 64, 64) * 2, ValueError, r"\[0, 1\]"),
        (torch.full((1, 3, 64, 64), float("nan")), ValueError, r"\[0, 1\]"),
        (torch.rand(1, 3, 64, 62), ValueError, "divisible"),
        (np.zeros((1, 3, 64, 64), dtype=np.float32), TypeError, "hr"),
    ],
)
def test_invalid_inputs_raise(hr, error, message):
    with pytest.raises(error, match=message):
        RealESRGANDegradation()(hr, generator=torch.Generator())


def test_invalid_generator_and_config_raise():
    with pytest.raises(TypeError, match="generator"):
        RealESRGANDegradation()(torch.rand(1, 3, 16, 16), generator=0)
    with pytest.raises(TypeError, match="config"):
        RealESRGANDegradation({"scale": 4})
