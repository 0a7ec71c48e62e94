# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""examples/train_dit4sr.py on 🤗 datasets (`--dataset_name`), on CPU with the tiny pipeline: an image folder, parquet
shards and a WebDataset tar train; a stream resumes exactly; bad input stops in one line before any model loads."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from .test_train_dit4sr import EXAMPLES, load_script, train, transformer_state, workspace  # noqa: F401 (a fixture)
from .test_train_dit4sr import arguments as train_arguments
from .training.hub_data import save_photos, write_parquet, write_webdataset


@pytest.fixture(scope="module")
def data(workspace) -> Path:  # noqa: F811
    """The workspace's tiny pipeline, and 6 photos as an image folder, 2 parquet shards and a WebDataset tar."""
    root = workspace / "hub_data"
    paths = save_photos(root / "photos", count=6)
    write_parquet(paths, root / "parquet", num_shards=2)
    write_webdataset(paths, root / "photos.tar")
    return root


def arguments(workspace: Path, output: str, *extra: str) -> list[str]:  # noqa: F811
    """test_train_dit4sr.py's tiny-pipeline arguments, with 🤗 Datasets' cache in the workspace."""
    return train_arguments(workspace, output, "--cache_dir", str(workspace / "datasets_cache"), *extra)


def run(workspace: Path, output: str, *extra: str) -> dict:  # noqa: F811
    return train.main(arguments(workspace, output, *extra))


@pytest.mark.parametrize(
    "form, options",
    [
        ("imagefolder", ("--dataset_name", "photos", "--caption_column", "text")),
        ("parquet", ("--dataset_name", "parquet/*.parquet", "--caption_column", "text")),
        ("webdataset", ("--dataset_name", "photos.tar", "--image_column", "png", "--caption_column", "txt")),
    ],
)
def test_trains_from_an_image_folder_parquet_and_webdataset(workspace, data, form, options):  # noqa: F811
    options = [str(data / option) if index == 1 else option for index, option in enumerate(options)]
    summary = run(workspace, f"hub_{form}", *options, "--max_train_steps", "2", "--checkpointing_steps", "100")
    assert summary["global_step"] == 2 and np.isfinite(summary["loss"])
    before = transformer_state(workspace / "tiny" / "transformer")
    after = transformer_state(workspace / f"hub_{form}" / "transformer")
    assert any(not torch.equal(before[name], after[name]) for name in before)


def test_two_datasets_mixed_with_weights_train(workspace, data):  # noqa: F811
    summary = run(
        workspace,
        "hub_mixed",
        "--dataset_name",
        str(data / "parquet" / "*.parquet"),
        str(data / "photos.tar"),
        "--image_column",
        "image",
        "png",
        "--dataset_weights",
        "3",
        "1",
        "--max_train_steps",
        "2",
    )
    assert summary["global_step"] == 2 and np.isfinite(summary["loss"])


def test_a_streamed_run_resumes_to_the_same_parameters(workspace, data):  # noqa: F811
    # 6 rows in blocks of 4, batches of 2: 3 batches an epoch; resuming after step 2 continues in the second block,
    # then crosses into the next epoch.
    stream = ["--dataset_name", str(data / "parquet" / "*.parquet"), "--streaming", "--shuffle_buffer_size", "4"]
    run(workspace, "stream_straight", *stream, "--max_train_steps", "5", "--checkpointing_steps", "100")
    run(workspace, "stream_resumed", *stream, "--max_train_steps", "2", "--checkpointing_steps", "2")
    position = torch.load(
        workspace / "stream_resumed" / "checkpoint-2" / "custom_checkpoint_0.pkl", weights_only=False
    )
    assert position["num_processes"] == 1 and position["positions"][0]["batches"] == 2
    summary = run(
        workspace,
        "stream_resumed",
        *stream,
        "--max_train_steps",
        "5",
        "--checkpointing_steps",
        "100",
        "--resume_from_checkpoint",
        "latest",
    )
    assert summary["global_step"] == 5
    straight = transformer_state(workspace / "stream_straight" / "transformer")
    resumed = transformer_state(workspace / "stream_resumed" / "transformer")
    for name, tensor in straight.items():
        torch.testing.assert_close(resumed[name], tensor, rtol=0, atol=1e-6, msg=name)


def test_a_stream_resumed_with_other_workers_stops_in_one_line(workspace, data, capsys):  # noqa: F811
    stream = ["--dataset_name", str(data / "photos.tar"), "--image_column", "png", "--streaming"]
    run(workspace, "stream_workers", *stream, "--max_train_steps", "1", "--checkpointing_steps", "1")
    with pytest.raises(SystemExit) as error:
        run(
            workspace,
            "stream_workers",
            *stream,
            "--max_train_steps",
            "2",
            "--dataloader_num_workers",
            "1",
            "--resume_from_checkpoint",
            "latest",
        )
    assert error.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        f"train_dit4sr.py: error: --resume_from_checkpoint {workspace / 'stream_workers' / 'checkpoint-1'}: the "
        "stream's position was saved with --dataloader_num_workers 0; resume with as many, not 1 (each worker "
        "streams its own shards)."
    )


