# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`StableDiffusion3SRPipeline`: real-world image super-resolution with DiT4SR on Stable Diffusion 3.5."""

from __future__ import annotations

import copy
import json
import logging as std_logging
import math
import os
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import PIL.Image
import torch
import transformers.utils.logging
from accelerate.hooks import CpuOffload
from diffusers import (
    AutoencoderKL,
    DiffusionPipeline,
    FlowMatchEulerDiscreteScheduler,
    PipelineQuantizationConfig,
    SchedulerMixin,
)
from diffusers.callbacks import MultiPipelineCallbacks, PipelineCallback
from diffusers.loaders import SD3LoraLoaderMixin
from diffusers.utils import BaseOutput, logging, replace_example_docstring
from diffusers.utils.torch_utils import empty_device_cache, randn_tensor
from transformers import CLIPTextModelWithProjection, CLIPTokenizer, T5EncoderModel, T5TokenizerFast

from ..color import COLOR_FIX_METHODS, apply_color_fix
from ..file_utils import atomic_write_path
from ..hub import (
    RELEASED_DIT4SR_MODEL,
    RELEASED_SD3_MODEL,
    RELEASED_VARIANTS,
    explain_hub_errors,
    push_pipeline_to_hub,
)
from ..image_processing import (
    MAX_OUTPUT_SIDE,
    ImageInput,
    SizePlan,
    pad_to,
    pil_bicubic_resize,
    plan_sizes,
    to_rgb_tensors,
    upscale_lr,
)
from ..inference_defaults import INFERENCE_DEFAULTS
from ..models import DiT4SRTransformer2DModel
from ..models.released import RELEASED_LR_KEY_SOURCES
from ..safe_loading import safetensors_options
from ..tiling import Tile, blend_tiles, gaussian_tile_weights, plan_tiles
from .remote_code import local_class_name, register_component_libraries, remote_class_name, write_loader_module

# Diffusers' SD3 modules import image processors for IP-Adapters that we never use; without torchvision, transformers
# warns about them at import. Keep that noise out of every import of this library.
_verbosity = transformers.utils.logging.get_verbosity()
transformers.utils.logging.set_verbosity_error()
try:
    from diffusers import StableDiffusion3Pipeline
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift, retrieve_timesteps
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3_img2img import retrieve_latents
finally:
    transformers.utils.logging.set_verbosity(_verbosity)

logger = logging.get_logger(__name__)

register_component_libraries()  # Hub repositories of our pipelines download with Diffusers' own code
_sd3_logger = logging.get_logger(StableDiffusion3Pipeline.__module__)
# Each tokenizer warns once that an untruncated prompt exceeds its length (SD3 tokenizes it again untruncated to say
# what was cut); this pipeline's own truncation warning says it already.
_tokenizer_logger = transformers.utils.logging.get_logger("transformers.tokenization_utils_base")
_TOKENIZER_LENGTH_WARNING = "Token indices sequence length is longer than the specified maximum sequence length"

DEFAULT_ADDED_PROMPT = INFERENCE_DEFAULTS.added_prompt
"""The released positive prompt, appended to every caption after a space (its trailing space is the release's)."""
DEFAULT_NEGATIVE_PROMPT = INFERENCE_DEFAULTS.negative_prompt
"""The released negative prompt."""
DEFAULT_MAX_SEQUENCE_LENGTH = INFERENCE_DEFAULTS.max_sequence_length
"""T5 tokens of the released inference (SD3's pipeline default; the released training embeddings used 77)."""
MAX_T5_SEQUENCE_LENGTH = 512
"""The longest T5 sequence SD3 pipelines accept."""
OUTPUT_TYPES = ("pil", "np", "pt", "latent")
# Share of the available accelerator memory that `tile_batch_size="auto"` plans to fill with activations; the rest
# absorbs allocator fragmentation and kernel workspaces.
TILE_MEMORY_FRACTION = 0.9

EXAMPLE_DOC_STRING = """
    Examples:
        ```py
        >>> import torch
        >>> from PIL import Image
        >>> from diffusers_dit4sr import StableDiffusion3SRPipeline

        >>> pipe = StableDiffusion3SRPipeline.from_pretrained("path/to/dit4sr-pipeline", dtype=torch.bfloat16)
        >>> pipe.to("cuda")
        >>> low_res = Image.open("photo.png")
        >>> image = pipe(image=low_res, prompt="a red brick house by a lake", upscale=4).images[0]
        >>> image.save("photo_x4.png")
        ```
"""


def available_memory(device: torch.device) -> int | None:
    """
    Bytes this process can still allocate on a CUDA `device`: the free device memory plus what PyTorch's caching
    allocator holds unused, within `torch.cuda.set_per_process_memory_fraction`. `None` on other devices (unknown).
    """
    if device.type != "cuda":
        return None
    free, total = torch.cuda.mem_get_info(device)
    reserved, allocated = torch.cuda.memory_reserved(device), torch.cuda.memory_allocated(device)
    # Older PyTorch versions can set the fraction but not read it back.
    get_fraction = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    fraction = get_fraction(device) if get_fraction is not None else 1.0
    return max(0, min(free + reserved - allocated, int(fraction * total) - allocated))


