# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The DiT4SR transformer: SD3's MM-DiT with a second image stream for the low-resolution (LR) input.

The model embeds the noisy latent and the LR latent into token streams, runs them with the text through the blocks
of `transformer_blocks` and turns the noise stream back into a velocity; it also loads released checkpoints with the
right LR attention, starts new models from SD3 transformers and adapts Diffusers' caching hooks.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import torch
from accelerate import init_empty_weights
from accelerate.utils import set_module_tensor_to_device
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.hooks import FasterCacheConfig
from diffusers.hooks.group_offloading import _is_group_offload_enabled
from diffusers.loaders import PeftAdapterMixin
from diffusers.models.attention import AttentionMixin
from diffusers.models.cache_utils import CacheMixin
from diffusers.models.embeddings import CombinedTimestepTextProjEmbeddings, PatchEmbed
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormContinuous
from diffusers.utils import apply_lora_scale, logging
from torch import nn

from ..safe_loading import safetensors_options
from .attention_processor import DiT4SRAttention
from .released import RELEASED_LR_KEY_SOURCES, describe_location, released_variant_in_path
from .transformer_blocks import (
    DiT4SRDualAttentionTransformerBlock,
    DiT4SRFeedForward,
    DiT4SRFinalTransformerBlock,
    DiT4SRTransformerBlock,
)

logger = logging.get_logger(__name__)

_DIT4SR_OPTIONS = ("lr_key_source", "lr_attention", "lr_residual", "lr_injection")
# The `from_pretrained` arguments that say where the config is.
_CONFIG_OPTIONS = ("subfolder", "revision", "cache_dir", "token", "local_files_only", "proxies", "force_download")


