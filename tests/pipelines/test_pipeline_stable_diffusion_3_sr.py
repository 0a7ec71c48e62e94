# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""StableDiffusion3SRPipeline on tiny offline components: sizes, inputs, tiling, prompts, options and errors."""

import inspect
import json
import math

import numpy as np
import PIL.Image
import pytest
import torch
import transformers.utils.logging
from accelerate.hooks import UserCpuOffloadHook
from diffusers import (
    FasterCacheConfig,
    FirstBlockCacheConfig,
    FlowMatchEulerDiscreteScheduler,
    FlowMatchHeunDiscreteScheduler,
    FlowMatchLCMScheduler,
    PyramidAttentionBroadcastConfig,
    SD3Transformer2DModel,
    StableDiffusion3Pipeline,
    UniPCMultistepScheduler,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback, SD3CFGCutoffCallback

from diffusers_dit4sr import StableDiffusion3SRPipeline
from diffusers_dit4sr.models import DiT4SRAttention, DiT4SRTransformerBlock
from diffusers_dit4sr.pipelines import DEFAULT_ADDED_PROMPT, DEFAULT_NEGATIVE_PROMPT
from diffusers_dit4sr.pipelines import pipeline_stable_diffusion_3_sr as pipeline_module
from diffusers_dit4sr.tiny import TINY_TRANSFORMER_CONFIG, make_tiny_pipeline

# MKL's float results depend on memory alignment (e.g. of memory-mapped weights), so results computed along
# different paths agree to round-off, not bitwise; the same call repeated is bitwise identical.
ROUND_OFF = {"rtol": 0, "atol": 1e-5}

# Small work: 64 px tiles (8 latents) with 32 px overlap; outputs below 64 px are processed at 64 px.
FAST = {"num_inference_steps": 2, "process_size": 64, "tile_size": 64, "tile_overlap": 32}


def random_image(height: int, width: int, seed: int = 0) -> PIL.Image.Image:
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)
    return PIL.Image.fromarray(pixels)


def upscale(pipe, image, seed: int = 0, **kwargs):
    options = {**FAST, "output_type": "pt", "generator": torch.Generator().manual_seed(seed), **kwargs}
    return pipe(image=image, **options).images


