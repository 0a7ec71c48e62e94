# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Latent tiling: denoise a large latent as overlapping tiles and blend the per-tile predictions.

The transformer is run on fixed-size tiles of the latent (all tiles have the same size, so they can be
batched); the per-tile outputs are averaged back into one latent with gaussian weights that favour each
tile's centre (MultiDiffusion / Mixture-of-Diffusers style, as in SeeSR and DiT4SR). All sizes here are in
latent units; converting from pixels is the caller's business.
"""

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

__all__ = ["Tile", "blend_tiles", "gaussian_tile_weights", "plan_tiles", "split_into_tiles"]


@dataclass(frozen=True)
class Tile:
    """A rectangle of a latent, in latent units: rows ``top:top + height``, columns ``left:left + width``."""

    top: int
    left: int
    height: int
    width: int

    def __post_init__(self) -> None:
        for name in ("top", "left", "height", "width"):
            value = getattr(self, name)
            minimum = 0 if name in ("top", "left") else 1
            if not _is_int(value) or value < minimum:
                raise ValueError(f"`Tile.{name}` must be an integer >= {minimum}, got {value!r}.")

    @property
    def slices(self) -> tuple[slice, slice]:
        """Index for the last two dimensions of a tensor: ``x[..., tile.slices[0], tile.slices[1]]``."""
        return slice(self.top, self.top + self.height), slice(self.left, self.left + self.width)


def plan_tiles(height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
    """Cover a ``height`` x ``width`` latent with equally sized, overlapping tiles.

    Along each dimension, tiles start every ``tile_size - overlap`` rows (columns) and the last tile is shifted
    inward so that it ends at the border: tiles never leave the latent and are all exactly ``tile_size`` long.
    A dimension shorter than ``tile_size`` gets a single tile spanning it, so a latent that fits in one tile
    gives exactly one tile covering all of it. For example, a 128 x 128 latent with ``tile_size=64`` and
    ``overlap=24`` gives tiles at offsets 0, 40 and 64 along each axis: 9 tiles.

    Args:
        height: Latent height.
        width: Latent width.
        tile_size: Side of a tile.
        overlap: Minimum number of rows/columns shared by neighbouring tiles, in ``[0, tile_size)``.

    Returns:
        The tiles in row-major order.
    """
    for name, value in (("height", height), ("width", width), ("tile_size", tile_size)):
        if not _is_int(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not _is_int(overlap) or not 0 <= overlap < tile_size:
        raise ValueError(f"`overlap` must be an integer in [0, tile_size={tile_size}), got {overlap!r}.")

    stride = tile_size - overlap
    tile_height, tops = _tile_offsets(height, tile_size, stride)
    tile_width, lefts = _tile_offsets(width, tile_size, stride)
    return [Tile(top, left, tile_height, tile_width) for top in tops for left in lefts]


def gaussian_tile_weights(
    tile_height: int,
    tile_width: int,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    sigma: float = 0.1,
    symmetric: bool = True,
) -> torch.Tensor:
    """Gaussian blending weights for one tile.

    ``w[y, x] = exp(-((y - cy)**2 / (2 * (sigma * tile_height)**2) + (x - cx)**2 / (2 * (sigma * tile_width)**2)))``
    with ``(cy, cx) = ((tile_height - 1) / 2, (tile_width - 1) / 2)`` the tile's centre, so the weight is 1 at
    the centre and the map is symmetric. The default ``sigma=0.1`` (a variance of 0.01 in tile-relative
    coordinates) is the weighting of SeeSR's and DiT4SR's released tiled inference; their normalizing constant
    is dropped since blending divides by the summed weights. Values are computed in float64 and clamped to the
    smallest normal number of ``dtype``, so the weights are strictly positive even in half precision.

    ``symmetric=False`` is the released map exactly: its rows are centred at ``cy = tile_height / 2``, half a row
    below the centre (a quirk of SeeSR's and DiT4SR's code; it changes tiled results by about 1%).

    Args:
        tile_height: Tile height (rows).
        tile_width: Tile width (columns).
        device: Device of the returned tensor.
        dtype: Floating dtype of the returned tensor.
        sigma: Standard deviation of the gaussian as a fraction of the tile size along each axis.
        symmetric: Centre the rows at ``(tile_height - 1) / 2`` (True) or, as released, at ``tile_height / 2``.

    Returns:
        A (tile_height, tile_width) tensor.
    """
    for name, value in (("tile_height", tile_height), ("tile_width", tile_width)):
        if not _is_int(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if not dtype.is_floating_point:
        raise TypeError(f"`dtype` must be a floating-point dtype, got {dtype}.")
    if not (isinstance(sigma, int | float) and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"`sigma` must be a positive finite number, got {sigma!r}.")

    def profile(size: int, center: float) -> torch.Tensor:
        offsets = torch.arange(size, dtype=torch.float64) - center
        return torch.exp(-0.5 * (offsets / (sigma * size)) ** 2)

    row_center = (tile_height - 1) / 2 if symmetric else tile_height / 2
    weights = torch.outer(profile(tile_height, row_center), profile(tile_width, (tile_width - 1) / 2))
    return weights.clamp_min(torch.finfo(dtype).tiny).to(device=device, dtype=dtype)


def split_into_tiles(x: torch.Tensor, tiles: Sequence[Tile]) -> torch.Tensor:
    """Crop each tile from the last two dimensions of ``x`` and stack the crops along a new leading dimension.

    Args:
        x: A tensor shaped (..., H, W), e.g. a (B, C, H, W) latent.
        tiles: Equally sized tiles inside (H, W), e.g. from :func:`plan_tiles`.

    Returns:
        A (num_tiles, ..., tile_height, tile_width) tensor.
    """
    if not isinstance(x, torch.Tensor) or x.ndim < 2:
        raise TypeError(f"`x` must be a torch.Tensor with at least 2 dimensions, got {_describe(x)}.")
    _check_tiles(tiles, x.shape[-2], x.shape[-1])
    return torch.stack([x[(..., *tile.slices)] for tile in tiles])


def blend_tiles(
    tile_outputs: torch.Tensor | Sequence[torch.Tensor],
    tiles: Sequence[Tile],
    height: int,
    width: int,
    weights: torch.Tensor,
) -> torch.Tensor:
    """Merge per-tile outputs into one (..., height, width) tensor by a weighted average.

    Every position receives ``sum_t w_t * out_t / sum_t w_t`` over the tiles covering it, where ``w_t`` is
    ``weights`` placed at tile ``t``. Blending tiles cut from one tensor therefore gives that tensor back.
    The sums are accumulated tile by tile in at least float32 (deterministic, also on GPU).

    Args:
        tile_outputs: A (num_tiles, ..., tile_height, tile_width) tensor, or a sequence of num_tiles
            (..., tile_height, tile_width) tensors, in the order of ``tiles``.
        tiles: The tiles, covering the (height, width) area without gaps, e.g. from :func:`plan_tiles`.
        height: Height of the output.
        width: Width of the output.
        weights: A strictly positive (tile_height, tile_width) weight map, e.g. from
            :func:`gaussian_tile_weights`.

    Returns:
        A (..., height, width) tensor with the dtype and device of the tile outputs.
    """
    if isinstance(tile_outputs, torch.Tensor):
        if tile_outputs.ndim < 3:
            raise ValueError(
                "`tile_outputs` must be shaped (num_tiles, ..., tile_height, tile_width), got shape "
                f"{tuple(tile_outputs.shape)}."
            )
        outputs = list(tile_outputs.unbind(0))
    else:
        outputs = list(tile_outputs)
        if not all(isinstance(out, torch.Tensor) for out in outputs):
            raise TypeError("`tile_outputs` must be a tensor or a sequence of tensors.")
    for name, value in (("height", height), ("width", width)):
        if not _is_int(value) or value <= 0:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
    if len(outputs) != len(tiles):
        raise ValueError(f"Got {len(outputs)} tile outputs for {len(tiles)} tiles.")
    tile_height, tile_width = _check_tiles(tiles, height, width)
    _check_coverage(tiles, height, width)
    expected = outputs[0].shape[:-2] + (tile_height, tile_width)
    for index, out in enumerate(outputs):
        if out.shape != expected:
            raise ValueError(
                f"Tile output {index} has shape {tuple(out.shape)}, expected {tuple(expected)} (the shape of "
                "the first output, with the tiles' size)."
            )
    if not isinstance(weights, torch.Tensor) or weights.shape != (tile_height, tile_width):
        raise ValueError(
            f"`weights` must be a tensor shaped ({tile_height}, {tile_width}) like the tiles, got "
            f"{_describe(weights)}."
        )

    dtype = outputs[0].dtype
    device = outputs[0].device
    accum_dtype = torch.promote_types(dtype, torch.float32)
    weights = weights.to(device=device, dtype=accum_dtype)
    total = torch.zeros((*expected[:-2], height, width), dtype=accum_dtype, device=device)
    weight_sum = torch.zeros((height, width), dtype=accum_dtype, device=device)
    for tile, out in zip(tiles, outputs, strict=True):
        total[(..., *tile.slices)] += out.to(accum_dtype) * weights
        weight_sum[tile.slices] += weights
    return (total / weight_sum).to(dtype)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def _tile_offsets(size: int, tile_size: int, stride: int) -> tuple[int, list[int]]:
    """Tile length and start offsets along one dimension of length ``size``."""
    if size <= tile_size:
        return size, [0]
    last = size - tile_size
    return tile_size, [*range(0, last, stride), last]


def _check_tiles(tiles: Sequence[Tile], height: int, width: int) -> tuple[int, int]:
    """Check that ``tiles`` is a non-empty sequence of equal tiles inside (height, width); return their size."""
    if len(tiles) == 0 or not all(isinstance(tile, Tile) for tile in tiles):
        raise ValueError("`tiles` must be a non-empty sequence of `Tile`.")
    tile_height, tile_width = tiles[0].height, tiles[0].width
    for tile in tiles:
        if (tile.height, tile.width) != (tile_height, tile_width):
            raise ValueError(
                f"All tiles must have the same size, got {tile_height}x{tile_width} and {tile.height}x{tile.width}."
            )
        if tile.top + tile.height > height or tile.left + tile.width > width:
            raise ValueError(f"{tile} does not fit in a {height}x{width} latent.")
    return tile_height, tile_width


def _check_coverage(tiles: Sequence[Tile], height: int, width: int) -> None:
    covered = torch.zeros((height, width), dtype=torch.bool)
    for tile in tiles:
        covered[tile.slices] = True
    if not bool(covered.all()):
        raise ValueError(f"`tiles` leave parts of the {height}x{width} latent uncovered.")