class DiT4SRTransformer2DModel(ModelMixin, AttentionMixin, CacheMixin, ConfigMixin, PeftAdapterMixin):
    r"""
    The DiT4SR transformer ([Taming Diffusion Transformer for Real-World Image Super-Resolution](
    https://huggingface.co/papers/2503.23580)): SD3/SD3.5's MM-DiT with an LR stream.

    The LR latent is embedded like the noisy latent (same patch and position embeddings) and travels through every
    block as a second image stream that attends jointly with the noise and text tokens and injects its MLP
    activations into the noise stream. Only the noise stream is decoded into the velocity prediction.

    The SD3 arguments have `SD3Transformer2DModel`'s names and defaults, so SD3/SD3.5 and released DiT4SR configs
    and state dicts load as they are.

    Args:
        sample_size (`int`, defaults to `128`): Latent size the position embeddings were trained at.
        patch_size (`int`, defaults to `2`): Side of the square latent patches that become tokens.
        in_channels (`int`, defaults to `16`): Latent channels of the inputs.
        num_layers (`int`, defaults to `18`): Number of transformer blocks.
        attention_head_dim (`int`, defaults to `64`): Channels per attention head.
        num_attention_heads (`int`, defaults to `18`): Number of attention heads.
        joint_attention_dim (`int`, defaults to `4096`): Channels of the text encoder states.
        caption_projection_dim (`int`, defaults to `1152`): Channels of the projected text tokens (the model width).
        pooled_projection_dim (`int`, defaults to `2048`): Channels of the pooled text embedding.
        out_channels (`int`, defaults to `16`): Latent channels of the output.
        pos_embed_max_size (`int`, defaults to `96`): Side of the position-embedding grid, in patches.
        dual_attention_layers (`tuple[int, ...]`, defaults to `()`): Blocks with SD3.5's second attention.
        qk_norm (`str`, *optional*): Query/key normalization (`"rms_norm"` in SD3.5).
        lr_key_source (`str`, defaults to `"noise"`): Where the LR tokens' attention keys come from. `"noise"`
            reproduces the released checkpoints (with `qk_norm`, the LR keys are the noise keys normalized a second
            time); `"lr"` follows the paper's Eq. 1 (keys from `to_k_control`).
        lr_attention (`bool`, defaults to `True`): Whether the LR tokens take part in attention (ablation A: False).
        lr_residual (`bool`, defaults to `True`): Whether the LR tokens are added back to their attention output
            before `to_out_control` (ablation B: False).
        lr_injection (`str`, defaults to `"conv"`): How the LR stream feeds the noise stream between the MLP layers:
            `"conv"` (depthwise 3x3), `"linear"` (ablation D) or `"none"` (ablation C).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = [
        "DiT4SRTransformerBlock",
        "DiT4SRDualAttentionTransformerBlock",
        "DiT4SRFinalTransformerBlock",
    ]
    # One graph per class; the final block runs once per forward and stays eager.
    _repeated_blocks = ["DiT4SRTransformerBlock", "DiT4SRDualAttentionTransformerBlock"]
    _skip_layerwise_casting_patterns = ["pos_embed", "norm"]
    # The forward arguments that carry the batch: FasterCache halves them when it skips the unconditional half of a
    # classifier-free-guidance batch (see `enable_cache`).
    _batch_input_kwargs = (
        "hidden_states",
        "lr_hidden_states",
        "encoder_hidden_states",
        "pooled_projections",
        "timestep",
    )
    # Released checkpoints carry text projections in the image-only `attn2`, which the model never used.
    _keys_to_ignore_on_load_unexpected = [r"\.attn2\.(add_[qkv]_proj|to_add_out|norm_added_[qk])\."]

    @register_to_config
    def __init__(
        self,
        sample_size: int = 128,
        patch_size: int = 2,
        in_channels: int = 16,
        num_layers: int = 18,
        attention_head_dim: int = 64,
        num_attention_heads: int = 18,
        joint_attention_dim: int = 4096,
        caption_projection_dim: int = 1152,
        pooled_projection_dim: int = 2048,
        out_channels: int = 16,
        pos_embed_max_size: int = 96,
        dual_attention_layers: tuple[int, ...] = (),
        qk_norm: str | None = None,
        lr_key_source: str = "noise",
        lr_attention: bool = True,
        lr_residual: bool = True,
        lr_injection: str = "conv",
    ):
        super().__init__()
        # `lr_key_source` and `lr_injection` are checked by the attention and MLP modules that use them.
        for name, value in (("lr_attention", lr_attention), ("lr_residual", lr_residual)):
            if not isinstance(value, bool):
                raise TypeError(f"`{name}` must be a bool, got {value!r}.")
        self.out_channels = out_channels if out_channels is not None else in_channels
        self.inner_dim = num_attention_heads * attention_head_dim
        if caption_projection_dim != self.inner_dim:
            raise ValueError(
                f"`caption_projection_dim` ({caption_projection_dim}) must equal num_attention_heads * "
                f"attention_head_dim ({self.inner_dim}): text and image tokens share the attention width."
            )
        bad_layers = [i for i in dual_attention_layers if not 0 <= i < num_layers]
        if bad_layers:
            raise ValueError(f"`dual_attention_layers` must index blocks 0..{num_layers - 1}, got {bad_layers}.")

        self.pos_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=self.inner_dim,
            pos_embed_max_size=pos_embed_max_size,
        )
        self.time_text_embed = CombinedTimestepTextProjEmbeddings(
            embedding_dim=self.inner_dim, pooled_projection_dim=pooled_projection_dim
        )
        self.context_embedder = nn.Linear(joint_attention_dim, caption_projection_dim)
        block_options = {
            "dim": self.inner_dim,
            "num_attention_heads": num_attention_heads,
            "attention_head_dim": attention_head_dim,
            "qk_norm": qk_norm,
            "lr_key_source": lr_key_source,
            "lr_attention": lr_attention,
            "lr_residual": lr_residual,
            "lr_injection": lr_injection,
        }
        blocks = []
        for i in range(num_layers):
            if i == num_layers - 1:
                block = DiT4SRFinalTransformerBlock(use_dual_attention=i in dual_attention_layers, **block_options)
            elif i in dual_attention_layers:
                block = DiT4SRDualAttentionTransformerBlock(**block_options)
            else:
                block = DiT4SRTransformerBlock(**block_options)
            blocks.append(block)
        self.transformer_blocks = nn.ModuleList(blocks)
        self.norm_out = AdaLayerNormContinuous(self.inner_dim, self.inner_dim, elementwise_affine=False, eps=1e-6)
        self.proj_out = nn.Linear(self.inner_dim, patch_size * patch_size * self.out_channels)

        self.gradient_checkpointing = False

    @classmethod
    def from_pretrained(
        cls, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any
    ) -> DiT4SRTransformer2DModel:
        r"""
        Loads a DiT4SR transformer saved with `save_pretrained` or released by the authors, like Diffusers'
        [`~ModelMixin.from_pretrained`] (same arguments), choosing the LR attention its weights were trained with.

        Released checkpoints carry a plain SD3 config, without `lr_key_source`, although `dit4sr_q`/`dit4sr_f` need
        `"noise"` and `dit4sr_r1` needs `"lr"`. The key source is therefore taken, in this order, from:

        1. the `lr_key_source` argument, when given (it overrides the config);
        2. the config, when it records `lr_key_source` (every folder this library writes does);
        3. the folder's name: a folder `dit4sr_q`, `dit4sr_f` or `dit4sr_r1` in the path, Hub id or `subfolder`
           (see [`~diffusers_dit4sr.models.released.released_variant_in_path`]).

        Otherwise the checkpoint cannot be attributed and a `ValueError` says what to pass: a wrong guess would run
        without error and give wrong images. To start a new DiT4SR from an SD3 transformer, use
        [`~DiT4SRTransformer2DModel.from_transformer`].

        Args:
            pretrained_model_name_or_path (`str` or `os.PathLike`): A Hub id or a local folder.
            **kwargs: Diffusers' arguments (`subfolder`, `dtype`, `revision`, ...), and:

                - `lr_key_source` (`str`, *optional*): `"noise"` or `"lr"`, overriding the config and the folder
                  name.
                - `allow_pickle` (`bool`, defaults to `False`): also load pickle weights (`.bin`), which can run
                  code when loaded; without it weights load from safetensors only (`safe_loading`).

        Raises:
            ValueError: A checkpoint whose key source cannot be attributed, or a folder with only pickle weights
                (the message says how to convert it).
        """
        kwargs = safetensors_options(cls, pretrained_model_name_or_path, kwargs)
        if kwargs.get("lr_key_source") is None:
            kwargs.pop("lr_key_source", None)
            config = cls.load_config(
                pretrained_model_name_or_path, **{name: kwargs[name] for name in _CONFIG_OPTIONS if name in kwargs}
            )
            if "lr_key_source" not in config:
                kwargs["lr_key_source"] = cls._released_lr_key_source(
                    pretrained_model_name_or_path, kwargs.get("subfolder")
                )
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    @staticmethod
    def _released_lr_key_source(path: str | os.PathLike, subfolder: str | None) -> str:
        """The key source of a config without `lr_key_source`, from the released folder it is in; else an error."""
        variant = released_variant_in_path(path, subfolder)
        if variant is None:
            raise ValueError(
                f"{describe_location(path, subfolder)} holds a transformer config without `lr_key_source` (a plain "
                "SD3 config, as the released DiT4SR checkpoints have) in a folder not named `dit4sr_q`, `dit4sr_f` or "
                "`dit4sr_r1`, so which LR attention its weights need cannot be told. Pass "
                '`lr_key_source="noise"` for weights of dit4sr_q or dit4sr_f, or `lr_key_source="lr"` for dit4sr_r1. '
                "To start a new DiT4SR from an SD3 transformer, use `DiT4SRTransformer2DModel.from_transformer`."
            )
        key_source = RELEASED_LR_KEY_SOURCES[variant]
        logger.info(f"{describe_location(path, subfolder)}: released dit4sr_{variant}, lr_key_source={key_source!r}.")
        return key_source

    @classmethod
    def from_transformer(cls, transformer: ModelMixin, **dit4sr_options: Any) -> DiT4SRTransformer2DModel:
        r"""
        Builds a DiT4SR transformer from an SD3/SD3.5 transformer (paper, Sec. 3): every SD3 weight is copied, the LR
        attention projections and the injection layer start at zero and `to_out_control` starts as a copy of
        `to_out.0`. The source model and its config are left untouched.

        Args:
            transformer ([`~diffusers.SD3Transformer2DModel`]): The pre-trained SD3 transformer.
            **dit4sr_options: `lr_key_source`, `lr_attention`, `lr_residual`, `lr_injection`.
        """
        unknown = sorted(set(dit4sr_options) - set(_DIT4SR_OPTIONS))
        if unknown:
            raise TypeError(f"Unknown DiT4SR option(s) {unknown}; expected a subset of {list(_DIT4SR_OPTIONS)}.")
        config = {key: value for key, value in transformer.config.items() if not key.startswith("_")}
        unsupported = sorted(set(config) - set(cls._get_init_keys(cls)))
        if unsupported:
            raise ValueError(f"`transformer` has config keys this model does not know: {unsupported}.")
        config.update(dit4sr_options)

        with init_empty_weights():
            model = cls.from_config(config)
        # Own copies of the SD3 weights, so that training the new model never writes into the source model.
        source_state = {name: tensor.clone() for name, tensor in transformer.state_dict().items()}
        missing, unexpected = model.load_state_dict(source_state, strict=False, assign=True)
        if unexpected:
            raise ValueError(f"`transformer` has weights a DiT4SR model does not: {unexpected[:5]}...")
        uninitialized = [name for name in missing if "control" not in name]
        if uninitialized:
            raise ValueError(f"`transformer` lacks SD3 weights: {uninitialized[:5]}...")
        reference = next(transformer.parameters())
        for name in missing:
            shape = model.get_parameter(name).shape
            value = torch.empty(shape, device=reference.device, dtype=reference.dtype)
            set_module_tensor_to_device(model, name, reference.device, value=value, dtype=reference.dtype)
        model.init_lr_stream()
        return model

    def enable_cache(self, config) -> None:
        r"""
        Enables one of Diffusers' caching hooks ([`CacheMixin.enable_cache`]), adapted to this model where needed.

        [`~hooks.FasterCacheConfig`]: when FasterCache skips the unconditional half of a guidance batch, it halves
        the forward arguments it is told carry the batch. Diffusers' default list lacks `lr_hidden_states` and
        `pooled_projections`, so they are added (`_batch_input_kwargs`), and `tensor_format` is set to `"BCHW"`, the
        layout of this model's output. The config passed in is not modified. A `current_timestep_callback` is
        required (e.g. `lambda: pipe.current_timestep`).
        """
        if isinstance(config, FasterCacheConfig):
            if config.current_timestep_callback is None:
                raise ValueError(
                    "FasterCache needs `current_timestep_callback` (e.g. `lambda: pipe.current_timestep`): it decides "
                    "by the timestep when attention and the unconditional branch may be skipped."
                )
            identifiers = dict.fromkeys(config._unconditional_conditional_input_kwargs_identifiers)
            identifiers.update(dict.fromkeys(self._batch_input_kwargs))
            config = dataclasses.replace(
                config, tensor_format="BCHW", _unconditional_conditional_input_kwargs_identifiers=tuple(identifiers)
            )
        super().enable_cache(config)

    @torch.no_grad()
    def init_lr_stream(self) -> None:
        """Resets every LR-stream layer to DiT4SR's initialization (see [`~DiT4SRTransformer2DModel.from_transformer`])."""
        for module in self.modules():
            if isinstance(module, (DiT4SRAttention, DiT4SRFeedForward)):
                module.init_lr_stream()

    def fuse_lr_projections(self) -> None:
        r"""
        Speeds up inference: each LR projection (`to_q_control` after `to_q`, ...) is folded with the SD3 projection
        before it into one matrix, so the LR tokens take one GEMM instead of two. Outputs agree with the unfused
        model to round-off. The folded copies are computed now: after changing weights, fuse again; for training,
        call [`~DiT4SRTransformer2DModel.unfuse_lr_projections`] (the folded copies receive no gradients). With group
        offloading, fuse first, then call `enable_group_offload`: the folded copies are buffers of the attention
        modules and are offloaded with them. Quantized models refuse: see `diffusers_dit4sr.quantization`.
        """
        if getattr(self, "_hf_peft_config_loaded", False):
            raise ValueError(
                "`fuse_lr_projections` would bypass the LoRA adapters of the projections; fuse or unload them first."
            )
        if getattr(self, "hf_quantizer", None) is not None:
            # The folding multiplies full-precision weights; quantized ones would have to be dequantized into
            # full-precision copies, undoing the memory the quantization saved.
            raise ValueError(
                "`fuse_lr_projections` needs full-precision weights; this transformer is quantized "
                f"({self.hf_quantizer.quantization_config.quant_method}). Load it without quantization to fuse."
            )
        if _is_group_offload_enabled(self):
            # The offloaded weights are not where the folding reads them (on disk they are placeholders), and the
            # groups, already formed, would not move the new buffers.
            raise ValueError("Call `fuse_lr_projections()` before `enable_group_offload(...)`, not after.")
        for module in self.modules():
            if isinstance(module, DiT4SRAttention):
                module.fuse_lr_projections()

    def unfuse_lr_projections(self) -> None:
        """Returns to the separate LR projections (see [`~DiT4SRTransformer2DModel.fuse_lr_projections`])."""
        for module in self.modules():
            if isinstance(module, DiT4SRAttention):
                module.unfuse_lr_projections()

    def estimate_activation_memory(
        self, batch_size: int, height: int, width: int, text_tokens: int, dtype: torch.dtype | None = None
    ) -> int:
        r"""
        Upper estimate, in bytes, of the activations one inference forward (no gradients) holds at its peak; the
        weights are not included. The pipeline uses it to choose how many tiles fit in one call.

        Counted in values per channel, with `N` image tokens per stream and `T` text tokens, the peak is the largest
        of three moments: the image streams' MLP (their 4x-wide activations before and after the GELU, about
        `24 N + 3 T`), the joint attention (about `9.5 (2 N + T)`) and the text stream's MLP (about `9 N + 12 T`).
        The coefficients used are rounded up: 25, 10 and 13. Attention is assumed to run in a memory-efficient
        kernel (flash, cuDNN, memory-efficient), not a math one that stores the N x N scores.

        Args:
            batch_size (`int`): Rows of the call (with guidance, twice the number of images or tiles).
            height (`int`), width (`int`): Latent size of `hidden_states`.
            text_tokens (`int`): Length of `encoder_hidden_states`.
            dtype (`torch.dtype`, *optional*): Activation dtype; defaults to the model's.
        """
        patch_size = self.config.patch_size
        for name, value, minimum in (("batch_size", batch_size, 1), ("height", height, 1), ("width", width, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"`height` and `width` must be multiples of the patch size {patch_size}, got {height}x{width}."
            )
        if isinstance(text_tokens, bool) or not isinstance(text_tokens, int) or text_tokens < 0:
            raise ValueError(f"`text_tokens` must be a non-negative integer, got {text_tokens!r}.")
        image_tokens = (height // patch_size) * (width // patch_size)
        values_per_channel = max(
            25 * image_tokens + 4 * text_tokens,  # image MLP
            10 * (2 * image_tokens + text_tokens),  # joint attention
            10 * image_tokens + 13 * text_tokens,  # text MLP
        )
        return batch_size * self.inner_dim * (dtype or self.dtype).itemsize * values_per_channel

    def lr_branch_parameters(self, include_unused: bool = False) -> dict[str, nn.Parameter]:
        r"""
        The parameters of the LR branch, which the released training trained (every name containing `control`) while
        everything else stayed frozen.

        Args:
            include_unused (`bool`, defaults to `False`): Also return `to_k_control`, which exists in the released key
                mode only so that released checkpoints load, and receives no gradient there (leaving it out keeps
                DDP from waiting for its gradient).
        """
        parameters = {name: param for name, param in self.named_parameters() if "control" in name}
        if include_unused:
            return parameters
        for module_name, module in self.named_modules():
            if isinstance(module, DiT4SRAttention) and module.lr_attention and module.lr_keys_reuse_noise_keys:
                prefix = f"{module_name}.to_k_control."
                parameters = {name: param for name, param in parameters.items() if not name.startswith(prefix)}
        return parameters

    def _check_inputs(self, hidden_states: torch.Tensor, lr_hidden_states: torch.Tensor) -> None:
        if hidden_states.ndim != 4 or lr_hidden_states.ndim != 4:
            raise ValueError(
                "`hidden_states` and `lr_hidden_states` must be (batch, channels, height, width) latents, got shapes "
                f"{tuple(hidden_states.shape)} and {tuple(lr_hidden_states.shape)}."
            )
        if hidden_states.shape != lr_hidden_states.shape:
            raise ValueError(
                "`lr_hidden_states` must have the shape of `hidden_states` (the LR image is upscaled to the output "
                f"size before encoding), got {tuple(lr_hidden_states.shape)} and {tuple(hidden_states.shape)}."
            )
        patch_size = self.config.patch_size
        height, width = hidden_states.shape[-2:]
        if height % patch_size or width % patch_size:
            raise ValueError(
                f"The latent height and width must be multiples of the patch size {patch_size}, got `hidden_states` "
                f"{tuple(hidden_states.shape)} and `lr_hidden_states` {tuple(lr_hidden_states.shape)}."
            )
        max_size = self.config.pos_embed_max_size * patch_size
        if height > max_size or width > max_size:
            raise ValueError(
                f"Latents of at most {max_size}x{max_size} fit the position embedding; got {height}x{width} "
                f"(`hidden_states` {tuple(hidden_states.shape)}). Process larger images in tiles."
            )

    @apply_lora_scale("joint_attention_kwargs")
    def forward(
        self,
        hidden_states: torch.Tensor,
        lr_hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        joint_attention_kwargs: dict[str, Any] | None = None,
        lr_injection_scale: float = 1.0,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        r"""
        Predicts the flow-matching velocity of the noisy latent, conditioned on the LR latent and the text.

        Args:
            hidden_states (`torch.Tensor` of shape `(B, C, h, w)`): The noisy latent of the high-resolution output.
            lr_hidden_states (`torch.Tensor` of shape `(B, C, h, w)`): The latent of the LR image, bicubic-upscaled
                to the output size and encoded like an HR image (`(vae.encode(x).latent_dist.sample() - shift) *
                scale`).
            encoder_hidden_states (`torch.Tensor` of shape `(B, T, joint_attention_dim)`): Text encoder states.
            pooled_projections (`torch.Tensor` of shape `(B, pooled_projection_dim)`): Pooled text embedding.
            timestep (`torch.Tensor` of shape `(B,)`): Flow-matching timestep in [0, 1000].
            joint_attention_kwargs (`dict`, *optional*): Passed to the attention processors; `"scale"` scales LoRA
                layers.
            lr_injection_scale (`float`, defaults to `1.0`): Strength of the LR injection between the MLP layers
                (1.0 in training; the released inference used 1.2).
            return_dict (`bool`, defaults to `True`): Return a [`~models.modeling_outputs.Transformer2DModelOutput`]
                instead of a tuple.
        """
        self._check_inputs(hidden_states, lr_hidden_states)
        batch_size, _, height, width = hidden_states.shape
        patch_size = self.config.patch_size
        grid_size = (height // patch_size, width // patch_size)

        # One patch embedding for both latents; PatchEmbed's output is a transposed view, made contiguous once here.
        image_tokens = self.pos_embed(torch.cat([hidden_states, lr_hidden_states]))
        hidden_states = image_tokens.unflatten(0, (2, batch_size)).contiguous()
        del image_tokens
        temb = self.time_text_embed(timestep, pooled_projections)
        encoder_hidden_states = self.context_embedder(encoder_hidden_states)

        for block in self.transformer_blocks:
            if torch.is_grad_enabled() and self.gradient_checkpointing:
                encoder_hidden_states, hidden_states = self._gradient_checkpointing_func(
                    block,
                    hidden_states,
                    encoder_hidden_states,
                    temb,
                    joint_attention_kwargs,
                    grid_size,
                    lr_injection_scale,
                )
            else:
                encoder_hidden_states, hidden_states = block(
                    hidden_states=hidden_states,
                    encoder_hidden_states=encoder_hidden_states,
                    temb=temb,
                    joint_attention_kwargs=joint_attention_kwargs,
                    grid_size=grid_size,
                    lr_injection_scale=lr_injection_scale,
                )

        # Only the noise stream is decoded; the LR stream ends here.
        hidden_states = self.norm_out(hidden_states[0], temb)
        hidden_states = self.proj_out(hidden_states)
        output = self._unpatchify(hidden_states, grid_size)

        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)

    def _unpatchify(self, tokens: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """`(B, h * w, p * p * C)` tokens -> `(B, C, h * p, w * p)` latent."""
        patch_size = self.config.patch_size
        grid_height, grid_width = grid_size
        patches = tokens.reshape(-1, grid_height, grid_width, patch_size, patch_size, self.out_channels)
        latent = patches.permute(0, 5, 1, 3, 2, 4)
        return latent.reshape(-1, self.out_channels, grid_height * patch_size, grid_width * patch_size)
