from .attention_processor import DiT4SRAttention, DiT4SRAttnProcessor
from .transformer_dit4sr import DiT4SRFeedForward, DiT4SRTransformer2DModel, DiT4SRTransformerBlock

__all__ = [
    "DiT4SRAttention",
    "DiT4SRAttnProcessor",
    "DiT4SRFeedForward",
    "DiT4SRTransformer2DModel",
    "DiT4SRTransformerBlock",
]
