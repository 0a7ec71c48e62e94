# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from diffusers_dit4sr.training import jpeg_compress, quantization_tables


def _natural_image(seed: int, height: int = 128, width: int = 128) -> torch.Tensor:
    """A smooth, colorful (1, 3, H, W) image on 8-bit levels: bicubic-upsampled coarse random colors."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, 5, 5, generator=generator)
    image = F.interpolate(coarse, size=(height, width), mode="bicubic", align_corners=True).clamp(0, 1)
    return ((0.1 + 0.8 * image) * 255).round() / 255


def _textured_image(seed: int, height: int, width: int) -> torch.Tensor:
    """A (1, 3, H, W) image with detail at all scales, on 8-bit levels."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, height // 4 + 1, width // 4 + 1, generator=generator)
    image = F.interpolate(coarse, size=(height, width), mode="bicubic").clamp(0, 1)
    return (image * 255).round() / 255


def _pil_jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    array = (image[0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=quality, subsampling=2)  # 2 = 4:2:0
    decoded = np.array(Image.open(io.BytesIO(buffer.getvalue())).convert("RGB"))
    return torch.from_numpy(decoded).permute(2, 0, 1).unsqueeze(0).float() / 255


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(10 * torch.log10(1 / (a - b).square().mean()))


def _blockiness(images: torch.Tensor) -> float:
    """Mean absolute luma step across 8x8 block boundaries divided by the mean step inside blocks."""
    luma = (images * torch.tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)).sum(1)
    dx = (luma[..., 1:] - luma[..., :-1]).abs()
    dy = (luma[..., 1:, :] - luma[..., :-1, :]).abs()
    at_x = torch.arange(dx.shape[-1]) % 8 == 7
    at_y = torch.arange(dy.shape[-2]) % 8 == 7
    boundary = dx[..., at_x].mean() + dy[..., at_y, :].mean()
    inside = dx[..., ~at_x].mean() + dy[..., ~at_y, :].mean()
    return float(boundary / inside)


def test_quality_100_nearly_preserves_a_smooth_image():
    image = _natural_image(0)
    assert _psnr(jpeg_compress(image, 100), image) > 40


def test_low_quality_produces_8x8_blocking():
    image = _natural_image(1)
    assert 0.9 < _blockiness(image) < 1.1
    compressed = jpeg_compress(image, 30)
    assert _blockiness(compressed) > 1.5
    assert _blockiness(compressed) > _blockiness(jpeg_compress(image, 90))


@pytest.mark.parametrize("quality", [30, 50, 75, 95])
@pytest.mark.parametrize(("height", "width"), [(64, 96), (50, 70)])
def test_matches_pil_jpeg(quality, height, width):
    image = _textured_image(quality + height, height, width)
    ours, pil = jpeg_compress(image, quality), _pil_jpeg(image, quality)
    assert ours.shape == image.shape
    assert _psnr(ours, pil) > 33
    assert abs(_psnr(ours, image) - _psnr(pil, image)) < 0.5


def test_quantization_tables_match_libjpeg():
    qualities = torch.arange(1, 101)
    luma, chroma = quantization_tables(qualities)
    probe = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    for quality in range(1, 101):
        buffer = io.BytesIO()
        probe.save(buffer, format="JPEG", quality=quality)
        tables = Image.open(io.BytesIO(buffer.getvalue())).quantization
        assert luma[quality - 1].flatten().tolist() == list(tables[0])
        assert chroma[quality - 1].flatten().tolist() == list(tables[1])


def test_per_image_quality_in_a_batch():
    first, second = _natural_image(2, 64, 64), _textured_image(3, 64, 64)
    batch = torch.cat([first, second])
    both = jpeg_compress(batch, torch.tensor([30.0, 90.0]))
    torch.testing.assert_close(both[:1], jpeg_compress(first, 30), atol=0, rtol=0)
    torch.testing.assert_close(both[1:], jpeg_compress(second, 90), atol=0, rtol=0)
    same = jpeg_compress(torch.cat([second, second]), torch.tensor([30.0, 90.0]))
    assert _psnr(same[1], second[0]) > _psnr(same[0], second[0]) + 3
    torch.testing.assert_close(jpeg_compress(batch, 30), jpeg_compress(batch, torch.tensor([30, 30])))


def test_output_is_8bit_and_keeps_shape_and_dtype():
    image = _textured_image(4, 40, 24).double()
    out = jpeg_compress(image, 49.6)  # rounds to 50
    assert out.shape == image.shape and out.dtype == torch.float64
    assert out.min() >= 0 and out.max() <= 1
    torch.testing.assert_close(out * 255, (out * 255).round(), atol=1e-9, rtol=0)
    torch.testing.assert_close(out, jpeg_compress(image, 50), atol=0, rtol=0)


@pytest.mark.parametrize(
    ("images", "quality", "error", "message"),
    [
        (torch.rand(3, 16, 16), 50, ValueError, "images"),
        (torch.rand(1, 1, 16, 16), 50, ValueError, "images"),
        (torch.zeros(1, 3, 16, 16, dtype=torch.uint8), 50, TypeError, "floating"),
        (torch.rand(1, 3, 16, 16), 0, ValueError, "quality"),
        (torch.rand(1, 3, 16, 16), 101, ValueError, "quality"),
        (torch.rand(2, 3, 16, 16), torch.tensor([30.0, 40.0, 50.0]), ValueError, "quality"),
    ],
)
def test_invalid_arguments_raise(images, quality, error, message):
    with pytest.raises(error, match=message):
        jpeg_compress(images, quality)
