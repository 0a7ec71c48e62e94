# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""A baseline JPEG encode/decode round trip in torch, batched, with one quality per image.

This reproduces what libjpeg (as used by PIL and OpenCV) does to 8-bit RGB images, so the degradation sees real
JPEG artifacts (8x8 blocking, ringing, chroma bleeding) without leaving the device:

1. RGB to full-range YCbCr (JFIF), 8-bit samples;
2. 4:2:0 chroma subsampling (2x2 averages);
3. 8x8 block DCT of level-shifted samples, quantization with the standard luminance / chrominance tables
   (ITU-T T.81 Annex K) scaled by the IJG quality formula and clipped to baseline (1..255), rounding;
4. dequantization, inverse DCT, 8-bit samples;
5. chroma upsampling with libjpeg's "fancy" triangle filter (bilinear, half-pixel centres), back to RGB.

Images are padded to a multiple of 16 (the 4:2:0 MCU) by edge replication, like libjpeg, and cropped back.
Remaining differences to libjpeg are integer-arithmetic roundings of its DCT and color conversion.
"""

import math

import torch
import torch.nn.functional as F

__all__ = ["jpeg_compress", "quantization_tables"]

_LUMA_TABLE = (
    (16, 11, 10, 16, 24, 40, 51, 61),
    (12, 12, 14, 19, 26, 58, 60, 55),
    (14, 13, 16, 24, 40, 57, 69, 56),
    (14, 17, 22, 29, 51, 87, 80, 62),
    (18, 22, 37, 56, 68, 109, 103, 77),
    (24, 35, 55, 64, 81, 104, 113, 92),
    (49, 64, 78, 87, 103, 121, 120, 101),
    (72, 92, 95, 98, 112, 100, 103, 99),
)
_CHROMA_TABLE = (
    (17, 18, 24, 47, 99, 99, 99, 99),
    (18, 21, 26, 66, 99, 99, 99, 99),
    (24, 26, 56, 99, 99, 99, 99, 99),
    (47, 66, 99, 99, 99, 99, 99, 99),
    *((99,) * 8 for _ in range(4)),
)
# JFIF RGB -> YCbCr (the +128 chroma offset is added separately) and its inverse.
_RGB_TO_YCBCR = (
    (0.299, 0.587, 0.114),
    (-0.168735892, -0.331264108, 0.5),
    (0.5, -0.418687589, -0.081312411),
)
_YCBCR_TO_RGB = (
    (1.0, 0.0, 1.402),
    (1.0, -0.344136286, -0.714136286),
    (1.0, 1.772, 0.0),
)
_MCU = 16


def quantization_tables(quality: torch.Tensor | float) -> tuple[torch.Tensor, torch.Tensor]:
    """Luminance and chrominance quantization tables, (N, 8, 8) int64, as libjpeg builds them.

    Args:
        quality: IJG quality in [1, 100], rounded to an integer (encoders take integer qualities); scalar or (N,).
    """
    quality = torch.as_tensor(quality, dtype=torch.float32).reshape(-1).round()
    if not bool(((quality >= 1) & (quality <= 100)).all()):
        raise ValueError(f"`quality` must lie in [1, 100], got {quality.tolist()}.")
    quality = quality.to(torch.int64).view(-1, 1, 1)
    scale = torch.where(quality < 50, 5000 // quality, 200 - 2 * quality)
    tables = []
    for base in (_LUMA_TABLE, _CHROMA_TABLE):
        base = torch.tensor(base, dtype=torch.int64, device=quality.device)
        tables.append(((base * scale + 50) // 100).clamp(1, 255))
    return tables[0], tables[1]


def _block_dct_matrix(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """(64, 64) matrix of the JPEG 8x8 forward DCT acting on row-major flattened blocks.

    It is `kron(D, D)` for the orthonormal 8-point DCT-II matrix `D` (JPEG's DCT is orthonormal): one matrix
    product per plane instead of many tiny 8x8 ones. Its transpose is the inverse DCT.
    """
    n = torch.arange(8, dtype=torch.float64)
    dct = torch.cos((2 * n[None, :] + 1) * n[:, None] * math.pi / 16) * 0.5
    dct[0] /= math.sqrt(2)
    return torch.kron(dct, dct).to(device=device, dtype=dtype)


def _compress_plane(plane: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """Quantize the block DCT of (B, H, W) 8-bit samples with (B, 8, 8) tables and decode back to samples."""
    batch, height, width = plane.shape
    dct = _block_dct_matrix(plane.dtype, plane.device)
    blocks = plane.view(batch, height // 8, 8, width // 8, 8).transpose(2, 3).reshape(batch, -1, 64) - 128
    table = table.to(plane.dtype).reshape(batch, 1, 64)
    coefficients = torch.round(blocks @ dct.T / table) * table
    blocks = (coefficients @ dct + 128).view(batch, height // 8, width // 8, 8, 8)
    return blocks.transpose(2, 3).reshape(batch, height, width).round().clamp(0, 255)


def _color_transform(images: torch.Tensor, matrix: tuple[tuple[float, ...], ...]) -> torch.Tensor:
    matrix = torch.tensor(matrix, dtype=images.dtype, device=images.device)
    return torch.einsum("ij,bjhw->bihw", matrix, images)


def jpeg_compress(images: torch.Tensor, quality: torch.Tensor | float) -> torch.Tensor:
    """Compress and decompress RGB images with baseline JPEG (4:2:0), one quality per image.

    Args:
        images: (B, 3, H, W) floating RGB in [0, 1], any size; values are clamped and rounded to 8 bits first,
            as an encoder only sees 8-bit samples.
        quality: IJG quality in [1, 100] (rounded to an integer), a scalar or a (B,) tensor.

    Returns:
        The decoded images, same shape and dtype, on 8-bit levels in [0, 1].
    """
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"`images` must be a (B, 3, H, W) tensor, got {getattr(images, 'shape', type(images))}.")
    if not images.is_floating_point():
        raise TypeError(f"`images` must be a floating tensor, got {images.dtype}.")
    batch, _, height, width = images.shape
    quality = torch.as_tensor(quality, dtype=torch.float32).to(images.device).reshape(-1)
    if quality.numel() not in (1, batch):
        raise ValueError(f"`quality` must be a scalar or hold one value per image ({batch}), got {quality.numel()}.")
    luma_table, chroma_table = quantization_tables(quality.expand(batch))
    work_dtype = torch.promote_types(images.dtype, torch.float32)

    rgb = (images.to(work_dtype).clamp(0, 1) * 255).round()
    pad_h, pad_w = -height % _MCU, -width % _MCU
    rgb = F.pad(rgb, (0, pad_w, 0, pad_h), mode="replicate")
    offset = torch.tensor((0.0, 128.0, 128.0), dtype=work_dtype, device=images.device).view(1, 3, 1, 1)
    ycbcr = (_color_transform(rgb, _RGB_TO_YCBCR) + offset).round().clamp(0, 255)

    luma = _compress_plane(ycbcr[:, 0], luma_table)
    chroma = F.avg_pool2d(ycbcr[:, 1:], 2).round()
    chroma = torch.stack([_compress_plane(chroma[:, i], chroma_table) for i in range(2)], dim=1)
    chroma = F.interpolate(chroma, scale_factor=2, mode="bilinear", align_corners=False).round()

    ycbcr = torch.cat([luma.unsqueeze(1), chroma], dim=1) - offset
    rgb = _color_transform(ycbcr, _YCBCR_TO_RGB).round().clamp(0, 255)
    return (rgb[..., :height, :width] / 255).to(images.dtype)
