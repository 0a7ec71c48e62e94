# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Training data: random HR crops from an image folder, and the prepared (cached) pairs of `prepare_dataset.py`.

`HRImageDataset` yields HR crops for on-the-fly degradation in the training loop (spec, section 6: 512 px crops,
random horizontal flip). `PreparedDataset` reads a folder written by `examples/prepare_dataset.py`: fixed LR/HR pairs
and, optionally, their VAE latents and text embeddings, so training needs neither the degradation nor the encoders.
The prepared format is documented in `docs/data.md`.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import PIL.ImageOps
import torch
from diffusers.utils import logging
from safetensors import safe_open
from torch.utils.data import Dataset

from ..image_processing import IMAGE_EXTENSIONS, pil_bicubic_resize
from ..photo import read_photo

__all__ = [
    "PREPARED_FORMAT",
    "PREPARED_VERSION",
    "HRImageDataset",
    "PreparedDataset",
    "collate_samples",
    "crop_generator",
    "derive_seed",
    "list_images",
    "random_crop",
    "read_caption",
]

logger = logging.get_logger(__name__)

PREPARED_FORMAT = "dit4sr-prepared"
"""`format` field of a prepared dataset's `dataset.json`."""
PREPARED_VERSION = 1
"""`version` field of a prepared dataset's `dataset.json`; bumped on incompatible format changes."""

_OPTIONAL_TENSORS = ("hr_latents", "lr_latents", "prompt_embeds", "pooled_prompt_embeds")


def derive_seed(*keys: int) -> int:
    """A 63-bit seed that depends on every key, e.g. `derive_seed(seed, index, epoch)`.

    Keys are hashed (BLAKE2b), so nearby keys give unrelated streams and the result is the same in every process and
    on every platform (unlike Python's `hash`), which DataLoader workers and resumed runs rely on.
    """
    data = b"".join((int(key) % 2**64).to_bytes(8, "little") for key in keys)
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little") >> 1


def list_images(root: str | os.PathLike) -> list[Path]:
    """Every image file under `root` (recursive, hidden files and folders skipped), sorted by relative path."""
    root = Path(root)
    if not root.is_dir():
        raise ValueError(f"{root} is not a folder.")
    images = [
        path
        for path in root.rglob("*")
        if path.suffix.lower() in IMAGE_EXTENSIONS
        and path.is_file()
        and not any(part.startswith(".") for part in path.relative_to(root).parts)
    ]
    if not images:
        raise ValueError(f"No images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}.")
    return sorted(images, key=lambda path: path.relative_to(root).as_posix())


def read_caption(image_path: str | os.PathLike, caption_extension: str = ".txt") -> str:
    """The stripped text of `<stem><caption_extension>` next to the image, or "" if there is no such file."""
    image_path = Path(image_path)
    caption_path = image_path.with_name(image_path.stem + caption_extension)
    if not caption_path.is_file():
        return ""
    return caption_path.read_text(encoding="utf-8").strip()


def random_crop(
    image: PIL.Image.Image | np.ndarray, resolution: int, generator: torch.Generator, random_flip: bool = True
) -> torch.Tensor:
    """A random `resolution` x `resolution` crop as a (3, R, R) float tensor in [0, 1].

    Args:
        image: What `read_photo` returns as pixels: an RGB image (8-bit files) or a float32 `(H, W, 3)` array in
            [0, 1] (16-bit and float files, kept at their precision). Images whose short side is below
            `resolution` are first upscaled (bicubic) so that it equals `resolution`.
        resolution: The crop's side.
        generator: Where every draw comes from: the same generator state gives the same crop.
        random_flip: Flip the crop horizontally with probability 0.5.
    """
    width, height = image.size if isinstance(image, PIL.Image.Image) else (image.shape[1], image.shape[0])
    if min(width, height) < resolution:
        factor = resolution / min(width, height)
        width, height = max(resolution, round(width * factor)), max(resolution, round(height * factor))
        if isinstance(image, PIL.Image.Image):
            image = image.resize((width, height), PIL.Image.Resampling.BICUBIC)
        else:
            pixels = torch.from_numpy(image).permute(2, 0, 1)[None]
            image = pil_bicubic_resize(pixels, (height, width))[0].permute(1, 2, 0).numpy()
    top = int(torch.randint(0, height - resolution + 1, (), generator=generator))
    left = int(torch.randint(0, width - resolution + 1, (), generator=generator))
    flip = random_flip and bool(torch.rand((), generator=generator) < 0.5)
    if isinstance(image, PIL.Image.Image):
        image = image.crop((left, top, left + resolution, top + resolution))
        crop = np.asarray(image, dtype=np.float32) / 255.0
    else:
        crop = np.asarray(image[top : top + resolution, left : left + resolution], dtype=np.float32)
    if flip:
        crop = crop[:, ::-1]
    return torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1).contiguous()


