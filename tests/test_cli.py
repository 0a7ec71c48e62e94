# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-upscale` end to end, in-process, with the real tiny pipeline saved to a folder (offline, CPU)."""

import argparse
import contextlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import PIL.Image
import psutil
import pytest
import torch
from huggingface_hub import constants
from huggingface_hub.errors import (
    GatedRepoError,
    HfHubHTTPError,
    LocalEntryNotFoundError,
    OfflineModeIsEnabled,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
)

import diffusers_dit4sr
from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline, runtime
from diffusers_dit4sr.captioning import Captioner
from diffusers_dit4sr.cli.main import main
from diffusers_dit4sr.cli.messages import CommandLineTerms
from diffusers_dit4sr.cli.options import build_parser
from diffusers_dit4sr.constants import DEFAULT_OUTPUT_DIR, SEED_RANGE
from diffusers_dit4sr.file_utils import temporary_path
from diffusers_dit4sr.quantization import QUANTIZATION_PRESETS
from diffusers_dit4sr.tiny import save_tiny_captioner

from .utils import dns_failure, hub_http_error, wrapped

ROOT = Path(__file__).resolve().parents[1]
FAST_OPTIONS = [
    "--steps", "1", "--scale", "2", "--device", "cpu", "--dtype", "fp32",
    "--tile-size", "64", "--tile-overlap", "32", "--process-size", "64", "--quiet",
]  # fmt: skip


@pytest.fixture(autouse=True)
def hub_reachable(monkeypatch):
    """The CLI asks the Hub whether it is reachable before loading a Hub id; in tests it never asks for real."""
    monkeypatch.setattr(runtime, "hub_unreachable_reason", lambda *args, **kwargs: None)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def no_loading(monkeypatch) -> list:
    """Replaces the CLI's model loaders by ones that record their calls and fail the test."""
    calls = []

    def load(*args, **kwargs):
        calls.append((args, kwargs))
        pytest.fail("a model was loaded")

    monkeypatch.setattr(runtime, "load_pipeline", load)
    monkeypatch.setattr(runtime, "Captioner", load)
    return calls


