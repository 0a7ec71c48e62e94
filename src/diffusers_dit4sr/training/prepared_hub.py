# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Prepared training pairs as a 🤗 dataset: parquet shards, the empty prompt's embeddings and a dataset card.

`export_prepared_dataset` turns a folder written by `examples/prepare_dataset.py` (`PreparedDataset`) into a folder
that `datasets.load_dataset` reads and the Hub shows: `data/train-*.parquet` with the HR and LR images as `Image`
features (lossless PNG) and the cached latents and text embeddings as arrays, `empty_prompt.safetensors`, and a
`README.md` that says how the pairs were made (degradation, seed, sources, models). `push_prepared_dataset` uploads
it. Training reads it back with `--dataset_name` (`hf_datasets.load_training_rows` recognizes the `hr`/`lr` columns).
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import yaml
from huggingface_hub import DatasetCard, DatasetCardData

from ..file_utils import atomic_write_path
from .datasets import PreparedDataset
from .hf_datasets import EMPTY_PROMPT_FILE, datasets

__all__ = ["export_prepared_dataset", "prepared_features", "push_prepared_dataset"]

_ROW_GROUP_SIZE = 16
DATA_FILES = "data/train-*.parquet"
"""Where the shards are, relative to the exported folder (the dataset card's `configs` name them)."""


def prepared_features(dataset: PreparedDataset) -> datasets.Features:
    """The columns of an exported prepared dataset: `hr`, `lr` (`Image`), `caption`, `source`, and the cached
    `hr_latents`, `lr_latents` (`Array3D`), `prompt_embeds` (`Array2D`), `pooled_prompt_embeds` (a list) it has."""
    features: dict[str, Any] = {
        "hr": datasets.Image(),
        "lr": datasets.Image(),
        "caption": datasets.Value("string"),
        "source": datasets.Value("string"),
    }
    if dataset.has_latents or dataset.has_text_embeddings:
        first = dataset[0]
        if dataset.has_latents:
            shape = tuple(first["hr_latents"].shape)
            features["hr_latents"] = datasets.Array3D(shape, "float32")
            features["lr_latents"] = datasets.Array3D(shape, "float32")
        if dataset.has_text_embeddings:
            features["prompt_embeds"] = datasets.Array2D(tuple(first["prompt_embeds"].shape), "float32")
            features["pooled_prompt_embeds"] = datasets.List(
                datasets.Value("float32"), length=first["pooled_prompt_embeds"].shape[0]
            )
    return datasets.Features(features)


def export_prepared_dataset(
    prepared_dir: str | os.PathLike,
    output_dir: str | os.PathLike,
    *,
    shard_size: int = 256,
    repo_id: str | None = None,
    progress: bool = True,
) -> Path:
    """Writes the prepared folder `prepared_dir` as a 🤗 dataset in `output_dir`; returns `output_dir`.

    Args:
        prepared_dir: A folder written by `examples/prepare_dataset.py`.
        output_dir: The folder to write: `data/train-XXXXX-of-YYYYY.parquet`, `empty_prompt.safetensors` (with text
            embeddings) and `README.md`. Shards of an earlier export are replaced.
        shard_size: Samples per parquet shard (at 512 px with latents and embeddings, a sample takes about 3.5 MiB).
        repo_id: The Hub repository the card names in its loading code (default: `output_dir`).
        progress: Show a progress bar.

    Every file is written under a temporary name and then renamed. The images are stored as they are in the folder
    (8-bit, lossless PNG), so a row reads back as the folder's sample.
    """
    if shard_size < 1:
        raise ValueError(f"`shard_size` must be at least 1, got {shard_size}.")
    prepared = PreparedDataset(prepared_dir)
    if not prepared.info.get("complete", True):
        raise ValueError(f"{prepared_dir} was not prepared completely: finish preparing it before exporting it.")
    output_dir = Path(output_dir)
    features = prepared_features(prepared)
    num_shards = math.ceil(len(prepared) / shard_size)
    data_dir = output_dir / "data"
    for old in data_dir.glob("train-*.parquet"):
        old.unlink()
    from tqdm.auto import tqdm

    with tqdm(total=len(prepared), unit="sample", desc="Exporting", disable=not progress) as bar:
        for shard in range(num_shards):
            path = data_dir / f"train-{shard:05d}-of-{num_shards:05d}.parquet"
            with atomic_write_path(path) as temporary:
                # Row groups of a few samples: a sample with embeddings takes megabytes, and readers load whole groups.
                writer = datasets.arrow_writer.ParquetWriter(
                    path=str(temporary), features=features, writer_batch_size=_ROW_GROUP_SIZE
                )
                for index in range(shard * shard_size, min((shard + 1) * shard_size, len(prepared))):
                    writer.write(_row(prepared, index, features))
                    bar.update(1)
                writer.finalize()
    if prepared.has_text_embeddings:
        with atomic_write_path(output_dir / EMPTY_PROMPT_FILE) as temporary:
            shutil.copyfile(Path(prepared_dir) / EMPTY_PROMPT_FILE, temporary)
    card = prepared_dataset_card(prepared, repo_id or str(output_dir), features)
    with atomic_write_path(output_dir / "README.md") as temporary:
        card.save(temporary)
    return output_dir


