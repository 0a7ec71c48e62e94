# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
import pytest
import torch

from diffusers_dit4sr.color import (
    COLOR_FIX_METHODS,
    adain_color_fix,
    apply_color_fix,
    wavelet_color_fix,
    wavelet_decomposition,
)


def _images(*shape: int, seed: int = 0, scale: float = 1.0, shift: float = 0.0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(*shape, generator=generator) * scale + shift


def _channel_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    x = x.double()
    return x.mean(dim=(-2, -1)), x.std(dim=(-2, -1), correction=1)


# --- AdaIN ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_shape, reference_shape",
    [((2, 3, 24, 32), (2, 3, 24, 32)), ((2, 3, 24, 32), (2, 3, 9, 13)), ((3, 16, 16), (3, 20, 12))],
)
def test_adain_matches_reference_channel_statistics(content_shape, reference_shape):
    content = _images(*content_shape, seed=0, scale=2.0, shift=-0.7)
    reference = _images(*reference_shape, seed=1, scale=0.5, shift=0.2)
    out = adain_color_fix(content, reference)
    assert out.shape == content.shape
    out_mean, out_std = _channel_stats(out)
    ref_mean, ref_std = _channel_stats(reference)
    torch.testing.assert_close(out_mean, ref_mean, rtol=0, atol=1e-4)
    torch.testing.assert_close(out_std, ref_std, rtol=0, atol=1e-4)


def test_adain_is_the_released_formula():
    # The released color fix: unbiased variances over the pixels, eps added before the square root.
    content = _images(2, 3, 12, 20, seed=5, scale=1.5)
    reference = _images(2, 3, 12, 20, seed=6, scale=0.4, shift=0.3)

    def mean_std(x):
        flat = x.double().flatten(2)
        return flat.mean(2)[..., None, None], (flat.var(2) + 1e-5).sqrt()[..., None, None]

    content_mean, content_std = mean_std(content)
    reference_mean, reference_std = mean_std(reference)
    expected = (content.double() - content_mean) / content_std * reference_std + reference_mean
    torch.testing.assert_close(adain_color_fix(content, reference).double(), expected, rtol=0, atol=1e-6)


def test_adain_is_an_affine_map_per_channel():
    # content = a * reference + b (per channel) is mapped back to reference exactly when eps = 0
    reference = _images(2, 3, 16, 16, seed=2)
    scale = torch.tensor([0.5, 2.0, 1.3]).view(1, 3, 1, 1)
    offset = torch.tensor([0.1, -0.4, 0.8]).view(1, 3, 1, 1)
    out = adain_color_fix(reference * scale + offset, reference, eps=0.0)
    torch.testing.assert_close(out, reference, rtol=0, atol=1e-5)


def test_adain_keeps_input_dtype_and_handles_flat_channels():
    content = _images(1, 3, 8, 8, seed=3).to(torch.bfloat16)
    content[:, 1] = 0.25  # a flat channel must not divide by zero
    reference = _images(1, 3, 8, 8, seed=4).half()
    out = adain_color_fix(content, reference)
    assert out.dtype == torch.bfloat16
    assert torch.isfinite(out).all()
    # a flat channel stays flat and takes the reference's mean
    torch.testing.assert_close(out[:, 1].float(), reference[:, 1].float().mean().expand(1, 8, 8), atol=1e-2, rtol=0)


def test_adain_rejects_bad_input():
    image = _images(1, 3, 8, 8)
    with pytest.raises(ValueError, match="channels"):
        adain_color_fix(image, _images(1, 4, 8, 8))
    with pytest.raises(ValueError, match="batch"):
        adain_color_fix(image, _images(2, 3, 8, 8))
    with pytest.raises(ValueError, match="content"):
        adain_color_fix(image[0, 0], image[0, 0])
    with pytest.raises(TypeError, match="reference"):
        adain_color_fix(image, (image * 255).to(torch.uint8))
    with pytest.raises(TypeError, match="content"):
        adain_color_fix(image.numpy(), image)
    with pytest.raises(ValueError, match="eps"):
        adain_color_fix(image, image, eps=-1.0)


