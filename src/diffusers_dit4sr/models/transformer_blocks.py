# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The blocks of the DiT4SR transformer: SD3's MM-DiT block with a second image stream for the low-resolution (LR)
input, and the MLP that injects the LR stream into the noise stream.

Inside the blocks, noise tokens X and LR tokens R travel stacked along a leading axis, `(2, B, N, D)`, so that every
layer they share (AdaLN modulation, projections, MLP) runs once over both and the streams stay contiguous views.

The blocks come in three classes of one implementation, so that every instance of a class has the same structure:
[`DiT4SRTransformerBlock`] (joint attention), [`DiT4SRDualAttentionTransformerBlock`] (SD3.5's blocks with `attn2`)
and [`DiT4SRFinalTransformerBlock`] (the last block, whose text stream is only read). `torch.compile` keeps its cache
per code object, and each class has its own `forward`, so regional compilation traces each repeated class once.
"""

from __future__ import annotations

from typing import Any

import torch
from diffusers.hooks._helpers import TransformerBlockMetadata, TransformerBlockRegistry
from diffusers.models.attention import FeedForward
from diffusers.models.normalization import AdaLayerNormContinuous, AdaLayerNormZero, SD35AdaLayerNormZeroX
from diffusers.utils.torch_utils import maybe_allow_in_graph
from torch import nn

from .attention_processor import DiT4SRAttention

__all__ = [
    "DIT4SR_BLOCK_CLASSES",
    "LR_INJECTION_MODES",
    "DiT4SRDualAttentionTransformerBlock",
    "DiT4SRFeedForward",
    "DiT4SRFinalTransformerBlock",
    "DiT4SRTransformerBlock",
]

LR_INJECTION_MODES = ("conv", "linear", "none")


class DiT4SRFeedForward(FeedForward):
    r"""
    SD3's MLP shared by both streams, with the LR hidden activations injected into the noise stream's.

    Between the two linear layers, `H_X += scale * inject(H_R)`, where `inject` is a zero-initialized depthwise 3x3
    convolution over the patch grid (`control_conv`), a zero-initialized per-token linear layer (`control_linear`,
    ablation D) or absent (`"none"`, ablation C).
    """

    def __init__(self, dim: int, lr_injection: str = "conv"):
        super().__init__(dim=dim, dim_out=dim, activation_fn="gelu-approximate")
        if lr_injection not in LR_INJECTION_MODES:
            raise ValueError(f"`lr_injection` must be one of {LR_INJECTION_MODES}, got {lr_injection!r}.")
        self.lr_injection = lr_injection
        inner_dim = 4 * dim
        if lr_injection == "conv":
            self.control_conv = nn.Conv2d(inner_dim, inner_dim, kernel_size=3, padding=1, groups=inner_dim)
        elif lr_injection == "linear":
            self.control_linear = nn.Linear(inner_dim, inner_dim)
        self.init_lr_stream()

    @torch.no_grad()
    def init_lr_stream(self) -> None:
        """Zero the injection layer, so a model initialized from SD3 starts out computing SD3."""
        for name, param in self.named_parameters():
            if name.startswith("control_"):
                nn.init.zeros_(param)

    def inject(self, lr_hidden: torch.Tensor, grid_size: tuple[int, int]) -> torch.Tensor:
        """What the LR activations `(B, N, 4D)` add to the noise activations, `(B, N, 4D)`."""
        if self.lr_injection == "linear":
            return self.control_linear(lr_hidden)
        # Row-major tokens are an NHWC image: this permute is a free view, and the depthwise conv runs channels-last.
        grid = lr_hidden.unflatten(1, grid_size).permute(0, 3, 1, 2)
        return self.control_conv(grid).permute(0, 2, 3, 1).flatten(1, 2)

    def forward(
        self, hidden_states: torch.Tensor, grid_size: tuple[int, int], lr_injection_scale: float = 1.0
    ) -> torch.Tensor:
        project_in, dropout, project_out = self.net
        hidden = dropout(project_in(hidden_states))
        noise_hidden, lr_hidden = hidden.unbind(0)
        if self.lr_injection != "none":
            noise_hidden = noise_hidden + lr_injection_scale * self.inject(lr_hidden, grid_size)
        return torch.stack([project_out(noise_hidden), project_out(lr_hidden)])


@maybe_allow_in_graph
class DiT4SRTransformerBlock(nn.Module):
    r"""
    One MM-DiT-Control block: SD3's `JointTransformerBlock` acting on three streams (noise, LR, text).

    The LR stream shares the noise stream's AdaLN-Zero modulation, projections, norms, MLP and residual gates; it
    adds its own attention projections ([`DiT4SRAttention`]) and the injection layer ([`DiT4SRFeedForward`]).

    [`DiT4SRTransformer2DModel`] builds this class for its joint-attention blocks only, and
    [`DiT4SRDualAttentionTransformerBlock`] / [`DiT4SRFinalTransformerBlock`] (subclasses, same parameters) for the
    others, so that all instances of one class share one structure and one compiled graph. Built directly, this class
    takes every combination of `context_pre_only` and `use_dual_attention`, as SD3's block does.

    Args:
        dim (`int`): Channels of the token streams.
        num_attention_heads (`int`): Number of attention heads.
        attention_head_dim (`int`): Channels per head.
        context_pre_only (`bool`): Last block: the text stream is only read, not updated.
        qk_norm (`str`, *optional*): Query/key normalization (`"rms_norm"` in SD3.5).
        use_dual_attention (`bool`): SD3.5's second, image-only attention (`attn2`).
        lr_key_source, lr_attention, lr_residual, lr_injection: See [`DiT4SRTransformer2DModel`].
    """

    def __init__(
        self,
        dim: int,
        num_attention_heads: int,
        attention_head_dim: int,
        context_pre_only: bool = False,
        qk_norm: str | None = None,
        use_dual_attention: bool = False,
        lr_key_source: str = "noise",
        lr_attention: bool = True,
        lr_residual: bool = True,
        lr_injection: str = "conv",
    ):
        super().__init__()
        self.use_dual_attention = use_dual_attention
        self.context_pre_only = context_pre_only
        attention_options = {
            "dim": dim,
            "heads": num_attention_heads,
            "dim_head": attention_head_dim,
            "qk_norm": qk_norm,
            "lr_key_source": lr_key_source,
            "lr_attention": lr_attention,
            "lr_residual": lr_residual,
        }

        self.norm1 = SD35AdaLayerNormZeroX(dim) if use_dual_attention else AdaLayerNormZero(dim)
        if context_pre_only:
            self.norm1_context = AdaLayerNormContinuous(dim, dim, elementwise_affine=False, eps=1e-6)
        else:
            self.norm1_context = AdaLayerNormZero(dim)

        self.attn = DiT4SRAttention(added_kv_proj_dim=dim, context_pre_only=context_pre_only, **attention_options)
        self.attn2 = DiT4SRAttention(**attention_options) if use_dual_attention else None

        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.ff = DiT4SRFeedForward(dim, lr_injection=lr_injection)

        if not context_pre_only:
            self.norm2_context = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
            self.ff_context = FeedForward(dim=dim, dim_out=dim, activation_fn="gelu-approximate")

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        joint_attention_kwargs: dict[str, Any] | None = None,
        grid_size: tuple[int, int] | None = None,
        lr_injection_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            hidden_states (`torch.Tensor` of shape `(2, B, N, D)`): Noise tokens (index 0) and LR tokens (index 1).
            encoder_hidden_states (`torch.Tensor` of shape `(B, T, D)`): Text tokens.
            temb (`torch.Tensor` of shape `(B, D)`): Timestep and pooled-text embedding.
            joint_attention_kwargs (`dict`, *optional*): Extra arguments for the attention processors.
            grid_size (`tuple[int, int]`): Height and width of the patch grid (`N = height * width`).
            lr_injection_scale (`float`): Strength of the LR injection between the MLP layers.

        Returns:
            `(encoder_hidden_states, hidden_states)`. The last block returns its text input unchanged, so that
            Diffusers' caching hooks always see tensors.
        """
        joint_attention_kwargs = joint_attention_kwargs or {}
        if self.use_dual_attention:
            norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp, norm_hidden_states2, gate_msa2 = self.norm1(
                hidden_states, emb=temb
            )
        else:
            norm_hidden_states, gate_msa, shift_mlp, scale_mlp, gate_mlp = self.norm1(hidden_states, emb=temb)

        if self.context_pre_only:
            norm_encoder_hidden_states = self.norm1_context(encoder_hidden_states, temb)
        else:
            norm_encoder_hidden_states, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = self.norm1_context(
                encoder_hidden_states, emb=temb
            )

        # (B, D) modulations broadcast over the stream axis: one AdaLN acts on both X and R. The attention modules
        # take and return batch-first `(B, 2, N, D)` views (free transposes), as hooks on them expect the batch first.
        attn_output, context_attn_output = self.attn(
            norm_hidden_states.transpose(0, 1),
            encoder_hidden_states=norm_encoder_hidden_states,
            **joint_attention_kwargs,
        )
        hidden_states = hidden_states + gate_msa.unsqueeze(1) * attn_output.transpose(0, 1)
        # Dropped before the MLP, whose 4x-wide activations set the peak memory: each is a (2, B, N, D) tensor.
        del attn_output, norm_hidden_states

        if self.use_dual_attention:
            attn_output2 = self.attn2(norm_hidden_states2.transpose(0, 1), **joint_attention_kwargs)
            hidden_states = hidden_states + gate_msa2.unsqueeze(1) * attn_output2.transpose(0, 1)
            del attn_output2, norm_hidden_states2

        norm_hidden_states = self.norm2(hidden_states) * (1 + scale_mlp.unsqueeze(1)) + shift_mlp.unsqueeze(1)
        ff_output = self.ff(norm_hidden_states, grid_size=grid_size, lr_injection_scale=lr_injection_scale)
        hidden_states = hidden_states + gate_mlp.unsqueeze(1) * ff_output

        if self.context_pre_only:
            return encoder_hidden_states, hidden_states

        encoder_hidden_states = encoder_hidden_states + c_gate_msa.unsqueeze(1) * context_attn_output
        norm_encoder_hidden_states = self.norm2_context(encoder_hidden_states)
        norm_encoder_hidden_states = norm_encoder_hidden_states * (1 + c_scale_mlp[:, None]) + c_shift_mlp[:, None]
        context_ff_output = self.ff_context(norm_encoder_hidden_states)
        encoder_hidden_states = encoder_hidden_states + c_gate_mlp.unsqueeze(1) * context_ff_output
        return encoder_hidden_states, hidden_states


@maybe_allow_in_graph
class DiT4SRDualAttentionTransformerBlock(DiT4SRTransformerBlock):
    r"""
    A [`DiT4SRTransformerBlock`] with SD3.5's second, image-only attention (`attn2`): the blocks in
    `dual_attention_layers` (0..12 in SD3.5-medium), except the last block of a model.

    Same parameters and computation as `DiT4SRTransformerBlock(..., use_dual_attention=True)`. Its own class (with its
    own `forward`) so that `compile_repeated_blocks` traces one graph for these blocks and one for the joint ones.
    """

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, **options: Any):
        """`options`: [`DiT4SRTransformerBlock`]'s other arguments, but `context_pre_only` and `use_dual_attention`."""
        super().__init__(
            dim, num_attention_heads, attention_head_dim, context_pre_only=False, use_dual_attention=True, **options
        )

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        joint_attention_kwargs: dict[str, Any] | None = None,
        grid_size: tuple[int, int] | None = None,
        lr_injection_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See [`DiT4SRTransformerBlock.forward`]."""
        # A code object of its own: torch.compile keeps one cache entry per code object, shared by all instances.
        return super().forward(
            hidden_states, encoder_hidden_states, temb, joint_attention_kwargs, grid_size, lr_injection_scale
        )


@maybe_allow_in_graph
class DiT4SRFinalTransformerBlock(DiT4SRTransformerBlock):
    r"""
    The last block of a [`DiT4SRTransformer2DModel`] (SD3's `context_pre_only` block): its text stream is only read,
    so it has no `attn.to_add_out`, `norm2_context` or `ff_context`, and it returns its text input unchanged.

    Same parameters and computation as `DiT4SRTransformerBlock(..., context_pre_only=True)`. It runs once per forward,
    so it is not in `_repeated_blocks`: regional compilation does not spend a graph on it.
    """

    def __init__(self, dim: int, num_attention_heads: int, attention_head_dim: int, **options: Any):
        """`options`: [`DiT4SRTransformerBlock`]'s other arguments, but `context_pre_only`."""
        super().__init__(dim, num_attention_heads, attention_head_dim, context_pre_only=True, **options)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        temb: torch.Tensor,
        joint_attention_kwargs: dict[str, Any] | None = None,
        grid_size: tuple[int, int] | None = None,
        lr_injection_scale: float = 1.0,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """See [`DiT4SRTransformerBlock.forward`]."""
        return super().forward(
            hidden_states, encoder_hidden_states, temb, joint_attention_kwargs, grid_size, lr_injection_scale
        )


DIT4SR_BLOCK_CLASSES = (DiT4SRTransformerBlock, DiT4SRDualAttentionTransformerBlock, DiT4SRFinalTransformerBlock)

# FirstBlockCache and MagCache look the metadata up by the exact class; each class needs its own entry.
for _block_class in DIT4SR_BLOCK_CLASSES:
    TransformerBlockRegistry.register(
        _block_class,
        TransformerBlockMetadata(return_hidden_states_index=1, return_encoder_hidden_states_index=0),
    )
del _block_class
