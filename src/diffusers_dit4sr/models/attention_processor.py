# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Joint attention of a DiT4SR block: noise, LR and text tokens attend to each other in one softmax.

The processor takes the image streams stacked along a leading axis of size 2, `(2, B, N, D)`: index 0 holds the noise
tokens X, index 1 the LR tokens R. Both streams share SD3's projections (one GEMM serves both), then the LR stream
passes through its own zero-initialized `*_control` projections. The attention module itself takes and returns the
batch-first view of that stack, `(B, 2, N, D)`, like every Diffusers attention module: hooks that act on attention
modules (FasterCache, ...) read the batch size from dimension 0.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers.models.attention import AttentionModuleMixin
from diffusers.models.attention_dispatch import dispatch_attention_fn
from diffusers.models.normalization import RMSNorm
from torch import nn

LR_KEY_SOURCES = ("noise", "lr")


def _make_head_norm(qk_norm: str | None, head_dim: int, eps: float) -> nn.Module | None:
    """The per-head query/key normalization SD3 uses (`None` for SD3.0, `"rms_norm"` for SD3.5)."""
    if qk_norm is None:
        return None
    if qk_norm == "rms_norm":
        return RMSNorm(head_dim, eps=eps)
    if qk_norm == "layer_norm":
        return nn.LayerNorm(head_dim, eps=eps)
    raise ValueError(f"`qk_norm` must be None, 'rms_norm' or 'layer_norm', got {qk_norm!r}.")


