# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Captions for DiT4SR: a vision-language model describes the LR image, as the released inference did.

DiT4SR is conditioned on a caption of the image it restores, and every published result was captioned by
LLaVA-1.5-13B with the instruction, sampling settings and sentence filter below. `Captioner` runs any transformers
`image-text-to-text` model with those defaults; `remove_focus_sentences` is the released filter on its own.
"""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import math
import os
import re
from collections.abc import Iterator, Sequence

import PIL.Image
import torch
from transformers import AutoModelForImageTextToText, AutoProcessor, BitsAndBytesConfig

from .constants import (
    DEFAULT_CAPTION_MAX_NEW_TOKENS,
    DEFAULT_CAPTION_MODEL,
    DEFAULT_CAPTION_PROMPT,
    DEFAULT_CAPTION_TEMPERATURE,
    DEFAULT_CAPTION_TOP_P,
)
from .devices import resolve_device, resolve_dtype

__all__ = [
    "DEFAULT_CAPTION_MAX_NEW_TOKENS",
    "DEFAULT_CAPTION_MODEL",
    "DEFAULT_CAPTION_PROMPT",
    "DEFAULT_CAPTION_TEMPERATURE",
    "DEFAULT_CAPTION_TOP_P",
    "FOCUS_WORDS",
    "Captioner",
    "remove_focus_sentences",
]

_RELEASED_TOP_K = 50
"""transformers' default top-k, in effect in the released code; set explicitly so a model's own default cannot
replace it."""

FOCUS_WORDS = (
    "focus",
    "focal",
    "prominent",
    "close-up",
    "black and white",
    "blur",
    "depth",
    "dense",
    "locate",
    "position",
)
"""A sentence containing any of these (case-insensitive substrings) is dropped by `remove_focus_sentences`."""
_SENTENCE_END = re.compile(r"([.?!])")


def remove_focus_sentences(text: str) -> str:
    """Drops every sentence that mentions focus, blur, depth, framing or position, as the released captioner did.

    The text is split after each `.`, `?` and `!`; a sentence is dropped when its lowercase form contains one of
    `FOCUS_WORDS` ("blurred" and "Focused" included). The kept sentences are joined unchanged (each keeps its
    leading space) and the result is stripped. Such sentences describe the degradation rather than the content, and
    a caption that asks for blur makes the restoration blurrier.
    """
    parts = _SENTENCE_END.split(text)
    sentences = ("".join(parts[start : start + 2]) for start in range(0, len(parts), 2))
    kept = [sentence for sentence in sentences if not any(word in sentence.lower() for word in FOCUS_WORDS)]
    return "".join(kept).strip()


class Captioner:
    """Captions images with a transformers vision-language model; by default the released DiT4SR captioner.

    Args:
        model_name_or_path: Hub id or folder of any model `AutoModelForImageTextToText` loads (LLaVA-1.5,
            Qwen2.5-VL, Florence-2, ...) with its `AutoProcessor`.
        prompt: the instruction. With the processor's chat template it is one user turn holding the image and this
            text; without one it is passed as is (add the model's image token yourself if it needs one).
        max_new_tokens: the longest caption, in tokens.
        temperature: sampling temperature; 0 decodes greedily (and ignores `top_p`).
        top_p: nucleus sampling threshold, in (0, 1]. Top-k is 50, as in the released code.
        filter_focus_sentences: apply `remove_focus_sentences` to every caption.
        batch_size: images generated together; the batch is left-padded for decoder-only models.
        seed: before each batch, torch's default generators (the CPU's and the model device's), which sampling draws
            from, are reset to this seed, in a forked RNG state that leaves the caller's random state alone. So a
            batch's captions depend only on its images, in order, and the settings; with `batch_size=1` an image's
            caption does not depend on the other images. Captions repeat on the same device, dtype and library
            versions. `None` draws from the global RNG instead, unseeded.
        device: where the model runs (default: CUDA if available, else MPS, else the CPU).
        dtype: precision of the weights (default: bf16 on an accelerator, fp32 on the CPU).
        load_in_8bit: load the weights in 8 bits with bitsandbytes, as the released captioner did (LLaVA-1.5-13B:
            about 14 GB instead of 26 GB in bf16); needs a CUDA `device` and the `bitsandbytes` package.
        revision, cache_dir, token, local_files_only: passed to both `from_pretrained` calls.

    Images are captioned as given: only the processor resizes them. Bad arguments raise a `ValueError` or
    `TypeError` naming the argument before anything is loaded. `unload()` (or leaving a `with` block) frees the
    model, e.g. to give the GPU to the SR pipeline.
    """

    def __init__(
        self,
        model_name_or_path: str | os.PathLike = DEFAULT_CAPTION_MODEL,
        *,
        prompt: str = DEFAULT_CAPTION_PROMPT,
        max_new_tokens: int = DEFAULT_CAPTION_MAX_NEW_TOKENS,
        temperature: float = DEFAULT_CAPTION_TEMPERATURE,
        top_p: float = DEFAULT_CAPTION_TOP_P,
        filter_focus_sentences: bool = True,
        batch_size: int = 1,
        seed: int | None = 0,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        load_in_8bit: bool = False,
        revision: str | None = None,
        cache_dir: str | os.PathLike | None = None,
        token: str | bool | None = None,
        local_files_only: bool = False,
    ) -> None:
        if not isinstance(model_name_or_path, (str, os.PathLike)) or not os.fspath(model_name_or_path):
            raise TypeError(f"model_name_or_path must be a Hub id or a folder, got {model_name_or_path!r}")
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {prompt!r}")
        if not prompt.strip():
            raise ValueError(f"prompt must not be empty, got {prompt!r}")
        self.max_new_tokens = _positive_int("max_new_tokens", max_new_tokens)
        self.batch_size = _positive_int("batch_size", batch_size)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
            raise TypeError(f"temperature must be a number, got {temperature!r}")
        if not 0 <= temperature < math.inf:
            raise ValueError(f"temperature must be >= 0 (0: greedy decoding), got {temperature}")
        if isinstance(top_p, bool) or not isinstance(top_p, (int, float)):
            raise TypeError(f"top_p must be a number, got {top_p!r}")
        if not 0 < top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {top_p}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise TypeError(f"seed must be an int or None, got {seed!r}")
        for name, flag in (("filter_focus_sentences", filter_focus_sentences), ("load_in_8bit", load_in_8bit)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be a bool, got {flag!r}")
        if dtype is not None and not isinstance(dtype, torch.dtype):
            raise TypeError(f"dtype must be a torch.dtype or None, got {dtype!r}")
        self.device = _device_with_index(resolve_device(device))
        if load_in_8bit:
            if self.device.type != "cuda":
                raise ValueError(f"load_in_8bit=True needs a CUDA device (bitsandbytes), got device {self.device}")
            if importlib.util.find_spec("bitsandbytes") is None:
                raise ImportError("load_in_8bit=True needs the bitsandbytes package: pip install bitsandbytes")

        self.model_name_or_path = os.fspath(model_name_or_path)
        self.prompt, self.temperature, self.top_p = prompt, float(temperature), float(top_p)
        self.filter_focus_sentences, self.seed = filter_focus_sentences, seed
        hub_options = {
            "revision": revision,
            "cache_dir": cache_dir,
            "token": token,
            "local_files_only": local_files_only,
        }
        self.model = AutoModelForImageTextToText.from_pretrained(
            self.model_name_or_path,
            dtype=resolve_dtype(dtype, self.device),
            device_map={"": self.device},
            quantization_config=BitsAndBytesConfig(load_in_8bit=True) if load_in_8bit else None,
            **hub_options,
        ).eval()
        self.processor = AutoProcessor.from_pretrained(self.model_name_or_path, **hub_options)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None and not self.model.config.is_encoder_decoder:
            tokenizer.padding_side = "left"  # generation continues every row right after its prompt

    def __call__(self, images: PIL.Image.Image | Sequence[PIL.Image.Image]) -> list[str]:
        """One caption per image, in order (a single image gives a list of one)."""
        if self.model is None:
            raise RuntimeError("this Captioner was unloaded; create a new one")
        images = [images] if isinstance(images, PIL.Image.Image) else list(images)
        for image in images:
            if not isinstance(image, PIL.Image.Image):
                raise TypeError(f"images must be PIL images, got a {type(image).__name__}")
        captions = []
        for start in range(0, len(images), self.batch_size):
            captions.extend(
                self._caption_batch([image.convert("RGB") for image in images[start : start + self.batch_size]])
            )
        return captions

    def unload(self) -> None:
        """Drops the model and processor and hands their memory back (garbage collection, then the CUDA cache).

        The memory is only freed if nothing else refers to the model. The captioner cannot be used afterwards.
        """
        self.model = self.processor = None
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def __enter__(self) -> Captioner:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.unload()

    @torch.inference_mode()
    def _caption_batch(self, images: list[PIL.Image.Image]) -> list[str]:
        if getattr(self.processor, "chat_template", None) is not None:
            conversation = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self.processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        else:
            text = self.prompt
        inputs = self.processor(images=images, text=[text] * len(images), padding=True, return_tensors="pt")
        inputs = inputs.to(device=self.model.device, dtype=self.model.dtype)
        if self.temperature > 0:
            sampling = {
                "do_sample": True,
                "temperature": self.temperature,
                "top_p": self.top_p,
                "top_k": _RELEASED_TOP_K,
            }
        else:
            sampling = {"do_sample": False}
        with self._seeded():
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, **sampling)
        if not self.model.config.is_encoder_decoder:
            tokens = tokens[:, inputs["input_ids"].shape[1] :]  # decoder-only models return the prompt too
        captions = [caption.strip() for caption in self.processor.batch_decode(tokens, skip_special_tokens=True)]
        return [remove_focus_sentences(caption) for caption in captions] if self.filter_focus_sentences else captions

    @contextlib.contextmanager
    def _seeded(self) -> Iterator[None]:
        """Resets the RNG that sampling draws from to `seed` for the duration of one batch; a no-op for `None`."""
        if self.seed is None:
            yield
            return
        accelerator = self.device.type != "cpu"
        with torch.random.fork_rng(
            devices=[self.device] if accelerator else [], device_type=self.device.type if accelerator else None
        ):
            torch.manual_seed(self.seed)
            yield


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def _device_with_index(device: torch.device) -> torch.device:
    """A CUDA device with its index (the current one if none is given), as `device_map` wants it."""
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device