# --- Wavelet -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(2, 3, 40, 56), (3, 5, 7), (1, 16, 4, 6)])
@pytest.mark.parametrize("levels", [1, 5])
def test_wavelet_decomposition_is_exact(shape, levels):
    # sizes smaller than the largest dilation (16) must work too (replicate padding)
    image = _images(*shape, seed=5, scale=2.0, shift=-1.0)
    high, low = wavelet_decomposition(image, levels)
    assert high.shape == low.shape == image.shape
    torch.testing.assert_close(high + low, image, rtol=0, atol=1e-6)


def test_wavelet_low_pass_preserves_constants_and_smooths():
    constant = torch.full((1, 3, 20, 20), 0.3)
    high, low = wavelet_decomposition(constant)
    torch.testing.assert_close(low, constant, rtol=0, atol=1e-6)
    torch.testing.assert_close(high, torch.zeros_like(constant), rtol=0, atol=1e-6)
    # on noise, the low-pass residual is much flatter than the input
    noise = _images(1, 3, 64, 64, seed=6)
    _, low = wavelet_decomposition(noise)
    assert low.std() < 0.2 * noise.std()


def test_wavelet_color_fix_takes_low_frequencies_from_reference():
    content = _images(2, 3, 32, 48, seed=7)
    reference = _images(2, 3, 32, 48, seed=8)
    out = wavelet_color_fix(content, reference)
    content_high, content_low = wavelet_decomposition(content)
    reference_high, reference_low = wavelet_decomposition(reference)
    # definition: high frequencies of the content + low frequencies of the reference
    torch.testing.assert_close(out, content_high + reference_low, rtol=0, atol=1e-6)
    # equivalently, the change made to the content is purely low-frequency: low(reference) - low(content)
    torch.testing.assert_close(out - content, reference_low - content_low, rtol=0, atol=1e-6)


def test_wavelet_color_fix_removes_a_global_color_cast():
    reference = _images(1, 3, 32, 32, seed=9)
    cast = torch.tensor([0.2, -0.1, 0.05]).view(1, 3, 1, 1)
    torch.testing.assert_close(wavelet_color_fix(reference + cast, reference), reference, rtol=0, atol=1e-5)
    torch.testing.assert_close(wavelet_color_fix(reference, reference), reference, rtol=0, atol=1e-6)


def test_wavelet_color_fix_dtype_and_bad_input():
    content = _images(1, 3, 16, 16, seed=10).half()
    assert wavelet_color_fix(content, content.float()).dtype == torch.float16
    with pytest.raises(ValueError, match="same shape"):
        wavelet_color_fix(_images(1, 3, 16, 16), _images(1, 3, 16, 8))
    with pytest.raises(ValueError, match="levels"):
        wavelet_color_fix(_images(1, 3, 16, 16), _images(1, 3, 16, 16), levels=0)


# --- Dispatch ------------------------------------------------------------------------------------------------


def test_apply_color_fix_dispatches():
    content = _images(1, 3, 16, 16, seed=11)
    reference = _images(1, 3, 16, 16, seed=12)
    assert COLOR_FIX_METHODS == ("adain", "wavelet")
    assert apply_color_fix(content, reference, None) is content
    torch.testing.assert_close(apply_color_fix(content, reference, "adain"), adain_color_fix(content, reference))
    torch.testing.assert_close(apply_color_fix(content, reference, "wavelet"), wavelet_color_fix(content, reference))


@pytest.mark.parametrize("method", ["AdaIN", "none", "", 1])
def test_apply_color_fix_rejects_unknown_methods(method):
    image = _images(1, 3, 8, 8)
    with pytest.raises(ValueError, match="'adain', 'wavelet'"):
        apply_color_fix(image, image, method)