def test_pairs_prepared_from_a_dataset_train_from_their_export(workspace, data):  # noqa: F811
    """prepare_dataset.py --dataset_name ... --export_dataset -> datasets.load_dataset -> train_dit4sr.py."""
    prepare = load_script("prepare_dataset")
    parquet = str(data / "parquet" / "*.parquet")
    options = ["--dataset_name", parquet, "--caption_column", "text", "--resolution", "64", "--max_samples", "4"]
    options += [
        "--pretrained_model_name_or_path",
        str(workspace / "tiny"),
        "--cache_latents",
        "--cache_text_embeddings",
    ]
    options += ["--device", "cpu", "--cache_dir", str(workspace / "datasets_cache")]
    pairs, exported = workspace / "pairs", workspace / "pairs_hf"
    assert prepare.main([*options, "--output_dir", str(pairs), "--export_dataset", str(exported)]) == 0
    info = json.loads((pairs / "dataset.json").read_text())
    assert info["source_dataset"]["name"] == parquet and info["num_samples"] == 4 and info["input_dir"] is None
    assert "photo number 1" in (pairs / "samples" / "00000001.safetensors").read_bytes().decode("latin-1")
    summary = run(workspace, "from_pairs", "--dataset_name", str(exported), "--max_train_steps", "2")
    assert summary["global_step"] == 2 and np.isfinite(summary["loss"])


@pytest.mark.parametrize(
    "options, message",
    [
        (
            ["--image_column", "picture"],
            "--image_column 'picture' is not a column of 'PARQUET' (split 'train'); its columns are: image, text.",
        ),
        (
            ["--image_column", "text"],
            "--image_column 'text' of 'PARQUET' (split 'train') holds string values, not images; its image columns "
            "are: image.",
        ),
        (
            ["--max_train_samples", "1"],
            "--dataset_name (--max_train_samples 1) holds 1 sample(s), fewer than one batch: --train_batch_size 2 x "
            "1 process(es) = 2; lower --train_batch_size",
        ),
        (
            ["--streaming", "--max_train_steps", "1", "--train_batch_size", "8"],
            "--dataset_name --streaming gives a process only 6 sample(s) an epoch, fewer than one batch: "
            "--train_batch_size 8; lower --train_batch_size or use fewer processes",
        ),
        (
            ["--dataset_split", "test"],
            "--dataset_split 'test' of 'PARQUET': Unknown split \"test\". Should be one of ['train'].",
        ),
    ],
)
def test_bad_dataset_input_stops_in_one_line_before_any_model_loads(
    workspace,  # noqa: F811
    data,
    monkeypatch,
    capsys,
    options,
    message,
):
    monkeypatch.setattr(train, "load_transformer", lambda args: pytest.fail("loaded a model"))
    parquet = str(data / "parquet" / "*.parquet")
    with pytest.raises(SystemExit) as error:
        run(workspace, "refused", "--dataset_name", parquet, *options)
    err = capsys.readouterr().err  # 🤗 Datasets' progress bars (preparing the parquet files) may come first
    assert error.value.code == 2 and err.count("error:") == 1
    assert err.splitlines()[-1] == "train_dit4sr.py: error: " + message.replace("PARQUET", parquet)


def test_a_dataset_with_a_loading_script_is_refused_in_one_line(workspace, monkeypatch, capsys, tmp_path):  # noqa: F811
    (tmp_path / "scripted").mkdir()
    (tmp_path / "scripted" / "scripted.py").write_text("import datasets\n", encoding="utf-8")
    monkeypatch.setattr(train, "load_transformer", lambda args: pytest.fail("loaded a model"))
    with pytest.raises(SystemExit) as error:
        run(workspace, "refused", "--dataset_name", str(tmp_path / "scripted"))
    err = capsys.readouterr().err.splitlines()
    assert error.value.code == 2 and err[-1].startswith("train_dit4sr.py: error: --dataset_name")
    err = err[-1]
    assert "is defined by a loading script, which would need `trust_remote_code`" in err


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--dataset_name", "a", "--train_data_dir", "b"], "exactly one of --train_data_dir, --prepared_data_dir"),
        (["--dataset_name", "a", "--streaming"], "--streaming needs --max_train_steps"),
        (["--train_data_dir", "a", "--streaming", "--max_train_steps", "1"], "--streaming needs --dataset_name"),
        (["--dataset_name", "a", "b", "--image_column", "x", "y", "z"], "--image_column needs one value, or one per"),
        (["--dataset_name", "a", "b", "--dataset_weights", "1"], "--dataset_weights needs one weight per"),
    ],
)
def test_dataset_argument_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as error:
        train.parse_args(argv)
    assert error.value.code == 2 and message in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's CPU launch is tested on POSIX")
def test_two_processes_stream_and_checkpoint_both_positions(workspace, data):  # noqa: F811
    """Two processes on gloo stream their own parquet shard and save both positions in one checkpoint (resuming from
    it, process by process: tests/training/test_hf_datasets.py)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    stream = ["--dataset_name", str(data / "parquet" / "*.parquet"), "--streaming", "--train_batch_size", "1"]
    args = arguments(workspace, "stream_two", *stream, "--max_train_steps", "3", "--checkpointing_steps", "2")
    completed = subprocess.run(
        [*command, str(EXAMPLES / "train_dit4sr.py"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    position = torch.load(workspace / "stream_two" / "checkpoint-2" / "custom_checkpoint_0.pkl", weights_only=False)
    assert position["num_processes"] == 2 and [entry["batches"] for entry in position["positions"]] == [2, 2]
    assert (workspace / "stream_two" / "transformer").is_dir()
