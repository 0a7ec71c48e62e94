# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
import dataclasses
import math

import pytest
import torch

from diffusers_dit4sr.tiling import Tile, blend_tiles, gaussian_tile_weights, plan_tiles, split_into_tiles

# (height, width, tile_size, overlap)
LAYOUTS = [
    (128, 128, 64, 24),  # released setting on a 1024 px output
    (64, 64, 64, 24),  # exactly one tile
    (40, 50, 64, 24),  # smaller than a tile
    (100, 200, 64, 16),  # non-square
    (64, 130, 64, 0),  # no overlap, shifted last tile
    (104, 64, 64, 24),  # last regular tile already ends at the border
    (48, 150, 64, 24),  # one dimension fits a tile, the other does not
    (67, 66, 64, 63),  # stride 1
]


def _offsets(tiles: list[Tile]) -> tuple[list[int], list[int]]:
    return sorted({tile.top for tile in tiles}), sorted({tile.left for tile in tiles})


# --- Tile ----------------------------------------------------------------------------------------------------


def test_tile_slices_index_the_last_two_dimensions():
    tile = Tile(top=2, left=3, height=4, width=5)
    assert tile.slices == (slice(2, 6), slice(3, 8))
    x = torch.arange(2 * 10 * 10).view(2, 10, 10)
    assert torch.equal(x[(..., *tile.slices)], x[:, 2:6, 3:8])
    with pytest.raises(dataclasses.FrozenInstanceError):
        tile.top = 0


@pytest.mark.parametrize("fields", [(-1, 0, 4, 4), (0, -1, 4, 4), (0, 0, 0, 4), (0, 0, 4, 0), (0.0, 0, 4, 4)])
def test_tile_rejects_invalid_fields(fields):
    with pytest.raises(ValueError, match="Tile"):
        Tile(*fields)


# --- plan_tiles ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("height, width, tile_size, overlap", LAYOUTS)
def test_plan_tiles_covers_the_latent_with_equal_tiles(height, width, tile_size, overlap):
    tiles = plan_tiles(height, width, tile_size, overlap)
    coverage = torch.zeros(height, width, dtype=torch.int64)
    for tile in tiles:
        assert tile.top >= 0 and tile.left >= 0
        assert tile.top + tile.height <= height and tile.left + tile.width <= width
        assert (tile.height, tile.width) == (min(tile_size, height), min(tile_size, width))
        coverage[tile.slices] += 1
    assert (coverage > 0).all()
    assert len(set(tiles)) == len(tiles)
    # row-major order
    assert [(tile.top, tile.left) for tile in tiles] == sorted((tile.top, tile.left) for tile in tiles)
    # a grid: every top is paired with every left
    tops, lefts = _offsets(tiles)
    assert len(tiles) == len(tops) * len(lefts)
    # neighbours share at least `overlap` rows/columns (when there is more than one tile along an axis)
    for offsets in (tops, lefts):
        for previous, current in zip(offsets, offsets[1:], strict=False):
            assert 0 < current - previous <= tile_size - overlap


@pytest.mark.parametrize(
    "height, width, tile_size, overlap, expected_tops, expected_lefts",
    [
        (128, 128, 64, 24, [0, 40, 64], [0, 40, 64]),
        (64, 64, 64, 24, [0], [0]),
        (40, 50, 64, 24, [0], [0]),
        (100, 200, 64, 16, [0, 36], [0, 48, 96, 136]),
        (64, 130, 64, 0, [0], [0, 64, 66]),
        (104, 64, 64, 24, [0, 40], [0]),
        (48, 150, 64, 24, [0], [0, 40, 80, 86]),
    ],
)
def test_plan_tiles_offsets(height, width, tile_size, overlap, expected_tops, expected_lefts):
    tiles = plan_tiles(height, width, tile_size, overlap)
    assert _offsets(tiles) == (expected_tops, expected_lefts)
    assert len(tiles) == len(expected_tops) * len(expected_lefts)


def test_plan_tiles_single_tile_covers_everything():
    assert plan_tiles(40, 56, 64, 24) == [Tile(0, 0, 40, 56)]
    assert plan_tiles(64, 64, 64, 24) == [Tile(0, 0, 64, 64)]