def fake_pipeline_dir(path: Path) -> Path:
    """A folder that passes the CLI's checks of --model (it has a model_index.json) but cannot be loaded."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "model_index.json").write_text('{"_class_name": "StableDiffusion3SRPipeline"}')
    return path


@pytest.fixture
def upscale(tiny_pipeline_dir):
    """Runs the CLI on the tiny pipeline with fast settings; returns the exit code."""

    def run(*args: object) -> int:
        return main([*map(str, args), "--model", str(tiny_pipeline_dir), *FAST_OPTIONS])

    return run


@pytest.fixture
def prompts(monkeypatch) -> list:
    """The caption of every image the pipeline got, in order (the pipeline still runs)."""
    calls = []
    original_call = StableDiffusion3SRPipeline.__call__

    def spy(self, image, prompt=None, **kwargs):
        calls.extend(prompt if isinstance(prompt, list) else [prompt])
        return original_call(self, image, prompt=prompt, **kwargs)

    monkeypatch.setattr(StableDiffusion3SRPipeline, "__call__", spy)
    return calls


def write_image(path: Path, size: tuple[int, int] = (20, 28), seed: int = 0, **save_options) -> Path:
    """A random RGB image of `size` (width, height)."""
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels).save(path, **save_options)
    return path


def image_size(path: Path) -> tuple[int, int]:
    with PIL.Image.open(path) as image:
        return image.size


# --- Inputs and outputs ----------------------------------------------------------------------------------------


def test_file_input_goes_to_the_default_folder_at_the_exact_size(upscale, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "odd.png", size=(23, 17))

    assert upscale("odd.png") == 0

    assert image_size(tmp_path / DEFAULT_OUTPUT_DIR / "odd.png") == (46, 34)
    captured = capsys.readouterr()
    assert captured.out.strip().endswith("1 upscaled, 0 skipped (exist), 0 failed")
    assert captured.err == ""  # --quiet: no progress bar, no loading bars


def test_folder_input_takes_the_images_directly_inside_and_leaves_no_temp_files(upscale, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "B.JPG", size=(28, 20), format="JPEG")
    (tmp_path / "in" / "notes.txt").write_text("not an image")
    write_image(tmp_path / "in" / "nested" / "c.png")

    assert upscale(tmp_path / "in", "-o", tmp_path / "out") == 0

    assert sorted(os.listdir(tmp_path / "out")) == ["B.png", "a.png"]  # nothing else: no temp files either
    assert image_size(tmp_path / "out" / "a.png") == (40, 56)
    assert image_size(tmp_path / "out" / "B.png") == (56, 40)


@pytest.mark.slow
def test_glob_patterns_are_expanded_by_the_program(upscale, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png", seed=1)
    write_image(tmp_path / "in" / "c.jpg", format="JPEG")

    assert upscale(tmp_path / "in" / "*.png", "-o", tmp_path / "out") == 0

    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png"]


def test_output_file_for_a_single_input_takes_its_format_from_the_extension(upscale, tmp_path):
    source = write_image(tmp_path / "photo.png")

    assert upscale(source, "-o", tmp_path / "result.jpg") == 0

    with PIL.Image.open(tmp_path / "result.jpg") as result:
        assert (result.format, result.size) == ("JPEG", (40, 56))


def test_exif_orientation_is_applied(upscale, tmp_path):
    exif = PIL.Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees to display
    source = write_image(tmp_path / "portrait.jpg", size=(20, 28), format="JPEG", exif=exif)

    assert upscale(source, "-o", tmp_path / "out") == 0

    assert image_size(tmp_path / "out" / "portrait.png") == (56, 40)


# --- Existing outputs ------------------------------------------------------------------------------------------


def test_existing_outputs_are_skipped_without_loading_the_model_and_replaced_with_overwrite(upscale, tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    target = write_image(tmp_path / "out" / "photo.png", size=(80, 112), seed=1)  # an earlier result (x4)
    earlier = target.read_bytes()
    os.utime(target, (1_000_000, 1_000_000))
    options = [source, "-o", target.parent, "--steps", "1", "--device", "cpu", "--quiet"]

    # Nothing to do: the model is not even loaded (this folder cannot be loaded).
    assert main([*map(str, options), "--model", str(fake_pipeline_dir(tmp_path / "no-model"))]) == 0
    assert target.read_bytes() == earlier
    assert target.stat().st_mtime == 1_000_000
    assert capsys.readouterr().out.strip() == "0 upscaled, 1 skipped (exist), 0 failed"

    assert upscale(source, "-o", target.parent, "--overwrite") == 0
    assert image_size(target) == (40, 56)
    assert capsys.readouterr().out.strip() == "1 upscaled, 0 skipped (exist), 0 failed"


# --- Failures --------------------------------------------------------------------------------------------------


def test_unreadable_and_too_large_inputs_are_reported_and_the_others_written(upscale, tmp_path, capsys):
    write_image(tmp_path / "in" / "good.png")
    (tmp_path / "in" / "bad.png").write_bytes(np.random.default_rng(0).bytes(300))
    write_image(tmp_path / "in" / "wide.png", size=(8200, 2))  # 16400 px wide at x2: above the pipeline's limit

    assert upscale(tmp_path / "in", "-o", tmp_path / "out") == 1

    captured = capsys.readouterr()
    assert os.listdir(tmp_path / "out") == ["good.png"]
    assert "bad.png" in captured.err and "wide.png" in captured.err
    assert "Traceback" not in captured.err
    assert captured.out.strip() == "1 upscaled, 0 skipped (exist), 2 failed"


def test_inputs_that_cannot_work_are_reported_before_the_model_loads(tmp_path, capsys, no_loading):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"not an image")
    write_image(tmp_path / "in" / "wide.png", size=(8200, 2))  # 16400 px wide at x2
    args = [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--scale", "2", "--device", "cpu"]

    assert main([*args, "--model", str(fake_pipeline_dir(tmp_path / "m"))]) == 1

    captured = capsys.readouterr()
    assert no_loading == [] and not (tmp_path / "out").exists()
    assert f"cannot read {tmp_path / 'in' / 'bad.png'}" in captured.err
    assert f"cannot upscale {tmp_path / 'in' / 'wide.png'}: its output would be 16400x4 px" in captured.err
    assert captured.out.strip() == "0 upscaled, 0 skipped (exist), 2 failed"


@pytest.mark.skipif(sys.platform == "win32", reason="Windows file names cannot hold control characters")
def test_file_names_are_printed_escaped_so_that_they_cannot_forge_lines(tmp_path, capsys, no_loading):
    forged = "x\n3 upscaled, 0 skipped (exist), 0 failed\x1b[1A.png"
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / forged).write_bytes(b"not an image")
    write_image(tmp_path / "out" / "ok.png", size=(80, 112))
    write_image(tmp_path / "in" / "ok.png")
    args = [str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--device", "cpu"]

    assert main([*args, "--model", str(fake_pipeline_dir(tmp_path / "m"))]) == 1

    captured = capsys.readouterr()
    assert captured.out.splitlines() == [
        f"skipped {tmp_path / 'in' / 'ok.png'}: {tmp_path / 'out' / 'ok.png'} exists (pass --overwrite to replace it)",
        "0 upscaled, 1 skipped (exist), 1 failed",
    ]
    (line,) = captured.err.splitlines()
    assert line.startswith(f"dit4sr-upscale: error: cannot read {tmp_path / 'in'}/x\\n3 upscaled, 0 skipped ")
    assert "\\x1b[1A.png" in line and "\x1b" not in line


def test_a_failed_write_is_reported_and_leaves_no_temp_file(upscale, tmp_path, monkeypatch, capsys):
    source = write_image(tmp_path / "photo.png")

    def failing_save(self, fp, *args, **kwargs):
        fp.write(b"partial")
        raise OSError("No space left on device")

    monkeypatch.setattr(PIL.Image.Image, "save", failing_save)

    assert upscale(source, "-o", tmp_path / "out") == 1
    assert os.listdir(tmp_path / "out") == []
    assert "No space left on device" in capsys.readouterr().err


def test_a_model_folder_of_pickle_weights_is_a_usage_error_that_says_how_to_convert_it(tmp_path, capsys, no_loading):
    source = write_image(tmp_path / "photo.png")
    folder = fake_pipeline_dir(tmp_path / "pickled")
    (folder / "transformer").mkdir()
    (folder / "transformer" / "diffusion_pytorch_model.bin").write_bytes(b"a pickle")

    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(folder), "--device", "cpu"]) == 2

    error = capsys.readouterr().err.splitlines()[-1]
    assert error.startswith(
        f"dit4sr-upscale: error: --model {folder}: its weights are pickle files only "
        "(transformer/diffusion_pytorch_model.bin), which can run any code when they are loaded."
    )
    assert f"P.from_pretrained({str(folder)!r}, allow_pickle=True).save_pretrained(" in error


def test_a_model_folder_that_cannot_be_loaded_is_one_clear_error(tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    broken = fake_pipeline_dir(tmp_path / "broken-pipeline")

    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(broken), "--device", "cpu", "--quiet"]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert str(broken) in err and "save_pretrained" in err
    assert not (tmp_path / "out").exists()


def test_released_weights_failure_explains_the_gated_model(tmp_path, monkeypatch, capsys):
    def from_released(*args, **kwargs):
        raise OSError("stabilityai/stable-diffusion-3.5-medium is a gated repository")

    monkeypatch.setattr(StableDiffusion3SRPipeline, "from_released", from_released)
    source = write_image(tmp_path / "photo.png")

    assert main([str(source), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "license" in err and "hf auth login" in err


@pytest.mark.parametrize(
    "make_args, message",
    [
        (lambda tmp: [tmp / "in" / "a.png", tmp / "in" / "b.png", "-o", tmp / "out.png"], "names a file"),
        (lambda tmp: [tmp / "empty"], "no images found"),
        (lambda tmp: [tmp / "missing.png"], "no such file"),
        (lambda tmp: [tmp / "in" / "a.png", tmp / "in" / "a.jpg"], "would both be written"),
        (lambda tmp: [tmp / "in", "--variant", "f"], "--variant"),
        (lambda tmp: [tmp / "in", "--cpu-offload", "--device", "cpu"], "--cpu-offload"),
        (lambda tmp: [tmp / "in", "--tile-size", "64", "--tile-overlap", "64"], "--tile-overlap"),
        (lambda tmp: [tmp / "in", "--captions-dir", tmp / "missing"], "--captions-dir"),
        (lambda tmp: [tmp / "in", "--attention-backend", "fastest"], "--attention-backend fastest"),
        (lambda tmp: [tmp / "in", "--caption-model", "m", "--prompt", "a cat"], "combined with --caption-model"),
        (lambda tmp: [tmp / "in", "--caption-prompt", "Describe."], "--caption-prompt sets up --caption-model"),
        (lambda tmp: [tmp / "in", "--caption-batch-size", "2"], "--caption-batch-size sets up --caption-model"),
        (lambda tmp: [tmp / "in", "--caption-model", "m", "--caption-prompt", " "], "--caption-prompt must not"),
        (lambda tmp: [tmp / "in", "--caption-model", "m", "--caption-8bit"], "--caption-8bit runs on CUDA only"),
        (lambda tmp: [tmp / "in", "--captions-dir", tmp / "notes"], "a file, not a folder of <name>.txt captions"),
        # Output folders
        (lambda tmp: [tmp / "photos", "-o", tmp / "notes"], "--output {tmp}/notes: an existing file, not a folder"),
        (
            lambda tmp: [tmp / "in" / "a.png", "-o", tmp / "notes"],
            "--output {tmp}/notes: an existing file, not a folder",
        ),
        (lambda tmp: [tmp / "photos", "-o", tmp / "notes" / "x4"], "cannot create the folder {tmp}/notes/x4, {tmp}/n"),
        (lambda tmp: [tmp / "in" / "b.png", "-o", tmp / "notes" / "b.png"], "cannot create the folder {tmp}/notes,"),
        (
            lambda tmp: [tmp / "photos", "-o", tmp / "photos"],
            "--output {tmp}/photos is the folder of the input {tmp}/ph",
        ),
        (
            lambda tmp: [tmp / "in" / "a.jpg", "-o", tmp / "in"],
            "--output {tmp}/in is the folder of the input {tmp}/in/a",
        ),
        (lambda tmp: [tmp / "in" / "a.png", "-o", tmp / "in" / "a.png"], "would replace the input {tmp}/in/a.png"),
        # Models: a folder must be of the right kind, anything else a well-formed Hub id
        (lambda tmp: [tmp / "photos", "--model", tmp / "missing"], "{tmp}/missing: no such folder, and not a Hub id"),
        (lambda tmp: [tmp / "photos", "--model", "./my-pipeline"], "./my-pipeline: no such folder, and not a Hub id"),
        (lambda tmp: [tmp / "photos", "--model", tmp / "empty"], "{tmp}/empty: this folder has no model_index.json"),
        (lambda tmp: [tmp / "photos", "--model", tmp / "notes"], "--model {tmp}/notes: a file"),
        (
            lambda tmp: [tmp / "photos", "--model", tmp / "bad-index"],
            "model_index.json is not the index of a pipeline",
        ),
        (lambda tmp: [tmp / "photos", "--caption-model", tmp / "missing"], "--caption-model {tmp}/missing: no such"),
        (
            lambda tmp: [tmp / "photos", "--caption-model", tmp / "empty"],
            "{tmp}/empty: this folder has no config.json",
        ),
    ],
)
def test_usage_errors_exit_with_code_2_before_loading(make_args, message, tmp_path, monkeypatch, capsys, no_loading):
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png")
    write_image(tmp_path / "in" / "a.jpg", format="JPEG")
    (tmp_path / "empty").mkdir()
    write_image(tmp_path / "photos" / "c.png")
    write_image(tmp_path / "photos" / "d.png")
    (tmp_path / "notes").write_text("a file")
    (tmp_path / "bad-index").mkdir()
    (tmp_path / "bad-index" / "model_index.json").write_text("{}")
    model = fake_pipeline_dir(tmp_path / "not-loaded")
    args = ["--model", str(model), *map(str, make_args(tmp_path)), "--device", "cpu"]

    assert main(args) == 2
    err = capsys.readouterr().err
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert err.startswith("usage: dit4sr-upscale") and err.count("error:") == 1  # the usage, then one line
    assert err.strip().splitlines()[-1].startswith("dit4sr-upscale: error: ")
    assert not (tmp_path / DEFAULT_OUTPUT_DIR).exists()
    assert no_loading == []
    assert sorted(os.listdir(tmp_path / "in")) == ["a.jpg", "a.png", "b.png"]
    assert sorted(os.listdir(tmp_path / "photos")) == ["c.png", "d.png"]


def simulate_denied_access(monkeypatch, folder: Path, mode: int) -> None:
    """Takes `mode` rights away from `folder`: with chmod, and, for root (whom chmod does not stop), by making
    `os.access` say so."""
    folder.chmod(0o555 if mode & os.W_OK else 0o000)
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        real_access = os.access

        def access(path, requested, *args, **kwargs):
            if Path(path).absolute() == folder.absolute() and requested & mode:
                return False
            return real_access(path, requested, *args, **kwargs)

        monkeypatch.setattr(os, "access", access)


@pytest.mark.parametrize("where", ["out", "out/new"])
def test_a_read_only_output_folder_is_a_usage_error_before_loading(where, tmp_path, monkeypatch, capsys, no_loading):
    source = write_image(tmp_path / "a.png")
    (tmp_path / "out").mkdir()
    simulate_denied_access(monkeypatch, tmp_path / "out", os.W_OK)
    try:
        args = [str(source), "-o", str(tmp_path / where), "--model", str(fake_pipeline_dir(tmp_path / "m"))]
        assert main([*args, "--device", "cpu"]) == 2
    finally:
        (tmp_path / "out").chmod(0o755)

    err = capsys.readouterr().err
    assert f"--output {tmp_path / where}: cannot write there" in err and "read-only" in err
    assert no_loading == []


def test_an_unreadable_captions_dir_is_a_usage_error_before_loading(tmp_path, monkeypatch, capsys, no_loading):
    source = write_image(tmp_path / "a.png")
    (tmp_path / "captions").mkdir()
    simulate_denied_access(monkeypatch, tmp_path / "captions", os.R_OK)
    try:
        args = [str(source), "-o", str(tmp_path / "out"), "--captions-dir", str(tmp_path / "captions")]
        assert main([*args, "--model", str(fake_pipeline_dir(tmp_path / "m")), "--device", "cpu"]) == 2
    finally:
        (tmp_path / "captions").chmod(0o755)

    assert f"--captions-dir {tmp_path / 'captions'}: cannot read this folder" in capsys.readouterr().err
    assert no_loading == []


@pytest.mark.parametrize(
    "option, value, message",
    [
        ("--steps", "0", "must be a positive integer, got 0"),
        ("--steps", "many", "must be a positive integer, got 'many'"),
        ("--scale", "x4", "must be a positive number, got 'x4'"),
        ("--tile-overlap", "-1", "must be a non-negative multiple of 16 (e.g. 0), got -1"),
        ("--tile-overlap", "100", "must be a non-negative multiple of 16 (e.g. 96 or 112), got 100"),
        ("--tile-size", "500", "must be a positive multiple of 16 (e.g. 496 or 512), got 500"),
        ("--tile-size", "8", "must be a positive multiple of 16 (e.g. 16), got 8"),
        ("--tile-size", "0", "must be a positive multiple of 16 (e.g. 16), got 0"),
        ("--seed", str(SEED_RANGE[1] + 1), f"must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got"),
        ("--seed", str(SEED_RANGE[0] - 1), f"must be an integer from {SEED_RANGE[0]} to {SEED_RANGE[1]}, got"),
        ("--seed", "1.5", "must be an integer from"),
        ("--guidance", "nan", "must be a finite number, got nan"),
        ("--guidance", "inf", "must be a finite number, got inf"),
        ("--guidance", "high", "must be a number, got 'high'"),
        ("--output", "", "must not be empty"),
        ("--model", " ", "must not be empty"),
        ("--captions-dir", "", "must not be empty"),
        ("--tile-batch-size", "all", "must be 'auto' or a positive integer, got 'all'"),
        ("--caption-max-new-tokens", "0", "must be a positive integer, got 0"),
        ("--caption-max-new-tokens", "1e3", "must be a positive integer, got '1e3'"),
        ("--caption-batch-size", "two", "must be a positive integer, got 'two'"),
    ],
)
def test_invalid_option_values_are_rejected_by_the_parser(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["photo.png", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"{option}: {message}" in err and "argument " in err  # "argument -o/--output: ..." for -o
    line = err.strip().splitlines()[-1]  # the usage before it lists `--quantize float8`
    assert "_positive" not in line and "invalid" not in line  # no internal function names
    assert "int value" not in line and "float" not in line  # nor Python's type names


@pytest.mark.parametrize(
    "option, value, choices",
    [
        ("--dtype", "fp8", "'bf16', 'fp16', 'fp32'"),
        ("--color-fix", "auto", "'adain', 'wavelet', 'none'"),
        ("--variant", "x", "'q', 'f', 'r1'"),
    ],
)
def test_choices_are_listed_by_their_names(capsys, option, value, choices):
    with pytest.raises(SystemExit) as exit_info:
        main(["photo.png", option, value])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {option}: invalid choice: '{value}' (choose from {choices})" in " ".join(err.split())
    assert "dict_keys" not in err and "DTYPES" not in err


def test_the_seed_range_is_what_torch_accepts():
    for seed in SEED_RANGE:
        assert build_parser().parse_args(["photo.png", "--seed", str(seed)]).seed == seed
        torch.Generator().manual_seed(seed)
    for seed in (SEED_RANGE[0] - 1, SEED_RANGE[1] + 1):
        with pytest.raises((RuntimeError, ValueError, OverflowError)):
            torch.Generator().manual_seed(seed)


def test_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    # The installed distributions' versions, as pip reports them (no torch import): PyPI's CUDA wheels say 2.14.1
    # where `torch.__version__` says 2.14.1+cu130; the CPU wheel says 2.13.0+cpu in both.
    versions = {name: importlib.metadata.version(name) for name in ("diffusers", "torch")}
    assert capsys.readouterr().out.strip() == (
        f"dit4sr-upscale {diffusers_dit4sr.__version__} (diffusers {versions['diffusers']}, torch {versions['torch']})"
    )


# --- Speed options ---------------------------------------------------------------------------------------------


def read_pixels(path: Path) -> np.ndarray:
    with PIL.Image.open(path) as image:
        return np.asarray(image, dtype=np.int16)


def test_speed_options_reach_the_transformer_and_keep_the_image(upscale, tmp_path, monkeypatch):
    source = write_image(tmp_path / "a.png")
    assert upscale(source, "-o", tmp_path / "plain.png") == 0

    calls = []

    def spy(name, run_original=True):
        original = getattr(DiT4SRTransformer2DModel, name)

        def record(self, *args, **kwargs):
            calls.append((name, args, kwargs))
            return original(self, *args, **kwargs) if run_original else None

        monkeypatch.setattr(DiT4SRTransformer2DModel, name, record)

    spy("set_attention_backend")
    spy("fuse_lr_projections")
    spy("compile_repeated_blocks", run_original=False)  # compiling takes seconds; regional compile is tested apart
    options = ["--attention-backend", "_native_math", "--fuse-lr-projections", "--compile"]
    assert upscale(source, "-o", tmp_path / "fast.png", *options) == 0

    assert calls == [
        ("set_attention_backend", ("_native_math",), {}),
        ("fuse_lr_projections", (), {}),
        ("compile_repeated_blocks", (), {"fullgraph": True}),
    ]
    # Folded projections and another attention kernel change float round-off, not the 8-bit image.
    assert np.abs(read_pixels(tmp_path / "fast.png") - read_pixels(tmp_path / "plain.png")).max() <= 1


def test_an_unusable_attention_backend_is_one_clear_error(upscale, tmp_path, capsys):
    # Diffusers knows `xformers` but the package is not installed: reported once, before any image.
    assert upscale(write_image(tmp_path / "a.png"), "-o", tmp_path / "out", "--attention-backend", "xformers") == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot prepare the pipeline" in err and "xformers" in err
    assert not (tmp_path / "out").exists()


# --- Quantization (the presets themselves: test_quantization.py) -----------------------------------------------

QUANTIZED_OPTIONS = [
    "--steps", "1", "--scale", "2", "--device", "cpu",
    "--tile-size", "64", "--tile-overlap", "32", "--process-size", "64", "--quiet",
]  # fmt: skip
"""`FAST_OPTIONS` without `--dtype`: the int8 preset's default, bf16, applies."""


