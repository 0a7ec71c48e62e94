# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`examples/prepare_dataset.py`, offline, on a few tiny PNGs and a tiny pipeline folder."""

import contextlib
import importlib.util
import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from types import ModuleType, SimpleNamespace

import numpy as np
import PIL.Image
import pytest
import torch
from safetensors import safe_open

from diffusers_dit4sr import StableDiffusion3SRPipeline
from diffusers_dit4sr.captioning import Captioner
from diffusers_dit4sr.image_processing import resize
from diffusers_dit4sr.tiny import make_tiny_pipeline, save_tiny_captioner
from diffusers_dit4sr.training import DegradationConfig
from diffusers_dit4sr.training.datasets import PreparedDataset, collate_samples, derive_seed

SCRIPT = Path(__file__).resolve().parents[1] / "examples" / "prepare_dataset.py"
RESOLUTION = 64
SIZES = {"a.png": (80, 72), "b.png": (40, 48), "c.png": (64, 96)}
"""Source images (b is smaller than the crops: upscaled first); `zz_broken.png` (sorted last) is not an image."""
CAPTIONS = {"a.png": "a red house", "c.png": "a blue car"}
SAMPLE_KEYS = {"hr", "lr", "hr_latents", "lr_latents", "prompt_embeds", "pooled_prompt_embeds"}


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("prepare_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(script: ModuleType, *args: str) -> SimpleNamespace:
    """`main(args)` with its exit code and stderr."""
    stderr = io.StringIO()
    with contextlib.redirect_stderr(stderr):
        code = script.main([str(arg) for arg in args])
    return SimpleNamespace(code=code, stderr=stderr.getvalue())


def read_sample(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    with safe_open(path, framework="pt") as file:
        return {key: file.get_tensor(key) for key in file.keys()}, file.metadata()


def assert_same_sample(first: Path, second: Path) -> None:
    (tensors, metadata), (other_tensors, other_metadata) = read_sample(first), read_sample(second)
    assert metadata == other_metadata and tensors.keys() == other_tensors.keys()
    for key, tensor in tensors.items():
        assert tensor.dtype == other_tensors[key].dtype and torch.equal(tensor, other_tensors[key]), key


@pytest.fixture(scope="module")
def script() -> ModuleType:
    return load_script()


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, script: ModuleType) -> SimpleNamespace:
    """Inputs, a tiny pipeline folder, and one full run with latents and text embeddings (batches of 2)."""
    root = tmp_path_factory.mktemp("prepare")
    hr_dir = root / "hr"
    hr_dir.mkdir()
    rng = np.random.default_rng(0)
    for name, (width, height) in SIZES.items():
        array = rng.integers(0, 256, (height, width, 3), dtype=np.uint8)
        PIL.Image.fromarray(array).save(hr_dir / name)
    for name, caption in CAPTIONS.items():
        (hr_dir / name).with_suffix(".txt").write_text(f"  {caption}\n", encoding="utf-8")
    (hr_dir / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    make_tiny_pipeline().save_pretrained(root / "tiny")
    # The reference is loaded back like the script loads it: freshly built models may pick other attention kernels.
    pipeline = StableDiffusion3SRPipeline.from_pretrained(root / "tiny")
    # Small kernels keep the degradation fast on 64 px crops.
    degradation = root / "degradation.json"
    config = DegradationConfig(blur_kernel_size=7, blur_kernel_size2=7, final_sinc_kernel_size=7, usm_radius=5)
    config.save(degradation)

    common = ["--input_dir", hr_dir, "--resolution", RESOLUTION, "--degradation_config", degradation, "--seed", 3]
    cached = [
        *common,
        "--pretrained_model_name_or_path",
        root / "tiny",
        "--cache_latents",
        "--cache_text_embeddings",
        "--batch_size",
        2,
    ]
    result = run(script, *cached, "--output_dir", root / "out")
    return SimpleNamespace(
        root=root, hr_dir=hr_dir, pipeline=pipeline, config=config, common=common, cached=cached, result=result
    )


def test_corrupt_image_is_reported_and_skipped(workspace):
    result = workspace.result
    assert result.code == 1
    assert "zz_broken.png" in result.stderr and "cannot read" in result.stderr
    info = json.loads((workspace.root / "out" / "dataset.json").read_text())
    assert info["failed_sources"] == ["zz_broken.png"] and info["complete"] is True
    assert sorted(path.name for path in (workspace.root / "out" / "samples").iterdir()) == [
        "00000000.safetensors",
        "00000001.safetensors",
        "00000002.safetensors",
    ]


def test_dataset_json(workspace):
    info = json.loads((workspace.root / "out" / "dataset.json").read_text())
    assert info["format"] == "dit4sr-prepared" and info["version"] == 1
    assert (info["resolution"], info["scale"], info["num_samples"]) == (RESOLUTION, 4, 3)
    assert info["has_latents"] is True and info["has_text_embeddings"] is True
    assert info["degradation"] == workspace.config.to_dict()
    assert info["vae"] == info["text_encoders"] == str(workspace.root / "tiny")
    assert info["max_sequence_length"] == 77 and info["seed"] == 3


def test_sample_tensors_and_metadata(workspace):
    sources = sorted(SIZES)
    for index, source in enumerate(sources):
        tensors, metadata = read_sample(workspace.root / "out" / "samples" / f"{index:08d}.safetensors")
        assert metadata == {"caption": CAPTIONS.get(source, ""), "source": source}
        assert set(tensors) == SAMPLE_KEYS
        assert tensors["hr"].dtype == tensors["lr"].dtype == torch.uint8
        assert tensors["hr"].shape == (3, RESOLUTION, RESOLUTION) and tensors["lr"].shape == (3, 16, 16)
        for key in ("hr_latents", "lr_latents"):
            assert tensors[key].dtype == torch.float32 and tensors[key].shape == (16, 8, 8)
        assert tensors["prompt_embeds"].shape == (154, 32) and tensors["pooled_prompt_embeds"].shape == (64,)
        assert tensors["prompt_embeds"].dtype == tensors["pooled_prompt_embeds"].dtype == torch.float32


@torch.no_grad()
def test_latents_and_embeddings_match_direct_encoding(workspace, script):
    """Latents are the VAE encode of the stored images (LR bicubic-upscaled) with the sample's own noise streams."""
    pipeline = workspace.pipeline
    vae = pipeline.vae
    for index in range(len(SIZES)):
        tensors, metadata = read_sample(workspace.root / "out" / "samples" / f"{index:08d}.safetensors")
        hr, lr = tensors["hr"][None].float() / 255, tensors["lr"][None].float() / 255
        for images, stream, key in (
            (hr, script.HR_LATENT_STREAM, "hr_latents"),
            (resize(lr, (RESOLUTION, RESOLUTION)), script.LR_LATENT_STREAM, "lr_latents"),
        ):
            generator = torch.Generator().manual_seed(derive_seed(3, index, stream))
            latents = vae.encode(images * 2 - 1).latent_dist.sample(generator=generator)
            expected = (latents - vae.config.shift_factor) * vae.config.scaling_factor
            torch.testing.assert_close(tensors[key], expected[0], rtol=1e-4, atol=1e-5)
        prompt_embeds, _, pooled, _ = pipeline.encode_prompt(
            prompt=metadata["caption"],
            prompt_2=None,
            prompt_3=None,
            do_classifier_free_guidance=False,
            max_sequence_length=77,
            added_prompt="",  # training captions are encoded as they are, without the inference quality prompt
        )
        torch.testing.assert_close(tensors["prompt_embeds"], prompt_embeds[0], rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(tensors["pooled_prompt_embeds"], pooled[0], rtol=1e-4, atol=1e-5)


@torch.no_grad()
def test_empty_prompt_is_the_pipelines_encoding(workspace):
    stored, _ = read_sample(workspace.root / "out" / "empty_prompt.safetensors")
    prompt_embeds, _, pooled, _ = workspace.pipeline.encode_prompt(
        prompt="",
        prompt_2=None,
        prompt_3=None,
        do_classifier_free_guidance=False,
        max_sequence_length=77,
        added_prompt="",
    )
    assert set(stored) == {"prompt_embeds", "pooled_prompt_embeds"}
    assert torch.equal(stored["prompt_embeds"], prompt_embeds) and torch.equal(stored["pooled_prompt_embeds"], pooled)


def test_prepared_dataset_reads_the_output(workspace):
    dataset = PreparedDataset(workspace.root / "out")
    assert len(dataset) == 3 and dataset.has_latents and dataset.has_text_embeddings
    batch = collate_samples([dataset[0], dataset[1]])
    assert batch["hr"].shape == (2, 3, RESOLUTION, RESOLUTION) and batch["lr"].shape == (2, 3, 16, 16)
    assert batch["caption"] == ["a red house", ""]
    empty, _ = read_sample(workspace.root / "out" / "empty_prompt.safetensors")
    assert torch.equal(dataset.empty_prompt_embeds()[0], empty["prompt_embeds"])


def test_runs_are_deterministic(workspace, script, tmp_path):
    assert run(script, *workspace.cached, "--output_dir", tmp_path).code == 1
    for path in sorted((workspace.root / "out" / "samples").iterdir()):
        assert_same_sample(path, tmp_path / "samples" / path.name)


def test_resume_recreates_only_missing_samples(workspace, script, tmp_path):
    output = tmp_path / "out"
    shutil.copytree(workspace.root / "out", output)
    samples = output / "samples"
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (samples / f".00000005.safetensors.{dead.pid}.tmp").write_bytes(b"left by a killed run")
    # A concurrent run's file, still being written (its process runs): not touched.
    writing = samples / f".00000006.safetensors.{os.getppid()}.tmp"
    writing.write_bytes(b"being written")
    missing = samples / "00000001.safetensors"  # second of the batch (0, 1): sample 0 is read back, not rewritten
    missing.unlink()
    mtimes = {path.name: path.stat().st_mtime_ns for path in samples.glob("*.safetensors")}

    result = run(script, *workspace.cached, "--output_dir", output)

    assert result.code == 1  # the broken image is still broken
    assert sorted(path.name for path in samples.iterdir()) == sorted([*mtimes, missing.name, writing.name])
    assert {name: (samples / name).stat().st_mtime_ns for name in mtimes} == mtimes
    assert_same_sample(workspace.root / "out" / "samples" / missing.name, missing)
    assert json.loads((output / "dataset.json").read_text())["num_samples"] == 3


def test_resume_refuses_other_settings(workspace, script):
    result = run(script, *workspace.cached, "--seed", 4, "--output_dir", workspace.root / "out")
    assert result.code == 2
    assert result.stderr == (
        f"prepare_dataset.py: error: {workspace.root / 'out'} was prepared with other settings or source images "
        "(seed differ); resume with the same arguments and images, or use another --output_dir.\n"
    )


@pytest.mark.slow
def test_example_scripts_import_without_torchvision_warnings():
    # A fresh process, as a user starts them: transformers warns about torchvision once, when diffusers' SD3
    # pipelines are first imported (the package silences it; torchvision is not installed here).
    code = (
        "import importlib.util, sys\n"
        "for path in sys.argv[1:]:\n"
        "    spec = importlib.util.spec_from_file_location('script', path)\n"
        "    spec.loader.exec_module(importlib.util.module_from_spec(spec))\n"
    )
    scripts = [str(SCRIPT.parent / name) for name in ("prepare_dataset.py", "train_dit4sr.py")]
    completed = subprocess.run([sys.executable, "-c", code, *scripts], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr
    assert "torchvision" not in completed.stderr


def test_captions_none_without_models(workspace, script, tmp_path):
    result = run(
        script,
        *workspace.common,
        "--captions",
        "none",
        "--crops_per_image",
        2,
        "--max_samples",
        3,
        "--output_dir",
        tmp_path,
    )
    assert result.code == 0, result.stderr
    dataset = PreparedDataset(tmp_path)
    assert len(dataset) == 3 and not dataset.has_latents and dataset.empty_prompt_embeds() is None
    assert not (tmp_path / "empty_prompt.safetensors").exists()
    sources = []
    for index in range(3):
        tensors, metadata = read_sample(tmp_path / "samples" / f"{index:08d}.safetensors")
        assert set(tensors) == {"hr", "lr"} and metadata["caption"] == ""
        sources.append(metadata["source"])
    assert sources == ["a.png", "a.png", "b.png"]  # two crops per image
    assert not torch.equal(dataset[0]["hr"], dataset[1]["hr"])


def test_model_captions(workspace, script, tmp_path):
    """`--captions model` runs the library's `Captioner` on the HR crops: greedy, unfiltered, one batch per chunk."""
    captioner_dir = save_tiny_captioner(workspace.root / "tiny-captioner")
    options = ["--captions", "model", "--caption_model", captioner_dir, "--caption_prompt", "Describe."]
    options += ["--caption_max_new_tokens", 6, "--max_samples", 3, "--batch_size", 2]
    result = run(script, *workspace.common, *options, "--output_dir", tmp_path / "out")
    assert result.code == 0, result.stderr

    samples = [read_sample(tmp_path / "out" / "samples" / f"{index:08d}.safetensors") for index in range(3)]
    crops = [PIL.Image.fromarray(tensors["hr"].permute(1, 2, 0).numpy()) for tensors, _ in samples]
    expected = Captioner(
        captioner_dir,
        prompt="Describe.",
        max_new_tokens=6,
        temperature=0.0,
        filter_focus_sentences=False,
        batch_size=2,
        device="cpu",
        dtype=torch.float32,
    )(crops)
    assert [metadata["caption"] for _, metadata in samples] == expected
    assert all(expected)
    info = json.loads((tmp_path / "out" / "dataset.json").read_text())
    assert (info["caption_model"], info["caption_prompt"]) == (str(captioner_dir), "Describe.")

    # A resumed run recreates a lost sample with the same caption.
    (tmp_path / "out" / "samples" / "00000001.safetensors").unlink()
    assert run(script, *workspace.common, *options, "--output_dir", tmp_path / "out").code == 0
    assert read_sample(tmp_path / "out" / "samples" / "00000001.safetensors")[1] == samples[1][1]


@pytest.mark.parametrize(
    "extra",
    [
        ["--captions", "model"],
        ["--captions", "model", "--caption_model", "some/model", "--caption_prompt", " "],
        ["--cache_latents"],
        ["--resolution", "62"],
        ["--crops_per_image", "0"],
    ],
)
def test_bad_arguments(workspace, script, tmp_path, extra):
    with pytest.raises(SystemExit) as error, contextlib.redirect_stderr(io.StringIO()):
        script.main([str(arg) for arg in workspace.common] + ["--output_dir", str(tmp_path), *extra])
    assert error.value.code == 2


# --- As a 🤗 dataset --------------------------------------------------------------------------------------------------


def test_the_export_reads_back_as_the_prepared_samples(workspace, tmp_path):
    import datasets

    from diffusers_dit4sr.training.hf_datasets import DatasetSource, RowsDataset, load_training_rows
    from diffusers_dit4sr.training.hf_streaming import StreamedRowsDataset
    from diffusers_dit4sr.training.prepared_hub import export_prepared_dataset

    export_prepared_dataset(workspace.root / "out", tmp_path / "hf", shard_size=2, progress=False)
    assert sorted(path.name for path in (tmp_path / "hf" / "data").iterdir()) == [
        "train-00000-of-00002.parquet",
        "train-00001-of-00002.parquet",
    ]
    pairs = datasets.load_dataset(str(tmp_path / "hf"), split="train", cache_dir=str(tmp_path / "cache"))
    assert isinstance(pairs.features["hr"], datasets.Image) and pairs.features["hr_latents"].shape == (16, 8, 8)
    assert pairs["source"] == sorted(SIZES)
    folder = PreparedDataset(workspace.root / "out")
    rows = load_training_rows([DatasetSource(str(tmp_path / "hf"))], cache_dir=tmp_path / "cache")
    exported = RowsDataset(rows, resolution=RESOLUTION)
    assert exported.prepared and exported.has_latents and exported.has_text_embeddings and len(exported) == 3
    for index in range(3):
        ours, theirs = exported[index], folder[index]
        assert ours["caption"] == theirs["caption"]
        for key in SAMPLE_KEYS:
            assert ours[key].dtype == torch.float32 and torch.equal(ours[key], theirs[key].float()), key
    for ours, theirs in zip(exported.empty_prompt_embeds(), folder.empty_prompt_embeds(), strict=True):
        assert torch.equal(ours, theirs)
    streamed = load_training_rows([DatasetSource(str(tmp_path / "hf"))], streaming=True)
    for index, ours in enumerate(StreamedRowsDataset(streamed, resolution=RESOLUTION, shuffle_buffer_size=1)):
        for key in SAMPLE_KEYS:
            assert torch.equal(ours[key], folder[index][key].float()), key
    assert index == 2
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "path: data/train-*.parquet" in card and "seed: 3" in card and "blur_kernel_size: 7" in card
    assert f'"folder": "{workspace.hr_dir}"' in card


def test_push_to_hub_uploads_the_export_as_a_dataset_repository(workspace, script, tmp_path, monkeypatch):
    import huggingface_hub

    calls = {}

    def create_repo(repo_id, **kwargs):
        calls["create_repo"] = {"repo_id": repo_id, **kwargs}
        return SimpleNamespace(repo_id=repo_id)

    def upload_folder(**kwargs):  # what would be uploaded: the files the patterns select
        folder = Path(kwargs["folder_path"])
        calls["files"] = sorted(
            path.relative_to(folder).as_posix()
            for path in folder.rglob("*")
            if any(path.relative_to(folder).match(pattern) for pattern in kwargs["allow_patterns"])
        )
        calls["upload"] = kwargs

    monkeypatch.setattr(huggingface_hub, "create_repo", create_repo)
    monkeypatch.setattr(huggingface_hub, "upload_folder", upload_folder)
    shutil.copytree(workspace.root / "out", tmp_path / "out")
    result = run(
        script, *workspace.cached, "--output_dir", tmp_path / "out", "--push_to_hub", "--hub_dataset_id", "you/pairs"
    )
    assert result.code == 1  # the broken source image, as in the first run
    assert calls["create_repo"] == {
        "repo_id": "you/pairs",
        "repo_type": "dataset",
        "private": None,
        "exist_ok": True,
        "token": None,
    }
    assert calls["upload"]["repo_type"] == "dataset" and calls["upload"]["folder_path"] == str(
        tmp_path / "out" / "hf_dataset"
    )
    assert calls["files"] == ["README.md", "data/train-00000-of-00001.parquet", "empty_prompt.safetensors"]
    assert 'load_dataset("you/pairs", split="train")' in (tmp_path / "out" / "hf_dataset" / "README.md").read_text()
