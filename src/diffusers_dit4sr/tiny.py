# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Tiny, randomly initialized SD3-style components, built fully offline.

They make the library's tests and smoke runs independent of the Hub: two CLIP text encoders, a T5 encoder,
their tokenizers, a VAE with SD3's 16 latent channels and 8x scale factor, and a transformer config that fits
them; and a LLaVA-style captioner for `diffusers_dit4sr.captioning`. Weights are random but deterministic given
the seed; the global RNG state is left untouched.
"""

import io
import json
import os
import string
import tempfile
from pathlib import Path
from typing import Any

import sentencepiece as spm
import tokenizers
import torch
from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler
from transformers import (
    CLIPImageProcessorPil,
    CLIPTextConfig,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionConfig,
    LlamaConfig,
    LlamaTokenizer,
    LlavaConfig,
    LlavaForConditionalGeneration,
    LlavaProcessor,
    T5Config,
    T5EncoderModel,
    T5TokenizerFast,
)

from .models import DiT4SRTransformer2DModel
from .pipelines import StableDiffusion3SRPipeline

__all__ = [
    "TINY_TRANSFORMER_CONFIG",
    "TINY_VAE_SAMPLE_SIZE",
    "make_tiny_captioner",
    "make_tiny_clip_tokenizer",
    "make_tiny_pipeline",
    "make_tiny_t5_tokenizer",
    "make_tiny_text_encoders",
    "make_tiny_transformer",
    "make_tiny_vae",
    "save_tiny_captioner",
]

TINY_TRANSFORMER_CONFIG: dict[str, Any] = {
    "sample_size": 32,
    "patch_size": 2,
    "in_channels": 16,
    "out_channels": 16,
    "num_layers": 2,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "caption_projection_dim": 32,
    "pooled_projection_dim": 64,
    "pos_embed_max_size": 64,
    "dual_attention_layers": (0,),
    "qk_norm": "rms_norm",
}
"""An SD3.5-shaped ``SD3Transformer2DModel`` config matching the tiny text encoders and VAE.