@pytest.fixture
def loaded_pipelines(monkeypatch) -> list:
    """Every pipeline the CLI loads (loaded for real)."""
    pipes = []
    original_load = runtime.load_pipeline

    def load(*args, **kwargs):
        pipes.append(original_load(*args, **kwargs))
        return pipes[-1]

    monkeypatch.setattr(runtime, "load_pipeline", load)
    return pipes


def quantized_components(pipe) -> list[str]:
    """The components with torchao int8 `nn.Linear` weights (transformers keeps a text encoder's output projection)."""
    return [
        name
        for name in ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")
        if any(
            type(layer.weight).__name__ == "Int8Tensor"
            for layer in getattr(pipe, name).modules()
            if isinstance(layer, torch.nn.Linear)
        )
    ]


def test_quantize_loads_a_model_folder_quantized_in_bf16_and_upscales(tiny_pipeline_dir, loaded_pipelines, tmp_path):
    source = write_image(tmp_path / "a.png")
    args = [str(source), "-o", str(tmp_path / "out.png"), "--model", str(tiny_pipeline_dir), "--quantize", "int8"]

    assert main([*args, *QUANTIZED_OPTIONS]) == 0

    (pipe,) = loaded_pipelines
    assert quantized_components(pipe) == ["transformer", "text_encoder_3"]  # the preset's
    assert (
        pipe.transformer.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16
    )  # the preset's dtype on the CPU
    assert image_size(tmp_path / "out.png") == (40, 56)


