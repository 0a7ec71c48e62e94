# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Getting models ready (`runtime`, `devices`): devices, dtypes, preparing a pipeline."""

import pytest
import torch

from diffusers_dit4sr import runtime
from diffusers_dit4sr.distributed import Processes
from diffusers_dit4sr.errors import one_line
from diffusers_dit4sr.runtime import prepare_pipeline
from diffusers_dit4sr.tiny import make_tiny_pipeline

from .utils import pretend_installed


def test_vae_tiling_only_for_vaes_with_real_sized_tiles():
    pipe = make_tiny_pipeline()
    prepare_pipeline(pipe, torch.device("cpu"))
    # The tiny VAE tiles like SD3.5's, above 1024 px.
    assert pipe.vae.use_tiling and runtime.vae_tile_size(pipe) == 1024

    pipe.vae.disable_tiling()
    pipe.vae.tile_sample_min_size = 32  # a tiny pipeline saved before: 32 px tiles would cut images into hundreds
    prepare_pipeline(pipe, torch.device("cpu"))
    assert not pipe.vae.use_tiling


@pytest.mark.parametrize(
    ("device", "expected"),
    [("cpu", "cpu"), ("auto", "cuda:1" if torch.cuda.device_count() >= 2 else "cpu")],
)
def test_each_process_takes_its_own_device(device, expected):
    assert runtime.resolve_device(device, Processes(index=1, count=2, local_index=1, local_count=2)) == torch.device(
        expected
    )


def test_devices_and_dtypes_are_checked_with_the_option_name():
    with pytest.raises(ValueError, match="^--device nowhere: "):
        runtime.resolve_device("nowhere", option="--device")
    with pytest.raises(ValueError, match="dtype must be one of bf16, fp16, fp32"):
        runtime.resolve_dtype("fp8", torch.device("cpu"))
    assert runtime.resolve_dtype(None, torch.device("cpu")) == torch.float32
    assert runtime.resolve_dtype("bf16", torch.device("cpu")) == torch.bfloat16


def test_one_line():
    assert one_line(ValueError("two\n  lines")) == "two lines"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(ValueError("x" * 400), max_length=300) == "x" * 297 + "..."


def test_a_quantization_preset_sets_the_default_dtype():
    cpu = torch.device("cpu")
    assert runtime.pipeline_dtype(None, cpu, "int8") == torch.bfloat16  # torchao's presets compute in bf16
    assert runtime.pipeline_dtype("fp32", cpu, "int8") == torch.float32  # an explicit dtype wins (and is refused)
    assert runtime.pipeline_dtype(None, cpu, "int8-quanto") == torch.float32  # quanto takes any: the device's default
    assert runtime.pipeline_dtype(None, cpu) == torch.float32


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": "nf4-t5"}, r"^`quantize='nf4-t5'`: Quantization preset 'nf4-t5' needs a CUDA GPU"),
        ({"quantize": "int8", "dtype": torch.float32}, r"^`quantize='int8'`: .* computes in bfloat16"),
        ({"quantize_components": ["transformer"]}, r"^`quantize_components` picks what `quantize` quantizes"),
        ({"variant": "q"}, r"^`variant` picks one of the released models; it cannot be combined with `model`"),
        ({"cpu_offload": True}, r"^`cpu_offload` moves models to a GPU while they run; it needs a GPU `device`"),
    ],
)
@pytest.mark.parametrize("bitsandbytes", [True, False], ids=["with-bitsandbytes", "without-bitsandbytes"])
def test_open_pipeline_refuses_options_that_cannot_run_before_loading(options, message, bitsandbytes, monkeypatch):
    pretend_installed(monkeypatch, "bitsandbytes", bitsandbytes)
    monkeypatch.setattr(runtime, "load_pipeline", lambda *args, **kwargs: pytest.fail("loaded"))
    with pytest.raises(ValueError, match=message):
        runtime.open_pipeline("a-folder", device=torch.device("cpu"), **options)