class CallSpy:
    """Records the arguments of every call of `cls.name` while installed."""

    def __init__(self, monkeypatch, cls, name):
        self.calls = []
        original = getattr(cls, name)

        def spy(*args, **kwargs):
            self.calls.append((args, kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(cls, name, spy)


class TensorRecorder(PipelineCallback):
    """A Diffusers callback object that asks for `tensor_inputs` and keeps a copy of what it gets at each step."""

    tensor_inputs = []

    def __init__(self, tensor_inputs: list[str]) -> None:
        super().__init__()
        self.tensor_inputs = tensor_inputs
        self.steps: list[int] = []
        self.seen: list[dict] = []

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        self.steps.append(step_index)
        self.seen.append(
            {
                name: value.clone() if isinstance(value, torch.Tensor) else [tensor.clone() for tensor in value]
                for name, value in callback_kwargs.items()
            }
        )
        return callback_kwargs


class ConditionalCutoff(PipelineCallback):
    """`SD3CFGCutoffCallback` for a prompt per image: at its cutoff step it keeps every image's conditional rows."""

    tensor_inputs = ["prompt_embeds", "pooled_prompt_embeds"]

    def callback_fn(self, pipeline, step_index, timestep, callback_kwargs):
        if step_index == self.config.cutoff_step_index:
            pipeline._guidance_scale = 0.0
            for name in self.tensor_inputs:
                callback_kwargs[name] = callback_kwargs[name].chunk(2)[1]
        return callback_kwargs


class TestOutputSize:
    @pytest.mark.parametrize(
        "height, width, factor",
        [(13, 21, 4.0), (16, 16, 4.0), (9, 30, 2.5), (25, 11, 1.0), (40, 24, 0.5), (7, 7, 3.3)],
    )
    def test_output_is_exactly_the_rounded_scaled_size(self, pipe, height, width, factor):
        (image,) = pipe(image=random_image(height, width), upscale=factor, **FAST).images
        assert image.size == (round(width * factor), round(height * factor))

    def test_large_image_is_tiled_and_keeps_its_size(self, pipe, monkeypatch):
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        (image,) = upscale(pipe, random_image(20, 36), upscale=4.0, num_inference_steps=1, tile_batch_size=4)
        assert image.shape == (3, 80, 144)
        # 80 x 144 px -> 10 x 18 latents -> 8-latent tiles with stride 4: 2 x 4 tiles, in 2 batches of 4.
        assert len(spy.calls) == 2
        assert all(kwargs["hidden_states"].shape == (8, 16, 8, 8) for _, kwargs in spy.calls)

    def test_image_that_fits_one_tile_is_not_tiled(self, pipe, monkeypatch):
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        upscale(pipe, random_image(12, 14), upscale=4.0, tile_size=128, tile_overlap=32)
        # 48 x 56 px -> processed at 64 x 75 -> padded 64 x 80 -> one 8 x 10 latent, guidance doubles the batch.
        assert [kwargs["hidden_states"].shape for _, kwargs in spy.calls] == [(2, 16, 8, 10)] * 2


class TestInputs:
    @pytest.mark.slow
    def test_input_types_give_the_same_image(self, pipe):
        image = random_image(11, 13)
        array = np.array(image)
        tensor = torch.from_numpy(array).permute(2, 0, 1).float() / 255
        expected = upscale(pipe, image)
        # 8-bit inputs are resized by PIL (uint8 rounding after each resize), float inputs by the same kernel in torch.
        for variant in (array, [image]):
            assert torch.equal(upscale(pipe, variant), expected)
        from_floats = upscale(pipe, tensor)
        for variant in (array.astype(np.float32) / 255, tensor[None]):
            assert torch.equal(upscale(pipe, variant), from_floats)
        assert not torch.equal(from_floats, expected)
        torch.testing.assert_close(from_floats, expected, rtol=0, atol=0.05)

    @pytest.mark.slow
    def test_grayscale_and_rgba_become_rgb(self, pipe):
        gray = random_image(11, 13).convert("L")
        as_rgb = upscale(pipe, gray.convert("RGB"))
        assert torch.equal(upscale(pipe, gray), as_rgb)
        rgba = random_image(11, 13)
        rgba.putalpha(128)
        assert torch.equal(upscale(pipe, rgba), upscale(pipe, rgba.convert("RGB")))

    def test_list_of_different_sizes(self, pipe):
        images = upscale(pipe, [random_image(10, 12), random_image(14, 9)], upscale=2.0)
        assert isinstance(images, list) and [tuple(image.shape) for image in images] == [(3, 20, 24), (3, 28, 18)]

    def test_generator_seed_and_latents(self, pipe):
        image = random_image(11, 13)
        first = upscale(pipe, image, seed=3)
        assert torch.equal(upscale(pipe, image, seed=3), first)
        assert not torch.equal(upscale(pipe, image, seed=4), first)
        # Explicit initial noise replaces the generator's noise; its shape is the padded latent grid.
        noise = torch.randn(1, 16, 8, 10, generator=torch.Generator().manual_seed(0))
        with_noise = upscale(pipe, image, seed=3, latents=noise)
        assert torch.equal(upscale(pipe, image, seed=3, latents=noise.clone()), with_noise)
        assert not torch.equal(upscale(pipe, image, seed=3, latents=-noise), with_noise)
        with pytest.raises(ValueError, match=r"`latents` must have shape \(1, 16, 8, 10\)"):
            upscale(pipe, image, latents=torch.randn(1, 16, 8, 8))

    def test_generator_list_is_per_image(self, pipe):
        images = [random_image(11, 13, seed=1), random_image(11, 13, seed=2)]
        generators = [torch.Generator().manual_seed(5), torch.Generator().manual_seed(6)]
        batch = pipe(image=images, generator=generators, output_type="pt", **FAST).images
        single = pipe(image=images[1], generator=torch.Generator().manual_seed(6), output_type="pt", **FAST).images
        torch.testing.assert_close(batch[1], single[0], **ROUND_OFF)


class TestOutputTypes:
    @pytest.mark.slow
    def test_types_agree(self, pipe):
        image = random_image(11, 13)
        pt = upscale(pipe, image, output_type="pt")
        array = upscale(pipe, image, output_type="np")
        (pil,) = upscale(pipe, image, output_type="pil")
        assert pt.shape == (1, 3, 44, 52) and pt.dtype == torch.float32
        assert 0 <= pt.min() and pt.max() <= 1
        assert array.shape == (1, 44, 52, 3) and np.array_equal(array[0], pt[0].permute(1, 2, 0).numpy())
        assert np.array_equal(np.asarray(pil), (array[0] * 255).round().astype(np.uint8))

    def test_latent_output_and_tuple(self, pipe):
        image = random_image(11, 13)
        (latents,) = pipe(image=image, output_type="latent", return_dict=False, **FAST)
        # 44 x 52 px output -> processed at 64 x 76 -> padded to 64 x 80 -> 8 x 10 latents.
        assert latents.shape == (1, 16, 8, 10)


class TestTiling:
    @pytest.mark.slow
    def test_batched_tiles_equal_one_at_a_time(self, pipe):
        image = random_image(20, 36)
        batched = upscale(pipe, image, tile_batch_size=8)
        one_by_one = upscale(pipe, image, tile_batch_size=1)
        torch.testing.assert_close(batched, one_by_one, rtol=0, atol=1e-5)

    @pytest.mark.slow
    def test_auto_tile_batch_halves_on_out_of_memory(self, pipe, monkeypatch):
        images = [random_image(20, 36), random_image(20, 36, seed=1)]  # 8 tiles each
        expected = upscale(pipe, images, tile_batch_size=2)
        original = type(pipe.transformer).forward
        batch_sizes = []

        def limited_memory(self, *args, **kwargs):
            rows = kwargs["hidden_states"].shape[0]
            batch_sizes.append(rows)
            if rows > 4:  # more than 2 tiles with their unconditional copies
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(type(pipe.transformer), "forward", limited_memory)
        result = upscale(pipe, images, tile_batch_size="auto")
        # The 16 tiles of both images first, then 8, then 4, then 2, which caps every later call.
        assert batch_sizes[:4] == [32, 16, 8, 4] and set(batch_sizes[4:]) == {4}
        assert len(batch_sizes) == 3 + 8 * FAST["num_inference_steps"]
        torch.testing.assert_close(result, expected, **ROUND_OFF)

    def test_tile_batch_plan_stays_in_the_call(self, pipe, monkeypatch):
        images = [random_image(20, 36), random_image(20, 36, seed=1)]  # 8 tiles each
        upscale(pipe, images, num_inference_steps=1)
        attributes = set(vars(pipe))
        original = type(pipe.transformer).forward
        batch_sizes = []

        def limited_memory(self, *args, **kwargs):
            batch_sizes.append(kwargs["hidden_states"].shape[0])
            if batch_sizes[-1] > 4:
                raise torch.OutOfMemoryError("CUDA out of memory (simulated)")
            return original(self, *args, **kwargs)

        with monkeypatch.context() as patch:
            patch.setattr(type(pipe.transformer), "forward", limited_memory)
            upscale(pipe, images, tile_batch_size="auto", num_inference_steps=1)
        assert batch_sizes[:4] == [32, 16, 8, 4]
        assert set(vars(pipe)) == attributes and not [name for name in attributes if "tile" in name]

        # The next call plans all 16 tiles at once again: the retry's cap did not outlive its call.
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        upscale(pipe, images, tile_batch_size="auto", num_inference_steps=1)
        assert [kwargs["hidden_states"].shape[0] for _, kwargs in spy.calls] == [32]
        assert set(vars(pipe)) == attributes

    def test_auto_tile_batch_takes_all_tiles_when_they_fit(self, pipe, monkeypatch):
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        upscale(pipe, random_image(20, 36), tile_batch_size="auto", num_inference_steps=1)
        assert [kwargs["hidden_states"].shape[0] for _, kwargs in spy.calls] == [16]

    @pytest.mark.parametrize("tiles_that_fit, rows_per_call", [(5, [8, 8]), (3, [6, 6, 4]), (0, [2] * 8)])
    def test_auto_tile_batch_fits_the_available_memory(self, pipe, monkeypatch, tiles_that_fit, rows_per_call):
        image = random_image(20, 36)  # 8 tiles of 8 x 8 latents
        # Two rows per tile (guidance), one tile's latent size, 77 CLIP + 77 T5 text tokens.
        tile_bytes = pipe.transformer.estimate_activation_memory(2, 8, 8, 154)
        estimates = CallSpy(monkeypatch, type(pipe.transformer), "estimate_activation_memory")
        upscale(pipe, image, num_inference_steps=1, max_sequence_length=77)
        assert not estimates.calls  # on the CPU the free memory is unknown: all tiles at once

        available = int((tiles_that_fit + 0.5) * tile_bytes / pipeline_module.TILE_MEMORY_FRACTION)
        monkeypatch.setattr(pipeline_module, "available_memory", lambda device: available)
        forwards = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        upscale(pipe, image, num_inference_steps=1, max_sequence_length=77)
        assert [args[1:] for args, _ in estimates.calls] == [(2, 8, 8, 154)]
        # The fitting tiles are spread evenly: 5 that fit give two calls of 4; at least one tile per call.
        assert [kwargs["hidden_states"].shape[0] for _, kwargs in forwards.calls] == rows_per_call

    def test_auto_tile_batch_counts_the_transformer_that_offload_will_load(self, monkeypatch):
        pipe = make_tiny_pipeline()
        pipe.enable_model_cpu_offload(device="cpu")
        pipe._guidance_scale = 7.0
        tile_bytes = pipe.transformer.estimate_activation_memory(2, 8, 8, 10)
        transformer_bytes = sum(t.numel() * t.element_size() for t in pipe.transformer.state_dict().values())
        available = 10 * tile_bytes + transformer_bytes
        monkeypatch.setattr(pipeline_module, "available_memory", lambda device: available)

        def fitting(device: str) -> int:
            return pipe._fitting_tile_batch_size(1000, 8, 8, 10, torch.device(device))

        def spread(fit: int) -> int:  # 1000 tiles over as few calls as `fit` allows, evenly
            return math.ceil(1000 / math.ceil(1000 / fit))

        fraction = pipeline_module.TILE_MEMORY_FRACTION
        # The transformer waits on the CPU: its weights will take part of the accelerator's memory.
        assert fitting("cuda:0") == spread(int(fraction * 10 * tile_bytes) // tile_bytes) == 9
        # Already on the execution device: nothing to count.
        assert fitting("cpu") == spread(int(fraction * available) // tile_bytes)
        assert fitting("cpu") > 9

    def test_available_memory_counts_free_and_cached_memory_within_the_process_fraction(self, monkeypatch):
        gib = 2**30
        fraction = 1.0
        monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device: (10 * gib, 80 * gib))
        monkeypatch.setattr(torch.cuda, "memory_reserved", lambda device: 3 * gib)
        monkeypatch.setattr(torch.cuda, "memory_allocated", lambda device: 2 * gib)
        monkeypatch.setattr(torch.cuda, "get_per_process_memory_fraction", lambda device: fraction)
        cuda = torch.device("cuda", 0)
        assert pipeline_module.available_memory(cuda) == 11 * gib  # free, plus cached but unused
        fraction = 0.1  # an 8 GiB card, as `torch.cuda.set_per_process_memory_fraction` simulates it
        assert pipeline_module.available_memory(cuda) == 6 * gib
        fraction = 0.01
        assert pipeline_module.available_memory(cuda) == 0
        assert pipeline_module.available_memory(torch.device("cpu")) is None

    def test_fixed_tile_batch_size_does_not_hide_out_of_memory(self, pipe, monkeypatch):
        def out_of_memory(self, *args, **kwargs):
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

        monkeypatch.setattr(type(pipe.transformer), "forward", out_of_memory)
        with pytest.raises(torch.OutOfMemoryError):
            upscale(pipe, random_image(20, 36), tile_batch_size=4)

    def test_tile_size_changes_tiling_not_size(self, pipe):
        image = random_image(20, 36)
        tiled = upscale(pipe, image, tile_size=64)
        untiled = upscale(pipe, image, tile_size=256)
        assert tiled.shape == untiled.shape
        assert not torch.equal(tiled, untiled)


class TestPrompts:
    def test_prompts_are_captions_plus_added_prompt(self, pipe, monkeypatch):
        spy = CallSpy(monkeypatch, StableDiffusion3Pipeline, "encode_prompt")
        upscale(pipe, [random_image(11, 13), random_image(11, 13)], prompt=["a cat", "a dog"])
        upscale(pipe, random_image(11, 13), prompt="a cat", added_prompt="")
        upscale(pipe, random_image(11, 13))
        prompts = [kwargs["prompt"] for _, kwargs in spy.calls]
        # As released: caption + " " + the quality prompt, which ends with a space; no caption leaves a leading space.
        assert DEFAULT_ADDED_PROMPT.endswith("skin pore detailing. ")
        assert prompts == [
            [f"a cat {DEFAULT_ADDED_PROMPT}", f"a dog {DEFAULT_ADDED_PROMPT}"],
            ["a cat"],
            [f" {DEFAULT_ADDED_PROMPT}"],
        ]
        assert spy.calls[0][1]["negative_prompt"] == DEFAULT_NEGATIVE_PROMPT
        # The released inference never set the T5 length: SD3's default, 256 tokens.
        assert spy.calls[0][1]["max_sequence_length"] == 256

    def test_text_is_encoded_once_per_call(self, pipe, monkeypatch):
        spy = CallSpy(monkeypatch, type(pipe.text_encoder), "forward")
        upscale(pipe, [random_image(20, 36), random_image(20, 36)], num_inference_steps=3, tile_batch_size=1)
        # Two CLIP encoders, each once for the prompts and once for the negative prompts.
        assert len(spy.calls) == 4

    def test_precomputed_embeddings_match_prompt(self, pipe):
        image = random_image(11, 13)
        from_prompt = upscale(pipe, image, prompt="a cat")
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(prompt="a cat")
        assert embeds.shape[1] == 77 + 256
        from_embeds = upscale(
            pipe,
            image,
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            negative_prompt_embeds=negative,
            negative_pooled_prompt_embeds=negative_pooled,
        )
        torch.testing.assert_close(from_embeds, from_prompt, **ROUND_OFF)
        # Embeddings of the bare caption are another prompt: the added prompt is part of `encode_prompt`'s result.
        bare, _, bare_pooled, _ = pipe.encode_prompt(prompt="a cat", added_prompt="")
        assert not torch.allclose(bare, embeds)

    def test_prompt_changes_result(self, pipe):
        image = random_image(11, 13)
        assert not torch.equal(upscale(pipe, image, prompt="a cat"), upscale(pipe, image, prompt="a dog"))

    def test_without_t5(self):
        pipe = make_tiny_pipeline(with_t5=False)
        pipe.set_progress_bar_config(disable=True)
        (image,) = upscale(pipe, random_image(11, 13))
        assert image.shape == (3, 44, 52) and torch.isfinite(image).all()


class TestOptions:
    def test_strength_starts_from_the_noised_lr_latent(self, pipe, monkeypatch):
        image = random_image(11, 13)
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        partial = upscale(pipe, image, num_inference_steps=4, strength=0.5)
        assert len(spy.calls) == 2
        assert spy.calls[0][1]["timestep"][0] < 1000 * 0.9
        assert not torch.equal(partial, upscale(pipe, image, num_inference_steps=4))

    def test_guidance_scale_one_disables_guidance(self, pipe, monkeypatch):
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        upscale(pipe, random_image(11, 13), guidance_scale=1.0, num_inference_steps=1)
        upscale(pipe, random_image(11, 13), guidance_scale=8.0, num_inference_steps=1)
        # Two tiles per transformer call; guidance adds the unconditional copies.
        assert [kwargs["hidden_states"].shape[0] for _, kwargs in spy.calls] == [2, 4]

    def test_adain_color_fix_matches_lr_statistics(self, pipe):
        image = random_image(16, 16)
        reference = torch.nn.functional.interpolate(
            torch.from_numpy(np.array(image)).permute(2, 0, 1)[None].float() / 255, size=(64, 64), mode="bicubic"
        ).clamp(0, 1)
        fixed = upscale(pipe, image, color_fix="adain")
        raw = upscale(pipe, image, color_fix=None)
        mean_error = (fixed.mean(dim=(-2, -1)) - reference.mean(dim=(-2, -1))).abs().max()
        raw_error = (raw.mean(dim=(-2, -1)) - reference.mean(dim=(-2, -1))).abs().max()
        assert mean_error < 0.02 < raw_error

    def test_lr_injection_scale_changes_result(self, pipe):
        image = random_image(11, 13)
        assert not torch.equal(upscale(pipe, image), upscale(pipe, image, lr_injection_scale=1.0))

    def test_first_block_cache_reduces_computed_blocks(self, pipe, monkeypatch):
        image = random_image(20, 36)
        spy = CallSpy(monkeypatch, DiT4SRTransformerBlock, "forward")
        upscale(pipe, image, num_inference_steps=4)
        uncached = len(spy.calls)
        spy.calls.clear()
        pipe.transformer.enable_cache(FirstBlockCacheConfig(threshold=1e6))
        try:
            cached = upscale(pipe, image, num_inference_steps=4)
        finally:
            pipe.transformer.disable_cache()
        assert torch.isfinite(cached).all()
        num_layers = pipe.transformer.config.num_layers
        # Each tile batch has its own cache: full first step, then only its first block.
        assert len(spy.calls) == uncached // 4 + 3 * uncached // 4 // num_layers

    @staticmethod
    def upscale_with_cache(monkeypatch, make_config) -> tuple[torch.Tensor, torch.Tensor, int, int]:
        """(plain, cached) results of a 4-step guided upscale and their attention calls; `make_config(pipe)` builds
        the cache config, configured the Diffusers way (the hook asks the pipeline for the timestep being denoised)."""
        pipe = make_tiny_pipeline()  # hooks keep the forward they wrapped: a pipeline of its own
        pipe.set_progress_bar_config(disable=True)
        image = random_image(11, 13)
        spy = CallSpy(monkeypatch, DiT4SRAttention, "forward")
        plain = upscale(pipe, image, num_inference_steps=4)
        plain_calls = len(spy.calls)
        spy.calls.clear()
        pipe.transformer.enable_cache(make_config(pipe))
        try:
            cached = upscale(pipe, image, num_inference_steps=4)
        finally:
            pipe.transformer.disable_cache()
        return plain, cached, plain_calls, len(spy.calls)

    def test_pyramid_attention_broadcast_reads_current_timestep(self, monkeypatch):
        plain, cached, plain_calls, cached_calls = self.upscale_with_cache(
            monkeypatch,
            lambda pipe: PyramidAttentionBroadcastConfig(
                spatial_attention_block_skip_range=2,
                spatial_attention_timestep_skip_range=(-1, 1001),
                current_timestep_callback=lambda: pipe.current_timestep,
            ),
        )
        assert cached_calls == plain_calls // 2  # every other step reuses the attention outputs
        torch.testing.assert_close(cached, plain, rtol=0, atol=0.1)
        assert not torch.equal(cached, plain)

    def test_faster_cache_with_guidance(self, monkeypatch):
        # FasterCache halves the batch-carrying inputs when it skips the unconditional branch.
        plain, cached, plain_calls, cached_calls = self.upscale_with_cache(
            monkeypatch,
            lambda pipe: FasterCacheConfig(
                spatial_attention_block_skip_range=2,
                spatial_attention_timestep_skip_range=(-1, 1001),
                unconditional_batch_skip_range=2,
                attention_weight_callback=lambda _: 0.5,
                current_timestep_callback=lambda: pipe.current_timestep,
                is_guidance_distilled=False,
                tensor_format="BCHW",
            ),
        )
        assert plain_calls // 2 <= cached_calls < plain_calls
        torch.testing.assert_close(cached, plain, rtol=0, atol=0.1)

    def test_vae_tiling(self, monkeypatch):
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        image = random_image(30, 30)
        plain = upscale(pipe, image, upscale=2.0, process_size=0)
        # The tiny VAE tiles like SD3.5's, above 1024 px: 32 px tiles make a 60 px image take the tiled path.
        pipe.vae.tile_sample_min_size, pipe.vae.tile_latent_min_size = 32, 4
        encodes = CallSpy(monkeypatch, type(pipe.vae), "_tiled_encode")
        decodes = CallSpy(monkeypatch, type(pipe.vae), "tiled_decode")
        pipe.enable_vae_tiling()
        tiled = upscale(pipe, image, upscale=2.0, process_size=0)
        assert len(encodes.calls) == 1 and len(decodes.calls) == 1
        assert tiled.shape == plain.shape == (1, 3, 60, 60) and torch.isfinite(tiled).all()
        assert not torch.equal(tiled, plain)  # tiles blended at their seams

    @pytest.mark.parametrize("scheduler_cls", [FlowMatchHeunDiscreteScheduler, FlowMatchLCMScheduler])
    def test_other_flow_matching_schedulers(self, scheduler_cls, monkeypatch):
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        (image,) = upscale(pipe, random_image(12, 14), tile_size=128, num_inference_steps=3)
        assert image.shape == (3, 48, 56) and torch.isfinite(image).all()
        # Heun evaluates the model twice per step but once on the last: 2 * 3 - 1 calls.
        assert len(spy.calls) == (5 if scheduler_cls is FlowMatchHeunDiscreteScheduler else 3)
        (partial,) = upscale(pipe, random_image(12, 14), tile_size=128, strength=0.5)
        assert torch.isfinite(partial).all()

    def test_strength_needs_scale_noise(self):
        pipe = make_tiny_pipeline()
        pipe.scheduler = UniPCMultistepScheduler(
            use_flow_sigmas=True, prediction_type="flow_prediction", flow_shift=3.0
        )
        with pytest.raises(ValueError, match="scale_noise"):
            upscale(pipe, random_image(11, 13), strength=0.5)

    def test_model_cpu_offload(self):
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        assert set(pipe.model_cpu_offload_seq.split("->")) <= set(pipe.components)
        image = random_image(11, 13)
        expected = upscale(pipe, image)
        # On a CPU-only machine the offload hooks move modules to the CPU itself: same result, hooks exercised.
        pipe.enable_model_cpu_offload(device="cpu")
        assert torch.equal(upscale(pipe, image), expected)

    def test_model_cpu_offload_unloads_the_text_encoders_before_the_vae_encode(self, monkeypatch):
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        pipe.enable_model_cpu_offload(device="cpu")
        names = {id(module): name for name, module in pipe.components.items()}
        events = []
        original_offload = UserCpuOffloadHook.offload
        monkeypatch.setattr(
            UserCpuOffloadHook,
            "offload",
            lambda hook: (events.append(f"offload {names[id(hook.model)]}"), original_offload(hook))[1],
        )
        original_encode = pipe.vae.encode
        monkeypatch.setattr(
            pipe.vae,
            "encode",
            lambda *args, **kwargs: (events.append("vae.encode"), original_encode(*args, **kwargs))[1],
        )
        upscale(pipe, random_image(11, 13), num_inference_steps=1)
        # The chain would unload T5 only when the transformer starts, after the VAE encode of the LR image.
        before_encode = events[: events.index("vae.encode")]
        assert {"offload text_encoder", "offload text_encoder_2", "offload text_encoder_3"} <= set(before_encode)


class TestCrossImageBatching:
    """The tiles of all images of a call share one queue; results equal one call per image."""

    # Without the process-size enlargement: 10 x 18 latents (8 tiles of 8 x 8), 6 x 8 and 4 x 16 (one tile each).
    IMAGES = ((20, 36, 0), (11, 13, 1), (8, 32, 2))

    def images(self):
        return [random_image(height, width, seed) for height, width, seed in self.IMAGES]

    def one_call_per_image(self, pipe, prompts, **kwargs):
        return [
            upscale(pipe, image, prompt=prompt, generator=torch.Generator().manual_seed(index), **kwargs)[0]
            for index, (image, prompt) in enumerate(zip(self.images(), prompts, strict=True))
        ]

    @pytest.mark.parametrize("guidance_scale", [8.0, 1.0])
    def test_batched_images_equal_one_call_per_image(self, pipe, monkeypatch, guidance_scale):
        prompts = ["a cat", "a dog", "a red brick house"]
        options = {"guidance_scale": guidance_scale, "process_size": 0}
        expected = self.one_call_per_image(pipe, prompts, **options)
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        generators = [torch.Generator().manual_seed(index) for index in range(3)]
        batched = upscale(pipe, self.images(), prompt=prompts, generator=generators, **options)
        assert [tuple(image.shape) for image in batched] == [(3, 80, 144), (3, 44, 52), (3, 32, 128)]
        for actual, single in zip(batched, expected, strict=True):
            torch.testing.assert_close(actual, single, **ROUND_OFF)
        # Per step, one call per tile size: the first image's 8 tiles, then each smaller image's own size.
        rows = 2 if guidance_scale > 1 else 1
        steps = FAST["num_inference_steps"]
        shapes = [tuple(kwargs["hidden_states"].shape) for _, kwargs in spy.calls]
        assert shapes == [(rows * 8, 16, 8, 8), (rows, 16, 6, 8), (rows, 16, 4, 16)] * steps

    def test_fixed_tile_batches_span_images(self, pipe, monkeypatch):
        images = [random_image(20, 36), random_image(20, 36, seed=1)]  # 8 tiles each
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        upscale(pipe, images, tile_batch_size=6, num_inference_steps=1)
        assert [kwargs["hidden_states"].shape[0] for _, kwargs in spy.calls] == [12, 12, 8]

    @pytest.mark.parametrize("scheduler_cls", [FlowMatchEulerDiscreteScheduler, FlowMatchHeunDiscreteScheduler])
    def test_stateful_schedulers_step_once_per_timestep(self, scheduler_cls):
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
        prompts = ["a cat", "a dog", "a red brick house"]
        options = {"num_inference_steps": 3, "process_size": 0}
        expected = self.one_call_per_image(pipe, prompts, **options)
        generators = [torch.Generator().manual_seed(index) for index in range(3)]
        batched = upscale(pipe, self.images(), prompt=prompts, generator=generators, **options)
        for actual, single in zip(batched, expected, strict=True):
            torch.testing.assert_close(actual, single, **ROUND_OFF)

    def test_images_with_different_schedules_take_each_step_together(self):
        # A scheduler that shifts its schedule by the image size: the 8 x 8 tiles of the first and third image share
        # one schedule, the second image's 6 x 8 latent another; the callback still runs once per step.
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, use_dynamic_shifting=True)
        prompts = ["a cat", "a dog", "a red brick house"]
        expected = self.one_call_per_image(pipe, prompts, process_size=0)
        seen = []

        def record(pipeline, step, timestep, tensors):
            seen.append((step, timestep.clone(), pipeline.current_timestep))
            return {}

        generators = [torch.Generator().manual_seed(index) for index in range(3)]
        batched = upscale(
            pipe, self.images(), prompt=prompts, generator=generators, process_size=0, callback_on_step_end=record
        )
        assert [step for step, _, _ in seen] == list(range(FAST["num_inference_steps"]))
        for _, timestep, current in seen:
            assert timestep.shape == (3,) and timestep[0] == timestep[2]
            assert current is not None and torch.equal(current, timestep)
        assert seen[-1][1][1] != seen[-1][1][0]  # both schedules start at 1000, then differ
        for actual, single in zip(batched, expected, strict=True):
            torch.testing.assert_close(actual, single, **ROUND_OFF)


class TestCallbacks:
    """`callback_on_step_end` follows Diffusers' contract: once per step, for all images, with Diffusers' callbacks."""

    # Latents 10 x 18 (8 tiles of 8 x 8) and 8 x 10 (2 tiles), at the process size 64.
    IMAGES = ((20, 36, 0), (11, 13, 1))
    ALL_TENSORS = ["latents", "lr_latents", "prompt_embeds", "pooled_prompt_embeds"]
    CUTOFF = 1

    def images(self):
        return [random_image(height, width, seed) for height, width, seed in self.IMAGES]

    def test_called_once_per_step_with_every_image(self, pipe):
        recorder = TensorRecorder(self.ALL_TENSORS)
        latents = upscale(
            pipe,
            self.images(),
            num_images_per_prompt=2,
            num_inference_steps=3,
            output_type="latent",
            callback_on_step_end=recorder,
        )
        assert recorder.steps == [0, 1, 2] and pipe.num_timesteps == 3
        # Whole images, one per output image (image-major), as a list since their sizes differ; text rows in
        # Diffusers' layout: the 4 unconditional rows, then the 4 conditional ones.
        seen = recorder.seen[-1]
        for name in ("latents", "lr_latents"):
            assert [tuple(tensor.shape) for tensor in seen[name]] == [(16, 10, 18)] * 2 + [(16, 8, 10)] * 2
        tokens = pipe.tokenizer_max_length + 256
        assert seen["prompt_embeds"].shape == (8, tokens, 32) and seen["pooled_prompt_embeds"].shape == (8, 64)
        negative, positive = seen["prompt_embeds"].chunk(2)
        assert torch.equal(negative[0], negative[3]) and not torch.equal(negative[0], positive[0])
        for final, last_step in zip(latents, seen["latents"], strict=True):
            assert torch.equal(final, last_step)  # the latents after the step, the last step's are the result

    def test_images_of_one_size_get_stacked_tensors(self, pipe):
        recorder = TensorRecorder(["latents", "lr_latents"])
        images = [random_image(20, 36), random_image(20, 36, seed=1)]
        latents = upscale(pipe, images, output_type="latent", guidance_scale=1.0, callback_on_step_end=recorder)
        assert recorder.seen[-1]["latents"].shape == recorder.seen[-1]["lr_latents"].shape == (2, 16, 10, 18)
        assert torch.equal(recorder.seen[-1]["latents"], latents)

    @pytest.mark.parametrize(
        "scheduler_cls, strength, steps",
        [
            (FlowMatchEulerDiscreteScheduler, 1.0, 4),
            (FlowMatchEulerDiscreteScheduler, 0.5, 2),  # the scheduler's steps of the remaining half
            (FlowMatchHeunDiscreteScheduler, 1.0, 7),  # second order: 2 * 4 - 1 timesteps
        ],
    )
    def test_step_count_is_the_schedulers(self, scheduler_cls, strength, steps):
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
        recorder = TensorRecorder([])
        upscale(pipe, self.images(), num_inference_steps=4, strength=strength, callback_on_step_end=recorder)
        assert recorder.steps == list(range(steps)) and pipe.num_timesteps == steps

    def test_a_pipeline_callbacks_tensor_inputs_are_honoured(self, pipe):
        recorder = TensorRecorder(["lr_latents", "pooled_prompt_embeds"])
        upscale(pipe, random_image(11, 13), callback_on_step_end=recorder)  # the default `["latents"]` is not used
        assert [sorted(seen) for seen in recorder.seen] == [["lr_latents", "pooled_prompt_embeds"]] * 2

    def test_latents_replacements_apply_per_image(self, pipe):
        def zero_second_image(pipeline, step, timestep, tensors):
            if step == pipeline.num_timesteps - 1:
                return {"latents": [tensors["latents"][0], torch.zeros_like(tensors["latents"][1])]}
            return {}

        latents = upscale(pipe, self.images(), output_type="latent", callback_on_step_end=zero_second_image)
        assert latents[1].abs().sum() == 0 and latents[0].abs().sum() > 0

        def zero_first_image(pipeline, step, timestep, tensors):
            return {"latents": tensors["latents"] * torch.tensor([0.0, 1.0]).view(2, 1, 1, 1)}

        images = [random_image(20, 36), random_image(20, 36, seed=1)]
        latents = upscale(pipe, images, output_type="latent", callback_on_step_end=zero_first_image)
        assert latents[0].abs().sum() == 0 and latents[1].abs().sum() > 0

    @pytest.mark.parametrize(
        "cutoff, prompt, num_images_per_prompt",
        [
            (SD3CFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=CUTOFF), "a red brick house", 2),
            (ConditionalCutoff(cutoff_step_ratio=None, cutoff_step_index=CUTOFF), ["a cat", "a dog"], 1),
        ],
    )
    def test_cfg_cutoff(self, pipe, monkeypatch, cutoff, prompt, num_images_per_prompt):
        options = {
            "prompt": prompt,
            "num_images_per_prompt": num_images_per_prompt,
            "num_inference_steps": 4,
            "output_type": "latent",
        }
        guided = TensorRecorder(["latents"])
        expected = upscale(pipe, self.images(), callback_on_step_end=guided, **options)
        recorder = TensorRecorder(["latents"])
        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        cut = upscale(pipe, self.images(), callback_on_step_end=MultiPipelineCallbacks([cutoff, recorder]), **options)
        assert pipe.guidance_scale == 0.0 and not pipe.do_classifier_free_guidance

        # The same latents up to the cutoff step, other latents after it.
        for step, (before, after) in enumerate(zip(guided.seen, recorder.seen, strict=True)):
            same = [torch.equal(a, b) for a, b in zip(before["latents"], after["latents"], strict=True)]
            assert all(same) if step <= self.CUTOFF else not any(same)
        assert not any(torch.equal(a, b) for a, b in zip(cut, expected, strict=True))

        # After the cutoff the transformer runs on the conditional rows alone: per step one call for the 8 + 2 tiles
        # of each image's outputs, each tile with its own image's text rows.
        tiles = (8 + 2) * num_images_per_prompt
        rows = [
            (kwargs["hidden_states"].shape[0], kwargs["encoder_hidden_states"].shape[0]) for _, kwargs in spy.calls
        ]
        assert rows == [(2 * tiles, 2 * tiles)] * (self.CUTOFF + 1) + [(tiles, tiles)] * (3 - self.CUTOFF)

        # Exactly a run whose guidance is off after the cutoff step: off from the start, with the guided latents of
        # the cutoff step put back then.
        def resume(pipeline, step, timestep, tensors):
            return {"latents": guided.seen[self.CUTOFF]["latents"]} if step == self.CUTOFF else {}

        unguided = upscale(pipe, self.images(), guidance_scale=1.0, callback_on_step_end=resume, **options)
        for actual, reference in zip(cut, unguided, strict=True):
            torch.testing.assert_close(actual, reference, **ROUND_OFF)

    def test_cfg_cutoff_runs_the_transformer_as_stable_diffusion_3(self, pipe, monkeypatch):
        sd3 = StableDiffusion3Pipeline(
            transformer=SD3Transformer2DModel(**TINY_TRANSFORMER_CONFIG),
            scheduler=FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config),
            **{name: getattr(pipe, name) for name in pipe.components if name not in ("transformer", "scheduler")},
        )
        sd3.set_progress_bar_config(disable=True)
        cutoff = SD3CFGCutoffCallback(cutoff_step_ratio=0.5)  # after step int(4 * 0.5) = 2
        rows = {}
        for pipeline in (sd3, pipe):
            spy = CallSpy(monkeypatch, type(pipeline.transformer), "forward")
            if pipeline is sd3:
                sd3(prompt="a cat", height=32, width=32, num_inference_steps=4, callback_on_step_end=cutoff)
            else:
                upscale(pipe, random_image(8, 8), prompt="a cat", num_inference_steps=4, callback_on_step_end=cutoff)
            rows[pipeline is sd3] = [
                (kwargs["hidden_states"].shape[0], kwargs["encoder_hidden_states"].shape[0]) for _, kwargs in spy.calls
            ]
            assert pipeline.guidance_scale == 0.0
        assert rows[True] == rows[False] == [(2, 2)] * 3 + [(1, 1)]

    def test_guidance_turned_off_drops_the_unconditional_rows_left_in_place(self, pipe):
        cutoff = SD3CFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=self.CUTOFF)
        expected = upscale(pipe, self.images(), num_inference_steps=3, callback_on_step_end=cutoff)

        def guidance_off(pipeline, step, timestep, tensors):
            if step == self.CUTOFF:
                pipeline._guidance_scale = 0.0
            return {}

        actual = upscale(pipe, self.images(), num_inference_steps=3, callback_on_step_end=guidance_off)
        for image, reference in zip(actual, expected, strict=True):
            torch.testing.assert_close(image, reference, **ROUND_OFF)

    def test_one_conditional_row_for_different_prompts_is_refused(self, pipe):
        cutoff = SD3CFGCutoffCallback(cutoff_step_ratio=None, cutoff_step_index=0)
        with pytest.raises(ValueError, match="1 conditional row of `prompt_embeds` for images with different prompts"):
            upscale(pipe, self.images(), prompt=["a cat", "a dog"], callback_on_step_end=cutoff)

    def test_turning_guidance_on_needs_unconditional_rows(self, pipe):
        def guidance_on(pipeline, step, timestep, tensors):
            pipeline._guidance_scale = 8.0
            return {}

        with pytest.raises(ValueError, match="turned classifier-free guidance on"):
            upscale(pipe, random_image(11, 13), guidance_scale=1.0, callback_on_step_end=guidance_on)

    @pytest.mark.parametrize(
        "replacement, match",
        [
            ({"latents": torch.zeros(1, 16, 8, 10)}, r"returned `latents` of \(1, 16, 8, 10\); expected a list of 2"),
            ({"lr_latents": [torch.zeros(16, 10, 18)]}, r"`lr_latents` of list; expected a list of 2 tensors"),
            (
                {"prompt_embeds": torch.zeros(3, 333, 32)},
                r"`prompt_embeds` from `callback_on_step_end` has batch size 3",
            ),
            ({"pooled_prompt_embeds": torch.zeros(2, 63)}, r"must have shape \(batch, 64\)"),
        ],
    )
    def test_bad_replacements_are_named(self, pipe, replacement, match):
        with pytest.raises((ValueError, TypeError), match=match):
            upscale(pipe, self.images(), callback_on_step_end=lambda *args: replacement)

    def test_interrupt_stops_every_image_after_the_step(self, pipe, monkeypatch):
        steps = []

        def stop_after_step_1(pipeline, step, timestep, tensors):
            steps.append(step)
            pipeline._interrupt = step == 1
            return {}

        spy = CallSpy(monkeypatch, type(pipe.transformer), "forward")
        upscale(
            pipe, self.images(), num_images_per_prompt=2, num_inference_steps=4, callback_on_step_end=stop_after_step_1
        )
        assert steps == [0, 1] and len(spy.calls) == 2  # one call for all tiles per step
        assert pipe.interrupt and pipe.num_timesteps == 4