def test_quantize_components_reach_the_released_weights(
    tiny_pipeline_dir, released_dit4sr_dir, loaded_pipelines, tmp_path, monkeypatch
):
    # The released weights, composed by `from_released` from local folders in place of the Hub's.
    from_released = StableDiffusion3SRPipeline.from_released.__func__

    def from_local_folders(cls, variant="q", **kwargs):
        return from_released(
            cls, variant, sd3_model=str(tiny_pipeline_dir), dit4sr_model=str(released_dit4sr_dir), **kwargs
        )

    monkeypatch.setattr(StableDiffusion3SRPipeline, "from_released", classmethod(from_local_folders))
    source = write_image(tmp_path / "a.png")
    options = ["--quantize", "int8", *QUANTIZED_OPTIONS, "--quantize-components", "transformer", "text_encoder"]

    assert main([str(source), "-o", str(tmp_path / "out.png"), *options]) == 0

    (pipe,) = loaded_pipelines
    assert quantized_components(pipe) == ["transformer", "text_encoder"]
    assert image_size(tmp_path / "out.png") == (40, 56)


def refuse_float8_on_an_8_6_gpu(monkeypatch) -> None:
    """Pretends CUDA has one GPU of compute capability 8.6 (an RTX 3090), below float8's 8.9."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))


def without_optimum(monkeypatch) -> None:
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *args: None if name == "optimum" else real_find_spec(name, *args)
    )


@pytest.mark.parametrize(
    "options, message, setup",
    [
        (
            ["--quantize-components", "transformer"],
            "--quantize-components picks what --quantize quantizes; it needs --quantize",
            None,
        ),
        (
            ["--quantize", "int8", "--dtype", "fp32"],
            "--quantize int8: Quantization preset 'int8' computes in bfloat16",
            None,
        ),
        (
            ["--quantize", "float8", "--dtype", "fp16"],
            "--quantize float8: Quantization preset 'float8' computes in bfloat16",
            None,
        ),
        (["--quantize", "nf4-t5"], "--quantize nf4-t5: Quantization preset 'nf4-t5' needs a CUDA GPU", None),
        (
            ["--quantize", "int8", "--fuse-lr-projections"],
            "--fuse-lr-projections folds full-precision weights; it cannot be combined with --quantize",
            None,
        ),
        (
            ["--quantize", "int8-quanto"],
            "--quantize int8-quanto: Quantization preset 'int8-quanto' needs the `optimum-quanto` package: `pip install optimum-quanto`",
            without_optimum,
        ),
        (
            ["--quantize", "float8", "--device", "cuda"],
            "--quantize float8: Quantization preset 'float8' needs a GPU of compute capability 8.9 or higher; cuda has 8.6",
            refuse_float8_on_an_8_6_gpu,
        ),
    ],
)
def test_quantization_that_cannot_run_is_a_usage_error_before_loading(
    options, message, setup, tmp_path, monkeypatch, capsys, no_loading
):
    if setup is not None:
        setup(monkeypatch)
    source = write_image(tmp_path / "a.png")
    model = fake_pipeline_dir(tmp_path / "m")

    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(model), "--device", "cpu", *options]) == 2

    err = capsys.readouterr().err
    assert err.strip().splitlines()[-1].startswith(f"dit4sr-upscale: error: {message}")
    assert err.startswith("usage: dit4sr-upscale") and err.count("error:") == 1
    assert no_loading == [] and not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "option, value, choices",
    [
        ("--quantize", "int4", "'none', 'int8', 'float8', 'int8-quanto', 'nf4-t5'"),
        ("--quantize-components", "vae", "'transformer', 'text_encoder', 'text_encoder_2', 'text_encoder_3'"),
    ],
)
def test_quantization_choices_are_listed_by_their_names(capsys, option, value, choices):
    with pytest.raises(SystemExit) as exit_info:
        main(["photo.png", option, value])
    assert exit_info.value.code == 2
    assert f"argument {option}: invalid choice: '{value}' (choose from {choices})" in " ".join(
        capsys.readouterr().err.split()
    )


def small_gpu_commands() -> list[list[str]]:
    """The arguments of the `dit4sr-upscale` commands in docs/usage.md's "Small GPUs" section."""
    section = (ROOT / "docs" / "usage.md").read_text(encoding="utf-8").split("### Small GPUs")[1].split("\n### ")[0]
    return [shlex.split(command)[1:] for command in re.findall(r"`(dit4sr-upscale [^`]*)`", section)]


def test_the_docs_have_small_gpu_commands():
    assert len(small_gpu_commands()) >= 4 and any("--cpu-offload" in command for command in small_gpu_commands())


@pytest.mark.parametrize("command", small_gpu_commands(), ids=" ".join)
def test_the_small_gpu_commands_of_the_docs_pass_the_checks_on_a_gpu(command, tmp_path, monkeypatch, capsys):
    # A CUDA machine of compute capability 8.6 (an RTX 3060, 12 GB), up to loading, which is stopped.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    loads = []

    def load(model, variant, dtype, local_files_only=False, quantization_config=None):
        loads.append((dtype, quantization_config))
        raise OSError("stopped before loading")

    monkeypatch.setattr(runtime, "load_pipeline", load)
    monkeypatch.chdir(tmp_path)
    write_image(tmp_path / "in.png")

    assert main(command) == 1  # checked (no usage error), then the stopped loading is reported
    assert "stopped before loading" in capsys.readouterr().err
    ((dtype, config),) = loads
    assert dtype == torch.bfloat16
    if "--quantize" in command:
        preset = QUANTIZATION_PRESETS[command[command.index("--quantize") + 1]]
        assert sorted(config.quant_mapping) == sorted(preset.components)
    else:
        assert config is None


