# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Training data from 🤗 Datasets: Hub datasets, parquet files, WebDataset tars and image folders, mixed with weights,
read whole or streamed across processes, and resumable.

`load_training_rows` opens every `DatasetSource`, checks its columns, and mixes them into one 🤗 dataset whose rows
hold the undecoded image and its caption (or the LR/HR pair and cached tensors of a dataset written by
`examples/prepare_dataset.py`). `RowsDataset` reads it like the folder readers of `datasets.py`: the same image
with the same seed, epoch and index gives the same crop, read by the same reader (`read_photo`). Streamed rows (each
process's own shards, `datasets.distributed.split_dataset_by_node`) are read by `hf_streaming`.
"""

from __future__ import annotations

import glob
import math
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch
from safetensors import safe_open

try:
    import datasets
    from datasets.distributed import split_dataset_by_node
except ImportError as error:  # an optional dependency: the `train` extra
    raise ImportError(
        "Training from 🤗 datasets needs the `datasets` package: pip install 'diffusers-dit4sr[train]'."
    ) from error

from ..constants import IMAGE_EXTENSIONS
from ..errors import one_line
from ..photo import read_photo
from .datasets import crop_generator, random_crop

__all__ = [
    "EMPTY_PROMPT_FILE",
    "PREPARED_COLUMNS",
    "DatasetSource",
    "PreparedInfo",
    "RowReader",
    "RowsDataset",
    "TrainingRows",
    "load_training_rows",
    "read_row_image",
]

PREPARED_COLUMNS = ("hr", "lr")
"""The image columns of a dataset written by `prepare_dataset.py`, which marks it as prepared pairs."""
PREPARED_TENSORS = ("hr_latents", "lr_latents", "prompt_embeds", "pooled_prompt_embeds")
"""Its optional array columns: the cached latents and text embeddings."""
EMPTY_PROMPT_FILE = "empty_prompt.safetensors"
"""The file beside a prepared dataset's shards with the empty prompt's embeddings (as in a prepared folder)."""
_FILE_BUILDERS = {".parquet": "parquet", ".tar": "webdataset", ".arrow": "arrow"}
"""Builders of the files a source may name directly (paths or glob patterns)."""


@dataclass(frozen=True)
class DatasetSource:
    """One dataset to train on.

    Args:
        name: A Hub dataset id, a local folder `datasets.load_dataset` reads (images, parquet, WebDataset tars, ...),
            a folder written by `Dataset.save_to_disk`, or parquet / tar files (a path or a glob pattern).
        config: The dataset's configuration (subset), if it has several.
        split: The split to read; `"train[:N]"` takes its first N rows.
        revision: A branch, tag or commit of a Hub dataset.
        image_column: The column holding the HR images (an `Image` feature or image file bytes). Ignored for
            prepared datasets, whose columns are fixed.
        caption_column: The column holding the captions, or None for empty captions.
    """

    name: str
    config: str | None = None
    split: str = "train"
    revision: str | None = None
    image_column: str = "image"
    caption_column: str | None = None


@dataclass(frozen=True)
class TrainingRows:
    """The mixed rows of every source, with columns `image` and `caption` (HR images) or `hr`, `lr`, `caption` and
    the cached tensors (prepared pairs); images are undecoded (`{"bytes", "path"}`).

    Attributes:
        rows: A `datasets.Dataset`, or a `datasets.IterableDataset` when streamed.
        prepared: Whether the rows are prepared pairs (`PREPARED_COLUMNS`) rather than HR images.
        tensors: The cached tensor columns of prepared pairs (some of `PREPARED_TENSORS`).
        empty_prompt: Where the empty prompt's embeddings are (`EMPTY_PROMPT_FILE`) when `prompt_embeds` are cached.
        names: The sources' names, for messages.
        process_index, num_processes: The share of a stream the rows are (`load_training_rows`).
    """

    rows: datasets.Dataset | datasets.IterableDataset
    prepared: bool = False
    tensors: tuple[str, ...] = ()
    empty_prompt: str | None = None
    names: tuple[str, ...] = ()
    process_index: int = 0
    num_processes: int = 1

    @property
    def streaming(self) -> bool:
        return isinstance(self.rows, datasets.IterableDataset)

    @property
    def has_latents(self) -> bool:
        return "hr_latents" in self.tensors

    @property
    def has_text_embeddings(self) -> bool:
        return "prompt_embeds" in self.tensors


def load_training_rows(
    sources: Sequence[DatasetSource],
    *,
    weights: Sequence[float] | None = None,
    streaming: bool = False,
    seed: int = 0,
    max_samples: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    token: str | bool | None = None,
    process_index: int = 0,
    num_processes: int = 1,
) -> TrainingRows:
    """Opens, checks and mixes `sources` into one dataset of training rows.

    Args:
        sources: The datasets; several are mixed with `datasets.interleave_datasets`.
        weights: The share of the samples each source gives (any positive numbers, normalized), one per source. By
            default each source gives a share proportional to its size, so every image comes up equally often (in
            streaming, sizes are known only from the datasets' metadata: give weights where they are not). A mixed
            epoch lasts until every source has given all its rows; smaller shares repeat.
        streaming: Stream the rows (`IterableDataset`) instead of downloading and preparing whole datasets.
        seed: Seed of the mixing.
        max_samples: Keep only the first this many mixed rows (streamed by several processes: each process keeps
            its share of them, `max_samples / num_processes` rounded up).
        cache_dir: Where 🤗 Datasets caches downloads and prepared data (default: its own cache).
        token: Hub token for private or gated datasets (default: the logged-in one).
        process_index, num_processes: With `streaming`, the rows are this process's share: each source is split
            with `datasets.distributed.split_dataset_by_node` before the mixing, by whole shards where it has at least
            as many shards as processes (each process then downloads only its own), else by rows (every process
            reads every row and keeps one in `num_processes`). Shares may differ in size by a shard.

    Raises `ValueError` naming the parameter (`name`, `split`, `image_column`, `caption_column`, `weights`,
    `max_samples`) for a source that cannot be opened, needs a loading script (`trust_remote_code`), lacks a column
    (the message lists the columns it has), holds no images in its image column, or has no rows.
    """
    if not sources:
        raise ValueError("`sources` is empty: name at least one dataset.")
    if weights is not None:
        if len(weights) != len(sources):
            raise ValueError(f"`weights` needs one weight per dataset: {len(weights)} for {len(sources)} datasets.")
        if any(not np.isfinite(weight) or weight <= 0 for weight in weights):
            raise ValueError(f"`weights` must be positive numbers, got {list(weights)}.")
    if max_samples is not None and max_samples < 1:
        raise ValueError(f"`max_samples` must be at least 1, got {max_samples}.")
    if not 0 <= process_index < num_processes:
        raise ValueError(f"`process_index` {process_index} is not below `num_processes` {num_processes}.")

    parts = []
    for source in sources:
        dataset = _open(source, streaming=streaming, cache_dir=cache_dir, token=token)
        parts.append(_normalize(dataset, source))
    kinds = {prepared for _, prepared, _ in parts}
    if len(kinds) > 1:
        raise ValueError(
            "`sources` mixes prepared pairs (columns 'hr', 'lr') with HR image datasets: train on one kind at a time."
        )
    tensor_sets = {tensors for _, _, tensors in parts}
    if len(tensor_sets) > 1:
        raise ValueError(f"`sources` are prepared datasets with different cached tensors: {sorted(tensor_sets)}.")
    prepared, tensors = kinds.pop(), tensor_sets.pop()
    rows = [dataset for dataset, _, _ in parts]
    if streaming and num_processes > 1:
        rows = [_share(dataset, process_index, num_processes) for dataset in rows]

    if len(rows) > 1:
        if weights is None:
            sizes = [_size(dataset, source) for dataset, source in zip(rows, sources, strict=True)]
            if None in sizes:
                unknown = [source.name for source, size in zip(sources, sizes, strict=True) if size is None]
                raise ValueError(
                    f"`weights` are needed to mix streamed datasets whose sizes are unknown ({', '.join(unknown)})."
                )
            weights = sizes
        total = float(sum(weights))
        rows = datasets.interleave_datasets(
            rows,
            probabilities=[weight / total for weight in weights],
            seed=seed,
            stopping_strategy="all_exhausted",
        )
    else:
        rows = rows[0]
    if max_samples is not None:
        if streaming:
            rows = rows.take(math.ceil(max_samples / num_processes))
        else:
            rows = rows.select(range(min(max_samples, len(rows))))
    if prepared:
        rows = rows.with_format("numpy")
    empty_prompt = _empty_prompt_location(sources[0], token) if "prompt_embeds" in tensors else None
    return TrainingRows(
        rows=rows,
        prepared=prepared,
        tensors=tensors,
        empty_prompt=empty_prompt,
        names=tuple(source.name for source in sources),
        process_index=process_index if streaming else 0,
        num_processes=num_processes if streaming else 1,
    )


def _share(dataset: datasets.IterableDataset, process_index: int, num_processes: int) -> datasets.IterableDataset:
    """A process's share of a stream: whole shards where there are enough of them, else every `num_processes`-th row."""
    strategy = "shards" if dataset.num_shards >= num_processes else "examples"
    return split_dataset_by_node(dataset, rank=process_index, world_size=num_processes, strategy=strategy)


def _open(source: DatasetSource, *, streaming: bool, cache_dir, token) -> datasets.Dataset | datasets.IterableDataset:
    """`datasets.load_dataset` (or `load_from_disk`) of one source, with its errors as one-line `ValueError`s."""
    name, split, first_rows = source.name, source.split, None
    if streaming:  # streams cannot be sliced by 🤗 Datasets: take the first rows instead
        split, first_rows = _split_and_limit(split)
    options: dict[str, Any] = {"cache_dir": str(cache_dir) if cache_dir is not None else None, "token": token}
    path = Path(name).expanduser()
    try:
        if (path / "dataset_info.json").is_file() and (path / "state.json").is_file():  # Dataset.save_to_disk
            dataset = datasets.load_from_disk(str(path))
            if streaming:
                dataset = dataset.to_iterable_dataset(num_shards=max(1, len(dataset.cache_files)))
        elif not path.is_dir() and path.suffix.lower() in _FILE_BUILDERS:
            files = sorted(glob.glob(str(path)))
            if not files:
                raise FileNotFoundError("no such file")
            builder = _FILE_BUILDERS[path.suffix.lower()]
            dataset = datasets.load_dataset(
                builder, data_files={"train": files}, split=split, streaming=streaming, **options
            )
        else:
            builder, data_dir = name, None
            if path.is_dir() and not (path / "README.md").is_file() and _holds_images(path):
                # Caption files beside the photos would make 🤗 Datasets read the folder as a text dataset.
                builder, data_dir = "imagefolder", str(path)
            dataset = datasets.load_dataset(
                builder,
                source.config,
                data_dir=data_dir,
                split=split,
                revision=source.revision,
                streaming=streaming,
                **options,
            )
    except ValueError as error:
        message = str(error).lower()
        if "corresponds to no data" in message:  # an empty split, or empty data files
            raise ValueError(f"`split` {source.split!r} of {name!r} has no rows.") from error
        if "split" in message:
            raise ValueError(f"`split` {source.split!r} of {name!r}: {one_line(error)}") from error
        if "config" in message:
            raise ValueError(f"`config` {source.config!r} of {name!r}: {one_line(error)}") from error
        raise ValueError(f"`name` {name!r}: {one_line(error)}") from error
    except RuntimeError as error:
        if "scripts are no longer supported" in str(error):
            raise ValueError(
                f"`name` {name!r} is defined by a loading script, which would need `trust_remote_code`; 🤗 Datasets "
                "no longer runs loading scripts: use a version of it in data files (parquet, images, WebDataset), "
                f"e.g. the Hub's automatic parquet conversion (`revision` 'refs/convert/parquet') ({one_line(error)})"
            ) from error
        raise ValueError(f"`name` {name!r}: {one_line(error)}") from error
    except (OSError, datasets.exceptions.DatasetNotFoundError) as error:
        raise ValueError(f"`name` {name!r} cannot be opened: {one_line(error)}") from error
    return dataset.take(first_rows) if first_rows is not None else dataset


def _holds_images(folder: Path) -> bool:
    return any(path.suffix.lower() in IMAGE_EXTENSIONS for path in folder.rglob("*"))


def _normalize(dataset, source: DatasetSource):
    """The source's rows reduced to the training columns; returns `(rows, prepared, tensors)`."""
    if dataset.features is None:  # some streamed formats (JSON lines, CSV) tell their columns with their rows only
        dataset = dataset._resolve_features()
    features = dataset.features
    columns = list(features)
    described = f"{source.name!r} (split {source.split!r})"

    prepared = source.image_column not in columns and all(
        isinstance(features.get(column), datasets.Image) for column in PREPARED_COLUMNS
    )
    if prepared:
        tensors = tuple(column for column in PREPARED_TENSORS if column in columns)
        keep = [*PREPARED_COLUMNS, "caption", *tensors] if "caption" in columns else [*PREPARED_COLUMNS, *tensors]
        dataset = dataset.select_columns(keep)
        for column in PREPARED_COLUMNS:
            dataset = dataset.cast_column(column, datasets.Image(decode=False))
        if "caption" not in columns:
            dataset = _with_empty_captions(dataset)
        _check_not_empty(dataset, source)
        return dataset, True, tensors

    if source.image_column not in columns:
        raise ValueError(
            f"`image_column` {source.image_column!r} is not a column of {described}; its columns are: "
            f"{', '.join(columns)}."
        )
    image_feature = features[source.image_column]
    binary = isinstance(image_feature, datasets.Value) and image_feature.dtype in ("binary", "large_binary")
    if not isinstance(image_feature, datasets.Image) and not binary:
        image_columns = [column for column, feature in features.items() if isinstance(feature, datasets.Image)]
        hint = f"its image columns are: {', '.join(image_columns)}" if image_columns else "it has no image column"
        raise ValueError(
            f"`image_column` {source.image_column!r} of {described} holds {_describe(image_feature)}, not images; "
            f"{hint}."
        )
    if source.caption_column is not None:
        if source.caption_column not in columns:
            raise ValueError(
                f"`caption_column` {source.caption_column!r} is not a column of {described}; its columns are: "
                f"{', '.join(columns)}."
            )
        caption_feature = features[source.caption_column]
        if not (isinstance(caption_feature, datasets.Value) and caption_feature.dtype in ("string", "large_string")):
            raise ValueError(
                f"`caption_column` {source.caption_column!r} of {described} holds {_describe(caption_feature)}, "
                "not text."
            )
    keep = [source.image_column] + ([source.caption_column] if source.caption_column else [])
    if len(set(keep)) < len(keep):
        raise ValueError(f"`caption_column` {source.caption_column!r} is the image column of {described}.")
    dataset = dataset.select_columns(keep)
    dataset = dataset.cast_column(source.image_column, datasets.Image(decode=False))
    if source.image_column != "image":
        dataset = dataset.rename_column(source.image_column, "image")
    if source.caption_column is None:
        dataset = _with_empty_captions(dataset)
    elif source.caption_column != "caption":
        dataset = dataset.rename_column(source.caption_column, "caption")
    _check_not_empty(dataset, source)
    return dataset, False, ()


def _with_empty_captions(dataset):
    """The dataset with a `caption` column of empty strings (no rewrite of the data for map-style datasets)."""
    if isinstance(dataset, datasets.IterableDataset):
        features = datasets.Features({**dataset.features, "caption": datasets.Value("string")})
        return dataset.map(_empty_caption, features=features)
    return dataset.add_column("caption", [""] * len(dataset))


def _empty_caption(row: dict[str, Any]) -> dict[str, str]:
    return {"caption": ""}


def _check_not_empty(dataset, source: DatasetSource) -> None:
    empty = len(dataset) == 0 if isinstance(dataset, datasets.Dataset) else next(iter(dataset.take(1)), None) is None
    if empty:
        raise ValueError(f"`split` {source.split!r} of {source.name!r} has no rows.")


def _split_and_limit(split: str) -> tuple[str, int | None]:
    """`"train[:N]"` -> `("train", N)`; other splits -> `(split, None)`."""
    match = re.fullmatch(r"(.+)\[:(\d+)\]", split)
    return (match[1], int(match[2])) if match else (split, None)


def _size(dataset, source: DatasetSource) -> int | None:
    """Rows of a source: its length, or for a stream the size its metadata gives (None if unknown)."""
    if isinstance(dataset, datasets.Dataset):
        return len(dataset)
    name, limit = _split_and_limit(source.split)
    split = (dataset.info.splits or {}).get(name)
    if split is None or not split.num_examples:
        return None
    return min(split.num_examples, limit) if limit is not None else split.num_examples


def _describe(feature) -> str:
    if isinstance(feature, datasets.Value):
        return f"{feature.dtype} values"
    return type(feature).__name__


def _empty_prompt_location(source: DatasetSource, token) -> str:
    """The empty prompt's embeddings of a prepared dataset: a file beside its shards, locally or on the Hub."""
    local = Path(source.name).expanduser()
    if local.is_dir():
        path = local / EMPTY_PROMPT_FILE
        if not path.is_file():
            raise ValueError(f"`name` {source.name!r} has cached text embeddings but no {EMPTY_PROMPT_FILE}.")
        return str(path)
    from huggingface_hub import hf_hub_download

    try:
        return hf_hub_download(
            source.name, EMPTY_PROMPT_FILE, repo_type="dataset", revision=source.revision, token=token
        )
    except Exception as error:  # huggingface_hub reports missing files and network failures with many types
        raise ValueError(
            f"`name` {source.name!r} has cached text embeddings but its {EMPTY_PROMPT_FILE} cannot be read: "
            f"{one_line(error)}"
        ) from error


def read_row_image(value: Any, token: str | bool | None = None) -> PIL.Image.Image | np.ndarray:
    """The pixels of an undecoded image value of a row (`{"bytes", "path"}`), as `read_photo` reads image files."""
    return read_photo(_image_data(value, token)).pixels


def _image_data(value: Any, token: str | bool | None = None) -> bytes | str:
    """What `read_photo` reads for an undecoded image value: its bytes, or the path of a local file."""
    if isinstance(value, dict):
        data, path = value.get("bytes"), value.get("path")
    else:
        data, path = value, None
    if data is not None:
        return bytes(data)
    if path is None:
        raise ValueError("the image has neither bytes nor a path")
    if os.path.isfile(path):
        return path
    from datasets.utils.file_utils import xopen

    with xopen(path, "rb", download_config=datasets.DownloadConfig(token=token)) as file:
        return file.read()


class RowReader:
    """Turns a training row into a sample: a random HR crop (`random_crop`, as the folder reader does) or, for
    prepared pairs, the stored images and tensors (as `PreparedDataset` returns them).

    Args:
        resolution: Side of the HR crops (and the side prepared pairs must have).
        random_flip: Flip crops horizontally with probability 0.5.
        prepared: Whether rows are prepared pairs.
        token: Hub token to read images stored as remote paths.
    """

    def __init__(self, resolution: int, random_flip: bool = True, prepared: bool = False, token=None) -> None:
        if resolution < 1:
            raise ValueError(f"`resolution` must be positive, got {resolution}.")
        self.resolution, self.random_flip, self.prepared, self.token = resolution, random_flip, prepared, token

    def __call__(self, row: dict[str, Any], generator: torch.Generator, name: str) -> dict[str, Any]:
        if self.prepared:
            return self._prepared(row, name)
        image = row["image"]
        path = image.get("path") if isinstance(image, dict) else None
        try:
            pixels = read_row_image(image, self.token)
        except (ValueError, OSError) as error:
            raise ValueError(f"cannot read the image of {name}{f' ({path})' if path else ''}: {error}") from error
        return {
            "pixel_values": random_crop(pixels, self.resolution, generator, self.random_flip),
            "caption": str(row["caption"] or "").strip(),
            "path": path or name,
        }

    def _prepared(self, row: dict[str, Any], name: str) -> dict[str, Any]:
        sample: dict[str, Any] = {}
        for key in PREPARED_COLUMNS:
            try:
                pixels = read_row_image(row[key], self.token)
            except (ValueError, OSError) as error:
                raise ValueError(f"cannot read `{key}` of {name}: {error}") from error
            sample[key] = torch.from_numpy(np.asarray(pixels, dtype=np.float32) / 255).permute(2, 0, 1).contiguous()
        if sample["hr"].shape[-1] != self.resolution or sample["hr"].shape[-2] != self.resolution:
            raise ValueError(
                f"{name} holds {tuple(sample['hr'].shape[-2:])} px HR images but `resolution` is {self.resolution}."
            )
        sample["caption"] = str(row["caption"] or "")
        sample["path"] = name
        for key in PREPARED_TENSORS:
            if key in row:
                sample[key] = torch.from_numpy(np.ascontiguousarray(row[key], dtype=np.float32))
        return sample


class PreparedInfo:
    """What the training script asks a prepared dataset (as `PreparedDataset` answers it)."""

    rows: TrainingRows

    @property
    def prepared(self) -> bool:
        """Whether items are prepared pairs (`hr`, `lr`, ...) rather than HR crops to degrade."""
        return self.rows.prepared

    @property
    def has_latents(self) -> bool:
        return self.rows.has_latents

    @property
    def has_text_embeddings(self) -> bool:
        return self.rows.has_text_embeddings

    def empty_prompt_embeds(self) -> tuple[torch.Tensor, torch.Tensor] | None:
        """`(prompt_embeds (1, T, D), pooled_prompt_embeds (1, P))` of the empty prompt, or None without embeddings."""
        if self.rows.empty_prompt is None:
            return None
        try:
            with safe_open(self.rows.empty_prompt, framework="pt") as file:
                return file.get_tensor("prompt_embeds"), file.get_tensor("pooled_prompt_embeds")
        except Exception as error:  # safetensors raises its own error types for corrupt files
            raise ValueError(f"cannot read {self.rows.empty_prompt}: {error}") from error


class RowsDataset(PreparedInfo, torch.utils.data.Dataset):
    """Map-style training samples from `TrainingRows`: items are those of `HRImageDataset` (or, for prepared pairs,
    of `PreparedDataset`).

    Item `i` of epoch `e` is a crop drawn from `crop_generator(seed, e, i)`, exactly as `HRImageDataset` draws it: an
    image folder and a 🤗 dataset of the same images in the same order give the same samples.

    Args:
        rows: From `load_training_rows(..., streaming=False)`.
        resolution: Side of the HR crops.
        random_flip: Flip crops horizontally with probability 0.5.
        seed: Seed of the crops (None: fresh randomness at every access).
        token: Hub token to read images stored as remote paths.
    """

    def __init__(
        self, rows: TrainingRows, resolution: int = 512, random_flip: bool = True, seed: int | None = None, token=None
    ) -> None:
        if rows.streaming:
            raise ValueError("`rows` are streamed: read them with `StreamedRowsDataset`.")
        self.rows = rows
        self.reader = RowReader(resolution, random_flip, rows.prepared, token)
        self.resolution = resolution
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the crops of `epoch` (only matters with a seed; DataLoader workers see it from the next iterator)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.rows.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        generator = crop_generator(self.seed, self.epoch, index)
        return self.reader(self.rows.rows[index], generator, f"row {index} of {' + '.join(self.rows.names)}")

    def first_sample(self) -> dict[str, Any]:
        """Item 0: reading it before training checks that the rows hold what they should."""
        return self[0]
