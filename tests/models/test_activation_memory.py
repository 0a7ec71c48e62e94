# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`estimate_activation_memory` against the activations a forward really holds, counted tensor by tensor."""

import pytest
import torch

from diffusers_dit4sr import DiT4SRTransformer2DModel

from ..utils import import_benchmark
from .utils import TINY_SD30_CONFIG, TINY_SD35_CONFIG, make_inputs

LiveTensorBytes = import_benchmark("live_memory").LiveTensorBytes

# SD3.5-medium's layout (dual attention, RMS q/k norm, 64-channel heads) at a quarter of its width, two blocks.
NARROW_SD35_CONFIG = {
    **TINY_SD35_CONFIG,
    "num_layers": 2,
    "attention_head_dim": 64,
    "num_attention_heads": 6,
    "caption_projection_dim": 384,
    "pos_embed_max_size": 32,
    "dual_attention_layers": (0,),
}


def measured_peak(model, inputs) -> int:
    with torch.no_grad(), LiveTensorBytes() as counter:
        model(**inputs, return_dict=False)
    return counter.peak


def test_counter_sees_allocations_and_frees():
    x = torch.ones(1000)
    with LiveTensorBytes() as counter:
        y = x * 2  # 4000 bytes
        z = (y + 1).view(10, 100)  # 4000 more; the view adds nothing
        del y
        w = z + 1  # 4000 more, while y's are freed
    assert counter.peak == 8000 and counter.current == 8000
    del z, w
    assert counter.current == 0


@pytest.mark.parametrize(
    "config",
    [
        TINY_SD35_CONFIG,
        TINY_SD30_CONFIG,
        NARROW_SD35_CONFIG,
        {**TINY_SD35_CONFIG, "lr_key_source": "lr"},
        {**TINY_SD35_CONFIG, "lr_attention": False, "lr_injection": "none"},
        {**TINY_SD35_CONFIG, "lr_injection": "linear"},
    ],
    ids=["sd35", "sd30", "narrow-sd35", "paper-keys", "no-lr-attention-or-injection", "linear-injection"],
)
@pytest.mark.parametrize(
    "batch_size, height, width, text_tokens",
    [(1, 32, 32, 20), (2, 16, 24, 154), (1, 8, 8, 300)],
    ids=["image-heavy", "mixed", "text-heavy"],
)
def test_estimate_bounds_the_measured_peak(config, batch_size, height, width, text_tokens):
    torch.manual_seed(0)
    model = DiT4SRTransformer2DModel(**config).eval()
    inputs = make_inputs(batch_size, height, width, config=config)
    inputs["encoder_hidden_states"] = torch.randn(batch_size, text_tokens, config["joint_attention_dim"])
    peak = measured_peak(model, inputs)
    estimate = model.estimate_activation_memory(batch_size, height, width, text_tokens)
    # An upper bound, but a tight one: a slack of 25% would waste a quarter of the tile batches' memory.
    assert peak <= estimate <= 1.25 * peak, (peak, estimate)


def test_estimate_scales_with_rows_tokens_and_dtype():
    model = DiT4SRTransformer2DModel(**TINY_SD35_CONFIG)
    per_value = 32 * 4  # 32 channels, fp32
    # 8 x 8 patches: the image MLP dominates (25 per image token, 4 per text token).
    one = model.estimate_activation_memory(1, 16, 16, 10)
    assert one == (25 * 64 + 4 * 10) * per_value
    assert model.estimate_activation_memory(3, 16, 16, 10) == 3 * one
    assert model.estimate_activation_memory(1, 16, 16, 10, dtype=torch.bfloat16) == one // 2
    # Text-heavy calls peak in the joint attention, then in the text MLP.
    assert model.estimate_activation_memory(1, 16, 16, 100) == 10 * (2 * 64 + 100) * per_value
    assert model.estimate_activation_memory(1, 16, 16, 300) == (10 * 64 + 13 * 300) * per_value


def test_bf16_holds_half_the_bytes():
    torch.manual_seed(0)
    model = DiT4SRTransformer2DModel(**TINY_SD35_CONFIG).eval()
    inputs = make_inputs(1, 16, 16)
    fp32_peak = measured_peak(model, inputs)
    model.to(torch.bfloat16)
    bf16_peak = measured_peak(model, {name: tensor.to(torch.bfloat16) for name, tensor in inputs.items()})
    assert bf16_peak <= model.estimate_activation_memory(1, 16, 16, inputs["encoder_hidden_states"].shape[1])
    assert bf16_peak == pytest.approx(fp32_peak / 2, rel=0.05)


@pytest.mark.parametrize(
    "arguments, match",
    [
        ((0, 16, 16, 10), "batch_size"),
        ((1, 15, 16, 10), "multiples of the patch size"),
        ((1, 16, 0, 10), "width"),
        ((1, 16, 16, -1), "text_tokens"),
        ((1.5, 16, 16, 10), "batch_size"),
    ],
)
def test_estimate_rejects_bad_shapes(arguments, match):
    model = DiT4SRTransformer2DModel(**TINY_SD35_CONFIG)
    with pytest.raises(ValueError, match=match):
        model.estimate_activation_memory(*arguments)