# --- Captions and seeds ----------------------------------------------------------------------------------------


def test_captions_dir_gives_each_image_its_caption(upscale, prompts, tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png")
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "a.txt").write_text("a red brick house by a lake\n", encoding="utf-8")

    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "--captions-dir", tmp_path / "captions") == 0

    assert prompts == ["a red brick house by a lake", ""]
    assert "b.txt" in capsys.readouterr().err  # the missing caption is a warning, not a failure


# Written in the style of the authors' released LLaVA prompt files (not copied from them): they are not pre-filtered.
LLAVA_STYLE_CAPTION = (
    "The image features a red brick house with a white door. A small garden is located in front of the house, "
    "with flowers in bloom. Two bicycles are positioned against the wall.\nThe sky above is clear and blue.\n"
)
FILTERED_CAPTION = "The image features a red brick house with a white door.\nThe sky above is clear and blue."


def test_caption_files_go_through_the_released_filter_unless_verbatim(upscale, prompts, tmp_path):
    write_image(tmp_path / "in" / "Nikon_026_LR4.png")
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "Nikon_026_LR4.txt").write_text(LLAVA_STYLE_CAPTION, encoding="utf-8")
    captions = ["--captions-dir", tmp_path / "captions"]

    assert upscale(tmp_path / "in", "-o", tmp_path / "filtered", *captions) == 0
    assert upscale(tmp_path / "in", "-o", tmp_path / "verbatim", *captions, "--verbatim-captions") == 0

    assert prompts == [FILTERED_CAPTION, LLAVA_STYLE_CAPTION.strip()]


def test_a_caption_file_beside_the_output_is_filtered_too(upscale, caption_options, prompts, tmp_path, monkeypatch):
    source = write_image(tmp_path / "photo.png")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "photo.txt").write_text(LLAVA_STYLE_CAPTION, encoding="utf-8")
    monkeypatch.setattr(Captioner, "__init__", lambda self, *args, **kwargs: pytest.fail("loaded"))

    assert upscale(source, "-o", tmp_path / "out", *caption_options) == 0
    assert upscale(source, "-o", tmp_path / "out", "--overwrite", "--verbatim-captions", *caption_options) == 0

    assert prompts == [FILTERED_CAPTION, LLAVA_STYLE_CAPTION.strip()]


def test_verbatim_captions_without_caption_files_is_a_usage_error(tmp_path, capsys, no_loading):
    source = write_image(tmp_path / "photo.png")
    args = [str(source), "-o", str(tmp_path / "out"), "--prompt", "a cat", "--verbatim-captions", "--device", "cpu"]
    assert main(args) == 2
    assert "--verbatim-captions applies to caption files" in capsys.readouterr().err


def test_prompt_is_used_for_every_image_and_no_caption_by_default(upscale, prompts, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png")

    assert upscale(tmp_path / "in", "-o", tmp_path / "with-prompt", "--prompt", "a cat") == 0
    assert upscale(tmp_path / "in" / "a.png", "-o", tmp_path / "without") == 0

    assert prompts == ["a cat", "a cat", ""]


def test_results_depend_on_the_seed_only_not_on_the_other_inputs(upscale, tmp_path):
    write_image(tmp_path / "in" / "a.png", seed=1)
    source = write_image(tmp_path / "in" / "b.png", seed=2)

    assert upscale(tmp_path / "in", "-o", tmp_path / "both") == 0
    assert upscale(source, "-o", tmp_path / "alone") == 0
    assert upscale(source, "-o", tmp_path / "other-seed", "--seed", "1") == 0

    result = (tmp_path / "both" / "b.png").read_bytes()
    assert (tmp_path / "alone" / "b.png").read_bytes() == result
    assert (tmp_path / "other-seed" / "b.png").read_bytes() != result


# --- Captioning with --caption-model ----------------------------------------------------------------------------

CAPTION_MAX_NEW_TOKENS = 8


@pytest.fixture(scope="module")
def captioner_dir(tmp_path_factory) -> Path:
    return save_tiny_captioner(tmp_path_factory.mktemp("tiny-captioner"))


@pytest.fixture
def caption_options(captioner_dir) -> list[str]:
    return ["--caption-model", str(captioner_dir), "--caption-max-new-tokens", str(CAPTION_MAX_NEW_TOKENS)]


def library_captions(captioner_dir: Path, *image_paths: Path, seed: int = 0, batch_size: int = 1) -> list[str]:
    """What `Captioner` itself says about the images, with the CLI's settings."""
    images = []
    for path in image_paths:
        with PIL.Image.open(path) as image:
            images.append(image.convert("RGB"))
    with Captioner(
        captioner_dir, max_new_tokens=CAPTION_MAX_NEW_TOKENS, seed=seed, batch_size=batch_size, device="cpu"
    ) as captioner:
        return captioner(images)


@pytest.mark.slow
def test_caption_model_captions_first_and_writes_caption_files(
    tiny_pipeline_dir, captioner_dir, caption_options, prompts, tmp_path, monkeypatch, capsys
):
    a = write_image(tmp_path / "in" / "a.png", seed=1)
    b = write_image(tmp_path / "in" / "b.png", size=(28, 20), seed=2)
    expected = library_captions(captioner_dir, a) + library_captions(captioner_dir, b)
    events = []
    original_unload, original_load = Captioner.unload, StableDiffusion3SRPipeline.from_pretrained

    def unload(self):
        events.append("captioner unloaded")
        original_unload(self)

    def from_pretrained(*args, **kwargs):
        events.append("pipeline loaded")
        return original_load(*args, **kwargs)

    monkeypatch.setattr(Captioner, "unload", unload)
    monkeypatch.setattr(StableDiffusion3SRPipeline, "from_pretrained", from_pretrained)
    options = [option for option in FAST_OPTIONS if option != "--quiet"]
    args = [
        str(tmp_path / "in"),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_pipeline_dir),
        *caption_options,
        *options,
    ]

    assert main(args) == 0

    captured = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a.txt", "b.png", "b.txt"]
    captions = [(tmp_path / "out" / name).read_text(encoding="utf-8") for name in ("a.txt", "b.txt")]
    assert captions == [expected[0] + "\n", expected[1] + "\n"]
    assert prompts == [caption.strip() for caption in captions] and all(prompts)
    assert events == ["captioner unloaded", "pipeline loaded"]  # the two models are never in memory together
    assert captured.err.index(f"captioning 2 images with {captioner_dir}") < captured.err.index("upscaling 2 images")
    assert captured.out.strip().endswith(
        "2 upscaled, 0 skipped (exist), 0 failed; captions: 2 new, 0 reused, 0 failed"
    )


@pytest.mark.slow
def test_an_existing_caption_file_is_read_not_regenerated(upscale, caption_options, prompts, tmp_path, monkeypatch):
    source = write_image(tmp_path / "photo.png")
    assert upscale(source, "-o", tmp_path / "out", *caption_options) == 0
    (tmp_path / "out" / "photo.txt").write_text("  a hand-written caption\n", encoding="utf-8")

    def no_loading(self, *args, **kwargs):
        raise AssertionError("the captioner must not be loaded when every caption exists")

    monkeypatch.setattr(Captioner, "__init__", no_loading)
    # --overwrite replaces the image, not its caption: edit a caption, then upscale again.
    assert upscale(source, "-o", tmp_path / "out", "--overwrite", *caption_options) == 0

    assert prompts[1] == "a hand-written caption" and prompts[0] != prompts[1]
    assert (tmp_path / "out" / "photo.txt").read_text(encoding="utf-8") == "  a hand-written caption\n"


