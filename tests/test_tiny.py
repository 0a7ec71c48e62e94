# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    CLIPTokenizer,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    T5TokenizerFast,
)

from diffusers_dit4sr.tiny import (
    TINY_TRANSFORMER_CONFIG,
    TINY_VAE_SAMPLE_SIZE,
    make_tiny_captioner,
    make_tiny_clip_tokenizer,
    make_tiny_t5_tokenizer,
    make_tiny_text_encoders,
    make_tiny_vae,
    save_tiny_captioner,
)

PROMPTS = ["a photo of the cat, hyper detailed!", "", "Ünïcode and 32k digits 0123"]


@pytest.fixture(scope="module")
def text_components():
    return make_tiny_text_encoders(seed=0)


@pytest.fixture(scope="module")
def vae():
    return make_tiny_vae(seed=0)


@pytest.fixture(scope="module")
def sd3_pipeline(text_components, vae):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        transformer = SD3Transformer2DModel(**TINY_TRANSFORMER_CONFIG).eval()
    pipe = StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=vae,
        **text_components,
    )
    pipe.set_progress_bar_config(disable=True)
    return pipe


def _state_dicts_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[name], sb[name]) for name in sa)


# --- Tokenizers ----------------------------------------------------------------------------------------------


def test_clip_tokenizer_files_and_special_tokens(tmp_path):
    tokenizer = make_tiny_clip_tokenizer(tmp_path / "clip")
    assert isinstance(tokenizer, CLIPTokenizer)
    assert {p.name for p in (tmp_path / "clip").iterdir()} >= {"vocab.json", "merges.txt", "tokenizer_config.json"}
    assert json.loads((tmp_path / "clip" / "tokenizer_config.json").read_text())["model_max_length"] == 77
    assert tokenizer.model_max_length == 77
    # CLIP pools at the end token, found as the largest id: the special tokens come last
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id) == (len(tokenizer) - 2, len(tokenizer) - 1)
    ids = tokenizer(PROMPTS[0], padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == tokenizer.bos_token_id and tokenizer.eos_token_id in ids
    decoded = tokenizer.decode(tokenizer("a photo of the cat").input_ids, skip_special_tokens=True)
    assert decoded.strip() == "a photo of the cat"
    # the default (temporary directory) variant is the same tokenizer
    assert make_tiny_clip_tokenizer()(PROMPTS).input_ids == tokenizer(PROMPTS).input_ids


def test_t5_tokenizer_vocabulary_and_round_trip(tmp_path):
    tokenizer = make_tiny_t5_tokenizer()
    assert isinstance(tokenizer, T5TokenizerFast)
    assert (tokenizer.pad_token_id, tokenizer.eos_token_id, tokenizer.unk_token_id) == (0, 1, 2)
    assert 150 <= len(tokenizer) <= 200
    ids = tokenizer(PROMPTS).input_ids
    assert all(sequence[-1] == tokenizer.eos_token_id for sequence in ids)
    assert max(max(sequence) for sequence in ids) < len(tokenizer)
    assert make_tiny_t5_tokenizer()(PROMPTS).input_ids == ids  # deterministic

    tokenizer.save_pretrained(tmp_path)
    for loaded in (T5TokenizerFast.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)):
        assert len(loaded) == len(tokenizer)
        assert loaded(PROMPTS).input_ids == ids
        padded = loaded(PROMPTS, padding="max_length", max_length=32, truncation=True).input_ids
        assert padded == tokenizer(PROMPTS, padding="max_length", max_length=32, truncation=True).input_ids


# --- Models --------------------------------------------------------------------------------------------------


def test_text_encoders_shapes_and_vocabularies(text_components):
    assert set(text_components) == {
        "text_encoder",
        "text_encoder_2",
        "text_encoder_3",
        "tokenizer",
        "tokenizer_2",
        "tokenizer_3",
    }
    for name in ("text_encoder", "text_encoder_2"):
        model, tokenizer = text_components[name], text_components["tokenizer"]
        assert not model.training
        assert model.config.vocab_size == len(tokenizer)
        ids = tokenizer(PROMPTS[:1], padding="max_length", max_length=77, return_tensors="pt").input_ids
        with torch.no_grad():
            out = model(ids, output_hidden_states=True)
        assert out.text_embeds.shape == (1, 32)
        assert out.hidden_states[-2].shape == (1, 77, 32)
    t5, t5_tokenizer = text_components["text_encoder_3"], text_components["tokenizer_3"]
    assert not t5.training
    assert t5.config.vocab_size == len(t5_tokenizer)
    ids = t5_tokenizer(PROMPTS[:1], return_tensors="pt").input_ids
    with torch.no_grad():
        assert t5(ids).last_hidden_state.shape == (1, ids.shape[1], 32)


def test_text_encoders_are_deterministic_and_leave_the_global_rng_alone(text_components):
    state = torch.get_rng_state()
    same = make_tiny_text_encoders(seed=0)
    other = make_tiny_text_encoders(seed=1)
    assert torch.equal(torch.get_rng_state(), state)
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        assert _state_dicts_equal(same[name], text_components[name])
        assert not _state_dicts_equal(other[name], text_components[name])
    assert not _state_dicts_equal(same["text_encoder"], same["text_encoder_2"])