def _bytes_off_device(module: torch.nn.Module, device: torch.device) -> int:
    """Bytes of `module`'s parameters and buffers that are not on `device` yet."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()] if t.device != device)


class _CollectWarnings(std_logging.Filter):
    """Keeps the records a logger would print (SD3's per-call truncation warnings) instead of printing them; with
    `prefix`, only those whose message starts with it."""

    def __init__(self, prefix: str = "") -> None:
        super().__init__()
        self.prefix = prefix
        self.messages: list[str] = []

    def filter(self, record: std_logging.LogRecord) -> bool:
        message = record.getMessage()
        if not message.startswith(self.prefix):
            return True
        self.messages.append(message)
        return False


def _embedding_row(embeds: torch.Tensor, image_index: int, output_index: int, num_images: int) -> torch.Tensor:
    """The `(1, ...)` row of text embeddings given for all images (batch 1), per image or per output image."""
    if embeds.shape[0] == 1:
        return embeds[:1]
    pick = image_index if embeds.shape[0] == num_images else output_index
    return embeds[pick : pick + 1]


@dataclass
class _Sample:
    """One output image in the denoising loop: its latents, LR latents, tiles and text rows."""

    image_index: int
    """The input image it upscales."""
    latents: torch.Tensor
    lr_latents: torch.Tensor
    tiles: list[Tile]
    tile_weights: torch.Tensor
    text: torch.Tensor
    """`(rows, tokens, width)`: the negative row, then the positive one, with guidance; the positive row without."""
    pooled_text: torch.Tensor


@dataclass
class _TimestepGroup:
    """Samples that share their timesteps (see `_timestep_groups`), with the scheduler that steps them."""

    samples: list[_Sample]
    positions: list[int]
    """The samples' output indices."""
    scheduler: SchedulerMixin
    timesteps: torch.Tensor


@dataclass
class _TileBatchPlan:
    """
    How many tiles of each size (latent height, width) go through the transformer per call, planned once for all
    samples of a `__call__` (`sizes`). With `tile_batch_size="auto"` (`adaptive`), an out-of-memory error halves a
    size's batch for the rest of the call.
    """

    adaptive: bool
    sizes: dict[tuple[int, int], int] = field(default_factory=dict)

    def halve(self, size: tuple[int, int]) -> int:
        """Halves the batch of `size` (rounding up); returns the new batch."""
        self.sizes[size] = (self.sizes[size] + 1) // 2
        return self.sizes[size]


@dataclass
class StableDiffusion3SRPipelineOutput(BaseOutput):
    """
    Args:
        images (`list[PIL.Image.Image]`, `np.ndarray`, `torch.Tensor` or a list of arrays/tensors):
            The upscaled images: PIL images, a `(B, H, W, 3)` array or a `(B, 3, H, W)` tensor in [0, 1] (a list of
            them when the images differ in size), or the final latents for `output_type="latent"`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor | list[np.ndarray] | list[torch.Tensor]


class StableDiffusion3SRPipeline(DiffusionPipeline, SD3LoraLoaderMixin):
    r"""
    Real-world image super-resolution with DiT4SR ([paper](https://huggingface.co/papers/2503.23580)).

    The LR image is bicubic-upscaled to the output size and VAE-encoded; a [`DiT4SRTransformer2DModel`] denoises the
    output latent from pure noise, conditioned on that LR latent and on a caption, with classifier-free guidance.
    Large images are denoised in overlapping latent tiles that run through the transformer in batches, and the
    result is color-corrected against the upscaled LR image.

    Args:
        transformer ([`DiT4SRTransformer2DModel`]): The DiT4SR transformer.
        scheduler ([`FlowMatchEulerDiscreteScheduler`]): SD3.5's flow-matching scheduler (shift 3.0).
        vae ([`AutoencoderKL`]): SD3's VAE (16 latent channels).
        text_encoder, text_encoder_2 ([`CLIPTextModelWithProjection`]): SD3's CLIP-L and CLIP-G.
        tokenizer, tokenizer_2 ([`CLIPTokenizer`]): Their tokenizers.
        text_encoder_3 ([`T5EncoderModel`], *optional*): SD3's T5-XXL; without it the T5 tokens are zeros.
        tokenizer_3 ([`T5TokenizerFast`], *optional*): Its tokenizer.
    """

    model_cpu_offload_seq = "text_encoder->text_encoder_2->text_encoder_3->transformer->vae"
    _optional_components = ["text_encoder_3", "tokenizer_3"]
    _callback_tensor_inputs = ["latents", "lr_latents", "prompt_embeds", "pooled_prompt_embeds"]

    # SD3's text encoders (two CLIPs + T5), reused as they are; `encode_prompt` adds this pipeline's defaults.
    _get_t5_prompt_embeds = StableDiffusion3Pipeline._get_t5_prompt_embeds
    _get_clip_prompt_embeds = StableDiffusion3Pipeline._get_clip_prompt_embeds

    def __init__(
        self,
        transformer: DiT4SRTransformer2DModel,
        scheduler: FlowMatchEulerDiscreteScheduler,
        vae: AutoencoderKL,
        text_encoder: CLIPTextModelWithProjection,
        tokenizer: CLIPTokenizer,
        text_encoder_2: CLIPTextModelWithProjection,
        tokenizer_2: CLIPTokenizer,
        text_encoder_3: T5EncoderModel | None = None,
        tokenizer_3: T5TokenizerFast | None = None,
    ):
        super().__init__()
        self.register_modules(
            vae=vae,
            text_encoder=text_encoder,
            text_encoder_2=text_encoder_2,
            text_encoder_3=text_encoder_3,
            tokenizer=tokenizer,
            tokenizer_2=tokenizer_2,
            tokenizer_3=tokenizer_3,
            transformer=transformer,
            scheduler=scheduler,
        )
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1) if self.vae is not None else 8
        self.tokenizer_max_length = self.tokenizer.model_max_length if self.tokenizer is not None else 77

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> Any:
        r"""
        Diffusers' [`~DiffusionPipeline.from_pretrained`] (same arguments), loading safetensors only.

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): A Hub id or a local pipeline folder.
            **kwargs: Diffusers' arguments, and `allow_pickle` (`bool`, defaults to `False`): also load pickle weights
                (`.bin`), which can run code when loaded, as Diffusers does by itself. A `use_safetensors` of the
                caller's own is passed on as it is.

        Raises:
            ValueError: A folder whose components hold only pickle weights, without `allow_pickle=True`; the message
                says how to convert it (`safe_loading`).
        """
        return super().from_pretrained(
            pretrained_model_name_or_path, **safetensors_options(cls, pretrained_model_name_or_path, kwargs)
        )

    @classmethod
    def from_released(
        cls,
        variant: str = "q",
        sd3_model: str = RELEASED_SD3_MODEL,
        dit4sr_model: str = RELEASED_DIT4SR_MODEL,
        dtype: torch.dtype | None = None,
        token: str | bool | None = None,
        cache_dir: str | None = None,
        local_files_only: bool = False,
        quantization_config: PipelineQuantizationConfig | None = None,
        **kwargs: Any,
    ) -> StableDiffusion3SRPipeline:
        r"""
        Composes the released DiT4SR pipeline: SD3.5-medium's VAE, text encoders and scheduler with a released
        DiT4SR transformer. Both are Hub ids or local folders; `stabilityai/stable-diffusion-3.5-medium` is gated
        (accept its license on the Hub, then `hf auth login` or pass `token`).

        Args:
            variant (`str`, defaults to `"q"`): Which released transformer (folder `dit4sr_{variant}/transformer` of
                `dit4sr_model`): `"q"`, perceptual quality (the paper's model); `"f"`, fidelity to the input; `"r1"`,
                the authors' revision with the corrected LR attention keys (loaded with `lr_key_source="lr"`).
            sd3_model (`str`): The SD3.5-medium pipeline.
            dit4sr_model (`str`): The repository or folder with the released transformers.
            dtype (`torch.dtype`, *optional*): Load every component in this dtype.
            token, cache_dir, local_files_only: Hub options for both downloads.
            quantization_config (`PipelineQuantizationConfig`, *optional*): Quantizes the components it names,
                the transformer included (see [`~diffusers_dit4sr.quantization.pipeline_quantization_config`]).
            **kwargs: Passed to [`~DiffusionPipeline.from_pretrained`] of the SD3.5 pipeline.

        Raises:
            [`~diffusers_dit4sr.hub.HubLoadError`] (an `OSError`): a download failed; its message names the
                repository and the cause (offline mode, no network, a gated repository without access, an unknown
                repository, a missing file) and the fix.
        """
        if variant not in RELEASED_VARIANTS:
            raise ValueError(f"`variant` must be one of {RELEASED_VARIANTS}, got {variant!r}.")
        hub_options = {"token": token, "cache_dir": cache_dir, "local_files_only": local_files_only}
        # The transformer comes from another repository, so `from_pretrained` below would not quantize it: resolve
        # its config the way Diffusers does for each component it loads.
        transformer_quantization = (
            quantization_config._resolve_quant_config(is_diffusers=True, module_name="transformer")
            if quantization_config is not None
            else None
        )
        subfolder = f"dit4sr_{variant}/transformer"
        with explain_hub_errors(f"the DiT4SR transformer {subfolder} of {dit4sr_model}", dit4sr_model):
            transformer = DiT4SRTransformer2DModel.from_pretrained(
                dit4sr_model,
                subfolder=subfolder,
                lr_key_source=RELEASED_LR_KEY_SOURCES[variant],
                dtype=dtype,
                quantization_config=transformer_quantization,
                **hub_options,
            )
        with explain_hub_errors(f"the VAE, text encoders and scheduler of {sd3_model}", sd3_model):
            return cls.from_pretrained(
                sd3_model,
                transformer=transformer,
                dtype=dtype,
                quantization_config=quantization_config,
                **hub_options,
                **kwargs,
            )

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        r"""
        Uploads the pipeline (what `save_pretrained` writes) to the Hub with a model card that shows how to load it
        with this library's class and with Diffusers' `DiffusionPipeline` (Diffusers' generic card names neither).

        Args:
            repo_id (`str`): The repository, `namespace/name`; created if it does not exist.
            **kwargs: `commit_message`, `private`, `token`, `create_pr`, `safe_serialization`, `variant` and
                `model_card` (a `huggingface_hub.ModelCard`; defaults to [`~diffusers_dit4sr.hub.make_model_card`]
                for `repo_id`). See [`~diffusers_dit4sr.hub.push_pipeline_to_hub`].

        Returns:
            The commit information (a `str` holding the commit URL).
        """
        return push_pipeline_to_hub(self, repo_id, **kwargs)

    def save_config(self, save_directory: str | os.PathLike, push_to_hub: bool = False, **kwargs: Any) -> None:
        r"""
        Writes `model_index.json` and, beside it, the loader module `pipeline_dit4sr.py` that its `_class_name`
        names, so that `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` finds this class (see
        [`~diffusers_dit4sr.pipelines.remote_code`]). [`~DiffusionPipeline.save_pretrained`] calls it after the
        components; the arguments are [`~ConfigMixin.save_config`]'s.
        """
        if isinstance(remote_class_name(type(self)), list):
            write_loader_module(save_directory)
        super().save_config(save_directory, push_to_hub=push_to_hub, **kwargs)

    def to_json_file(self, json_file_path: str | os.PathLike) -> None:
        """Writes `model_index.json` atomically; `_class_name` names this class through the loader module."""
        config = json.loads(self.to_json_string())
        config["_class_name"] = remote_class_name(type(self))
        with atomic_write_path(json_file_path) as path:
            path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def _dict_from_json_file(cls, json_file: str | os.PathLike) -> dict[str, Any]:
        """
        Reads `model_index.json` (Diffusers' `load_config` and `download` both read it here) with the loader
        module's `_class_name` taken as this class's name. Diffusers would otherwise import the loader module, and
        only with `trust_remote_code`; this class needs no code from the folder.
        """
        return local_class_name(super()._dict_from_json_file(json_file))

    @property
    def pixel_multiple(self) -> int:
        """Image sides must be multiples of this (VAE factor x patch size) to map onto whole tokens."""
        patch_size = self.transformer.config.patch_size if self.transformer is not None else 2
        return self.vae_scale_factor * patch_size

    @property
    def guidance_scale(self) -> float:
        return self._guidance_scale

    @property
    def do_classifier_free_guidance(self) -> bool:
        return self._guidance_scale > 1

    @property
    def joint_attention_kwargs(self) -> dict[str, Any] | None:
        return self._joint_attention_kwargs

    @property
    def num_timesteps(self) -> int:
        return self._num_timesteps

    @property
    def interrupt(self) -> bool:
        return self._interrupt

    @property
    def current_timestep(self) -> torch.Tensor | None:
        """The timestep being denoised (None outside the denoising loop), for Diffusers' caching hooks."""
        return getattr(self, "_current_timestep", None)

    def enable_vae_tiling(self) -> None:
        """Encode and decode the VAE in tiles, so large images never need full-size VAE activations at once."""
        self.vae.enable_tiling()

    def disable_vae_tiling(self) -> None:
        self.vae.disable_tiling()

    @torch.no_grad()
    def encode_prompt(
        self,
        prompt: str | list[str] | None = None,
        prompt_2: str | list[str] | None = None,
        prompt_3: str | list[str] | None = None,
        device: torch.device | None = None,
        num_images_per_prompt: int = 1,
        do_classifier_free_guidance: bool = True,
        negative_prompt: str | list[str] | None = DEFAULT_NEGATIVE_PROMPT,
        negative_prompt_2: str | list[str] | None = None,
        negative_prompt_3: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        clip_skip: int | None = None,
        max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
        lora_scale: float | None = None,
        added_prompt: str = DEFAULT_ADDED_PROMPT,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
        r"""
        SD3's `encode_prompt` (same arguments and return order) with this pipeline's defaults: the released negative
        prompt and T5 length, and `added_prompt` appended to every caption as `__call__` does. Embeddings encoded
        here and passed to `__call__` therefore give the image that the same `prompt` gives. Inference only, like
        `__call__` (`torch.no_grad()`): no activations are kept for autograd, and the text encoders run the same
        kernels as in `__call__`, so the embeddings are equal to its own.

        Args:
            prompt (`str` or `list[str]`, *optional*): Captions; `None` is the empty caption.
            prompt_2, prompt_3 (`str` or `list[str]`, *optional*): Captions for CLIP-G and T5 (default: `prompt`).
            negative_prompt (`str` or `list[str]`, *optional*): Defaults to the released negative prompt.
            added_prompt (`str`): Appended to every caption after a space (`""`: nothing appended). Precomputed
                `prompt_embeds` are returned as they are.
            num_images_per_prompt, do_classifier_free_guidance, device, clip_skip, lora_scale, *_embeds,
            max_sequence_length: As in [`~StableDiffusion3Pipeline.encode_prompt`].

        Returns:
            `(prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds)`.
        """
        if prompt_embeds is None:
            prompt = self._expand_prompts(prompt, added_prompt)
            prompt_2 = None if prompt_2 is None else self._expand_prompts(prompt_2, added_prompt)
            prompt_3 = None if prompt_3 is None else self._expand_prompts(prompt_3, added_prompt)
        truncations, tokenizer_warnings = _CollectWarnings(), _CollectWarnings(_TOKENIZER_LENGTH_WARNING)
        _sd3_logger.addFilter(truncations)
        _tokenizer_logger.addFilter(tokenizer_warnings)
        try:
            prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = (
                StableDiffusion3Pipeline.encode_prompt(
                    self,
                    prompt=prompt,
                    prompt_2=prompt_2,
                    prompt_3=prompt_3,
                    device=device,
                    num_images_per_prompt=num_images_per_prompt,
                    do_classifier_free_guidance=do_classifier_free_guidance,
                    negative_prompt=negative_prompt,
                    negative_prompt_2=negative_prompt_2,
                    negative_prompt_3=negative_prompt_3,
                    prompt_embeds=prompt_embeds,
                    negative_prompt_embeds=negative_prompt_embeds,
                    pooled_prompt_embeds=pooled_prompt_embeds,
                    negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
                    clip_skip=clip_skip,
                    max_sequence_length=max_sequence_length,
                    lora_scale=lora_scale,
                )
            )
        finally:
            _sd3_logger.removeFilter(truncations)
            _tokenizer_logger.removeFilter(tokenizer_warnings)
        if truncations.messages and not getattr(self, "_warned_truncation", False):
            # SD3 warns for each cut prompt on every call; once per pipeline says it all.
            self._warned_truncation = True
            logger.warning(
                f"CLIP reads {self.tokenizer_max_length} tokens and T5 `max_sequence_length` tokens: longer prompts "
                "are cut (the released quality prompt appended to every caption is long, and the released negative "
                f"prompt too). Shown once per pipeline; the first cut: {truncations.messages[0]}"
            )
        return prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds

    def check_inputs(
        self,
        *,
        images: list[torch.Tensor],
        prompt: str | list[str] | None,
        negative_prompt: str | list[str] | None,
        prompt_embeds: torch.Tensor | None,
        pooled_prompt_embeds: torch.Tensor | None,
        negative_prompt_embeds: torch.Tensor | None,
        negative_pooled_prompt_embeds: torch.Tensor | None,
        num_images_per_prompt: int,
        max_sequence_length: int,
        upscale: float,
        process_size: int,
        num_inference_steps: int,
        guidance_scale: float,
        strength: float,
        lr_injection_scale: float,
        tile_size: int,
        tile_overlap: int,
        tile_batch_size: int | str,
        color_fix: str | None,
        generator: torch.Generator | list[torch.Generator] | None,
        latents: torch.Tensor | None,
        output_type: str,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None,
        callback_on_step_end_tensor_inputs: list[str],
    ) -> None:
        """
        Raises a `ValueError`/`TypeError` naming the argument for every input the pipeline cannot honour, before any
        heavy work. `images` are the LR images as [`~image_processing.to_rgb_tensors`] returns them; the others are
        `__call__`'s arguments (`callback_on_step_end_tensor_inputs`: those the callback gets, a `PipelineCallback`'s
        own `tensor_inputs`).
        """
        num_images = len(images)
        for name, value in (
            ("upscale", upscale),
            ("guidance_scale", guidance_scale),
            ("strength", strength),
            ("lr_injection_scale", lr_injection_scale),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"`{name}` must be a number, got {type(value).__name__} {value!r}.")
            if not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number, got {value!r}.")
        if upscale <= 0:
            raise ValueError(f"`upscale` must be positive, got {upscale}.")
        for name, value, minimum in (
            ("process_size", process_size, 0),
            ("num_inference_steps", num_inference_steps, 1),
            ("num_images_per_prompt", num_images_per_prompt, 1),
            ("max_sequence_length", max_sequence_length, 1),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be an integer >= {minimum}, got {value!r}.")
        if max_sequence_length > MAX_T5_SEQUENCE_LENGTH:
            raise ValueError(
                f"`max_sequence_length` must be at most {MAX_T5_SEQUENCE_LENGTH} (T5 tokens), got {max_sequence_length}."
            )
        if tile_batch_size != "auto" and (
            isinstance(tile_batch_size, bool) or not isinstance(tile_batch_size, int) or tile_batch_size < 1
        ):
            raise ValueError(f"`tile_batch_size` must be a positive integer or 'auto', got {tile_batch_size!r}.")
        if not 0 < strength <= 1:
            raise ValueError(f"`strength` must be in (0, 1], got {strength}.")
        if strength < 1 and not hasattr(self.scheduler, "scale_noise"):
            raise ValueError(
                f"`strength` < 1 noises the LR latent with the scheduler's `scale_noise`, which "
                f"{type(self.scheduler).__name__} lacks; use a FlowMatch* scheduler or `strength=1`."
            )
        multiple = self.pixel_multiple
        for name, value, minimum in (("tile_size", tile_size, 1), ("tile_overlap", tile_overlap, 0)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum or value % multiple:
                expected = "a positive" if minimum else "a non-negative"
                raise ValueError(f"`{name}` must be {expected} multiple of {multiple} pixels, got {value!r}.")
        if tile_overlap >= tile_size:
            raise ValueError(f"`tile_overlap` ({tile_overlap}) must be smaller than `tile_size` ({tile_size}).")
        max_tile = self.transformer.config.pos_embed_max_size * multiple
        if tile_size > max_tile:
            raise ValueError(
                f"`tile_size` must be at most {max_tile} pixels (the position embedding), got {tile_size}."
            )
        if color_fix is not None and color_fix not in COLOR_FIX_METHODS:
            raise ValueError(f"`color_fix` must be one of {COLOR_FIX_METHODS} or None, got {color_fix!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"`output_type` must be one of {OUTPUT_TYPES}, got {output_type!r}.")
        if callback_on_step_end is not None and not callable(callback_on_step_end):
            raise TypeError(f"`callback_on_step_end` must be callable, got {type(callback_on_step_end).__name__}.")
        unknown = [name for name in callback_on_step_end_tensor_inputs if name not in self._callback_tensor_inputs]
        if unknown:
            raise ValueError(
                f"`callback_on_step_end_tensor_inputs` must be a subset of {self._callback_tensor_inputs}, got {unknown}."
            )

        for name, value in (("prompt", prompt), ("negative_prompt", negative_prompt)):
            if value is not None and not isinstance(value, (str, list)):
                raise TypeError(f"`{name}` must be a string, a list of strings or None, got {type(value).__name__}.")
            if isinstance(value, list):
                if len(value) != num_images:
                    raise ValueError(f"`{name}` has {len(value)} entries for {num_images} images; pass one per image.")
                if not all(isinstance(item, str) for item in value):
                    raise TypeError(
                        f"`{name}` must be a list of strings, got {[type(item).__name__ for item in value]}."
                    )
        if prompt is not None and prompt_embeds is not None:
            raise ValueError("Pass either `prompt` or `prompt_embeds`, not both.")
        batch_sizes = sorted({1, num_images, num_images * num_images_per_prompt})
        for embeds, pooled, names in (
            (prompt_embeds, pooled_prompt_embeds, ("prompt_embeds", "pooled_prompt_embeds")),
            (
                negative_prompt_embeds,
                negative_pooled_prompt_embeds,
                ("negative_prompt_embeds", "negative_pooled_prompt_embeds"),
            ),
        ):
            if (embeds is None) != (pooled is None):
                raise ValueError(f"`{names[0]}` and `{names[1]}` must be passed together.")
            for name, tensor in zip(names, (embeds, pooled), strict=True):
                if tensor is None:
                    continue
                self._check_embedding(
                    name,
                    tensor,
                    batch_sizes,
                    label=f"`{name}`",
                    hint=f"(one for all, one per image or one per output image) for {num_images} images",
                )
                if not torch.isfinite(tensor).all():
                    raise ValueError(f"`{name}` contains NaN or infinite values.")
        if guidance_scale > 1:  # the negative embeddings are used: they need the positive ones' token count
            encoded_tokens = self.tokenizer_max_length + max_sequence_length  # CLIP's tokens, then T5's
            tokens, sources = [], []
            for name, embeds, text_name in (
                ("negative_prompt_embeds", negative_prompt_embeds, "negative_prompt"),
                ("prompt_embeds", prompt_embeds, "prompt"),
            ):
                tokens.append(encoded_tokens if embeds is None else embeds.shape[1])
                sources.append(f"`{name}`" if embeds is not None else f"`{text_name}` encoded by `__call__`")
            if tokens[0] != tokens[1]:
                raise ValueError(
                    f"{sources[0]} have {tokens[0]} tokens and {sources[1]} {tokens[1]}; encode both with the same "
                    f"`max_sequence_length` ({self.tokenizer_max_length} CLIP tokens + `max_sequence_length` T5 "
                    "tokens)."
                )

        num_outputs = num_images * num_images_per_prompt
        generators = generator if isinstance(generator, list) else [generator]
        if not all(item is None or isinstance(item, torch.Generator) for item in generators):
            raise TypeError(
                f"`generator` must be a torch.Generator, a list of them or None, got {type(generator).__name__} "
                f"{generator!r}; for a seed, pass `torch.Generator().manual_seed(seed)`."
            )
        if isinstance(generator, list) and len(generator) != num_outputs:
            raise ValueError(f"`generator` has {len(generator)} generators for {num_outputs} output images.")
        if latents is not None and not isinstance(latents, torch.Tensor):
            raise TypeError(f"`latents` must be a torch.Tensor, got {type(latents).__name__}.")

        plans = self._size_plans(images, upscale, process_size)
        self.check_sizes(plans, upscale, process_size)
        if latents is not None:
            latent_sizes = {
                (plan.padded_size[0] // self.vae_scale_factor, plan.padded_size[1] // self.vae_scale_factor)
                for plan in plans
            }
            expected = (num_outputs, self.transformer.config.in_channels, *next(iter(latent_sizes)))
            if len(latent_sizes) > 1 or tuple(latents.shape) != expected:
                raise ValueError(
                    f"`latents` must have shape {expected} for these images (one shared latent size), got "
                    f"{tuple(latents.shape)}."
                )

    def _check_embedding(self, name: str, tensor: Any, batch_sizes: list[int], label: str, hint: str) -> None:
        """
        Raises for a `tensor` that cannot be `name` (`prompt_embeds`, `pooled_prompt_embeds` or their negatives) of
        this transformer: its type, rank, width and batch size (one of `batch_sizes`, explained by `hint`).
        `label` names it in the message.
        """
        pooled = name.endswith("pooled_prompt_embeds")
        ndim = 2 if pooled else 3
        width = (
            self.transformer.config.pooled_projection_dim if pooled else self.transformer.config.joint_attention_dim
        )
        if not isinstance(tensor, torch.Tensor):
            raise TypeError(f"{label} must be a torch.Tensor, got {type(tensor).__name__}.")
        if tensor.ndim != ndim or tensor.shape[-1] != width:
            expected = "(batch, " if pooled else "(batch, tokens, "
            raise ValueError(
                f"{label} must have shape {expected}{width}) for this transformer, got {tuple(tensor.shape)}."
            )
        if tensor.shape[0] not in batch_sizes:
            raise ValueError(f"{label} has batch size {tensor.shape[0]}; expected one of {batch_sizes} {hint}.")

    def _size_plans(self, images: list[torch.Tensor], upscale: float, process_size: int) -> list[SizePlan]:
        """How each LR image is enlarged, processed and resized (see [`~image_processing.plan_sizes`])."""
        return [plan_sizes(*lr.shape[-2:], upscale, process_size, self.pixel_multiple) for lr in images]

    def check_sizes(self, plans: list[SizePlan], upscale: float, process_size: int) -> None:
        """Raises a `ValueError` for an image that would be processed or returned larger than the pipeline supports."""
        for plan in plans:
            if max(plan.output_size) > MAX_OUTPUT_SIDE:
                raise ValueError(
                    f"An input of {plan.input_size[1]}x{plan.input_size[0]} px would give a "
                    f"{plan.output_size[1]}x{plan.output_size[0]} px output; sides above {MAX_OUTPUT_SIDE} px are "
                    "not supported (lower `upscale`, or upscale in several passes)."
                )
            if max(plan.enlarged_size) > MAX_OUTPUT_SIDE:
                raise ValueError(
                    f"An input of {plan.input_size[1]}x{plan.input_size[0]} px would first be enlarged to "
                    f"{plan.enlarged_size[1]}x{plan.enlarged_size[0]} px, so that times `upscale` ({upscale}) its short "
                    f"side reaches `process_size` ({process_size}); sides above {MAX_OUTPUT_SIDE} px are not supported "
                    "(raise `upscale` or lower `process_size`)."
                )
            if max(plan.padded_size) > MAX_OUTPUT_SIDE:
                raise ValueError(
                    f"An input of {plan.input_size[1]}x{plan.input_size[0]} px would be processed at "
                    f"{plan.process_size[1]}x{plan.process_size[0]} px to give its short side `process_size` "
                    f"({process_size}); sides above {MAX_OUTPUT_SIDE} px are not supported (lower `process_size`)."
                )

    @staticmethod
    def _expand_prompts(prompt: str | list[str] | None, added_prompt: str) -> list[str]:
        """
        The released prompts: each caption, a space and the added (quality) prompt. `None` is the empty caption,
        which leaves a leading space, as released.
        """
        captions = prompt if isinstance(prompt, list) else [prompt or ""]
        return [f"{caption} {added_prompt}" if added_prompt else caption for caption in captions]

    def _offload_text_encoders(self) -> None:
        """
        Under model CPU offload, moves the text encoders back to the CPU once the prompts are encoded. The offload
        chain unloads T5-XXL only when the transformer starts, so the VAE encode of the output-sized LR image would
        run beside it (8.9 GiB of T5 next to 5 GiB of VAE activations at 2048 px, bf16).
        """
        text_encoders = (self.text_encoder, self.text_encoder_2, self.text_encoder_3)
        hooks = [hook for hook in getattr(self, "_all_hooks", []) if any(hook.model is m for m in text_encoders)]
        for hook in hooks:
            hook.offload()
        if hooks:
            empty_device_cache()

    def _encode_lr(self, lr_image: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """VAE latent of an image in [0, 1], scaled and shifted like SD3's training latents."""
        pixels = (lr_image * 2 - 1).to(device=self._execution_device, dtype=self.vae.dtype)
        latents = retrieve_latents(self.vae.encode(pixels), generator=generator, sample_mode="sample")
        return (latents - self.vae.config.shift_factor) * self.vae.config.scaling_factor

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        latents = latents / self.vae.config.scaling_factor + self.vae.config.shift_factor
        decoded = self.vae.decode(latents.to(self.vae.dtype), return_dict=False)[0]
        return (decoded.float() / 2 + 0.5).clamp(0, 1)

    def _timesteps(
        self,
        scheduler: SchedulerMixin,
        num_inference_steps: int,
        strength: float,
        image_seq_len: int,
        device: torch.device,
    ) -> torch.Tensor:
        """`scheduler`'s timesteps, cut short for `strength < 1` as in SD3's img2img pipeline."""
        scheduler_kwargs = {}
        if self.scheduler.config.get("use_dynamic_shifting", False):
            scheduler_kwargs["mu"] = calculate_shift(
                image_seq_len,
                self.scheduler.config.get("base_image_seq_len", 256),
                self.scheduler.config.get("max_image_seq_len", 4096),
                self.scheduler.config.get("base_shift", 0.5),
                self.scheduler.config.get("max_shift", 1.16),
            )
        timesteps, _ = retrieve_timesteps(scheduler, num_inference_steps, device, **scheduler_kwargs)
        skipped_steps = int(max(num_inference_steps - min(num_inference_steps * strength, num_inference_steps), 0))
        start = skipped_steps * scheduler.order
        if hasattr(scheduler, "set_begin_index"):
            scheduler.set_begin_index(start)
        return timesteps[start:]

    def _timestep_groups(
        self, samples: list[_Sample], num_inference_steps: int, strength: float, device: torch.device
    ) -> list[_TimestepGroup]:
        """
        Samples that share their timesteps, to denoise together: all of them, unless the scheduler shifts its
        schedule by the image size (`use_dynamic_shifting`), which then depends on each sample's tile area. Each
        group has a scheduler of its own (the first `self.scheduler`, the others copies of it), so that all groups
        take step `i` together; the shift changes the timesteps, never their number.
        """
        shifting = self.scheduler.config.get("use_dynamic_shifting", False)
        by_area: dict[int, list[int]] = {}
        for position, sample in enumerate(samples):
            by_area.setdefault(sample.tiles[0].height * sample.tiles[0].width if shifting else 0, []).append(position)
        schedulers = [self.scheduler, *(copy.deepcopy(self.scheduler) for _ in range(len(by_area) - 1))]
        groups = []
        for positions, scheduler in zip(by_area.values(), schedulers, strict=True):
            first_tile = samples[positions[0]].tiles[0]
            image_seq_len = first_tile.height * first_tile.width // self.transformer.config.patch_size**2
            timesteps = self._timesteps(scheduler, num_inference_steps, strength, image_seq_len, device)
            groups.append(_TimestepGroup([samples[p] for p in positions], positions, scheduler, timesteps))
        return groups

    @staticmethod
    def _scheduler_step(group: _TimestepGroup, velocities: list[torch.Tensor], timestep: torch.Tensor) -> None:
        """
        One scheduler step for all samples of `group` at once: their latents, flattened and concatenated, are one
        sample to the scheduler, so a stateful scheduler (step index, second-order history) advances once per
        timestep.
        """
        samples = group.samples
        flat_velocity = torch.cat([velocity.flatten() for velocity in velocities])
        flat_latents = torch.cat([sample.latents.flatten() for sample in samples])
        stepped = group.scheduler.step(flat_velocity, timestep, flat_latents, return_dict=False)[0]
        for sample, latents in zip(samples, stepped.split([s.latents.numel() for s in samples]), strict=True):
            sample.latents = latents.view_as(sample.latents)

    @staticmethod
    def _callback_timestep(groups: list[_TimestepGroup], step: int) -> torch.Tensor:
        """The timestep of `step` that the callback sees: the one all images share, else one per output image."""
        if len(groups) == 1:
            return groups[0].timesteps[step]
        by_position = sorted((position, group.timesteps[step]) for group in groups for position in group.positions)
        return torch.stack([timestep for _, timestep in by_position])

    def _callback_tensor(self, name: str, samples: list[_Sample]) -> torch.Tensor | list[torch.Tensor]:
        """
        `callback_kwargs[name]` for all output images (what `callback_on_step_end` in `__call__` describes):
        latents stacked, or a list when their sizes differ; text embeddings in Diffusers' layout.
        """
        if name in ("latents", "lr_latents"):
            tensors = [getattr(sample, name) for sample in samples]
            if len({tuple(tensor.shape) for tensor in tensors}) == 1:
                return torch.cat(tensors)
            return [tensor[0] for tensor in tensors]
        rows = [sample.text if name == "prompt_embeds" else sample.pooled_text for sample in samples]
        # Row r of every output image, then row r + 1: the unconditional rows first, as in SD3's pipeline.
        return torch.cat([text[row : row + 1] for row in range(rows[0].shape[0]) for text in rows])

    def _run_callback(
        self,
        samples: list[_Sample],
        step: int,
        timestep: torch.Tensor,
        callback: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict],
        tensor_inputs: list[str],
    ) -> None:
        """
        Calls `callback_on_step_end` with the tensors of all output images and takes the replacements it returns
        (tensors it returns as it got them are no replacement). Guidance turned off by the callback drops the
        unconditional rows of the text embeddings it did not replace.
        """
        was_guided = self.do_classifier_free_guidance
        given = {name: self._callback_tensor(name, samples) for name in tensor_inputs}
        outputs = callback(self, step, timestep, dict(given))
        if not isinstance(outputs, dict):
            raise TypeError(
                "`callback_on_step_end` must return a dict of the tensors it replaces (`{}` for none), got "
                f"{type(outputs).__name__}."
            )
        replaced = {
            name: value
            for name, value in outputs.items()
            if name in self._callback_tensor_inputs and value is not given.get(name)
        }
        for name in ("latents", "lr_latents"):
            if name in replaced:
                for sample, tensor in zip(samples, self._per_sample(name, replaced[name], samples), strict=True):
                    setattr(sample, name, tensor)
        guided = self.do_classifier_free_guidance
        for name, attribute in (("prompt_embeds", "text"), ("pooled_prompt_embeds", "pooled_text")):
            if name in replaced:
                rows = self._text_replacement(name, replaced[name], samples)
                for sample, text in zip(samples, rows, strict=True):
                    setattr(sample, attribute, text.to(getattr(sample, attribute)))
            elif was_guided and not guided:
                for sample in samples:
                    setattr(sample, attribute, getattr(sample, attribute)[-1:])
            elif guided and not was_guided:
                raise ValueError(
                    "`callback_on_step_end` turned classifier-free guidance on (`guidance_scale` > 1) in a call "
                    f"without it; it must then return `{name}` with the unconditional rows first."
                )

    @staticmethod
    def _per_sample(name: str, value: Any, samples: list[_Sample]) -> list[torch.Tensor]:
        """Each output image's `(1, C, h, w)` tensor of the `latents`/`lr_latents` a callback returned."""
        shapes = [tuple(getattr(sample, name).shape[1:]) for sample in samples]
        stacked = len(set(shapes)) == 1
        if stacked and isinstance(value, torch.Tensor) and tuple(value.shape) == (len(samples), *shapes[0]):
            tensors = value.split(1)
        elif (
            not stacked
            and isinstance(value, (list, tuple))
            and shapes == [tuple(tensor.shape) if isinstance(tensor, torch.Tensor) else None for tensor in value]
        ):
            tensors = [tensor[None] for tensor in value]
        else:
            expected = (
                f"a tensor of shape {(len(samples), *shapes[0])}"
                if stacked
                else f"a list of {len(samples)} tensors of shapes {shapes}"
            )
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ValueError(
                f"`callback_on_step_end` returned `{name}` of {got}; expected {expected}, as it got them."
            )
        return [tensor.to(getattr(sample, name)) for sample, tensor in zip(samples, tensors, strict=True)]

    def _text_replacement(self, name: str, value: Any, samples: list[_Sample]) -> list[torch.Tensor]:
        """
        Each output image's rows (see `_Sample.text`) of the `prompt_embeds`/`pooled_prompt_embeds` a callback
        returned: in Diffusers' layout for the guidance after the callback, with 1 conditional row for all images,
        one per image or one per output image.
        """
        num_outputs, num_images = len(samples), samples[-1].image_index + 1  # samples are image-major
        copies = 2 if self.do_classifier_free_guidance else 1
        batch_sizes = sorted({copies * batch for batch in (1, num_images, num_outputs)})
        self._check_embedding(
            name,
            value,
            batch_sizes,
            label=f"`{name}` from `callback_on_step_end`",
            hint=("(the unconditional rows, then as many conditional ones: " if copies == 2 else "(")
            + "one for all images, one per image or one per output image)",
        )
        halves = value.chunk(copies)
        attribute = "text" if name == "prompt_embeds" else "pooled_text"
        if halves[-1].shape[0] == 1 and any(
            not torch.equal(getattr(sample, attribute)[-1], getattr(samples[0], attribute)[-1]) for sample in samples
        ):
            raise ValueError(
                f"`callback_on_step_end` returned 1 conditional row of `{name}` for images with different prompts, "
                "which would give them all the same prompt; return one per image or per output image (Diffusers' "
                "`SD3CFGCutoffCallback` keeps only the last row: use it with one prompt for all images)."
            )
        return [
            torch.cat([_embedding_row(half, sample.image_index, index, num_images) for half in halves])
            for index, sample in enumerate(samples)
        ]

    def _plan_tiles(self, height: int, width: int, tile_size: int, overlap: int) -> list[Tile]:
        """
        The denoising tiles of a `height x width` latent. As released, a latent whose area fits one tile is not tiled
        (if the position embedding spans it); larger ones get `tile_size` tiles, narrower along a short side.
        """
        max_side = self.transformer.config.pos_embed_max_size * self.transformer.config.patch_size
        if height * width <= tile_size**2 and max(height, width) <= max_side:
            return [Tile(0, 0, height, width)]
        return plan_tiles(height, width, tile_size, overlap)

    def _predict_velocities(
        self,
        samples: list[_Sample],
        timestep: torch.Tensor,
        lr_injection_scale: float,
        tile_batches: _TileBatchPlan,
    ) -> list[torch.Tensor]:
        """
        The guided velocity of each sample's whole latent. The tiles of all samples form one queue; tiles of one
        size go through the transformer `tile_batches.sizes[size]` at a time, each with its own sample's text, and
        each sample's tiles are then blended back into one latent.

        With `tile_batch_size="auto"` a batch that still runs out of accelerator memory makes its size retry at half
        the batch, which caps that size's batches for the rest of the call.
        """
        queue = [(sample, tile) for sample in samples for tile in sample.tiles]
        positions_by_size: dict[tuple[int, int], list[int]] = {}
        for position, (_, tile) in enumerate(queue):
            positions_by_size.setdefault((tile.height, tile.width), []).append(position)
        tile_velocities: list[torch.Tensor | None] = [None] * len(queue)
        for size, positions in positions_by_size.items():
            while True:
                try:
                    velocities = self._guided_tile_velocities(
                        [queue[position] for position in positions],
                        size,
                        timestep,
                        lr_injection_scale,
                        batch_size=tile_batches.sizes[size],
                    )
                    break
                except torch.OutOfMemoryError:
                    if not tile_batches.adaptive or tile_batches.sizes[size] == 1:
                        raise
                    halved = tile_batches.halve(size)
                    logger.warning(f"Out of memory: retrying {size[0]}x{size[1]}-latent tiles {halved} at a time.")
                    empty_device_cache()
                    if self.transformer.is_cache_enabled:
                        # Cached states belong to the old tile batches.
                        self.transformer._reset_stateful_cache()
            for position, velocity in zip(positions, velocities, strict=True):
                tile_velocities[position] = velocity

        blended, start = [], 0
        for sample in samples:
            own = torch.stack(tile_velocities[start : start + len(sample.tiles)])
            start += len(sample.tiles)
            if len(sample.tiles) == 1:
                blended.append(own)
            else:
                height, width = sample.latents.shape[-2:]
                blended.append(blend_tiles(own, sample.tiles, height, width, sample.tile_weights)[None])
        return blended

    def _guided_tile_velocities(
        self,
        queue: list[tuple[_Sample, Tile]],
        size: tuple[int, int],
        timestep: torch.Tensor,
        lr_injection_scale: float,
        batch_size: int,
    ) -> list[torch.Tensor]:
        """Classifier-free-guided velocity `(C, h, w)` of each queued tile of `size`, `batch_size` per call."""
        velocities = []
        guidance_copies = 2 if self.do_classifier_free_guidance else 1
        for batch_index, start in enumerate(range(0, len(queue), batch_size)):
            batch = queue[start : start + batch_size]
            hidden_states = torch.cat([sample.latents[(..., *tile.slices)] for sample, tile in batch])
            lr_hidden_states = torch.cat([sample.lr_latents[(..., *tile.slices)] for sample, tile in batch])
            # Row r of every sample's text for all tiles, then row r + 1: unconditional rows first, as the copies.
            text = torch.cat([sample.text[row : row + 1] for row in range(guidance_copies) for sample, _ in batch])
            pooled_text = torch.cat(
                [sample.pooled_text[row : row + 1] for row in range(guidance_copies) for sample, _ in batch]
            )
            # Each tile batch keeps its own cache state, so caching hooks compare a tile with itself across steps.
            with self.transformer.cache_context(f"tiles_{size[0]}x{size[1]}_{batch_index}"):
                velocity = self.transformer(
                    hidden_states=hidden_states.repeat(guidance_copies, 1, 1, 1),
                    lr_hidden_states=lr_hidden_states.repeat(guidance_copies, 1, 1, 1),
                    encoder_hidden_states=text,
                    pooled_projections=pooled_text,
                    timestep=timestep.expand(guidance_copies * len(batch)),
                    joint_attention_kwargs=self.joint_attention_kwargs,
                    lr_injection_scale=lr_injection_scale,
                    return_dict=False,
                )[0]
            if self.do_classifier_free_guidance:
                unconditional, conditional = velocity.chunk(2)
                velocity = unconditional + self.guidance_scale * (conditional - unconditional)
            velocities.extend(velocity.unbind(0))
        return velocities

    def _fitting_tile_batch_size(
        self, num_tiles: int, tile_height: int, tile_width: int, text_tokens: int, device: torch.device
    ) -> int:
        """
        The `"auto"` tile batch: as many tiles as fit in the available accelerator memory by the transformer's
        activation estimate, spread evenly over the calls. All tiles where the free memory is unknown (CPU, MPS).
        """
        available = available_memory(device)
        if available is None:
            return num_tiles
        if isinstance(getattr(self.transformer, "_hf_hook", None), CpuOffload):
            # Model offload: the transformer's first call loads it (the text encoders are already unloaded).
            available -= _bytes_off_device(self.transformer, device)
        rows_per_tile = 2 if self.do_classifier_free_guidance else 1
        tile_bytes = self.transformer.estimate_activation_memory(rows_per_tile, tile_height, tile_width, text_tokens)
        fitting = min(num_tiles, max(1, int(TILE_MEMORY_FRACTION * available) // tile_bytes))
        return math.ceil(num_tiles / math.ceil(num_tiles / fitting))

    def _plan_tile_batches(
        self, samples: list[_Sample], tile_batch_size: int | str, device: torch.device
    ) -> dict[tuple[int, int], int]:
        """Tiles per transformer call for each tile size of the queue: fixed, or `"auto"` for the whole queue."""
        counts = Counter((tile.height, tile.width) for sample in samples for tile in sample.tiles)
        if tile_batch_size != "auto":
            return dict.fromkeys(counts, tile_batch_size)
        text_tokens = samples[0].text.shape[1]
        return {
            size: self._fitting_tile_batch_size(count, *size, text_tokens, device) for size, count in counts.items()
        }

    @torch.no_grad()
    @replace_example_docstring(EXAMPLE_DOC_STRING)
    def __call__(
        self,
        image: ImageInput | list[ImageInput],
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = DEFAULT_NEGATIVE_PROMPT,
        added_prompt: str = DEFAULT_ADDED_PROMPT,
        prompt_embeds: torch.Tensor | None = None,
        pooled_prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        negative_pooled_prompt_embeds: torch.Tensor | None = None,
        max_sequence_length: int = DEFAULT_MAX_SEQUENCE_LENGTH,
        num_images_per_prompt: int = 1,
        upscale: float = INFERENCE_DEFAULTS.upscale,
        process_size: int = INFERENCE_DEFAULTS.process_size,
        num_inference_steps: int = INFERENCE_DEFAULTS.num_inference_steps,
        guidance_scale: float = INFERENCE_DEFAULTS.guidance_scale,
        strength: float = INFERENCE_DEFAULTS.strength,
        lr_injection_scale: float = INFERENCE_DEFAULTS.lr_injection_scale,
        tile_size: int = INFERENCE_DEFAULTS.tile_size,
        tile_overlap: int = INFERENCE_DEFAULTS.tile_overlap,
        tile_batch_size: int | str = INFERENCE_DEFAULTS.tile_batch_size,
        symmetric_tile_weights: bool = False,
        color_fix: str | None = INFERENCE_DEFAULTS.color_fix,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        joint_attention_kwargs: dict[str, Any] | None = None,
        callback_on_step_end: Callable[[DiffusionPipeline, int, torch.Tensor, dict], dict] | None = None,
        callback_on_step_end_tensor_inputs: list[str] = ["latents"],  # noqa: B006 (Diffusers' convention)
    ) -> StableDiffusion3SRPipelineOutput | tuple:
        r"""
        Upscales degraded images. The defaults are the released inference (`docs/architecture.md` lists what differs).

        Args:
            image (`PIL.Image.Image`, `np.ndarray`, `torch.Tensor` or a list of them):
                The low-resolution images: PIL, `(H, W, C)` arrays (uint8 or [0, 1]) or `(C, H, W)` / `(B, C, H, W)`
                tensors in [0, 1]. Grayscale and RGBA are converted to RGB. Images of a list may differ in size.
                8-bit images are resized by PIL, as released; float ones by the same kernel in torch.
            prompt (`str` or `list[str]`, *optional*):
                A caption of each image (one string for all, or one per image). Defaults to an empty caption.
            negative_prompt (`str` or `list[str]`, *optional*): Defaults to the released negative prompt.
            added_prompt (`str`): Appended to every caption after a space; defaults to the released quality prompt,
                `""` disables it.
            prompt_embeds, pooled_prompt_embeds, negative_prompt_embeds, negative_pooled_prompt_embeds (`torch.Tensor`):
                Precomputed text embeddings instead of `prompt` / `negative_prompt`: batch 1, one per image or one per
                output image. [`~StableDiffusion3SRPipeline.encode_prompt`] makes them exactly as `__call__` would.
            max_sequence_length (`int`, defaults to 256): T5 tokens (released inference: 256; training: 77).
            num_images_per_prompt (`int`, defaults to 1): Samples per input image, returned image-major (all samples
                of the first image, then the second's). Sample `j` of image `i` equals a call with that image repeated.
            upscale (`float`, defaults to 4.0): Any positive factor. The output is exactly
                `round(W * upscale) x round(H * upscale)`.
            process_size (`int`, defaults to 512): An LR whose short side is below `process_size // upscale` is first
                enlarged (bicubic) to reach it, and the result is resized back (the released models saw 512 px crops).
            num_inference_steps (`int`, defaults to 40): Denoising steps.
            guidance_scale (`float`, defaults to 8.0): Classifier-free guidance scale; <= 1 disables guidance.
            strength (`float`, defaults to 1.0): 1.0 starts from pure noise; below 1 the LR latent is noised to this
                level and only the remaining steps run (img2img style).
            lr_injection_scale (`float`, defaults to 1.2): Strength of the LR injection (released inference: 1.2).
            tile_size (`int`, defaults to 512): Side of the denoising tiles in output pixels (a positive multiple
                of 16; there is no "untiled" value). Images whose area fits one tile are not tiled.
            tile_overlap (`int`, defaults to 192): Overlap of neighbouring tiles in output pixels (a multiple of 16
                below `tile_size`; 0: tiles meet edge to edge).
            tile_batch_size (`int` or `"auto"`, defaults to `"auto"`): How many tiles go through the transformer
                together (twice as many rows with guidance). `"auto"` takes as many tiles as the available
                accelerator memory holds (by [`~DiT4SRTransformer2DModel.estimate_activation_memory`]; all tiles on
                the CPU) and halves the batch if the accelerator still runs out of memory. Changes speed and memory,
                not the result.
            symmetric_tile_weights (`bool`, defaults to `False`): Blend tiles with a gaussian centred on each tile;
                the default reproduces the released map, whose rows are centred half a latent lower.
            color_fix (`str`, *optional*, defaults to `"adain"`): `"adain"`, `"wavelet"` or `None`; the correction
                is made against the bicubic-upscaled LR image.
            generator (`torch.Generator` or a list, one per output image, *optional*): For reproducible noise.
            latents (`torch.Tensor`, *optional*): Initial noise `(N, 16, h, w)` of the padded latent grid, one per
                output image; images must then share one size.
            output_type (`str`, defaults to `"pil"`): `"pil"`, `"np"`, `"pt"` or `"latent"`.
            return_dict (`bool`, defaults to `True`): Return a [`StableDiffusion3SRPipelineOutput`] or a tuple.
            joint_attention_kwargs (`dict`, *optional*): Passed to the attention processors (`"scale"` scales LoRA).
            callback_on_step_end (`Callable`, [`~diffusers.callbacks.PipelineCallback`] or
                [`~diffusers.callbacks.MultiPipelineCallbacks`], *optional*):
                Called as `callback(pipe, step, timestep, callback_kwargs)` once per denoising step, for all images
                of the call together: `pipe.num_timesteps` times (`num_inference_steps` as the scheduler counts
                them: fewer with `strength` < 1, more for a second-order scheduler), each time after every tile of
                every output image has been denoised, blended and stepped. Tiles are internal to a step; the callback sees whole images. `timestep` is
                the step's timestep; only when a scheduler with `use_dynamic_shifting` gives images of different
                tile areas different schedules is it a `(N,)` tensor, one per output image. With
                `N = len(image) * num_images_per_prompt` output images in output order (image-major),
                `callback_kwargs` holds those of `callback_on_step_end_tensor_inputs`:

                - `latents`: the padded latent grids after the step, `(N, 16, h, w)`, or a list of `N`
                  `(16, h, w)` tensors when the images differ in latent size.
                - `lr_latents`: the latents of the bicubic-upscaled LR images, in the same form.
                - `prompt_embeds` `(2N, tokens, width)` and `pooled_prompt_embeds` `(2N, width)`: with guidance,
                  the unconditional rows of all output images, then their conditional rows (Diffusers' layout);
                  without guidance, `N` conditional rows.

                It returns a dict of the tensors it replaces, which the following steps use: `latents` and
                `lr_latents` in the form it got them, text embeddings with one row for all images, one per image
                or one per output image (each twice with guidance, unconditional rows first; one row stands for
                all images only when their prompts agree, else it is a `ValueError`). Turning guidance off from the callback
                (`pipe._guidance_scale = 0.0`, as Diffusers' [`~diffusers.callbacks.SD3CFGCutoffCallback`] does
                at its cutoff step) runs the transformer on the conditional rows alone from the next step on;
                `pipe._interrupt = True` skips the remaining steps.
            callback_on_step_end_tensor_inputs (`list[str]`, defaults to `["latents"]`): The tensors of
                `callback_kwargs`, from `pipe._callback_tensor_inputs`. A `PipelineCallback` or
                `MultiPipelineCallbacks` brings its own `tensor_inputs`, which replace these.

        Examples:
        """
        images = to_rgb_tensors(image)
        num_images = len(images)
        if isinstance(callback_on_step_end, (PipelineCallback, MultiPipelineCallbacks)):
            callback_on_step_end_tensor_inputs = callback_on_step_end.tensor_inputs  # as Diffusers' pipelines
        self.check_inputs(
            images=images,
            prompt=prompt,
            negative_prompt=negative_prompt,
            prompt_embeds=prompt_embeds,
            pooled_prompt_embeds=pooled_prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
            negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
            num_images_per_prompt=num_images_per_prompt,
            max_sequence_length=max_sequence_length,
            upscale=upscale,
            process_size=process_size,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            strength=strength,
            lr_injection_scale=lr_injection_scale,
            tile_size=tile_size,
            tile_overlap=tile_overlap,
            tile_batch_size=tile_batch_size,
            color_fix=color_fix,
            generator=generator,
            latents=latents,
            output_type=output_type,
            callback_on_step_end=callback_on_step_end,
            callback_on_step_end_tensor_inputs=callback_on_step_end_tensor_inputs,
        )
        plans = self._size_plans(images, upscale, process_size)
        # Output image `n` is sample `n % num_images_per_prompt` of input image `n // num_images_per_prompt`.
        num_outputs = num_images * num_images_per_prompt

        self._guidance_scale = guidance_scale
        self._joint_attention_kwargs = joint_attention_kwargs
        self._interrupt = False
        device = self._execution_device

        # Encoded once per distinct prompt; output image `n` reads row `n`, its image's row or row 0.
        prompt_embeds, negative_prompt_embeds, pooled_prompt_embeds, negative_pooled_prompt_embeds = (
            self.encode_prompt(
                prompt=prompt,
                negative_prompt=negative_prompt,
                do_classifier_free_guidance=self.do_classifier_free_guidance,
                prompt_embeds=prompt_embeds,
                negative_prompt_embeds=negative_prompt_embeds,
                pooled_prompt_embeds=pooled_prompt_embeds,
                negative_pooled_prompt_embeds=negative_pooled_prompt_embeds,
                device=device,
                max_sequence_length=max_sequence_length,
                lora_scale=(joint_attention_kwargs or {}).get("scale"),
                added_prompt=added_prompt,
            )
        )
        # With guidance, each output image's text is its negative row, then its positive row (see `_Sample.text`).
        texts, pooled_texts = [prompt_embeds], [pooled_prompt_embeds]
        if self.do_classifier_free_guidance:
            texts.insert(0, negative_prompt_embeds)
            pooled_texts.insert(0, negative_pooled_prompt_embeds)
        self._offload_text_encoders()

        tile_latents = tile_size // self.vae_scale_factor
        overlap_latents = tile_overlap // self.vae_scale_factor

        # 1. Every output image's LR latents and initial noise, image by image (the VAE encodes one at a time).
        samples = []
        for image_index, plan in enumerate(plans):
            upscaled_lr = upscale_lr(images[image_index], plan).to(device)
            for index in range(image_index * num_images_per_prompt, (image_index + 1) * num_images_per_prompt):
                image_generator = generator[index] if isinstance(generator, list) else generator
                text = torch.cat([_embedding_row(embeds, image_index, index, num_images) for embeds in texts])
                pooled_text = torch.cat(
                    [_embedding_row(embeds, image_index, index, num_images) for embeds in pooled_texts]
                )
                lr_latents = self._encode_lr(pad_to(upscaled_lr, plan.padded_size), image_generator)
                lr_latents = lr_latents.to(self.transformer.dtype)
                tiles = self._plan_tiles(*lr_latents.shape[-2:], tile_latents, overlap_latents)
                if latents is not None:
                    noise = latents[index : index + 1]
                else:
                    noise = randn_tensor(
                        lr_latents.shape, generator=image_generator, device=device, dtype=lr_latents.dtype
                    )
                samples.append(
                    _Sample(
                        image_index=image_index,
                        latents=noise.to(device=device, dtype=lr_latents.dtype),
                        lr_latents=lr_latents,
                        tiles=tiles,
                        tile_weights=gaussian_tile_weights(
                            tiles[0].height, tiles[0].width, device=device, symmetric=symmetric_tile_weights
                        ),
                        text=text,
                        pooled_text=pooled_text,
                    )
                )
            del upscaled_lr  # not held through the denoising (see step 3)

        # 2. All samples denoised together: at each step every group of samples that share their timesteps takes
        # one scheduler step, then the callback sees all images once.
        groups = self._timestep_groups(samples, num_inference_steps, strength, device)
        num_steps = len(groups[0].timesteps)  # the scheduler's count (a second-order scheduler takes more)
        self._num_timesteps = num_steps
        if strength < 1:
            for group in groups:
                for sample in group.samples:
                    sample.latents = group.scheduler.scale_noise(
                        sample.lr_latents, group.timesteps[:1], sample.latents
                    )
        tile_batches = _TileBatchPlan(
            adaptive=tile_batch_size == "auto", sizes=self._plan_tile_batches(samples, tile_batch_size, device)
        )
        if self.transformer.is_cache_enabled:
            self.transformer._reset_stateful_cache()
        with self.progress_bar(total=num_outputs * num_steps) as progress_bar:
            for step in range(num_steps):
                if self.interrupt:
                    continue
                for group in groups:
                    timestep = group.timesteps[step]
                    self._current_timestep = timestep
                    velocities = self._predict_velocities(group.samples, timestep, lr_injection_scale, tile_batches)
                    self._scheduler_step(group, velocities, timestep)
                if callback_on_step_end is not None:
                    self._current_timestep = self._callback_timestep(groups, step)
                    self._run_callback(
                        samples,
                        step,
                        self._current_timestep,
                        callback_on_step_end,
                        callback_on_step_end_tensor_inputs,
                    )
                progress_bar.update(num_outputs)
            self._current_timestep = None

        # 3. Decoded and color-corrected image by image (samples are image-major).
        if output_type == "latent":
            outputs = [sample.latents[0] for sample in samples]
        else:
            outputs = []
            for image_index, plan in enumerate(plans):
                # Made again, not kept from step 1: the output-sized LR of every image would stay in memory meanwhile.
                upscaled_lr = upscale_lr(images[image_index], plan).to(device)
                for sample in samples[image_index * num_images_per_prompt : (image_index + 1) * num_images_per_prompt]:
                    sr_image = self._decode(sample.latents)[..., : plan.process_size[0], : plan.process_size[1]]
                    sr_image = apply_color_fix(sr_image, upscaled_lr, color_fix).clamp(0, 1)
                    outputs.append(pil_bicubic_resize(sr_image, plan.output_size)[0].cpu())

        self.maybe_free_model_hooks()
        images = self._format_outputs(outputs, output_type)
        if not return_dict:
            return (images,)
        return StableDiffusion3SRPipelineOutput(images=images)

    @staticmethod
    def _format_outputs(outputs: list[torch.Tensor], output_type: str):
        """`(3, H, W)` images in [0, 1] (or latents) -> the requested type, stacked when the sizes agree."""
        if output_type == "pil":
            return [
                PIL.Image.fromarray((image.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
                for image in outputs
            ]
        if output_type == "np":
            outputs = [image.permute(1, 2, 0).float().numpy() for image in outputs]
            return np.stack(outputs) if len({array.shape for array in outputs}) == 1 else outputs
        return torch.stack(outputs) if len({tuple(image.shape) for image in outputs}) == 1 else outputs