def test_a_skipped_image_is_not_captioned(upscale, caption_options, tmp_path, monkeypatch, capsys):
    source = write_image(tmp_path / "photo.png")
    write_image(tmp_path / "out" / "photo.png", size=(40, 56))  # an earlier result (x2)
    monkeypatch.setattr(Captioner, "__init__", lambda self, *args, **kwargs: pytest.fail("loaded"))

    assert upscale(source, "-o", tmp_path / "out", *caption_options) == 0
    assert os.listdir(tmp_path / "out") == ["photo.png"]
    assert "0 upscaled, 1 skipped (exist), 0 failed; captions: 0 new, 0 reused, 0 failed" in capsys.readouterr().out


@pytest.mark.slow
def test_captions_dir_wins_over_caption_model(upscale, caption_options, prompts, tmp_path):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "b.png", seed=1)
    (tmp_path / "captions").mkdir()
    (tmp_path / "captions" / "a.txt").write_text("a red brick house\n", encoding="utf-8")

    args = ["--captions-dir", tmp_path / "captions", *caption_options]
    assert upscale(tmp_path / "in", "-o", tmp_path / "out", *args) == 0

    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "b.txt"]  # a.png was not captioned
    assert prompts == ["a red brick house", (tmp_path / "out" / "b.txt").read_text(encoding="utf-8").strip()]


@pytest.mark.slow
def test_a_failed_caption_is_reported_and_the_image_upscaled_without_one(
    upscale, caption_options, prompts, tmp_path, monkeypatch, capsys
):
    write_image(tmp_path / "in" / "a.png")
    write_image(tmp_path / "in" / "odd.png", size=(23, 17), seed=1)
    original_call = Captioner.__call__

    def fail_on_odd(self, images):
        if images[0].size == (23, 17):
            raise RuntimeError("the model broke")
        return original_call(self, images)

    monkeypatch.setattr(Captioner, "__call__", fail_on_odd)

    assert upscale(tmp_path / "in", "-o", tmp_path / "out", *caption_options) == 1  # a missing caption is a failure

    captured = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "a.txt", "odd.png"]
    assert image_size(tmp_path / "out" / "odd.png") == (46, 34)
    assert prompts == [(tmp_path / "out" / "a.txt").read_text(encoding="utf-8").strip(), ""]
    assert f"cannot caption {tmp_path / 'in' / 'odd.png'}: the model broke (upscaling it without a caption)" in (
        captured.err
    )
    assert "Traceback" not in captured.err
    assert captured.out.strip() == "2 upscaled, 0 skipped (exist), 0 failed; captions: 1 new, 0 reused, 1 failed"


@pytest.mark.slow
def test_captions_follow_the_seed_and_the_batch_size(upscale, captioner_dir, caption_options, tmp_path):
    a = write_image(tmp_path / "in" / "a.png")
    b = write_image(tmp_path / "in" / "b.png", seed=1)

    assert upscale(a, "-o", tmp_path / "seed-1", "--seed", "1", *caption_options) == 0
    assert upscale(tmp_path / "in", "-o", tmp_path / "batched", "--caption-batch-size", "2", *caption_options) == 0

    def read(path: Path) -> str:
        return path.read_text(encoding="utf-8").strip()

    assert [read(tmp_path / "seed-1" / "a.txt")] == library_captions(captioner_dir, a, seed=1)
    batched = [read(tmp_path / "batched" / name) for name in ("a.txt", "b.txt")]
    assert batched == library_captions(captioner_dir, a, b, batch_size=2)