@pytest.mark.parametrize(
    "args, match",
    [
        ((64, 64, 64, -1), "overlap"),
        ((64, 64, 64, 64), "overlap"),
        ((64, 64, 32, 40), "overlap"),
        ((0, 64, 64, 8), "height"),
        ((64, -3, 64, 8), "width"),
        ((64, 64, 0, 0), "tile_size"),
        ((64.0, 64, 64, 8), "height"),
        ((64, 64, 64, True), "overlap"),
    ],
)
def test_plan_tiles_rejects_bad_arguments(args, match):
    with pytest.raises(ValueError, match=match):
        plan_tiles(*args)


# --- gaussian_tile_weights -----------------------------------------------------------------------------------


def test_gaussian_tile_weights_definition():
    weights = gaussian_tile_weights(9, 15, dtype=torch.float64)
    assert weights.shape == (9, 15) and weights.dtype == torch.float64
    # peak 1 at the centre, symmetric, separable gaussian with sigma = 0.1 * size per axis
    assert weights[4, 7] == 1.0 and weights.max() == 1.0
    torch.testing.assert_close(weights, weights.flip(0), rtol=0, atol=0)
    torch.testing.assert_close(weights, weights.flip(1), rtol=0, atol=0)
    assert math.isclose(weights[4, 7 + 3], math.exp(-0.5 * (3 / 1.5) ** 2), rel_tol=1e-12)
    assert math.isclose(weights[4 - 2, 7], math.exp(-0.5 * (2 / 0.9) ** 2), rel_tol=1e-12)
    wide = gaussian_tile_weights(9, 15, dtype=torch.float64, sigma=0.25)
    assert math.isclose(wide[4, 7 + 3], math.exp(-0.5 * (3 / 3.75) ** 2), rel_tol=1e-12)


def test_gaussian_tile_weights_released_map_centres_rows_at_half_the_height():
    # The released `_gaussian_weights`: x profile centred at (w - 1) / 2, y profile at h / 2, variance 0.01.
    height, width = 10, 12
    xs = [math.exp(-((x - (width - 1) / 2) ** 2) / (width * width) / (2 * 0.01)) for x in range(width)]
    ys = [math.exp(-((y - height / 2) ** 2) / (height * height) / (2 * 0.01)) for y in range(height)]
    expected = torch.outer(torch.tensor(ys, dtype=torch.float64), torch.tensor(xs, dtype=torch.float64))
    released = gaussian_tile_weights(height, width, dtype=torch.float64, symmetric=False)
    torch.testing.assert_close(released, expected, rtol=1e-12, atol=0)
    # columns stay symmetric, rows peak at row h / 2 and are no longer mirror images
    torch.testing.assert_close(released, released.flip(1), rtol=0, atol=0)
    assert int(released.argmax()) // width == height // 2
    assert not torch.equal(released, released.flip(0))
    symmetric = gaussian_tile_weights(height, width, dtype=torch.float64)
    assert not torch.allclose(released, symmetric)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_gaussian_tile_weights_are_strictly_positive(dtype):
    weights = gaussian_tile_weights(64, 64, dtype=dtype)
    assert weights.dtype == dtype
    assert (weights > 0).all()
    # even sizes: the four central values are equal and the largest
    centre = weights[31:33, 31:33]
    assert (centre == weights.max()).all()
    assert weights[0, 0] == weights.min()


def test_gaussian_tile_weights_rejects_bad_arguments():
    with pytest.raises(ValueError, match="tile_height"):
        gaussian_tile_weights(0, 8)
    with pytest.raises(ValueError, match="tile_width"):
        gaussian_tile_weights(8, 2.5)
    with pytest.raises(TypeError, match="dtype"):
        gaussian_tile_weights(8, 8, dtype=torch.int64)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_tile_weights(8, 8, sigma=0.0)


# --- split_into_tiles / blend_tiles --------------------------------------------------------------------------


def _latent(height: int, width: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, height, width, generator=torch.Generator().manual_seed(seed))


def test_split_into_tiles_stacks_crops():
    x = _latent(100, 200)
    tiles = plan_tiles(100, 200, 64, 16)
    crops = split_into_tiles(x, tiles)
    assert crops.shape == (len(tiles), 2, 3, 64, 64)
    for crop, tile in zip(crops, tiles, strict=True):
        assert torch.equal(crop, x[:, :, tile.slices[0], tile.slices[1]])


