# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`diffusers_dit4sr.training.hf_datasets`, offline, on an image folder, parquet shards and a WebDataset tar of a few
small photos: the samples equal the folder reader's, mixing, streaming shares, exact resumption, and bad input."""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import datasets
import pytest
import torch

from diffusers_dit4sr.training.datasets import HRImageDataset
from diffusers_dit4sr.training.hf_datasets import DatasetSource, RowsDataset, load_training_rows
from diffusers_dit4sr.training.hf_streaming import StreamedRowsDataset, StreamLoader

from .hub_data import as_dataset, save_photos, save_unusual_photos, write_parquet, write_webdataset

RESOLUTION = 64


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hub_data")
    paths = save_photos(root / "photos", count=6)
    write_parquet(paths, root / "parquet", num_shards=2)
    write_webdataset(paths, root / "photos.tar")
    return root


def rows(*sources: DatasetSource, cache: Path, **options):
    return load_training_rows(list(sources), cache_dir=cache, **options)


def samples(dataset, epoch: int = 0) -> list[dict]:
    dataset.set_epoch(epoch)
    return [dataset[index] for index in range(len(dataset))]


@pytest.mark.parametrize("form", ["imagefolder", "parquet", "webdataset"])
def test_a_dataset_gives_the_folder_readers_samples(data, tmp_path, form):
    source = {
        "imagefolder": DatasetSource(str(data / "photos"), caption_column="text"),
        "parquet": DatasetSource(str(data / "parquet" / "*.parquet"), caption_column="text"),
        "webdataset": DatasetSource(str(data / "photos.tar"), image_column="png", caption_column="txt"),
    }[form]
    dataset = RowsDataset(rows(source, cache=tmp_path), resolution=RESOLUTION, seed=7)
    folder = HRImageDataset(data / "photos", resolution=RESOLUTION, seed=7)
    assert len(dataset) == len(folder) == 6
    for epoch in (0, 3):
        for ours, theirs in zip(samples(dataset, epoch), samples(folder, epoch), strict=True):
            assert torch.equal(ours["pixel_values"], theirs["pixel_values"])
            assert ours["caption"] == theirs["caption"]
    assert not torch.equal(samples(dataset, 0)[0]["pixel_values"], samples(dataset, 1)[0]["pixel_values"])


def test_grey_cmyk_palette_16_bit_and_rotated_images_are_read_as_the_folder_reader_reads_them(tmp_path):
    paths = save_unusual_photos(tmp_path / "photos")
    write_parquet(paths, tmp_path / "parquet")
    dataset = RowsDataset(
        rows(DatasetSource(str(tmp_path / "parquet" / "*.parquet")), cache=tmp_path / "cache"), resolution=32, seed=1
    )
    folder = HRImageDataset(tmp_path / "photos", resolution=32, seed=1)
    for ours, theirs, path in zip(samples(dataset), samples(folder), paths, strict=True):
        assert ours["pixel_values"].shape == (3, 32, 32), path.name
        assert torch.equal(ours["pixel_values"], theirs["pixel_values"]), path.name
    sixteen_bit = samples(dataset)[paths.index(tmp_path / "photos" / "e_sixteen_bit.png")]["pixel_values"]
    assert not torch.equal(sixteen_bit, (sixteen_bit * 255).round() / 255)  # read at full precision, not 8 bits