def crop_generator(seed: int | None, epoch: int, index: int) -> torch.Generator:
    """The generator of one item's crop. Every reader of HR images draws its crops from it, so that the same image at
    the same place gives the same crop whichever way it was stored.

    Args:
        seed: The run's seed; `None`: fresh randomness.
        epoch: The epoch.
        index: The item's index in the dataset.

    Returns:
        A CPU generator seeded with `derive_seed(seed, epoch, index)`.
    """
    generator = torch.Generator()
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(derive_seed(seed, epoch, index))
    return generator


class HRImageDataset(Dataset):
    """Random HR crops of every image under a folder, with their captions, for on-the-fly degradation.

    Args:
        root: Folder searched recursively for images (`IMAGE_EXTENSIONS`, any case).
        resolution: Side of the square crops (the released training used 512).
        random_flip: Flip crops horizontally with probability 0.5.
        caption_extension: A caption is the text file `<stem><caption_extension>` next to its image ("" if none).
        seed: With a seed, item `i` of epoch `e` is always the same crop (from `derive_seed(seed, e, i)`), so runs
            are reproducible; the training loop calls `set_epoch` to get new crops every epoch. Without a seed,
            every access draws fresh randomness.

    Items are `{"pixel_values": (3, R, R) float32 in [0, 1], "caption": str, "path": str}`. Unreadable images raise
    a `ValueError` naming the file when they are accessed (checking all files up front would be too slow for large
    sets).
    """

    def __init__(
        self,
        root: str | os.PathLike,
        resolution: int = 512,
        random_flip: bool = True,
        caption_extension: str = ".txt",
        seed: int | None = None,
    ) -> None:
        if resolution < 1:
            raise ValueError(f"`resolution` must be positive, got {resolution}.")
        self.root = Path(root)
        self.paths = list_images(self.root)
        self.resolution = resolution
        self.random_flip = random_flip
        self.caption_extension = caption_extension
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of `epoch` (only matters with a seed; DataLoader workers see it from the next iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        generator = crop_generator(self.seed, self.epoch, index)
        return {
            "pixel_values": random_crop(read_photo(path).pixels, self.resolution, generator, self.random_flip),
            "caption": read_caption(path, self.caption_extension),
            "path": str(path),
        }


class PreparedDataset(Dataset):
    """A folder written by `examples/prepare_dataset.py` (format: `docs/data.md`).

    Items hold `"hr"` (3, R, R) and `"lr"` (3, R / scale, R / scale) as float32 in [0, 1], `"caption"` and `"path"`
    (the sample file), plus `"hr_latents"`, `"lr_latents"` (16, R / 8, R / 8) when the folder has latents and
    `"prompt_embeds"` (T, D), `"pooled_prompt_embeds"` (P,) when it has text embeddings.

    Attributes:
        info: The parsed `dataset.json`.
        resolution, scale, has_latents, has_text_embeddings: Its fields of the same names.
        paths: The sample files, sorted.
    """

    def __init__(self, root: str | os.PathLike) -> None:
        self.root = Path(root)
        self.info = _read_info(self.root / "dataset.json")
        self.resolution = int(self.info["resolution"])
        self.scale = int(self.info["scale"])
        self.has_latents = bool(self.info["has_latents"])
        self.has_text_embeddings = bool(self.info["has_text_embeddings"])
        self.paths = sorted((self.root / "samples").glob("*.safetensors"))
        if not self.paths:
            raise ValueError(f"{self.root} holds no samples (expected {self.root / 'samples'}/*.safetensors).")
        if not self.info.get("complete", True):
            logger.warning(f"{self.root} was not prepared completely: using the {len(self.paths)} samples written.")
        self._empty_prompt: tuple[torch.Tensor, torch.Tensor] | None = None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict[str, Any]:
        path = self.paths[index]
        try:
            with safe_open(path, framework="pt") as file:
                metadata = file.metadata() or {}
                tensors = {key: file.get_tensor(key) for key in file.keys()}
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"cannot read {path}: {error}") from error
        lr_side = self.resolution // self.scale
        expected = {"hr": (3, self.resolution, self.resolution), "lr": (3, lr_side, lr_side)}
        for key, shape in expected.items():
            if key not in tensors or tuple(tensors[key].shape) != shape or tensors[key].dtype != torch.uint8:
                found = (tuple(tensors[key].shape), tensors[key].dtype) if key in tensors else "nothing"
                raise ValueError(f"{path}: `{key}` must be uint8 of shape {shape}, found {found}.")
        sample = {
            "hr": tensors["hr"].float() / 255,
            "lr": tensors["lr"].float() / 255,
            "caption": metadata.get("caption", ""),
            "path": str(path),
        }
        sample.update({key: tensors[key] for key in _OPTIONAL_TENSORS if key in tensors})
        return sample

    def empty_prompt_embeds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`(prompt_embeds (1, T, D), pooled_prompt_embeds (1, P))` of the empty prompt, or None without embeddings.

        The released training replaced captions by these with probability 0.2 (spec, section 5).
        """
        if not self.has_text_embeddings:
            return None
        if self._empty_prompt is None:
            path = self.root / "empty_prompt.safetensors"
            try:
                with safe_open(path, framework="pt") as file:
                    self._empty_prompt = (file.get_tensor("prompt_embeds"), file.get_tensor("pooled_prompt_embeds"))
            except Exception as error:
                raise ValueError(f"cannot read {path}: {error}") from error
        return self._empty_prompt


def collate_samples(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Batch items of either dataset: tensors are stacked, everything else (captions, paths) becomes a list."""
    if not samples:
        raise ValueError("Cannot collate an empty list of samples.")
    keys = samples[0].keys()
    for sample in samples[1:]:
        if sample.keys() != keys:
            raise ValueError(f"Samples have different keys: {sorted(keys)} and {sorted(sample.keys())}.")
    return {
        key: torch.stack([sample[key] for sample in samples])
        if isinstance(samples[0][key], torch.Tensor)
        else [sample[key] for sample in samples]
        for key in keys
    }


def _read_info(path: Path) -> dict[str, Any]:
    """Parse and check `dataset.json`."""
    if not path.is_file():
        raise ValueError(f"{path.parent} is not a prepared dataset: {path.name} is missing.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise ValueError(f"cannot read {path}: {error}") from error
    if not isinstance(info, dict) or info.get("format") != PREPARED_FORMAT:
        raise ValueError(f"{path} is not a {PREPARED_FORMAT!r} dataset description.")
    if info.get("version") != PREPARED_VERSION:
        raise ValueError(
            f"{path} has format version {info.get('version')!r}; this library reads version {PREPARED_VERSION}."
        )
    missing = [key for key in ("resolution", "scale", "has_latents", "has_text_embeddings") if key not in info]
    if missing:
        raise ValueError(f"{path} lacks the fields {missing}.")
    return info
