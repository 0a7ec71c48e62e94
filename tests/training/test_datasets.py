# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`HRImageDataset`, `PreparedDataset` and `collate_samples` on tiny images and a hand-written prepared folder."""

import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors.torch import save_file

from diffusers_dit4sr.photo import read_photo
from diffusers_dit4sr.training.datasets import (
    HRImageDataset,
    PreparedDataset,
    collate_samples,
    derive_seed,
)

RESOLUTION = 32


def save_image(path: Path, width: int, height: int, seed: int = 0) -> np.ndarray:
    array = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(array).save(path)
    return array


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """b_large.png (captioned), a_small.png (below the resolution), sub/C.JPG; plus files that must be ignored."""
    save_image(tmp_path / "b_large.png", 80, 72, seed=1)
    (tmp_path / "b_large.txt").write_text("  a red house \n", encoding="utf-8")
    save_image(tmp_path / "a_small.png", 20, 10, seed=2)
    save_image(tmp_path / "sub" / "C.JPG", 48, 40, seed=3)
    save_image(tmp_path / ".hidden" / "d.png", 40, 40)
    (tmp_path / "notes.md").write_text("not an image", encoding="utf-8")
    return tmp_path


def test_lists_images_recursively_sorted(image_dir: Path):
    dataset = HRImageDataset(image_dir, resolution=RESOLUTION, seed=0)
    names = [path.relative_to(image_dir).as_posix() for path in dataset.paths]
    assert names == ["a_small.png", "b_large.png", "sub/C.JPG"]
    assert len(dataset) == 3


def test_crops_have_resolution_and_range(image_dir: Path):
    dataset = HRImageDataset(image_dir, resolution=RESOLUTION, seed=0)
    for index in range(len(dataset)):
        item = dataset[index]
        assert set(item) == {"pixel_values", "caption", "path"}
        pixels = item["pixel_values"]
        assert pixels.shape == (3, RESOLUTION, RESOLUTION) and pixels.dtype == torch.float32
        assert 0 <= pixels.min() and pixels.max() <= 1
        assert item["path"] == str(dataset.paths[index])


def test_small_images_are_upscaled_bicubic(image_dir: Path):
    """20x10 -> 64x32 (short side = resolution): the crop is a window of that enlargement, possibly mirrored."""
    dataset = HRImageDataset(image_dir, resolution=RESOLUTION, seed=0)
    upscaled = PIL.Image.open(image_dir / "a_small.png").convert("RGB").resize((64, 32), PIL.Image.Resampling.BICUBIC)
    upscaled = torch.from_numpy(np.asarray(upscaled, dtype=np.float32) / 255).permute(2, 0, 1)
    windows = [upscaled[:, :, left : left + RESOLUTION] for left in range(64 - RESOLUTION + 1)]
    windows += [window.flip(-1) for window in windows]
    for epoch in range(3):
        dataset.set_epoch(epoch)
        crop = dataset[0]["pixel_values"]
        assert any(torch.equal(crop, window) for window in windows)


def test_captions_from_text_files(image_dir: Path):
    dataset = HRImageDataset(image_dir, resolution=RESOLUTION)
    assert [dataset[index]["caption"] for index in range(3)] == ["", "a red house", ""]
    (image_dir / "sub" / "C.caption").write_text("a blue car", encoding="utf-8")
    dataset = HRImageDataset(image_dir, resolution=RESOLUTION, caption_extension=".caption")
    assert [dataset[index]["caption"] for index in range(3)] == ["", "", "a blue car"]


def test_seed_and_epoch_reproduce_crops(image_dir: Path):
    first, second = (HRImageDataset(image_dir, resolution=RESOLUTION, seed=7) for _ in range(2))
    for index in range(3):
        assert torch.equal(first[index]["pixel_values"], second[index]["pixel_values"])
    large = 1
    epoch0 = first[large]["pixel_values"]
    first.set_epoch(1)
    assert not torch.equal(first[large]["pixel_values"], epoch0)
    first.set_epoch(0)
    assert torch.equal(first[large]["pixel_values"], epoch0)
    other_seed = HRImageDataset(image_dir, resolution=RESOLUTION, seed=8)
    assert not torch.equal(other_seed[large]["pixel_values"], epoch0)


