# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The DiT4SR transformer (`transformer_dit4sr`), its blocks (`transformer_blocks`), its joint attention
(`attention_processor`) and which attention each released checkpoint needs (`released`)."""

from .attention_processor import DiT4SRAttention, DiT4SRAttnProcessor
from .transformer_blocks import (
    DiT4SRDualAttentionTransformerBlock,
    DiT4SRFeedForward,
    DiT4SRFinalTransformerBlock,
    DiT4SRTransformerBlock,
)
from .transformer_dit4sr import DiT4SRTransformer2DModel

__all__ = [
    "DiT4SRAttention",
    "DiT4SRAttnProcessor",
    "DiT4SRDualAttentionTransformerBlock",
    "DiT4SRFeedForward",
    "DiT4SRFinalTransformerBlock",
    "DiT4SRTransformer2DModel",
    "DiT4SRTransformerBlock",
]