class TestDiffusersConformance:
    """Our versions of the Diffusers pipeline-tester checks that the pipeline used to fail, each named after it."""

    def test_encode_prompt_works_in_isolation(self, pipe):
        # Diffusers' recipe: encode with a pipeline that has only the text encoders, passing just what `__call__`
        # was given, then denoise with a pipeline that has none; the image must equal a plain call's.
        components = dict(pipe.components)
        text_only = StableDiffusion3SRPipeline(
            **{
                name: (module if "text" in name or "tokenizer" in name else None)
                for name, module in components.items()
            }
        )
        embeddings = dict(
            zip(
                ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds"),
                text_only.encode_prompt(prompt="a red brick house"),
                strict=True,
            )
        )
        no_text = StableDiffusion3SRPipeline(
            **{
                name: (None if "text" in name or "tokenizer" in name else module)
                for name, module in components.items()
            }
        )
        no_text.set_progress_bar_config(disable=True)
        image = random_image(11, 13)
        from_embeddings = upscale(no_text, image, negative_prompt=None, **embeddings)
        torch.testing.assert_close(from_embeddings, upscale(pipe, image, prompt="a red brick house"), **ROUND_OFF)

    def test_encode_prompt_is_inference_only_and_equals_the_calls_embeddings(self, pipe):
        # As docs/usage.md shows it: outside `torch.no_grad()`. With autograd on, the text encoders used to run other
        # kernels than in `__call__` (3.9e-6 apart) and kept their activations.
        encoded = pipe.encode_prompt(prompt="a red brick house")
        assert not any(tensor.requires_grad for tensor in encoded)
        with torch.no_grad():
            in_call = pipe.encode_prompt(prompt="a red brick house")
        for tensor, expected in zip(encoded, in_call, strict=True):
            assert torch.equal(tensor, expected)
        names = ("prompt_embeds", "negative_prompt_embeds", "pooled_prompt_embeds", "negative_pooled_prompt_embeds")
        image = random_image(11, 13)
        from_embeddings = upscale(pipe, image, **dict(zip(names, encoded, strict=True)))
        assert torch.equal(from_embeddings, upscale(pipe, image, prompt="a red brick house"))

    def test_encode_prompt_defaults_are_the_pipelines(self):
        call = inspect.signature(StableDiffusion3SRPipeline.__call__).parameters
        encode = inspect.signature(StableDiffusion3SRPipeline.encode_prompt).parameters
        for name in ("negative_prompt", "max_sequence_length", "added_prompt"):
            assert encode[name].default == call[name].default
        # Same arguments, in the same order, as SD3's, and all of them optional.
        sd3 = list(inspect.signature(StableDiffusion3Pipeline.encode_prompt).parameters)
        assert list(encode)[: len(sd3)] == sd3
        assert all(parameter.default is not inspect.Parameter.empty for parameter in list(encode.values())[1:])

    def test_pipeline_call_signature(self):
        parameters = inspect.signature(StableDiffusion3SRPipeline.__call__).parameters
        for name in ("num_inference_steps", "num_images_per_prompt", "generator", "latents", "output_type"):
            assert parameters[name].default is not inspect.Parameter.empty, name
        for name in (
            "image",
            "prompt",
            "negative_prompt",
            "prompt_embeds",
            "negative_prompt_embeds",
            "guidance_scale",
        ):
            assert name in parameters

    def test_num_images_per_prompt(self, pipe):
        images = [random_image(11, 13, seed=1), random_image(11, 13, seed=2)]
        generators = [torch.Generator().manual_seed(seed) for seed in range(4)]
        samples = upscale(pipe, images, prompt=["a cat", "a dog"], num_images_per_prompt=2, generator=generators)
        assert samples.shape == (4, 3, 44, 52)
        # Image-major: output n is sample n % 2 of image n // 2, equal to a call on that image with its generator.
        for index in (1, 2):
            single = pipe(
                image=images[index // 2],
                prompt=["a cat", "a dog"][index // 2],
                generator=torch.Generator().manual_seed(index),
                output_type="pt",
                **FAST,
            ).images
            torch.testing.assert_close(samples[index], single[0], **ROUND_OFF)
        assert not torch.allclose(samples[0], samples[1])
        # A shared generator: the samples differ and equal passing the image twice.
        shared = upscale(pipe, images[0], num_images_per_prompt=2, seed=7)
        assert shared.shape == (2, 3, 44, 52) and not torch.allclose(shared[0], shared[1])
        torch.testing.assert_close(shared, upscale(pipe, [images[0], images[0]], seed=7), **ROUND_OFF)
        with pytest.raises(ValueError, match="4 output images"):
            upscale(pipe, images, num_images_per_prompt=2, generator=generators[:2])
        with pytest.raises(ValueError, match="num_images_per_prompt"):
            upscale(pipe, images[0], num_images_per_prompt=0)

    def test_num_images_per_prompt_with_embeddings_per_output_image(self, pipe):
        image = random_image(11, 13)
        embeds, negative, pooled, negative_pooled = pipe.encode_prompt(prompt=["a cat", "a dog"])
        samples = upscale(
            pipe,
            image,
            num_images_per_prompt=2,
            prompt_embeds=embeds,
            pooled_prompt_embeds=pooled,
            negative_prompt_embeds=negative,
            negative_pooled_prompt_embeds=negative_pooled,
            generator=[torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)],
        )
        torch.testing.assert_close(samples[1], upscale(pipe, image, prompt="a dog")[0], **ROUND_OFF)

    @pytest.mark.parametrize("offload_type", ["block_level", "leaf_level"])
    def test_pipeline_level_group_offloading_inference(self, pipe, offload_type):
        image = random_image(11, 13)
        expected = upscale(pipe, image)
        offloaded = make_tiny_pipeline()
        offloaded.set_progress_bar_config(disable=True)
        blocks = {"num_blocks_per_group": 1} if offload_type == "block_level" else {}
        # On a CPU-only machine onload and offload devices are both the CPU: the hooks run, the result must not move.
        offloaded.enable_group_offload(onload_device=torch.device("cpu"), offload_type=offload_type, **blocks)
        assert any(hasattr(module, "_diffusers_hook") for module in offloaded.transformer.modules())
        torch.testing.assert_close(upscale(offloaded, image), expected, **ROUND_OFF)

    def test_current_timestep(self, pipe):
        seen = []

        def callback(pipeline, step, timestep, tensors):
            seen.append((float(pipeline.current_timestep), float(timestep)))
            return {}

        assert pipe.current_timestep is None
        upscale(pipe, random_image(11, 13), num_inference_steps=3, callback_on_step_end=callback)
        assert [current for current, _ in seen] == [timestep for _, timestep in seen]
        assert len(seen) == 3 and seen[0][0] > seen[-1][0]
        assert pipe.current_timestep is None


class TestSaveLoad:
    def test_round_trip_gives_identical_images(self, pipe, tmp_path):
        pipe.save_pretrained(tmp_path)
        index = json.loads((tmp_path / "model_index.json").read_text())
        assert index["_class_name"] == ["pipeline_dit4sr", "StableDiffusion3SRPipeline"]
        assert index["transformer"] == ["diffusers_dit4sr.models.transformer_dit4sr", "DiT4SRTransformer2DModel"]
        loaded = StableDiffusion3SRPipeline.from_pretrained(tmp_path)
        loaded.set_progress_bar_config(disable=True)
        for name in ("transformer", "vae", "text_encoder", "text_encoder_2", "text_encoder_3"):
            expected, actual = getattr(pipe, name).state_dict(), getattr(loaded, name).state_dict()
            assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
        assert isinstance(loaded.scheduler, FlowMatchEulerDiscreteScheduler) and loaded.scheduler.config.shift == 3.0
        image = random_image(11, 13)
        torch.testing.assert_close(upscale(loaded, image), upscale(pipe, image), **ROUND_OFF)


class TestErrors:
    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"upscale": 0}, "upscale"),
            ({"upscale": -2.0}, "upscale"),
            ({"upscale": float("nan")}, "upscale"),
            ({"num_inference_steps": 0}, "num_inference_steps"),
            ({"strength": 0.0}, "strength"),
            ({"strength": 1.5}, "strength"),
            ({"tile_overlap": 64}, "tile_overlap"),
            ({"tile_size": 50}, "tile_size"),
            # Worded as the CLI's `--tile-size` error: 0 is no "untiled" setting.
            ({"tile_size": 0}, r"`tile_size` must be a positive multiple of 16 pixels, got 0"),
            ({"tile_overlap": -16}, r"`tile_overlap` must be a non-negative multiple of 16 pixels, got -16"),
            ({"tile_overlap": 20}, "tile_overlap"),
            ({"tile_batch_size": 0}, "tile_batch_size"),
            ({"tile_batch_size": "max"}, "tile_batch_size"),
            ({"color_fix": "histogram"}, "color_fix"),
            ({"output_type": "jpg"}, "output_type"),
            ({"prompt": ["a", "b"]}, "prompt"),
            ({"negative_prompt": ["a", "b"]}, "negative_prompt"),
            ({"upscale": 2000.0}, "16384"),
            ({"callback_on_step_end_tensor_inputs": ["noise"]}, "callback_on_step_end_tensor_inputs"),
            ({"prompt_embeds": torch.zeros(1, 154, 32)}, "pooled_prompt_embeds"),
            # Every number is finite and of the right type; a NaN never silently becomes a black image.
            ({"lr_injection_scale": float("nan")}, "lr_injection_scale"),
            ({"guidance_scale": float("nan")}, "guidance_scale"),
            ({"guidance_scale": float("inf")}, "guidance_scale"),
            ({"guidance_scale": "8"}, "guidance_scale"),
            ({"strength": None}, "strength"),
            ({"upscale": True}, "upscale"),
            ({"generator": 0}, "generator"),
            ({"generator": [0]}, "generator"),
            ({"latents": np.zeros((1, 16, 8, 8))}, "latents"),
            ({"prompt": [1]}, "prompt"),
            ({"prompt": 3}, "prompt"),
            ({"max_sequence_length": 0}, "max_sequence_length"),
            ({"max_sequence_length": 100000}, "max_sequence_length"),
            ({"num_images_per_prompt": 1.5}, "num_images_per_prompt"),
            ({"callback_on_step_end": "print"}, "callback_on_step_end"),
            # A Diffusers callback object brings its own tensor inputs, checked as the argument would be.
            ({"callback_on_step_end": TensorRecorder(["noise"])}, "callback_on_step_end_tensor_inputs"),
            ({"latents": torch.zeros(1, 16, 8, 8)}, r"`latents` must have shape \(1, 16, 8, 10\)"),
            ({"generator": [torch.Generator(), torch.Generator()]}, "2 generators for 1 output images"),
            # The negative prompt is encoded with CLIP's 77 tokens and `max_sequence_length=256` T5 tokens.
            (
                {"prompt_embeds": torch.zeros(1, 154, 32), "pooled_prompt_embeds": torch.zeros(1, 64)},
                r"`negative_prompt` encoded by `__call__` have 333 tokens and `prompt_embeds` 154",
            ),
            (
                {"prompt_embeds": torch.zeros(1, 333, 31), "pooled_prompt_embeds": torch.zeros(1, 64)},
                r"`prompt_embeds` must have shape \(batch, tokens, 32\)",
            ),
            (
                {"prompt_embeds": torch.zeros(1, 333, 32), "pooled_prompt_embeds": torch.zeros(1, 63)},
                r"`pooled_prompt_embeds` must have shape \(batch, 64\)",
            ),
            (
                {"prompt_embeds": torch.zeros(3, 333, 32), "pooled_prompt_embeds": torch.zeros(3, 64)},
                "batch size 3",
            ),
        ],
    )
    def test_bad_arguments(self, pipe, monkeypatch, kwargs, match):
        spies = [
            CallSpy(monkeypatch, type(pipe.vae), "encode"),
            CallSpy(monkeypatch, type(pipe.text_encoder), "forward"),
        ]
        with pytest.raises((ValueError, TypeError), match=match):
            pipe(image=random_image(11, 13), **{**FAST, **kwargs})
        assert [spy.calls for spy in spies] == [[], []]  # rejected before any heavy work (`check_inputs`)

    def test_callback_returning_none_is_named(self, pipe):
        with pytest.raises(TypeError, match="`callback_on_step_end` must return a dict"):
            upscale(pipe, random_image(11, 13), callback_on_step_end=lambda *args: None)

    def test_wide_image_names_process_size(self, pipe):
        with pytest.raises(ValueError, match="process_size"):
            pipe(image=random_image(16, 2000), upscale=4.0, num_inference_steps=1)
        # A tiny factor would enlarge the LR to 512 // 0.01 = 51199 px before anything else.
        with pytest.raises(ValueError, match=r"enlarged to 51199x51199 px.*`upscale` \(0.01\)"):
            pipe(image=random_image(128, 128), upscale=0.01, num_inference_steps=1)

    def test_prompt_truncation_is_warned_once_per_pipeline(self, caplog):
        pipe = make_tiny_pipeline()
        pipe.set_progress_bar_config(disable=True)
        transformers.utils.logging.enable_propagation()  # to caplog's handler
        try:
            with caplog.at_level("WARNING"):
                upscale(pipe, random_image(11, 13), num_inference_steps=1)
                upscale(pipe, random_image(11, 13), num_inference_steps=1)
        finally:
            transformers.utils.logging.disable_propagation()
        cut = [record for record in caplog.records if "truncated" in record.getMessage()]
        assert len(cut) == 1 and "once per pipeline" in cut[0].getMessage()
        # Nor do the tokenizers add "Token indices sequence length is longer than ..." (once per CLIP tokenizer).
        assert not [record for record in caplog.records if "Token indices" in record.getMessage()]

    @pytest.mark.parametrize(
        "image, match",
        [
            ([], "empty list"),
            (np.zeros((0, 5, 3), dtype=np.uint8), "empty"),
            (torch.full((3, 8, 8), float("nan")), "NaN"),
            (torch.full((3, 8, 8), 2.0), r"\[0, 1\]"),
            (torch.rand(2, 8, 8), "channels"),
            (torch.randint(0, 255, (3, 8, 8)), "floating point"),
            ("photo.png", "PIL image"),
        ],
    )
    def test_bad_images(self, pipe, image, match):
        with pytest.raises((ValueError, TypeError), match=match):
            pipe(image=image, **FAST)