def _row(prepared: PreparedDataset, index: int, features: datasets.Features) -> dict[str, Any]:
    sample = prepared[index]
    with_metadata = prepared.paths[index]
    from safetensors import safe_open

    with safe_open(with_metadata, framework="pt") as file:
        source = (file.metadata() or {}).get("source", "")
    # PIL images: `datasets.Image` stores them as lossless PNG (arrays would pass through int64 first).
    row = {
        key: PIL.Image.fromarray((sample[key].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        for key in ("hr", "lr")
    }
    row.update(caption=sample["caption"], source=source)
    row.update({key: sample[key].numpy() for key in features if key not in row})
    return row


def prepared_dataset_card(prepared: PreparedDataset, repo_id: str, features: datasets.Features) -> DatasetCard:
    """The dataset card of an export: how the pairs were made (from `dataset.json`) and how to train on them."""
    info = prepared.info
    source = info.get("source_dataset") or {"folder": info.get("input_dir")}
    source_datasets = [source["name"]] if "name" in source else None
    data = DatasetCardData(
        pretty_name=f"DiT4SR training pairs ({prepared.resolution} px, x{prepared.scale})",
        task_categories=["image-to-image"],
        tags=["super-resolution", "dit4sr", "diffusers-dit4sr"],
        source_datasets=source_datasets,
        size_categories=_size_category(len(prepared)),
        configs=[{"config_name": "default", "data_files": [{"split": "train", "path": DATA_FILES}]}],
    )
    columns = "\n".join(f"| `{name}` | {_feature_text(feature)} |" for name, feature in features.items())
    made = {key: info.get(key) for key in ("seed", "crops_per_image", "captions", "caption_model", "caption_prompt")}
    made.update(
        vae=info.get("vae"),
        text_encoders=info.get("text_encoders"),
        max_sequence_length=info.get("max_sequence_length"),
        dtype=info.get("dtype"),
        num_source_images=info.get("num_source_images"),
        failed_sources=info.get("failed_sources"),
    )
    body = f"""
# DiT4SR training pairs

{len(prepared)} (LR, HR) pairs for real-world super-resolution training of
[DiT4SR](https://arxiv.org/abs/2503.23580), made with
[diffusers-dit4sr](https://pypi.org/project/diffusers-dit4sr/)'s `examples/prepare_dataset.py`: random
{prepared.resolution} px crops of HR photos (flipped at random), their unsharp-masked targets and their LR images
({prepared.resolution // prepared.scale} px) from the Real-ESRGAN second-order degradation below.

## Train on it

```bash
accelerate launch examples/train_dit4sr.py --dataset_name {repo_id} --resolution {prepared.resolution} ...
```

```python
from datasets import load_dataset

pairs = load_dataset("{repo_id}", split="train")
```

## Columns

| column | content |
|---|---|
{columns}

`hr_latents`, `lr_latents`: SD3 VAE latents of `hr` and of `lr` bicubic-upscaled to the HR size
(`(sample - shift_factor) * scaling_factor`); `prompt_embeds`, `pooled_prompt_embeds`: the caption's SD3 text
embeddings; `{EMPTY_PROMPT_FILE}`: those of the empty prompt (the released training replaced 20% of the captions by
it). `source`: the source image of the pair.

## How the pairs were made

Source: `{json.dumps(source)}`

```yaml
{yaml.safe_dump(made, sort_keys=False).strip()}
```

Degradation (`diffusers_dit4sr.training.DegradationConfig`):

```yaml
{yaml.safe_dump(info.get("degradation"), sort_keys=False).strip()}
```

Sample `i` is crop `i % crops_per_image` of source image `i // crops_per_image`, a pure function of these settings and
`i`.
"""
    return DatasetCard(f"---\n{data.to_yaml()}\n---\n{body}")


def _feature_text(feature) -> str:
    if isinstance(feature, datasets.Image):
        return "image (8-bit PNG)"
    if isinstance(feature, datasets.Value):
        return feature.dtype
    if isinstance(feature, (datasets.Array2D, datasets.Array3D)):
        return f"{feature.dtype} array {feature.shape}"
    return f"{feature.feature.dtype} list of {feature.length}"


def _size_category(count: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < limit:
            return name
    return "1M<n<10M"


def push_prepared_dataset(
    output_dir: str | os.PathLike, repo_id: str, *, token: str | None = None, private: bool | None = None
) -> str:
    """Uploads an exported dataset to a Hub dataset repository.

    Args:
        output_dir: The folder `export_prepared_dataset` wrote.
        repo_id: The dataset repository, `namespace/name`; created if needed.
        token: A Hub token (default: the logged-in one).
        private: Whether a new repository is private (default: the Hub's).

    Returns:
        The repository's id.
    """
    from huggingface_hub import create_repo, upload_folder

    repo_id = create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True, token=token).repo_id
    upload_folder(
        repo_id=repo_id,
        folder_path=str(output_dir),
        repo_type="dataset",
        commit_message="DiT4SR training pairs (prepare_dataset.py)",
        allow_patterns=["data/*.parquet", EMPTY_PROMPT_FILE, "README.md"],
        delete_patterns=["data/*.parquet"],
        token=token,
    )
    return repo_id