``joint_attention_dim`` is the T5 width (32; the SD3 pipelines fit the concatenated CLIP hidden states to it),
``pooled_projection_dim`` the two pooled CLIP projections concatenated (32 + 32), and block 0 uses SD3.5's
dual attention with RMS qk-norm. Copy it before changing values: ``{**TINY_TRANSFORMER_CONFIG, "num_layers": 3}``.
"""

_CLIP_MAX_LENGTH = 77
_CLIP_MERGES = (("t", "h"), ("th", "e</w>"), ("a", "n"), ("i", "n"), ("o", "n</w>"), ("e", "r</w>"))
_T5_VOCAB_SIZE = 200
_T5_CORPUS = (
    "a photo of a cat sitting on a wooden table",
    "a high resolution photograph of a mountain lake at sunrise",
    "close up of a red flower with water drops on its petals",
    "an old brick building in a narrow street with parked cars",
    "portrait of a smiling woman wearing a blue scarf",
    "a dog running across a green field in the summer",
    "detailed texture of tree bark and moss in a forest",
    "city skyline at night with bright lights and reflections",
    "a bowl of fresh fruit: apples, oranges, bananas and grapes",
    "cinematic, hyper sharpness, highly detailed, ultra HD, 32k",
    "motion blur, noisy, dotted, bokeh, jpeg artifacts, lowres",
    "The quick brown fox jumps over the lazy dog. 0123456789!?",
    "two children playing with a ball on a sandy beach near the ocean",
    "a bicycle leaning against a yellow wall under a window",
    "snow covered pine trees on a quiet winter morning",
    "a plate of pasta with tomato sauce and basil leaves",
    "an orange butterfly resting on a purple lavender plant",
    "the face of an elderly man with deep wrinkles and grey hair",
    "a vintage car parked in front of a small coffee shop",
    "macro shot of a honey bee collecting pollen from a sunflower",
    "a sailing boat on calm blue water under white clouds",
    "handwritten text on an old paper map with a compass",
    "skin pore detailing, camera, photo realistic, maximum detail",
    "watermark, signature, deformed, chaotic, worst quality, frames",
)


def make_tiny_clip_tokenizer(save_dir: str | Path | None = None) -> CLIPTokenizer:
    """A byte-level BPE CLIP tokenizer with a ~520-token vocabulary and ``model_max_length=77``.

    The vocabulary is the 256 byte-level characters, the same with the end-of-word suffix ``</w>``, a few merges,
    and ``<|startoftext|>`` / ``<|endoftext|>`` as the last two ids (CLIP's pooling relies on the end token having
    the largest id). The files (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) are written to
    ``save_dir`` if given, otherwise to a temporary directory that is removed after loading.
    """
    if save_dir is None:
        with tempfile.TemporaryDirectory() as tmp_dir:
            return make_tiny_clip_tokenizer(tmp_dir)

    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    characters = list(_bytes_to_unicode().values())
    tokens = characters + [character + "</w>" for character in characters]
    tokens += ["".join(pair) for pair in _CLIP_MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {token: index for index, token in enumerate(tokens)}

    (save_dir / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    merges = ["#version: 0.2"] + [" ".join(pair) for pair in _CLIP_MERGES]
    (save_dir / "merges.txt").write_text("\n".join(merges) + "\n", encoding="utf-8")
    config = {"tokenizer_class": "CLIPTokenizer", "model_max_length": _CLIP_MAX_LENGTH}
    (save_dir / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    return CLIPTokenizer.from_pretrained(save_dir)


def make_tiny_t5_tokenizer() -> T5TokenizerFast:
    """A T5 tokenizer with a ~200-piece sentencepiece unigram vocabulary: ``<pad>`` 0, ``</s>`` 1, ``<unk>`` 2.

    The unigram model is trained in memory on a small fixed corpus and handed to the tokenizer as
    ``(piece, score)`` pairs (``T5TokenizerFast(vocab_file=...)`` silently gives a 4-token vocabulary with
    transformers 5). It has no ``<extra_id_*>`` tokens and round-trips through ``save_pretrained`` /
    ``from_pretrained``.
    """
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(_T5_CORPUS),
        model_writer=model,
        model_type="unigram",
        vocab_size=_T5_VOCAB_SIZE,
        hard_vocab_limit=False,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    processor = spm.SentencePieceProcessor(model_proto=model.getvalue())
    vocab = [(processor.id_to_piece(index), processor.get_score(index)) for index in range(processor.get_piece_size())]
    return T5TokenizerFast(vocab=vocab, extra_ids=0)


def make_tiny_text_encoders(seed: int = 0) -> dict[str, Any]:
    """Tiny SD3 text encoders and their tokenizers, keyed like the SD3 pipelines' components.

    Returns ``text_encoder`` and ``text_encoder_2`` (CLIP with projection: hidden size 32, 5 layers, 4 heads,
    projection 32), ``text_encoder_3`` (T5 encoder: d_model 32, 2 layers, 4 heads), and ``tokenizer``,
    ``tokenizer_2`` (the tiny CLIP tokenizer) and ``tokenizer_3`` (the tiny T5 tokenizer). The models are in
    eval mode and their weights depend only on ``seed``.
    """
    clip_tokenizer = make_tiny_clip_tokenizer()
    t5_tokenizer = make_tiny_t5_tokenizer()
    clip_config = CLIPTextConfig(
        vocab_size=len(clip_tokenizer),
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        projection_dim=32,
        max_position_embeddings=_CLIP_MAX_LENGTH,
        bos_token_id=clip_tokenizer.bos_token_id,
        eos_token_id=clip_tokenizer.eos_token_id,
        pad_token_id=clip_tokenizer.pad_token_id,
    )
    t5_config = T5Config(
        vocab_size=len(t5_tokenizer),
        d_model=32,
        d_kv=8,
        d_ff=37,
        num_layers=2,
        num_heads=4,
        relative_attention_num_buckets=8,
        dropout_rate=0.0,
        pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id,
        decoder_start_token_id=t5_tokenizer.pad_token_id,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        text_encoder = CLIPTextModelWithProjection(clip_config).eval()
        text_encoder_2 = CLIPTextModelWithProjection(clip_config).eval()
        text_encoder_3 = T5EncoderModel(t5_config).eval()
    return {
        "text_encoder": text_encoder,
        "text_encoder_2": text_encoder_2,
        "text_encoder_3": text_encoder_3,
        "tokenizer": clip_tokenizer,
        "tokenizer_2": make_tiny_clip_tokenizer(),
        "tokenizer_3": t5_tokenizer,
    }


TINY_VAE_SAMPLE_SIZE = 1024
"""The tiny VAE's ``sample_size``: SD3.5's. It sets only where VAE tiling engages (``tile_sample_min_size``), not
the weights or the untiled numbers; with a 32 px tile, ``enable_vae_tiling()`` (always on in ``dit4sr-upscale``)
would cut a small image into hundreds of tiles."""


def make_tiny_vae(seed: int = 0) -> AutoencoderKL:
    """A tiny ``AutoencoderKL`` shaped like SD3's: 16 latent channels, 4 blocks (8x scale factor), SD3's
    ``shift_factor``/``scaling_factor`` and tile size (``TINY_VAE_SAMPLE_SIZE``: tiling engages above 1024 px), no
    quant convs. In eval mode; weights depend only on ``seed``."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(8, 8, 8, 8),
            layers_per_block=1,
            latent_channels=16,
            norm_num_groups=4,
            sample_size=TINY_VAE_SAMPLE_SIZE,
            shift_factor=0.0609,
            scaling_factor=1.5305,
            use_quant_conv=False,
            use_post_quant_conv=False,
        )
    return vae.eval()