class DiT4SRAttnProcessor:
    """
    Computes [`DiT4SRAttention`] with `dispatch_attention_fn`, so `set_attention_backend` selects the kernel.

    Called as `processor(attn, hidden_states, encoder_hidden_states, attention_mask)` with the stream-first image
    tokens `(2, B, N, D)` (noise, LR); returns the `(2, B, N, D)` image output and, with text tokens, the text output.
    """

    _attention_backend = None
    _parallel_config = None

    def __call__(
        self,
        attn: DiT4SRAttention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        lr_states = hidden_states[1]
        num_noise_tokens = hidden_states.shape[2]

        query, key, value = self._image_projections(attn, hidden_states)
        if encoder_hidden_states is not None:
            context_query = attn.split_heads(attn.add_q_proj(encoder_hidden_states))
            context_key = attn.split_heads(attn.add_k_proj(encoder_hidden_states))
            context_value = attn.split_heads(attn.add_v_proj(encoder_hidden_states))
            if attn.norm_added_q is not None:
                context_query = attn.norm_added_q(context_query)
                context_key = attn.norm_added_k(context_key)
            query.append(context_query)
            key.append(context_key)
            value.append(context_value)

        # Token order [X; R; C] as in the released code; the softmax does not depend on it.
        query, key, value = torch.cat(query, dim=1), torch.cat(key, dim=1), torch.cat(value, dim=1)
        output = dispatch_attention_fn(
            query,
            key,
            value,
            attn_mask=attention_mask,
            backend=self._attention_backend,
            parallel_config=self._parallel_config,
        )
        output = output.flatten(2, 3).to(query.dtype)

        noise_output = attn.to_out[0](output[:, :num_noise_tokens])
        num_image_tokens = 2 * num_noise_tokens if attn.lr_attention else num_noise_tokens
        if attn.lr_attention and attn.lr_residual:
            lr_output = output[:, num_noise_tokens:num_image_tokens] + lr_states
        elif attn.lr_attention:
            lr_output = output[:, num_noise_tokens:num_image_tokens]
        else:
            lr_output = lr_states
        image_output = torch.stack([noise_output, attn.to_out_control(lr_output)])

        if encoder_hidden_states is None:
            return image_output
        context_output = output[:, num_image_tokens:]
        if not attn.context_pre_only:
            context_output = attn.to_add_out(context_output)
        return image_output, context_output

    @staticmethod
    def _image_projections(
        attn: DiT4SRAttention, hidden_states: torch.Tensor
    ) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
        """Queries, keys and values of the attending image tokens (noise, then LR), each `(B, N, heads, head_dim)`."""
        noise_states = hidden_states[0]
        if not attn.lr_attention:
            query = attn.normalize_query(attn.split_heads(attn.to_q(noise_states)))
            key = attn.normalize_key(attn.split_heads(attn.to_k(noise_states)))
            return [query], [key], [attn.split_heads(attn.to_v(noise_states))]

        noise_query, lr_query = attn.project_streams("q", hidden_states)
        noise_value, lr_value = attn.project_streams("v", hidden_states)
        if attn.lr_keys_reuse_noise_keys:
            # Released checkpoints: the LR tokens reuse the noise tokens' normalized keys, normalized once more.
            noise_key = attn.normalize_key(attn.split_heads(attn.to_k(noise_states)))
            lr_key = attn.normalize_key(noise_key)
        else:
            noise_key, lr_key = attn.project_streams("k", hidden_states)
            noise_key = attn.normalize_key(attn.split_heads(noise_key))
            lr_key = attn.normalize_key(attn.split_heads(lr_key))
        noise_query = attn.normalize_query(attn.split_heads(noise_query))
        lr_query = attn.normalize_query(attn.split_heads(lr_query))
        noise_value, lr_value = attn.split_heads(noise_value), attn.split_heads(lr_value)
        return [noise_query, lr_query], [noise_key, lr_key], [noise_value, lr_value]


class DiT4SRAttention(nn.Module, AttentionModuleMixin):
    r"""
    SD3's (joint) attention extended with DiT4SR's LR stream.

    Parameter names are SD3's (`to_q`, `to_out.0`, `add_q_proj`, `norm_added_k`, ...) plus the released DiT4SR names
    (`to_q_control`, `to_k_control`, `to_v_control`, `to_out_control`), so SD3 and DiT4SR state dicts load by name.

    Args:
        dim (`int`): Channels of the token streams.
        heads (`int`): Number of attention heads.
        dim_head (`int`): Channels per head.
        added_kv_proj_dim (`int`, *optional*): Channels of the text stream; `None` for SD3.5's second (image-only)
            attention.
        context_pre_only (`bool`): Last block: the text stream's output is not used, so it has no `to_add_out`.
        qk_norm (`str`, *optional*): Per-head normalization of queries and keys (`"rms_norm"` in SD3.5).
        eps (`float`): Epsilon of the query/key norms.
        lr_key_source (`str`): `"noise"` reproduces the released checkpoints (with a key norm, the LR tokens reuse
            the noise tokens' keys), `"lr"` is the paper's Eq. 1 (keys from `to_k_control`).
        lr_attention (`bool`): Whether LR tokens take part in the attention (False: paper's ablation A).
        lr_residual (`bool`): Whether the modulated LR tokens are added to their attention output (False: ablation B).
    """

    _default_processor_cls = DiT4SRAttnProcessor
    _available_processors = [DiT4SRAttnProcessor]
    # The LR stream consumes the unfused projections.
    _supports_qkv_fusion = False

    def __init__(
        self,
        dim: int,
        heads: int,
        dim_head: int,
        added_kv_proj_dim: int | None = None,
        context_pre_only: bool = False,
        qk_norm: str | None = None,
        eps: float = 1e-6,
        lr_key_source: str = "noise",
        lr_attention: bool = True,
        lr_residual: bool = True,
        processor: DiT4SRAttnProcessor | None = None,
    ):
        super().__init__()
        if lr_key_source not in LR_KEY_SOURCES:
            raise ValueError(f"`lr_key_source` must be one of {LR_KEY_SOURCES}, got {lr_key_source!r}.")
        if not lr_attention and not lr_residual:
            raise ValueError(
                "`lr_attention=False` requires `lr_residual=True`: without either, the LR attention branch has no input."
            )
        self.heads = heads
        self.head_dim = dim_head
        self.context_pre_only = context_pre_only
        self.added_kv_proj_dim = added_kv_proj_dim
        self.lr_key_source = lr_key_source
        self.lr_attention = lr_attention
        self.lr_residual = lr_residual
        inner_dim = heads * dim_head

        self.to_q = nn.Linear(dim, inner_dim)
        self.to_k = nn.Linear(dim, inner_dim)
        self.to_v = nn.Linear(dim, inner_dim)
        self.norm_q = _make_head_norm(qk_norm, dim_head, eps)
        self.norm_k = _make_head_norm(qk_norm, dim_head, eps)
        self.to_out = nn.ModuleList([nn.Linear(inner_dim, dim)])

        if added_kv_proj_dim is not None:
            self.add_q_proj = nn.Linear(added_kv_proj_dim, inner_dim)
            self.add_k_proj = nn.Linear(added_kv_proj_dim, inner_dim)
            self.add_v_proj = nn.Linear(added_kv_proj_dim, inner_dim)
            self.norm_added_q = _make_head_norm(qk_norm, dim_head, eps)
            self.norm_added_k = _make_head_norm(qk_norm, dim_head, eps)
            if not context_pre_only:
                self.to_add_out = nn.Linear(inner_dim, added_kv_proj_dim)

        if lr_attention:
            self.to_q_control = nn.Linear(inner_dim, inner_dim)
            self.to_k_control = nn.Linear(inner_dim, inner_dim)
            self.to_v_control = nn.Linear(inner_dim, inner_dim)
        self.to_out_control = nn.Linear(inner_dim, dim)
        self.init_lr_stream()
        self.fused_lr_projections = False

        self.set_processor(processor if processor is not None else self._default_processor_cls())

    @property
    def lr_keys_reuse_noise_keys(self) -> bool:
        """True in the released key mode with a key norm, where `to_k_control` takes no part in the forward pass."""
        return self.lr_key_source == "noise" and self.norm_k is not None

    @torch.no_grad()
    def init_lr_stream(self) -> None:
        """DiT4SR's initialization: zero LR projections, `to_out_control` a copy of `to_out.0`."""
        if self.lr_attention:
            for layer in (self.to_q_control, self.to_k_control, self.to_v_control):
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
        self.to_out_control.load_state_dict(self.to_out[0].state_dict())

    @property
    def lr_projection_names(self) -> tuple[str, ...]:
        """The projections that have an LR layer in the forward pass (`"k"` only when the LR keys are their own)."""
        if not self.lr_attention:
            return ()
        return ("q", "v") if self.lr_keys_reuse_noise_keys else ("q", "k", "v")

    def project_streams(self, name: str, hidden_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """SD3's `to_{name}` of the noise tokens, and `to_{name}_control(to_{name}(.))` of the LR tokens."""
        base = getattr(self, f"to_{name}")
        if self.fused_lr_projections:
            lr_weight, lr_bias = getattr(self, f"fused_lr_{name}_weight"), getattr(self, f"fused_lr_{name}_bias")
            return base(hidden_states[0]), F.linear(hidden_states[1], lr_weight, lr_bias)
        projected = base(hidden_states)  # one GEMM over both streams
        return projected[0], getattr(self, f"to_{name}_control")(projected[1])

    @torch.no_grad()
    def fuse_lr_projections(self) -> None:
        """Folds each LR layer into the SD3 projection before it: `Wc (Wb x + bb) + bc = (Wc Wb) x + (Wc bb + bc)`."""
        for name in self.lr_projection_names:
            base, control = getattr(self, f"to_{name}"), getattr(self, f"to_{name}_control")
            weight = control.weight.double() @ base.weight.double()
            bias = control.weight.double() @ base.bias.double() + control.bias.double()
            # Not persistent: the fused copies never reach a state dict or a saved checkpoint.
            self.register_buffer(f"fused_lr_{name}_weight", weight.to(base.weight.dtype), persistent=False)
            self.register_buffer(f"fused_lr_{name}_bias", bias.to(base.weight.dtype), persistent=False)
        self.fused_lr_projections = bool(self.lr_projection_names)

    def unfuse_lr_projections(self) -> None:
        for name in self.lr_projection_names:
            for kind in ("weight", "bias"):
                self._buffers.pop(f"fused_lr_{name}_{kind}", None)
        self.fused_lr_projections = False

    def split_heads(self, states: torch.Tensor) -> torch.Tensor:
        """`(B, N, heads * head_dim)` -> `(B, N, heads, head_dim)`, the layout `dispatch_attention_fn` takes."""
        return states.unflatten(-1, (self.heads, self.head_dim))

    def normalize_query(self, query: torch.Tensor) -> torch.Tensor:
        return query if self.norm_q is None else self.norm_q(query)

    def normalize_key(self, key: torch.Tensor) -> torch.Tensor:
        return key if self.norm_k is None else self.norm_k(key)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(B, 2, N, D)`): Modulated noise (`[:, 0]`) and LR (`[:, 1]`) tokens,
                batch first. The blocks pass `stack.transpose(0, 1)` of their `(2, B, N, D)` stream stack (a view).
            encoder_hidden_states (`torch.Tensor` of shape `(B, T, D)`, *optional*): Modulated text tokens.
            attention_mask (`torch.Tensor`, *optional*): Passed to the attention kernel.

        Returns:
            The `(B, 2, N, D)` image output (a transposed view of a stream-first stack) and, when text tokens were
            given, the `(B, T, D)` text output.
        """
        # Back to the stream-first stack: for the blocks' transposed view this is the original contiguous tensor.
        output = self.processor(self, hidden_states.transpose(0, 1), encoder_hidden_states, attention_mask)
        if encoder_hidden_states is None:
            return output.transpose(0, 1)
        image_output, context_output = output
        return image_output.transpose(0, 1), context_output
