# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Image inputs, size plans and the LR resizing of the inference pipeline."""

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_dit4sr.image_processing import (
    pil_bicubic_resize,
    plan_sizes,
    resize,
    to_rgb_tensors,
    upscale_lr,
)


def random_image(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


@pytest.mark.parametrize("height, width", [(32, 64), (100, 70), (45, 60), (3, 97), (128, 128), (300, 200)])
@pytest.mark.parametrize("factor", [1, 2, 3, 4])
def test_plan_sizes_is_the_released_size_arithmetic(height, width, factor):
    plan = plan_sizes(height, width, float(factor), 512)
    # The released test script, with PIL's (width, height) order.
    size = (width, height)
    if width < 512 // factor or height < 512 // factor:
        scale = (512 // factor) / min(width, height)
        size = (int(scale * width), int(scale * height))
    assert plan.enlarged_size == (size[1], size[0])
    assert plan.process_size == (size[1] * factor, size[0] * factor)
    assert plan.output_size == (height * factor, width * factor)
    assert all(
        side % 16 == 0 and 0 <= side - working < 16
        for side, working in zip(plan.padded_size, plan.process_size, strict=True)
    )


def test_plan_sizes_fractional_factor_and_no_enlargement():
    plan = plan_sizes(13, 21, 2.5, 0)
    assert plan.output_size == (32, 52) == plan.process_size  # round(13 * 2.5) = 32, round(52.5) = 52
    assert plan.enlarged_size == plan.input_size == (13, 21)
    small = plan_sizes(10, 30, 2.5, 512)  # 512 // 2.5 = 204: enlarged by 20.4
    assert small.enlarged_size == (204, 612) and small.process_size == (510, 1530)


def test_to_rgb_tensors_keeps_8_bit_inputs_8_bit():
    image = random_image(5, 7)
    (from_pil,) = to_rgb_tensors(image)
    (from_array,) = to_rgb_tensors(np.array(image))
    assert from_pil.dtype == from_array.dtype == torch.uint8 and torch.equal(from_pil, from_array)
    (from_floats,) = to_rgb_tensors(np.array(image).astype(np.float32) / 255)
    assert from_floats.dtype == torch.float32
    torch.testing.assert_close(from_floats, from_pil.float() / 255, rtol=0, atol=1e-7)


def test_upscale_lr_of_8_bit_images_is_pils_two_resizes():
    image = random_image(32, 48)
    plan = plan_sizes(32, 48, 4.0, 512)  # enlarged to 128 x 192, then 512 x 768
    expected = image.resize((192, 128), PIL.Image.BICUBIC).resize((768, 512), PIL.Image.BICUBIC)
    (tensor,) = to_rgb_tensors(image)
    upscaled = upscale_lr(tensor, plan)
    assert upscaled.shape == (1, 3, 512, 768) and upscaled.dtype == torch.float32
    assert torch.equal(upscaled[0], torch.from_numpy(np.array(expected)).permute(2, 0, 1).float() / 255)


def test_upscale_lr_of_float_images_uses_the_same_kernel_without_rounding():
    image = random_image(20, 30)
    plan = plan_sizes(20, 30, 3.0, 0)
    (as_floats,) = to_rgb_tensors(np.array(image).astype(np.float32) / 255)
    upscaled = upscale_lr(as_floats, plan)
    (as_bytes,) = to_rgb_tensors(image)
    # uint8 rounding (and clipping between PIL's two passes) is the only difference: small on average.
    difference = (upscaled - upscale_lr(as_bytes, plan)).abs()
    assert difference.mean() < 0.01 and difference.max() > 0


@pytest.mark.parametrize("size", [(61, 83), (9, 14), (40, 20)])
def test_pil_bicubic_resize_is_pils_bicubic_on_floats(size):
    channel = np.random.default_rng(1).random((23, 31)).astype(np.float32)
    expected = np.asarray(PIL.Image.fromarray(channel, mode="F").resize(size[::-1], PIL.Image.BICUBIC))
    actual = pil_bicubic_resize(torch.from_numpy(channel)[None, None], size)[0, 0].numpy()
    np.testing.assert_allclose(actual, np.clip(expected, 0, 1), rtol=0, atol=1e-5)
    if size[0] > 23 and size[1] > 31:  # enlarging: the training kernel (a = -0.75) is another one
        assert np.abs(resize(torch.from_numpy(channel)[None, None], size)[0, 0].numpy() - actual).max() > 1e-2


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_images_are_read_at_full_precision(tmp_path, suffix):
    gradient = np.linspace(0, 65535, 32 * 64).reshape(32, 64).astype(np.uint16)
    PIL.Image.fromarray(gradient).save(tmp_path / f"scan{suffix}")
    image = PIL.Image.open(tmp_path / f"scan{suffix}")
    assert image.mode.startswith("I;16")
    (tensor,) = to_rgb_tensors(image)
    assert tensor.dtype == torch.float32 and tensor.shape == (3, 32, 64)
    expected = torch.from_numpy(gradient.astype(np.float32) / 65535).expand(3, -1, -1)
    torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-6)
    # `.convert("RGB")` would have clipped nearly every pixel to white.
    assert float((tensor == 1).float().mean()) < 0.01
    (from_array,) = to_rgb_tensors(gradient)
    torch.testing.assert_close(from_array, expected, rtol=0, atol=1e-6)


def test_float_images_are_read_as_floats(tmp_path):
    values = np.random.default_rng(2).random((8, 12)).astype(np.float32)
    PIL.Image.fromarray(values, mode="F").save(tmp_path / "float.tif")
    image = PIL.Image.open(tmp_path / "float.tif")
    assert image.mode == "F"
    (tensor,) = to_rgb_tensors(image)
    torch.testing.assert_close(tensor, torch.from_numpy(values).expand(3, -1, -1), rtol=0, atol=0)
    with pytest.raises(ValueError, match=r"values must lie in \[0, 1\]"):
        to_rgb_tensors(PIL.Image.fromarray(values * 3, mode="F"))


def test_other_integer_arrays_are_rejected():
    with pytest.raises(TypeError, match="uint8, uint16 or float"):
        to_rgb_tensors(np.zeros((4, 4, 3), dtype=np.int32))