def test_unseeded_crops_are_fresh(tmp_path: Path):
    save_image(tmp_path / "big.png", 256, 256)
    dataset = HRImageDataset(tmp_path, resolution=16)
    assert not torch.equal(dataset[0]["pixel_values"], dataset[0]["pixel_values"])


@pytest.mark.parametrize("random_flip", [True, False])
def test_flips(tmp_path: Path, random_flip: bool):
    """An image exactly the crop size: every crop is the image, or its mirror when flipped."""
    array = save_image(tmp_path / "image.png", RESOLUTION, RESOLUTION)
    image = torch.from_numpy(array.astype(np.float32) / 255).permute(2, 0, 1)
    dataset = HRImageDataset(tmp_path, resolution=RESOLUTION, random_flip=random_flip, seed=0)
    flipped = []
    for epoch in range(16):
        dataset.set_epoch(epoch)
        crop = dataset[0]["pixel_values"]
        assert torch.equal(crop, image) or torch.equal(crop, image.flip(-1))
        flipped.append(torch.equal(crop, image.flip(-1)))
    assert (any(flipped) and not all(flipped)) if random_flip else not any(flipped)


def test_exif_orientation_is_applied(tmp_path: Path):
    image = PIL.Image.new("RGB", (40, 20))
    exif = image.getexif()
    exif[0x0112] = 6  # rotated 90 degrees: displayed as 20 x 40
    image.save(tmp_path / "rotated.jpg", exif=exif)
    assert read_photo(tmp_path / "rotated.jpg").size == (20, 40)


def test_empty_folder_is_an_error(tmp_path: Path):
    (tmp_path / "readme.txt").write_text("no images here", encoding="utf-8")
    with pytest.raises(ValueError, match=f"No images .* under {tmp_path}"):
        HRImageDataset(tmp_path)