def test_a_caption_model_that_cannot_load_is_one_clear_error(tiny_pipeline_dir, tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    missing = tmp_path / "broken-captioner"
    missing.mkdir()
    (missing / "config.json").write_text('{"model_type": "no-such-model-type"}')
    args = [
        str(source),
        "-o",
        str(tmp_path / "out"),
        "--model",
        str(tiny_pipeline_dir),
        "--caption-model",
        str(missing),
    ]

    assert main([*args, *FAST_OPTIONS]) == 1

    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert "cannot load the caption model" in err and str(missing) in err
    assert not (tmp_path / "out").exists()  # the SR pipeline is not loaded either


# --- The Hub: one line naming the cause, within seconds ----------------------------------------------------------


@pytest.mark.parametrize(
    "model, make_error, expected",
    [
        (None, lambda: wrapped(hub_http_error(GatedRepoError, 403)), ["gated repository", "hf auth login"]),
        ("me/x", lambda: wrapped(hub_http_error(RepositoryNotFoundError, 404)), ["the Hub has no repository me/x"]),
        ("me/x", lambda: wrapped(hub_http_error(RemoteEntryNotFoundError, 404)), ["a file that me/x", "missing"]),
        ("me/x", lambda: wrapped(LocalEntryNotFoundError("-"), OfflineModeIsEnabled("-")), ["HF_HUB_OFFLINE=1"]),
        (None, lambda: wrapped(LocalEntryNotFoundError("-"), dns_failure()), ["DNS lookup of", "failed"]),
        (None, lambda: dns_failure(), ["cannot reach the Hub: DNS lookup of"]),  # not an OSError from every library
        ("me/x", lambda: wrapped(hub_http_error(HfHubHTTPError, 502)), ["HTTP 502 (busy or down)"]),
    ],
)
def test_hub_failures_are_one_line_naming_the_cause(model, make_error, expected, tmp_path, monkeypatch, capsys):
    calls = []

    def load_pipeline(*args, **kwargs):
        calls.append(kwargs)
        raise make_error()

    monkeypatch.setattr(runtime, "load_pipeline", load_pipeline)
    source = write_image(tmp_path / "photo.png")
    args = [str(source), "-o", str(tmp_path / "out"), "--device", "cpu"]

    assert main([*args, *(["--model", model] if model else [])]) == 1

    err = capsys.readouterr().err
    assert len(calls) == 1 and calls[0]["local_files_only"] is False
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("dit4sr-upscale: error: cannot load ")
    for part in expected:
        assert part in err
    assert "config.json" not in err
    assert not (tmp_path / "out").exists()


def test_an_unreachable_hub_loads_from_the_cache_only_and_says_why(tmp_path, monkeypatch, capsys):
    asked, loads = [], []
    reason = "DNS lookup of huggingface.co failed: Name or service not known"
    monkeypatch.setattr(runtime, "hub_unreachable_reason", lambda *args, **kwargs: asked.append(1) or reason)

    def load_pipeline(*args, **kwargs):
        loads.append(kwargs)
        raise wrapped(LocalEntryNotFoundError("Cannot find the requested files in the disk cache"))

    monkeypatch.setattr(runtime, "load_pipeline", load_pipeline)
    source = write_image(tmp_path / "photo.png")

    assert main([str(source), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 1

    err = capsys.readouterr().err
    assert asked == [1] and [kwargs["local_files_only"] for kwargs in loads] == [True]
    assert len(err.strip().splitlines()) == 1
    assert f"the Hub cannot be reached ({reason})" in err and "not (fully) in the local Hugging Face cache" in err


def test_an_unreachable_hub_still_loads_cached_models(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    reason = "DNS lookup of huggingface.co failed: Name or service not known"
    monkeypatch.setattr(runtime, "hub_unreachable_reason", lambda *args, **kwargs: reason)
    loads = []

    def load_pipeline(model, variant, dtype, local_files_only=False, quantization_config=None):
        loads.append((model, local_files_only))
        return StableDiffusion3SRPipeline.from_pretrained(tiny_pipeline_dir)  # as if the released weights were cached

    monkeypatch.setattr(runtime, "load_pipeline", load_pipeline)
    source = write_image(tmp_path / "photo.png")
    options = [option for option in FAST_OPTIONS if option != "--quiet"]

    assert main([str(source), "-o", str(tmp_path / "out"), *options]) == 0

    assert loads == [(None, True)] and image_size(tmp_path / "out" / "photo.png") == (40, 56)
    err = capsys.readouterr().err
    assert f"note: the Hub cannot be reached ({reason}); the released pipeline was loaded from the local cache" in err


def test_a_local_model_folder_does_not_ask_the_hub(tiny_pipeline_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "hub_unreachable_reason", lambda *args, **kwargs: pytest.fail("asked the Hub"))
    monkeypatch.setattr(runtime, "load_pipeline", lambda *args, **kwargs: pytest.fail("loaded"))
    source = write_image(tmp_path / "photo.png")
    write_image(tmp_path / "out" / "photo.png", size=(80, 112))  # done (x4)
    # Nothing to do: neither asked nor loaded (and with work to do, a folder needs no Hub: see the tests above).
    assert main([str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir), "--quiet"]) == 0
    assert runtime.check_hub_access(str(tiny_pipeline_dir)).unreachable is None


@pytest.mark.slow
def test_offline_mode_and_an_unknown_repository_fail_in_one_line(tmp_path):
    # The real thing, in a fresh process: HF_HUB_OFFLINE is read when huggingface_hub is imported.
    source = write_image(tmp_path / "photo.png")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf-home")}
    env.pop("HF_HUB_CACHE", None)
    started = time.monotonic()
    completed = subprocess.run(
        [sys.executable, "-m", "diffusers_dit4sr.cli", str(source), "--model", "some/unknown-repo", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        cwd=tmp_path,
    )
    elapsed = time.monotonic() - started

    assert completed.returncode == 1, completed.stderr
    assert completed.stderr.count("\n") == 1, completed.stderr
    assert "HF_HUB_OFFLINE=1 is set" in completed.stderr and "some/unknown-repo" in completed.stderr
    assert "Traceback" not in completed.stderr and "config.json" not in completed.stderr
    assert completed.stdout == "" and not (tmp_path / DEFAULT_OUTPUT_DIR).exists()
    print(f"offline failure in {elapsed:.1f} s, imports included")


# --- Stale temporary files, progress, VAE tiling ------------------------------------------------------------------


def dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.mark.skipif(sys.platform == "win32", reason="processes are looked up by pid on POSIX only")
def test_stale_temporary_files_are_removed_on_the_next_run(tmp_path, capsys, no_loading):
    source = write_image(tmp_path / "photo.png")
    write_image(tmp_path / "out" / "photo.png", size=(80, 112))  # done (x4)
    stale = temporary_path(tmp_path / "out" / "other.png", pid=dead_pid())
    stale_caption = temporary_path(tmp_path / "out" / "photo.txt", pid=dead_pid())
    live = temporary_path(tmp_path / "out" / "third.png", pid=os.getppid())  # a running process: kept
    for path in (stale, stale_caption, live):
        path.write_bytes(b"partial")

    args = [str(source), "-o", str(tmp_path / "out"), "--model", str(fake_pipeline_dir(tmp_path / "m"))]
    assert main([*args, "--device", "cpu"]) == 0

    assert sorted(os.listdir(tmp_path / "out")) == sorted(["photo.png", live.name])
    err = capsys.readouterr().err
    assert f"removed {stale}, a temporary file left by an interrupted run" in err and str(stale_caption) in err


def test_a_single_image_shows_its_denoising_steps(tiny_pipeline_dir, tmp_path, capsys):
    source = write_image(tmp_path / "photo.png")
    options = [*(option for option in FAST_OPTIONS if option != "--quiet"), "--steps", "3"]
    args = [str(source), "-o", str(tmp_path / "out"), "--model", str(tiny_pipeline_dir), *options]

    assert main(args) == 0
    err = capsys.readouterr().err
    assert "Upscaling 1/1 photo.png" in err and "3/3 [" in err and "step" in err


# --- Batches -------------------------------------------------------------------------------------------------


@pytest.fixture
def pipeline_calls(monkeypatch) -> list:
    """The number of images of every pipeline call, in order (the pipeline still runs)."""
    calls = []
    original_call = StableDiffusion3SRPipeline.__call__

    def spy(self, image, **kwargs):
        calls.append(len(image) if isinstance(image, list) else 1)
        return original_call(self, image, **kwargs)

    monkeypatch.setattr(StableDiffusion3SRPipeline, "__call__", spy)
    return calls


def write_mixed_sizes(folder: Path) -> list[Path]:
    """Five images of two sizes, interleaved: a b c d e with a, c, d of one size."""
    sizes = {"a": (20, 28), "b": (24, 16), "c": (20, 28), "d": (20, 28), "e": (24, 16)}
    return [
        write_image(folder / f"{name}.png", size=size, seed=index) for index, (name, size) in enumerate(sizes.items())
    ]


def test_batch_size_groups_images_of_one_size_and_keeps_the_results(upscale, pipeline_calls, tmp_path, capsys):
    write_mixed_sizes(tmp_path / "in")
    assert upscale(tmp_path / "in", "-o", tmp_path / "alone") == 0
    assert pipeline_calls == [1] * 5
    pipeline_calls.clear()

    assert upscale(tmp_path / "in", "-o", tmp_path / "batched", "--batch-size", "2") == 0

    assert pipeline_calls == [2, 2, 1]  # (a, c), (b, e), (d): one size per call
    assert capsys.readouterr().out.strip().splitlines()[-1] == "5 upscaled, 0 skipped (exist), 0 failed"
    for name in "abcde":
        alone, batched = (
            read_pixels(tmp_path / "alone" / f"{name}.png"),
            read_pixels(tmp_path / "batched" / f"{name}.png"),
        )
        assert alone.shape == batched.shape
        assert np.abs(alone.astype(int) - batched.astype(int)).max() <= 1  # float round-off, at most one level


def test_a_failing_batch_is_retried_image_by_image(upscale, pipeline_calls, tmp_path, monkeypatch, capsys):
    write_mixed_sizes(tmp_path / "in")
    original_call = StableDiffusion3SRPipeline.__call__

    def fail_on_batches_and_on_c(self, image, **kwargs):
        if len(image) > 1:
            raise RuntimeError("out of some memory")
        if image[0].getpixel((0, 0)) == PIL.Image.open(tmp_path / "in" / "c.png").convert("RGB").getpixel((0, 0)):
            raise ValueError("this one cannot work")
        return original_call(self, image, **kwargs)

    monkeypatch.setattr(StableDiffusion3SRPipeline, "__call__", fail_on_batches_and_on_c)

    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "--batch-size", "3") == 1

    captured = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "b.png", "d.png", "e.png"]
    assert f"cannot upscale {tmp_path / 'in' / 'c.png'}: this one cannot work (skipped)" in captured.err
    assert captured.err.count("error:") == 1
    assert captured.out.strip() == "4 upscaled, 0 skipped (exist), 1 failed"


def test_an_image_that_cannot_be_decoded_fails_alone_in_its_batch(upscale, tmp_path, capsys):
    write_image(tmp_path / "in" / "a.png")
    truncated = write_image(tmp_path / "in" / "b.png", seed=1)
    truncated.write_bytes(truncated.read_bytes()[:200])  # the header reads, the pixels do not
    write_image(tmp_path / "in" / "c.png", seed=2)

    assert upscale(tmp_path / "in", "-o", tmp_path / "out", "--batch-size", "3") == 1

    captured = capsys.readouterr()
    assert sorted(os.listdir(tmp_path / "out")) == ["a.png", "c.png"]
    assert str(tmp_path / "in" / "b.png") in captured.err and "Traceback" not in captured.err
    assert captured.out.strip() == "2 upscaled, 0 skipped (exist), 1 failed"


# --- Several processes ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("device", "message"),
    [
        ("cuda:1", "each takes its own CUDA device (cuda:LOCAL_RANK); pass --device auto, cuda or cpu"),
        ("mps", "each takes its own CUDA device"),
        pytest.param(
            "cuda",
            "CUDA is not available",
            marks=pytest.mark.skipif(torch.cuda.is_available(), reason="a machine without CUDA"),
        ),
    ],
)
def test_a_device_several_processes_cannot_share_is_a_usage_error(device, message, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    source = write_image(tmp_path / "photo.png")

    assert main([str(source), "-o", str(tmp_path / "out"), "--device", device]) == 2
    assert message in capsys.readouterr().err


def test_a_broken_launcher_environment_is_a_usage_error(tmp_path, monkeypatch, capsys, no_loading):
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    source = write_image(tmp_path / "photo.png")

    assert main([str(source), "-o", str(tmp_path / "out"), "--device", "cpu"]) == 2
    assert "RANK=2 and WORLD_SIZE=2: RANK must be below it" in capsys.readouterr().err


MULTI_PROCESS_OPTIONS = [
    "--steps", "8", "--scale", "2", "--device", "cpu", "--dtype", "fp32",
    "--tile-size", "64", "--tile-overlap", "32", "--process-size", "64",
]  # fmt: skip


def start_cli(processes: int, args: list[str], cwd: Path) -> subprocess.Popen:
    """`dit4sr-upscale` alone, or `processes` of them started by torchrun (what
    `accelerate launch` runs), on the CPU. One thread each, so that every run computes with the same reductions."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = (
        ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] if processes > 1 else []
    )
    command = [sys.executable, *launcher, "-m", "diffusers_dit4sr.cli", *args]
    return subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def kill_all(process: subprocess.Popen) -> None:
    """`kill -9` for the process and every process it started (torchrun starts its workers in sessions of their
    own, so killing its process group would leave them running)."""
    family = [psutil.Process(process.pid), *psutil.Process(process.pid).children(recursive=True)]
    for member in family:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(family, timeout=60)
    process.communicate()


def finish(process: subprocess.Popen) -> tuple[int, str, str]:
    try:
        out, err = process.communicate(timeout=600)
    except subprocess.TimeoutExpired:
        kill_all(process)
        raise
    return process.returncode, out, err


@pytest.fixture(scope="module")
def many_inputs(tmp_path_factory, tiny_pipeline_dir, captioner_dir) -> tuple[Path, list[str]]:
    """Six images of two sizes and the options of every multi-process run (tiny pipeline and captioner)."""
    folder = tmp_path_factory.mktemp("six-images")
    for index in range(6):
        write_image(folder / "in" / f"img{index}.png", size=(40, 48) if index % 3 else (48, 40), seed=index)
    options = ["--model", str(tiny_pipeline_dir), *MULTI_PROCESS_OPTIONS]
    options += ["--caption-model", str(captioner_dir), "--caption-max-new-tokens", str(CAPTION_MAX_NEW_TOKENS)]
    return folder, options


@pytest.fixture(scope="module")
def one_process_outputs(many_inputs) -> dict[str, bytes]:
    folder, options = many_inputs
    code, out, err = finish(start_cli(1, ["in", "-o", "one", *options, "--quiet"], folder))
    assert code == 0, err
    return {path.name: path.read_bytes() for path in sorted((folder / "one").iterdir())}


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's CPU launch is tested on POSIX")
def test_two_processes_split_the_images_and_match_one_process_bitwise(many_inputs, one_process_outputs):
    folder, options = many_inputs
    code, out, err = finish(start_cli(2, ["in", "-o", "two", *options], folder))

    assert code == 0, err
    assert out.strip() == "6 upscaled, 0 skipped (exist), 0 failed; captions: 6 new, 0 reused, 0 failed"  # one line
    assert "6 images split among 2 processes, 3 for the main process" in err
    outputs = {path.name: path.read_bytes() for path in sorted((folder / "two").iterdir())}
    assert (
        sorted(outputs)
        == sorted(one_process_outputs)
        == sorted([f"img{i}{ext}" for i in range(6) for ext in (".png", ".txt")])
    )
    assert outputs == one_process_outputs  # images and captions: the split changes nothing


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's CPU launch is tested on POSIX")
def test_a_killed_two_process_run_resumes(many_inputs, one_process_outputs):
    folder, options = many_inputs
    output = folder / "killed"
    run = start_cli(2, ["in", "-o", "killed", *options, "--quiet"], folder)
    deadline = time.monotonic() + 600
    while not list(output.glob("*.png")) and run.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    kill_all(run)  # the launcher and both processes, mid-run
    done = {path.stem for path in output.glob("*.png")}
    captioned = {path.stem for path in output.glob("*.txt")}  # the other process may still have been captioning
    assert 0 < len(done) < 6, "the run was to be killed while it was upscaling"
    pending = {f"img{index}" for index in range(6)} - done

    code, out, err = finish(start_cli(2, ["in", "-o", "killed", *options, "--quiet"], folder))

    assert code == 0, err
    new, reused = len(pending - captioned), len(pending & captioned)
    assert out.strip() == (
        f"{len(pending)} upscaled, {len(done)} skipped (exist), 0 failed; "
        f"captions: {new} new, {reused} reused, 0 failed"
    )
    outputs = {path.name: path.read_bytes() for path in sorted(output.iterdir())}
    assert outputs == one_process_outputs  # nothing torn, nothing left over, every image as in one run


# --- Entry point -----------------------------------------------------------------------------------------------


def test_module_entry_point_prints_help():
    completed = subprocess.run(
        [sys.executable, "-m", "diffusers_dit4sr.cli", "--help"], capture_output=True, text=True, timeout=120
    )
    assert completed.returncode == 0, completed.stderr
    help_text = " ".join(completed.stdout.split())  # argparse wraps to the terminal's width
    assert help_text.startswith("usage: dit4sr-upscale")
    assert "--captions-dir" in help_text and "hf auth login" in help_text
    assert "--caption-model ID_OR_PATH" in help_text and "llava-hf/llava-1.5-13b-hf" in help_text


# --- Library messages in the command's terms ----------------------------------------------------------------------


def test_library_parameters_become_the_commands_options():
    terms = CommandLineTerms(build_parser())
    assert terms("`quantize='nf4-t5'`: no CUDA GPU") == "--quantize nf4-t5: no CUDA GPU"
    assert terms("try `batch_size=1`, a smaller `tile_size` or `cpu_offload=True`") == (
        "try --batch-size 1, a smaller --tile-size or --cpu-offload"
    )
    assert terms("try `Captioner(load_in_8bit=True)`, a smaller `Captioner(model)` or `Captioner(batch_size=1)`") == (
        "try --caption-8bit, a smaller --caption-model or --caption-batch-size 1"
    )
    assert terms("(`debug=True` for the traceback)") == "(--debug for the traceback)"
    # Names that are no option of this command stay as the library wrote them.
    assert terms("needs the `bitsandbytes` package: `pip install bitsandbytes`") == (
        "needs the `bitsandbytes` package: `pip install bitsandbytes`"
    )
    assert terms("`Pipeline(batch_size=1)` and `metric_options`") == "`Pipeline(batch_size=1)` and `metric_options`"


def test_a_library_error_names_the_option_on_the_command_line(tmp_path, capsys):
    image = tmp_path / "in.png"
    PIL.Image.new("RGB", (8, 8)).save(image)
    assert main([str(image), "--device", "cpu", "--cpu-offload", "-o", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "dit4sr-upscale: error: --cpu-offload moves models to a GPU while they run; it needs a GPU --device"
    )


def test_a_command_can_name_its_own_options_for_library_parameters():
    parser = argparse.ArgumentParser()
    parser.add_argument("--dataset_name")
    parser.add_argument("--max_samples")
    terms = CommandLineTerms(parser, aliases={"name": "dataset_name", "max_samples": "max_train_samples"})
    # An alias whose option this command lacks falls back to the option of the parameter's own name.
    assert terms("`name` has no column `image`; `max_samples` must be at least 1") == (
        "--dataset_name has no column `image`; --max_samples must be at least 1"
    )
