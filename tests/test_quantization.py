# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Quantization presets on the tiny pipeline: each preset that runs on a CPU end to end, against the unquantized
pipeline in the same dtype (bfloat16), plus the checks that refuse presets that cannot run."""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers.hooks import FirstBlockCacheConfig

from diffusers_dit4sr import StableDiffusion3SRPipeline
from diffusers_dit4sr import quantization as quant
from diffusers_dit4sr.quantization import (
    QUANTIZATION_PRESETS,
    check_quantization,
    pipeline_quantization_config,
    weight_bytes,
)

from .utils import pretend_installed

# Presets whose backends install and run on these CPUs (bitsandbytes quantizes only on CUDA through Diffusers).
CPU_PRESETS = ("int8", "float8", "int8-quanto")
# Relative L2 error of the 2-step tiny upscale to the unquantized bfloat16 pipeline; measured 1.2 % (int8), 1.9 % (float8), 1.2 % (quanto int8).
MAX_RELATIVE_ERROR = 0.03
DTYPE = torch.bfloat16


def upscale(pipe) -> torch.Tensor:
    image = PIL.Image.fromarray((np.random.default_rng(0).random((32, 32, 3)) * 255).astype(np.uint8))
    pipe.set_progress_bar_config(disable=True)
    return pipe(
        image=image,
        prompt="a cat",
        num_inference_steps=2,
        output_type="pt",
        generator=torch.Generator().manual_seed(0),
    ).images.float()


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    return ((output - reference).norm() / reference.norm()).item()


def linear_weight_elements(module: torch.nn.Module) -> int:
    return sum(layer.weight.numel() for layer in module.modules() if isinstance(layer, torch.nn.Linear))


@pytest.fixture(scope="module")
def reference(tiny_pipeline_dir):
    pipe = StableDiffusion3SRPipeline.from_pretrained(tiny_pipeline_dir, dtype=DTYPE)
    return pipe, upscale(pipe)


def test_module_imports_without_torch():
    path = Path(quant.__file__)
    code = (
        "import importlib.util, sys\n"
        f"spec = importlib.util.spec_from_file_location('quantization', {str(path)!r})\n"
        "module = sys.modules['quantization'] = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "assert 'torch' not in sys.modules, 'torch was imported'\n"
        "print(sorted(module.QUANTIZATION_PRESETS))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == str(sorted(QUANTIZATION_PRESETS))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"preset": "int4"}, "`preset` must be one of"),
        ({"preset": "int8", "components": ["vae"]}, "`components` must be a non-empty list"),
        ({"preset": "int8", "components": []}, "`components` must be a non-empty list"),
        ({"preset": "int8", "dtype": torch.float32}, "computes in bfloat16"),
    ],
)
def test_check_refuses_impossible_presets(kwargs, message):
    with pytest.raises(ValueError, match=message):
        check_quantization(**kwargs)


NF4_ON_THE_CPU = (
    "Quantization preset 'nf4-t5' needs a CUDA GPU (Diffusers quantizes with bitsandbytes only on CUDA); got device "
    "cpu."
)


@pytest.mark.parametrize("bitsandbytes", [True, False], ids=["with-bitsandbytes", "without-bitsandbytes"])
def test_nf4_on_a_cpu_names_the_missing_gpu_first_and_then_what_else_is_missing(bitsandbytes, monkeypatch):
    pretend_installed(monkeypatch, "bitsandbytes", bitsandbytes)
    with pytest.raises(ValueError) as error:
        check_quantization("nf4-t5", device="cpu")
    also = "" if bitsandbytes else " It also needs the `bitsandbytes` package: `pip install bitsandbytes`."
    assert str(error.value) == NF4_ON_THE_CPU + also


def test_every_problem_of_a_preset_is_in_its_one_line(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    pretend_installed(monkeypatch, "torchao", False)
    with pytest.raises(ValueError) as error:
        check_quantization("float8", device="cuda", dtype=torch.float16)
    assert str(error.value) == (
        "Quantization preset 'float8' needs a GPU of compute capability 8.9 or higher; cuda has 8.6. It also needs "
        "the `torchao` package: `pip install torchao`. It also computes in bfloat16 (torchao loads its layers so); "
        "got dtype torch.float16."
    )


def test_check_names_a_missing_package(monkeypatch):
    pretend_installed(monkeypatch, "optimum", False)
    with pytest.raises(ValueError, match=r"needs the `optimum-quanto` package: `pip install optimum-quanto`"):
        check_quantization("int8-quanto", device="cpu")


def test_check_refuses_float8_below_compute_capability_8_9(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (8, 6))
    with pytest.raises(ValueError, match=r"compute capability 8\.9 or higher; cuda has 8\.6"):
        check_quantization("float8", device="cuda")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: (9, 0))
    check_quantization("float8", device="cuda", dtype=torch.bfloat16)


def test_config_maps_components_to_backends():
    config = pipeline_quantization_config("int8", components=["transformer", "text_encoder"])
    assert sorted(config.quant_mapping) == ["text_encoder", "transformer"]
    assert type(config.quant_mapping["transformer"]).__module__.startswith("diffusers")
    assert type(config.quant_mapping["text_encoder"]).__module__.startswith("transformers")


@pytest.mark.skipif(
    importlib.util.find_spec("bitsandbytes") is None, reason="building a bitsandbytes config needs bitsandbytes"
)
def test_the_nf4_config_quantizes_t5_only():
    config = pipeline_quantization_config("nf4-t5")
    assert sorted(config.quant_mapping) == ["text_encoder_3"]
    assert config.quant_mapping["text_encoder_3"].bnb_4bit_quant_type == "nf4"


def test_a_config_of_a_missing_backend_names_its_package(monkeypatch):
    pretend_installed(monkeypatch, "bitsandbytes", False)
    with pytest.raises(ValueError, match=r"^Quantization preset 'nf4-t5' needs the `bitsandbytes` package"):
        pipeline_quantization_config("nf4-t5")


@pytest.mark.slow
@pytest.mark.parametrize("preset", CPU_PRESETS)
def test_preset_runs_end_to_end(preset, tiny_pipeline_dir, reference):
    check_quantization(preset, device="cpu", dtype=DTYPE)
    reference_pipe, reference_output = reference
    pipe = StableDiffusion3SRPipeline.from_pretrained(
        tiny_pipeline_dir, dtype=DTYPE, quantization_config=pipeline_quantization_config(preset)
    )
    output = upscale(pipe)
    error = relative_error(output, reference_output)
    print(f"{preset}: relative error {error:.4f}")
    assert 0 < error < MAX_RELATIVE_ERROR

    for name in QUANTIZATION_PRESETS[preset].components:
        quantized, full = getattr(pipe, name), getattr(reference_pipe, name)
        # Each linear weight element drops from 2 bytes (bfloat16) to 1; per-row scales and zero points add at most 8 bytes a row.
        saved = linear_weight_elements(full) * (DTYPE.itemsize - 1)
        scale_rows = sum(layer.out_features for layer in full.modules() if isinstance(layer, torch.nn.Linear))
        print(f"{preset} {name}: {weight_bytes(quantized)} bytes, unquantized {weight_bytes(full)}")
        assert weight_bytes(full) - saved <= weight_bytes(quantized) <= weight_bytes(full) - saved + 8 * scale_rows
    # The depthwise injection conv is not an `nn.Linear`: no backend converts it.
    conv = pipe.transformer.transformer_blocks[0].ff.control_conv
    assert type(conv.weight) is torch.nn.Parameter and conv.weight.dtype == DTYPE


def test_from_released_quantizes_the_transformer_and_t5(tiny_pipeline_dir, released_dit4sr_dir):
    pipe = StableDiffusion3SRPipeline.from_released(
        sd3_model=str(tiny_pipeline_dir),
        dit4sr_model=str(released_dit4sr_dir),
        dtype=DTYPE,
        quantization_config=pipeline_quantization_config("int8"),
    )
    assert type(pipe.transformer.transformer_blocks[0].attn.to_q_control.weight).__name__ == "Int8Tensor"
    assert type(pipe.text_encoder_3.encoder.block[0].layer[0].SelfAttention.q.weight).__name__ == "Int8Tensor"
    assert type(pipe.text_encoder.text_model.encoder.layers[0].self_attn.q_proj.weight) is torch.nn.Parameter
    with pytest.raises(ValueError, match="`fuse_lr_projections` needs full-precision weights; .* quantized"):
        pipe.transformer.fuse_lr_projections()


@pytest.mark.slow
def test_caching_hooks_and_regional_compile_run_quantized(tiny_pipeline_dir, reference):
    pipe = StableDiffusion3SRPipeline.from_pretrained(
        tiny_pipeline_dir,
        dtype=DTYPE,
        quantization_config=pipeline_quantization_config("int8", components=["transformer"]),
    )
    plain = upscale(pipe)
    pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=0.0))
    try:
        # Threshold 0 never reuses a cached residual: the hooks run, and the result is the uncached one.
        torch.testing.assert_close(upscale(pipe), plain)
    finally:
        pipe.transformer.disable_cache()
    torch._dynamo.reset()
    # `eager` traces the quantized tensors through Dynamo without spending minutes in Inductor on two cores.
    pipe.transformer.compile_repeated_blocks(backend="eager", fullgraph=True)
    torch.testing.assert_close(upscale(pipe), plain)
    torch._dynamo.reset()


@pytest.mark.slow
def test_torchao_pipeline_saves_and_loads_back(tiny_pipeline_dir, reference, tmp_path):
    pipe = StableDiffusion3SRPipeline.from_pretrained(
        tiny_pipeline_dir, dtype=DTYPE, quantization_config=pipeline_quantization_config("int8")
    )
    pipe.save_pretrained(tmp_path / "saved")
    loaded = StableDiffusion3SRPipeline.from_pretrained(tmp_path / "saved", dtype=DTYPE)
    for name in ("transformer", "text_encoder_3"):
        saved_weights = getattr(pipe, name).state_dict()
        loaded_weights = getattr(loaded, name).state_dict()
        assert saved_weights.keys() == loaded_weights.keys()
        for key, value in saved_weights.items():
            assert type(loaded_weights[key]) is type(value), key
            torch.testing.assert_close(loaded_weights[key].dequantize(), value.dequantize(), rtol=0, atol=0)
    assert relative_error(upscale(loaded), reference[1]) < MAX_RELATIVE_ERROR


def test_quanto_pipeline_refuses_to_save(tiny_pipeline_dir, tmp_path):
    pipe = StableDiffusion3SRPipeline.from_pretrained(
        tiny_pipeline_dir, dtype=DTYPE, quantization_config=pipeline_quantization_config("int8-quanto")
    )
    with pytest.raises(ValueError, match="quanto and is not serializable"):
        pipe.save_pretrained(tmp_path / "saved")
