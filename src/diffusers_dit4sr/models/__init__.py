# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
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
