# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Tiny transformer configs and inputs shared by the model tests."""

import torch

TINY_SD35_CONFIG = {
    "sample_size": 16,
    "patch_size": 2,
    "in_channels": 4,
    "out_channels": 4,
    "num_layers": 3,
    "attention_head_dim": 8,
    "num_attention_heads": 4,
    "joint_attention_dim": 32,
    "caption_projection_dim": 32,
    "pooled_projection_dim": 16,
    "pos_embed_max_size": 16,
    "dual_attention_layers": (0, 1),
    "qk_norm": "rms_norm",
}
TINY_SD30_CONFIG = {**TINY_SD35_CONFIG, "dual_attention_layers": (), "qk_norm": None}
# Every block class once or more: dual-attention blocks 0 and 1, a joint-attention block 2, the final block 3.
TINY_SD35_ALL_BLOCKS_CONFIG = {**TINY_SD35_CONFIG, "num_layers": 4}


def randomize_(model: torch.nn.Module, seed: int = 0, std: float = 0.2) -> torch.nn.Module:
    """Fills every parameter with non-zero noise: zero-initialized LR layers would hide wiring bugs."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in model.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * std)
    return model


def make_inputs(
    batch_size: int = 2, height: int = 8, width: int = 12, seed: int = 0, config: dict = TINY_SD35_CONFIG
) -> dict[str, torch.Tensor]:
    """Random forward inputs for a tiny config; non-square latents by default."""
    generator = torch.Generator().manual_seed(seed)
    channels = config["in_channels"]
    return {
        "hidden_states": torch.randn(batch_size, channels, height, width, generator=generator),
        "lr_hidden_states": torch.randn(batch_size, channels, height, width, generator=generator),
        "encoder_hidden_states": torch.randn(batch_size, 5, config["joint_attention_dim"], generator=generator),
        "pooled_projections": torch.randn(batch_size, config["pooled_projection_dim"], generator=generator),
        "timestep": torch.rand(batch_size, generator=generator) * 1000,
    }


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual.double() - expected.double()).norm() / expected.double().norm()).item()