def test_datasets_mix_with_their_weights(tmp_path):
    sources = []
    for name, count in (("small", 4), ("large", 40)):
        photos = as_dataset(save_photos(tmp_path / name, count=count)).remove_columns("text")
        photos.add_column("text", [name] * count).save_to_disk(tmp_path / f"{name}_dataset")
        sources.append(DatasetSource(str(tmp_path / f"{name}_dataset"), caption_column="text"))

    def shares(**options) -> Counter:
        return Counter(row["caption"] for row in rows(*sources, cache=tmp_path / "cache", seed=0, **options).rows)

    # By default, shares follow the sizes: about every image once an epoch.
    default = shares()
    assert default["small"] >= 4 and default["large"] >= 40 and default.total() < 60
    # Equal weights: as many samples of each; the small dataset repeats until the large one is through.
    equal = shares(weights=[1, 1])
    assert equal["large"] >= 40 and abs(equal["small"] - equal["large"]) < 0.35 * equal.total()
    assert shares(weights=[1, 1]) == equal and shares(weights=[2, 2]) == equal  # seeded; weights are normalized


def test_streamed_processes_get_disjoint_shares_of_every_row(data):
    """By shards (2 parquet files, 2 processes) or, with more processes than shards, by rows."""
    source = DatasetSource(str(data / "parquet" / "*.parquet"), caption_column="text")
    for num_processes in (2, 3):
        shares = []
        for process_index in range(num_processes):
            share = rows(source, cache=None, streaming=True, process_index=process_index, num_processes=num_processes)
            shares.append([sample["caption"] for sample in StreamedRowsDataset(share, resolution=RESOLUTION)])
        assert sorted(caption for share in shares for caption in share) == [f"photo number {i}" for i in range(6)]
        assert [len(share) for share in shares] == [6 // num_processes] * num_processes


def batches(loader: StreamLoader, count: int) -> list[dict]:
    iterator = iter(loader)
    return [next(iterator) for _ in range(count)]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_a_stream_resumes_exactly_after_the_last_batch(data, num_workers):
    """Across block and epoch boundaries, with and without workers (each streaming one parquet shard)."""
    source = DatasetSource(str(data / "parquet" / "*.parquet"), caption_column="text")
    streamed = rows(source, cache=None, streaming=True)

    def loader() -> StreamLoader:
        dataset = StreamedRowsDataset(streamed, resolution=RESOLUTION, seed=3, shuffle_buffer_size=2)
        return StreamLoader(dataset, batch_size=1, num_workers=num_workers)

    straight = batches(loader(), 16)  # 6 rows: almost 3 epochs
    for stop in (1, 3, 7):
        interrupted = loader()
        batches(interrupted, stop)
        state = interrupted.state_dict()
        resumed = loader()
        resumed.load_state_dict(state)
        for expected, actual in zip(straight[stop:], batches(resumed, 16 - stop), strict=True):
            assert expected["caption"] == actual["caption"], stop
            assert torch.equal(expected["pixel_values"], actual["pixel_values"]), stop
    epochs = [[batch["caption"][0] for batch in straight[start : start + 6]] for start in (0, 6)]
    assert sorted(epochs[0]) == sorted(epochs[1]) and epochs[0] != epochs[1]  # every row once, reshuffled


def test_a_stream_resumed_with_other_workers_is_refused(data):
    streamed = rows(DatasetSource(str(data / "photos.tar"), image_column="png"), cache=None, streaming=True)
    saved = StreamLoader(StreamedRowsDataset(streamed, resolution=RESOLUTION), batch_size=1).state_dict()
    with pytest.raises(ValueError, match="saved with `num_workers` 0; resume with as many, not 2"):
        StreamLoader(
            StreamedRowsDataset(streamed, resolution=RESOLUTION), batch_size=1, num_workers=2
        ).load_state_dict(saved)


def test_split_slices_take_the_first_rows_also_when_streamed(data, tmp_path):
    source = DatasetSource(str(data / "parquet" / "*.parquet"), split="train[:4]", caption_column="text")
    assert len(rows(source, cache=tmp_path).rows) == 4
    assert sum(1 for _ in rows(source, cache=None, streaming=True).rows) == 4


@pytest.mark.parametrize(
    "source, options, message",
    [
        (
            DatasetSource("PHOTOS", image_column="picture"),
            {},
            r"`image_column` 'picture' is not a column of '.*photos' \(split 'train'\); its columns are: image, text\.",
        ),
        (
            DatasetSource("PHOTOS", image_column="text"),
            {},
            r"`image_column` 'text' of .* holds string values, not images; its image columns are: image\.",
        ),
        (
            DatasetSource("PHOTOS", caption_column="caption"),
            {},
            r"`caption_column` 'caption' is not a column of .*; its columns are: image, text\.",
        ),
        (DatasetSource("PHOTOS", split="test"), {}, r"`split` 'test' of '.*photos': (Unknown|Bad) split"),
        (DatasetSource("PHOTOS"), {"max_samples": 0}, r"`max_samples` must be at least 1, got 0\."),
        (DatasetSource("PHOTOS"), {"weights": [1, 2]}, r"`weights` needs one weight per dataset: 2 for 1"),
        (DatasetSource("MISSING.parquet"), {}, r"`name` '.*missing.parquet' cannot be opened: no such file"),
    ],
)
def test_bad_sources_are_one_line_errors_naming_the_parameter(data, tmp_path, source, options, message):
    name = source.name.replace("PHOTOS", str(data / "photos")).replace("MISSING", str(tmp_path / "missing"))
    source = DatasetSource(name, source.config, source.split, None, source.image_column, source.caption_column)
    for streaming in (False, True):
        with pytest.raises(ValueError, match=message) as error:
            rows(source, cache=tmp_path, streaming=streaming, **options)
        assert "\n" not in str(error.value)


def test_an_empty_dataset_is_an_error(tmp_path):
    as_dataset([]).to_parquet(tmp_path / "empty.parquet")
    for streaming in (False, True):
        with pytest.raises(ValueError, match=r"`split` 'train' of '.*empty.parquet' has no rows\."):
            rows(DatasetSource(str(tmp_path / "empty.parquet")), cache=tmp_path, streaming=streaming)


def test_a_dataset_with_a_loading_script_is_refused_with_trust_remote_code_named(tmp_path):
    folder = tmp_path / "scripted"
    folder.mkdir()
    (folder / "scripted.py").write_text("import datasets\n", encoding="utf-8")
    with pytest.raises(ValueError, match="`name` '.*scripted' is defined by a loading script, .*`trust_remote_code`"):
        rows(DatasetSource(str(folder)), cache=tmp_path)


def test_a_column_of_undecodable_bytes_fails_on_its_first_sample(tmp_path):
    broken = datasets.Dataset.from_dict(
        {"image": [{"bytes": b"not an image", "path": "x.png"}]}, features=datasets.Features(image=datasets.Image())
    )
    broken.save_to_disk(tmp_path / "broken")
    dataset = RowsDataset(rows(DatasetSource(str(tmp_path / "broken")), cache=tmp_path), resolution=RESOLUTION)
    with pytest.raises(
        ValueError, match=r"cannot read the image of row 0 of .*broken \(x.png\): cannot read 12 bytes"
    ):
        dataset.first_sample()


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's CPU launch is tested on POSIX")
def test_two_processes_stream_disjoint_shares_and_resume_from_one_checkpoint(data, tmp_path):
    """torchrun, 2 processes on gloo: each streams its own parquet shard; the main process saves both positions
    (accelerate writes registered objects from it only) and each process resumes exactly from its own."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    script = Path(__file__).with_name("stream_shares.py")
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(script)]
    completed = subprocess.run(
        [*command, str(data / "parquet" / "*.parquet"), str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=Path(__file__).parents[2],
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    results = [json.loads((tmp_path / f"process{index}.json").read_text()) for index in range(2)]
    epochs = [set(result["epoch"][:3]) for result in results]  # 3 rows a shard: one epoch each
    assert epochs[0].isdisjoint(epochs[1]) and epochs[0] | epochs[1] == {f"photo number {i}" for i in range(6)}
    for result in results:
        assert result["resumed"] == result["epoch"][2:5]