def make_tiny_transformer(seed: int = 0, **dit4sr_options: Any) -> DiT4SRTransformer2DModel:
    """A tiny ``DiT4SRTransformer2DModel`` (``TINY_TRANSFORMER_CONFIG``) in eval mode.

    Unlike a freshly initialized DiT4SR model, its LR layers are not zero: the LR stream must change the output,
    or tests could not see it wired wrongly.

    Args:
        seed: Seeds the random weights (the global RNG state is left untouched).
        **dit4sr_options: `lr_key_source`, `lr_attention`, `lr_residual`, `lr_injection`.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformer = DiT4SRTransformer2DModel(**TINY_TRANSFORMER_CONFIG, **dit4sr_options)
        with torch.no_grad():
            for name, param in transformer.named_parameters():
                if "control" in name:
                    param.normal_(0.0, 0.05)
    return transformer.eval()


def make_tiny_pipeline(seed: int = 0, with_t5: bool = True) -> StableDiffusion3SRPipeline:
    """A complete tiny ``StableDiffusion3SRPipeline`` (random weights, SD3.5's scheduler config), built offline.

    It runs a few steps on a CPU in well under a second; images are noise, but shapes, dtypes and control flow are
    those of the real pipeline.

    Args:
        seed: Seeds the random weights (the global RNG state is left untouched).
        with_t5: Include the optional T5 encoder and tokenizer.
    """
    text_components = make_tiny_text_encoders(seed)
    if not with_t5:
        text_components.update(text_encoder_3=None, tokenizer_3=None)
    return StableDiffusion3SRPipeline(
        transformer=make_tiny_transformer(seed),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=make_tiny_vae(seed),
        **text_components,
    )


_CAPTIONER_VOCAB_SIZE = 400
_CAPTIONER_SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")
_CAPTIONER_IMAGE_SIZE = 32
_CAPTIONER_PATCH_SIZE = 8
_CAPTIONER_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if message['role'] != 'system' %}{{ message['role'] | upper }}: {% endif %}"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' %}<image>\n{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
    "{% endfor %}{% endif %} "
    "{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)
"""LLaVA-1.5's conversation layout: `USER: <image>\n{instruction} ASSISTANT:`."""


def make_tiny_captioner(seed: int = 0) -> tuple[LlavaForConditionalGeneration, LlavaProcessor]:
    """A tiny random LLaVA-1.5-style vision-language model and its processor, built offline.

    The model is a ``LlavaForConditionalGeneration``: a CLIP vision tower (32 px images, 8 px patches, 2 layers of
    width 32), LLaVA's MLP projector and a Llama language model (2 layers of width 32). The processor resizes and
    center-crops to 32 px, expands ``<image>`` to the 16 patch tokens and has a LLaVA-1.5-style chat template; its
    Llama tokenizer is a ~400-token BPE trained in memory on a small corpus. Its text is random and rarely ends
    before ``max_new_tokens``: a few dozen tokens take well under a second on a CPU. The weights depend only on
    ``seed``; the model is in eval mode.
    """
    tokenizer = _make_tiny_llama_tokenizer()
    image_token_id = tokenizer.convert_tokens_to_ids(tokenizer.image_token)
    num_patches = (_CAPTIONER_IMAGE_SIZE // _CAPTIONER_PATCH_SIZE) ** 2
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=_CAPTIONER_IMAGE_SIZE,
            patch_size=_CAPTIONER_PATCH_SIZE,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=32,
            intermediate_size=37,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id,
            pad_token_id=tokenizer.pad_token_id,
        ),
        image_token_index=image_token_id,
        image_seq_length=num_patches,
        vision_feature_select_strategy="default",  # LLaVA-1.5: the patch features of the penultimate layer, no CLS
        vision_feature_layer=-2,
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlavaForConditionalGeneration(config).eval()
    for name in ("bos_token_id", "eos_token_id", "pad_token_id"):
        setattr(model.generation_config, name, getattr(tokenizer, name))
    processor = LlavaProcessor(
        image_processor=CLIPImageProcessorPil(
            size={"shortest_edge": _CAPTIONER_IMAGE_SIZE},
            crop_size={"height": _CAPTIONER_IMAGE_SIZE, "width": _CAPTIONER_IMAGE_SIZE},
        ),
        tokenizer=tokenizer,
        patch_size=_CAPTIONER_PATCH_SIZE,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,  # CLIP's CLS token, which the "default" strategy drops again
        chat_template=_CAPTIONER_CHAT_TEMPLATE,
    )
    return model, processor


def save_tiny_captioner(save_dir: str | os.PathLike, seed: int = 0) -> Path:
    """Writes ``make_tiny_captioner(seed)`` to a folder that loads like a Hub model:
    ``diffusers_dit4sr.captioning.Captioner(save_dir)`` or ``AutoModelForImageTextToText`` / ``AutoProcessor``."""
    save_dir = Path(save_dir)
    model, processor = make_tiny_captioner(seed)
    model.save_pretrained(save_dir)
    processor.save_pretrained(save_dir)
    return save_dir


def _make_tiny_llama_tokenizer() -> LlamaTokenizer:
    """A Llama tokenizer (metaspace BPE, like Llama's, without its byte-fallback tokens) trained in memory on the
    tiny corpus: ``<unk>`` 0, ``<s>`` 1, ``</s>`` 2, ``<pad>`` 3, printable ASCII and newline as the alphabet, and
    ``<image>`` as the last, special token."""
    trainer_model = tokenizers.Tokenizer(tokenizers.models.BPE(unk_token="<unk>"))
    trainer_model.pre_tokenizer = tokenizers.pre_tokenizers.Metaspace(prepend_scheme="first", split=True)
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=_CAPTIONER_VOCAB_SIZE,
        special_tokens=list(_CAPTIONER_SPECIAL_TOKENS),
        initial_alphabet=list(string.ascii_letters + string.digits + string.punctuation + "\n"),
        show_progress=False,
    )
    trainer_model.train_from_iterator(
        [*_T5_CORPUS, "USER: ASSISTANT: Please describe the objects in the image."], trainer
    )
    model = json.loads(trainer_model.to_str())["model"]
    return LlamaTokenizer(
        vocab=model["vocab"],
        merges=[tuple(merge) for merge in model["merges"]],
        pad_token="<pad>",
        add_bos_token=True,
        extra_special_tokens={"image_token": "<image>"},
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible map from the 256 byte values to printable unicode characters."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    mapping = {byte: chr(byte) for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in mapping:
            mapping[byte] = chr(256 + extra)
            extra += 1
    return dict(sorted(mapping.items()))
