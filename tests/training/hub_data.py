# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Small datasets the 🤗 Datasets tests build offline: photos in a folder (with captions), and the same photos as
parquet shards and a WebDataset tar."""

import io
import json
import tarfile
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import png

from ..utils import camera_exif

FEATURES = datasets.Features({"image": datasets.Image(), "text": datasets.Value("string")})


def save_photos(folder: Path, count: int = 6, seed: int = 0) -> list[Path]:
    """`count` random RGB PNGs of different sizes (some below 64 px) with `<stem>.txt` captions, and the
    `metadata.jsonl` that gives an image folder the same captions (column `text`)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths, metadata = [], []
    for index in range(count):
        height, width = 48 + 8 * (index % 4), 80 - 6 * (index % 6)
        path = folder / f"photo{index}.png"
        PIL.Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(path)
        path.with_suffix(".txt").write_text(f"photo number {index}", encoding="utf-8")
        metadata.append({"file_name": path.name, "text": f"photo number {index}"})
        paths.append(path)
    (folder / "metadata.jsonl").write_text("".join(json.dumps(row) + "\n" for row in metadata), encoding="utf-8")
    return paths


def save_unusual_photos(folder: Path) -> list[Path]:
    """What the folder reader converts: grey, CMYK, palette, RGBA, 16-bit RGB and an EXIF-rotated photo."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (40, 72, 3), dtype=np.uint8)
    image = PIL.Image.fromarray(rgb)
    image.convert("L").save(folder / "a_grey.png")
    image.convert("CMYK").save(folder / "b_cmyk.jpg", quality=95)
    image.convert("P", palette=PIL.Image.Palette.ADAPTIVE).save(folder / "c_palette.png")
    image.convert("RGBA").save(folder / "d_rgba.png")
    samples = rng.integers(0, 65536, (44, 70, 3), dtype=np.uint16)
    with open(folder / "e_sixteen_bit.png", "wb") as file:
        png.Writer(70, 44, greyscale=False, bitdepth=16).write(file, samples.reshape(44, 70 * 3))
    image.save(folder / "f_rotated.jpg", exif=camera_exif(6), quality=95)
    return sorted(path for path in folder.iterdir() if path.suffix in (".png", ".jpg"))


def captions_of(paths: list[Path]) -> list[str]:
    return [
        path.with_suffix(".txt").read_text(encoding="utf-8") if path.with_suffix(".txt").exists() else ""
        for path in paths
    ]


def as_dataset(paths: list[Path]) -> datasets.Dataset:
    """The photos' file bytes (not re-encoded) and captions as a 🤗 dataset with columns `image` and `text`."""
    rows = {
        "image": [{"bytes": path.read_bytes(), "path": path.name} for path in paths],
        "text": captions_of(paths),
    }
    return datasets.Dataset.from_dict(rows, features=FEATURES)


def write_parquet(paths: list[Path], folder: Path, num_shards: int = 1) -> list[Path]:
    """The photos as `num_shards` parquet files `train-0000i.parquet` in `folder`, in order."""
    folder.mkdir(parents=True, exist_ok=True)
    dataset = as_dataset(paths)
    files = []
    for index in range(num_shards):
        files.append(folder / f"train-{index:05d}.parquet")
        dataset.shard(num_shards, index, contiguous=True).to_parquet(files[-1])
    return files


def write_webdataset(paths: list[Path], target: Path) -> Path:
    """The photos as one WebDataset tar: `<key>.png` and `<key>.txt` per photo (columns `png` and `txt`)."""
    with tarfile.open(target, "w") as tar:
        for key, (path, caption) in enumerate(zip(paths, captions_of(paths), strict=True)):
            for extension, data in (("png", path.read_bytes()), ("txt", caption.encode())):
                info = tarfile.TarInfo(f"{key:04d}.{extension}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return target