def test_split_into_tiles_rejects_bad_tiles():
    x = _latent(32, 32)
    with pytest.raises(ValueError, match="same size"):
        split_into_tiles(x, [Tile(0, 0, 16, 16), Tile(16, 16, 16, 8)])
    with pytest.raises(ValueError, match="does not fit"):
        split_into_tiles(x, [Tile(0, 20, 16, 16)])
    with pytest.raises(ValueError, match="non-empty"):
        split_into_tiles(x, [])
    with pytest.raises(TypeError, match="x"):
        split_into_tiles(x.numpy(), [Tile(0, 0, 16, 16)])


@pytest.mark.parametrize("height, width, tile_size, overlap", LAYOUTS)
def test_blending_tiles_of_one_tensor_gives_it_back(height, width, tile_size, overlap):
    x = _latent(height, width, seed=height + width)
    tiles = plan_tiles(height, width, tile_size, overlap)
    weights = gaussian_tile_weights(tiles[0].height, tiles[0].width)
    crops = split_into_tiles(x, tiles)
    torch.testing.assert_close(blend_tiles(crops, tiles, height, width, weights), x, rtol=0, atol=1e-6)
    torch.testing.assert_close(blend_tiles(list(crops), tiles, height, width, weights), x, rtol=0, atol=1e-6)


def test_blend_single_tile_returns_it_unchanged():
    x = _latent(40, 56)
    tiles = plan_tiles(40, 56, 64, 24)
    weights = gaussian_tile_weights(40, 56)
    out = blend_tiles(x[None], tiles, 40, 56, weights)
    torch.testing.assert_close(out, x, rtol=0, atol=1e-6)


def test_blend_is_a_weighted_average():
    # two tiles overlapping in columns 4..7 of a 1 x 12 strip, outputs 0 and 1
    tiles = plan_tiles(1, 12, 8, 4)
    assert tiles == [Tile(0, 0, 1, 8), Tile(0, 4, 1, 8)]
    outputs = torch.stack([torch.zeros(1, 1, 1, 8), torch.ones(1, 1, 1, 8)])
    out = blend_tiles(outputs, tiles, 1, 12, torch.ones(1, 8))
    expected = torch.tensor([0, 0, 0, 0, 0.5, 0.5, 0.5, 0.5, 1, 1, 1, 1]).view(1, 1, 1, 12)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    # gaussian weights favour each tile's centre: monotone transition from 0 to 1
    out = blend_tiles(outputs, tiles, 1, 12, gaussian_tile_weights(1, 8)).flatten()
    assert (out.diff() >= 0).all() and out[5] < 0.5 < out[6]


def test_blend_keeps_half_precision_dtype():
    x = _latent(100, 100).half()
    tiles = plan_tiles(100, 100, 64, 24)
    out = blend_tiles(split_into_tiles(x, tiles), tiles, 100, 100, gaussian_tile_weights(64, 64, dtype=torch.float16))
    assert out.dtype == torch.float16
    torch.testing.assert_close(out, x, rtol=0, atol=1e-3)


def test_blend_tiles_rejects_bad_input():
    x = _latent(32, 32)
    tiles = plan_tiles(32, 32, 16, 4)
    crops = split_into_tiles(x, tiles)
    weights = gaussian_tile_weights(16, 16)
    with pytest.raises(ValueError, match="tile outputs"):
        blend_tiles(crops[:-1], tiles, 32, 32, weights)
    with pytest.raises(ValueError, match="weights"):
        blend_tiles(crops, tiles, 32, 32, weights[:8])
    with pytest.raises(ValueError, match="uncovered"):
        blend_tiles(crops[:1], tiles[:1], 32, 32, weights)
    with pytest.raises(ValueError, match="does not fit"):
        blend_tiles(crops, tiles, 24, 32, weights)
    with pytest.raises(ValueError, match="Tile output 1"):
        blend_tiles([crops[0], crops[1][:, :2]] + list(crops[2:]), tiles, 32, 32, weights)
    with pytest.raises(ValueError, match="tile_outputs"):
        blend_tiles(torch.zeros(3, 4), tiles, 32, 32, weights)
    with pytest.raises(TypeError, match="tile_outputs"):
        blend_tiles([c.numpy() for c in crops], tiles, 32, 32, weights)
    with pytest.raises(ValueError, match="height"):
        blend_tiles(crops, tiles, 0, 32, weights)