def test_vae_is_sd3_shaped(vae):
    assert not vae.training
    assert vae.config.latent_channels == 16
    assert 2 ** (len(vae.config.block_out_channels) - 1) == 8
    assert (vae.config.shift_factor, vae.config.scaling_factor) == (0.0609, 1.5305)
    assert not vae.config.use_quant_conv and not vae.config.use_post_quant_conv
    image = torch.rand(1, 3, 32, 48) * 2 - 1
    with torch.no_grad():
        latents = vae.encode(image).latent_dist.mode()
        decoded = vae.decode(latents).sample
    assert latents.shape == (1, 16, 4, 6)
    assert decoded.shape == image.shape
    assert _state_dicts_equal(make_tiny_vae(seed=0), vae)
    assert not _state_dicts_equal(make_tiny_vae(seed=1), vae)


def test_vae_tiles_like_sd35_and_its_tile_size_changes_nothing_else(vae):
    # VAE tiling engages above 1024 px, as with SD3.5's VAE: small images are encoded and decoded whole.
    assert vae.config.sample_size == TINY_VAE_SAMPLE_SIZE == 1024
    assert (vae.tile_sample_min_size, vae.tile_latent_min_size) == (1024, 128)
    # The weights are those of the earlier 32 px setting: sample_size only says where tiling starts.
    config = {**vae.config, "sample_size": 32}
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        small_tiles = AutoencoderKL.from_config(config).eval()
    assert _state_dicts_equal(small_tiles, vae)
    image = torch.rand(1, 3, 48, 64) * 2 - 1
    with torch.no_grad():
        assert torch.equal(small_tiles.encode(image).latent_dist.mode(), vae.encode(image).latent_dist.mode())
    vae.enable_tiling()
    try:
        with torch.no_grad():  # below its tile size, an enabled tiling changes nothing
            latents = vae.encode(image).latent_dist.mode()
            assert torch.equal(latents, small_tiles.encode(image).latent_dist.mode())
            assert torch.equal(vae.decode(latents).sample, small_tiles.decode(latents).sample)
    finally:
        vae.disable_tiling()


# --- The components fit together -----------------------------------------------------------------------------


def _generate(pipe: StableDiffusion3Pipeline, output_type: str) -> torch.Tensor:
    return pipe(
        "a photo of a cat",
        negative_prompt="blurry",
        num_inference_steps=2,
        height=32,
        width=32,
        guidance_scale=5.0,
        generator=torch.Generator().manual_seed(0),
        output_type=output_type,
    ).images


@pytest.mark.slow
def test_sd3_pipeline_runs_with_tiny_components(sd3_pipeline):
    latents = _generate(sd3_pipeline, "latent")
    assert latents.shape == (1, 16, 4, 4)
    assert torch.isfinite(latents).all()
    images = _generate(sd3_pipeline, "pt")
    assert images.shape == (1, 3, 32, 32)
    assert torch.isfinite(images).all()
    assert torch.equal(_generate(sd3_pipeline, "pt"), images)


def test_sd3_pipeline_runs_without_t5(sd3_pipeline):
    components = {**sd3_pipeline.components, "text_encoder_3": None, "tokenizer_3": None}
    pipe = StableDiffusion3Pipeline(**components)
    pipe.set_progress_bar_config(disable=True)
    latents = _generate(pipe, "latent")
    assert latents.shape == (1, 16, 4, 4)
    assert torch.isfinite(latents).all()
    assert torch.equal(_generate(pipe, "latent"), latents)


# --- The tiny captioner --------------------------------------------------------------------------------------


def test_tiny_captioner_loads_like_a_hub_model(tmp_path):
    state = torch.get_rng_state()
    model, processor = make_tiny_captioner(seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    assert save_tiny_captioner(tmp_path / "captioner") == tmp_path / "captioner"

    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path / "captioner")
    loaded_processor = AutoProcessor.from_pretrained(tmp_path / "captioner")
    assert isinstance(loaded, LlavaForConditionalGeneration) and isinstance(loaded_processor, LlavaProcessor)
    assert _state_dicts_equal(loaded, model) and not loaded.training
    assert not _state_dicts_equal(make_tiny_captioner(seed=1)[0], model)
    assert loaded_processor.tokenizer.get_vocab() == processor.tokenizer.get_vocab()

    tokenizer = loaded_processor.tokenizer
    assert (tokenizer.bos_token_id, tokenizer.eos_token_id, tokenizer.pad_token_id) == (1, 2, 3)
    assert loaded.config.image_token_index == tokenizer.convert_tokens_to_ids("<image>")
    assert loaded.config.text_config.vocab_size == len(tokenizer)
    assert tokenizer.decode(tokenizer("A photo of a cat.").input_ids, skip_special_tokens=True) == "A photo of a cat."

    conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe."}]}]
    prompt = loaded_processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    assert prompt == "USER: <image>\nDescribe. ASSISTANT:"
    image = PIL.Image.fromarray(np.zeros((48, 64, 3), dtype=np.uint8))
    inputs = loaded_processor(images=[image], text=[prompt], return_tensors="pt")
    assert inputs["pixel_values"].shape == (1, 3, 32, 32)
    assert (inputs["input_ids"] == loaded.config.image_token_index).sum() == 16  # one token per 8 px patch
    with torch.no_grad():
        tokens = loaded.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert tokens.shape == (1, inputs["input_ids"].shape[1] + 5)