def test_corrupt_image_error_names_the_file(image_dir: Path):
    (image_dir / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    dataset = HRImageDataset(image_dir, resolution=RESOLUTION)  # found, but not read yet
    assert len(dataset) == 4
    with pytest.raises(ValueError, match=r"cannot read .*zz_broken\.png"):
        dataset[3]


def test_derive_seed():
    assert derive_seed(0, 1, 2) == derive_seed(0, 1, 2)
    seeds = {derive_seed(seed, index) for seed in range(4) for index in range(4)}
    assert len(seeds) == 16 and all(0 <= seed < 2**63 for seed in seeds)
    assert derive_seed(-1) != derive_seed(1)


def write_prepared(root: Path, with_cache: bool, info: dict | None = None) -> list[dict[str, torch.Tensor]]:
    """A 2-sample prepared folder written by hand, as docs/data.md describes it (R = 32, scale 4, T = 6, D = 8)."""
    generator = torch.Generator().manual_seed(0)
    samples = []
    (root / "samples").mkdir(parents=True)
    for index in range(2):
        tensors = {
            "hr": torch.randint(0, 256, (3, 32, 32), generator=generator, dtype=torch.uint8),
            "lr": torch.randint(0, 256, (3, 8, 8), generator=generator, dtype=torch.uint8),
        }
        if with_cache:
            tensors["hr_latents"] = torch.randn(16, 4, 4, generator=generator)
            tensors["lr_latents"] = torch.randn(16, 4, 4, generator=generator)
            tensors["prompt_embeds"] = torch.randn(6, 8, generator=generator)
            tensors["pooled_prompt_embeds"] = torch.randn(10, generator=generator)
        metadata = {"caption": f"caption {index}", "source": f"image{index}.png"}
        save_file(tensors, root / "samples" / f"{index:08d}.safetensors", metadata=metadata)
        samples.append(tensors)
    (root / "samples" / ".00000002.safetensors.123.tmp").write_bytes(b"half-written")
    if with_cache:
        empty = {"prompt_embeds": torch.zeros(1, 6, 8), "pooled_prompt_embeds": torch.ones(1, 10)}
        save_file(empty, root / "empty_prompt.safetensors")
    info = info or {
        "format": "dit4sr-prepared",
        "version": 1,
        "resolution": 32,
        "scale": 4,
        "has_latents": with_cache,
        "has_text_embeddings": with_cache,
        "num_samples": 2,
        "complete": True,
    }
    (root / "dataset.json").write_text(json.dumps(info), encoding="utf-8")
    return samples


@pytest.mark.parametrize("with_cache", [True, False])
def test_prepared_dataset_round_trip(tmp_path: Path, with_cache: bool):
    written = write_prepared(tmp_path, with_cache)
    dataset = PreparedDataset(tmp_path)
    assert len(dataset) == 2  # the temporary file is not a sample
    assert (dataset.resolution, dataset.scale) == (32, 4)
    assert dataset.has_latents is with_cache and dataset.has_text_embeddings is with_cache
    cached = {"hr_latents", "lr_latents", "prompt_embeds", "pooled_prompt_embeds"}
    for index, tensors in enumerate(written):
        item = dataset[index]
        assert set(item) == {"hr", "lr", "caption", "path"} | (cached if with_cache else set())
        assert item["hr"].dtype == torch.float32 and item["hr"].shape == (3, 32, 32)
        assert torch.equal(item["hr"], tensors["hr"].float() / 255)
        assert torch.equal(item["lr"], tensors["lr"].float() / 255)
        assert item["caption"] == f"caption {index}"
        assert item["path"] == str(tmp_path / "samples" / f"{index:08d}.safetensors")
        for key in cached & set(item):
            assert torch.equal(item[key], tensors[key])
    empty = dataset.empty_prompt_embeds()
    if with_cache:
        assert torch.equal(empty[0], torch.zeros(1, 6, 8)) and torch.equal(empty[1], torch.ones(1, 10))
    else:
        assert empty is None


def test_collate(image_dir: Path, tmp_path: Path):
    hr_dataset = HRImageDataset(image_dir, resolution=RESOLUTION, seed=0)
    batch = collate_samples([hr_dataset[index] for index in range(3)])
    assert batch["pixel_values"].shape == (3, 3, RESOLUTION, RESOLUTION)
    assert batch["caption"] == ["", "a red house", ""] and len(batch["path"]) == 3

    write_prepared(tmp_path / "prepared", with_cache=True)
    prepared = PreparedDataset(tmp_path / "prepared")
    batch = collate_samples([prepared[0], prepared[1]])
    assert batch["hr"].shape == (2, 3, 32, 32) and batch["lr"].shape == (2, 3, 8, 8)
    assert batch["hr_latents"].shape == (2, 16, 4, 4) and batch["prompt_embeds"].shape == (2, 6, 8)
    assert batch["pooled_prompt_embeds"].shape == (2, 10)
    assert batch["caption"] == ["caption 0", "caption 1"]
    loader = torch.utils.data.DataLoader(prepared, batch_size=2, collate_fn=collate_samples)
    assert next(iter(loader))["lr_latents"].shape == (2, 16, 4, 4)

    with pytest.raises(ValueError, match="different keys"):
        collate_samples([prepared[0], hr_dataset[0]])


GOOD_INFO = {"format": "dit4sr-prepared", "version": 1, "resolution": 32, "scale": 4}


@pytest.mark.parametrize(
    ("info", "match"),
    [
        ({**GOOD_INFO, "format": "something-else", "has_latents": False, "has_text_embeddings": False}, "not a"),
        ({**GOOD_INFO, "version": 2, "has_latents": False, "has_text_embeddings": False}, "version 2"),
        (GOOD_INFO, "lacks the fields"),
        ("not json", "cannot read"),
        (None, "dataset.json is missing"),
    ],
)
def test_bad_dataset_json(tmp_path: Path, info, match: str):
    write_prepared(tmp_path, with_cache=False)
    if info is None:
        (tmp_path / "dataset.json").unlink()
    else:
        text = info if isinstance(info, str) else json.dumps(info)
        (tmp_path / "dataset.json").write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match=match):
        PreparedDataset(tmp_path)


def test_prepared_dataset_without_samples(tmp_path: Path):
    write_prepared(tmp_path, with_cache=False)
    for path in (tmp_path / "samples").glob("*.safetensors"):
        path.unlink()
    with pytest.raises(ValueError, match="holds no samples"):
        PreparedDataset(tmp_path)


def test_prepared_sample_of_wrong_shape_names_the_file(tmp_path: Path):
    write_prepared(tmp_path, with_cache=False)
    path = tmp_path / "samples" / "00000001.safetensors"
    save_file({"hr": torch.zeros(3, 16, 16, dtype=torch.uint8), "lr": torch.zeros(3, 8, 8, dtype=torch.uint8)}, path)
    with pytest.raises(ValueError, match=r"00000001\.safetensors.*`hr` must be uint8 of shape \(3, 32, 32\)"):
        PreparedDataset(tmp_path)[1]
