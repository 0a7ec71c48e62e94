# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""DiT4SRTransformer2DModel equals the plain-torch oracle (a slow re-statement of the spec) on random weights."""

import pytest
import torch

from diffusers_dit4sr import DiT4SRTransformer2DModel

from .dit4sr_oracle import oracle_forward
from .utils import TINY_SD30_CONFIG, TINY_SD35_CONFIG, make_inputs, randomize_, relative_error

CASES = {
    # name: (config, DiT4SR options, lr_injection_scale)
    "sd35-released-scale1.2": (TINY_SD35_CONFIG, {}, 1.2),
    "sd35-released-scale1.0": (TINY_SD35_CONFIG, {}, 1.0),
    "sd35-paper-keys": (TINY_SD35_CONFIG, {"lr_key_source": "lr"}, 1.2),
    "sd30": (TINY_SD30_CONFIG, {}, 1.2),
    "sd30-paper-keys": (TINY_SD30_CONFIG, {"lr_key_source": "lr"}, 1.0),
    "ablation-A-no-lr-attention": (TINY_SD35_CONFIG, {"lr_attention": False}, 1.0),
    "ablation-B-no-lr-residual": (TINY_SD35_CONFIG, {"lr_residual": False}, 1.0),
    "ablation-C-no-injection": (TINY_SD35_CONFIG, {"lr_injection": "none"}, 1.0),
    "ablation-D-linear-injection": (TINY_SD35_CONFIG, {"lr_injection": "linear"}, 1.2),
}


def random_model(config: dict, options: dict) -> DiT4SRTransformer2DModel:
    model = randomize_(DiT4SRTransformer2DModel(**config, **options))
    # Norm weights near 1 keep the normalized attention logits O(1), so the attention pattern is far from uniform.
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.rsplit(".", 2)[-2] in ("norm_q", "norm_k", "norm_added_q", "norm_added_k"):
                param.add_(1.0)
    return model.eval()


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("batch_size, height, width", [(2, 8, 12), (1, 10, 6)])
@pytest.mark.parametrize("fused", [False, True], ids=["separate", "fused-lr-projections"])
def test_matches_oracle(case, batch_size, height, width, fused):
    config, options, scale = CASES[case]
    model = random_model(config, options)
    if fused:
        model.fuse_lr_projections()
    inputs = make_inputs(batch_size, height, width, seed=batch_size, config=config)
    with torch.no_grad():
        output = model(**inputs, lr_injection_scale=scale).sample
    expected = oracle_forward(
        model.state_dict(),
        {**dict(model.config), **options},
        **{name: value.double() for name, value in inputs.items()},
        lr_injection_scale=scale,
    )
    assert output.shape == (batch_size, config["out_channels"], height, width)
    assert relative_error(output, expected) < 1e-5


def test_oracle_comparison_can_fail():
    """The tolerance is far below the effect of the released key quirk, so the comparison above can fail."""
    model = random_model(TINY_SD35_CONFIG, {})
    inputs = make_inputs()
    with torch.no_grad():
        output = model(**inputs, lr_injection_scale=1.2).sample
    paper_keys = oracle_forward(
        model.state_dict(),
        {**dict(model.config), "lr_key_source": "lr"},
        **{name: value.double() for name, value in inputs.items()},
        lr_injection_scale=1.2,
    )
    assert relative_error(output, paper_keys) > 1e-3


class TestFusedLRProjections:
    def test_fusing_keeps_state_dict_and_round_trips(self, tmp_path):
        model = random_model(TINY_SD35_CONFIG, {"lr_key_source": "lr"})
        inputs = make_inputs()
        state = {name: tensor.clone() for name, tensor in model.state_dict().items()}
        with torch.no_grad():
            separate = model(**inputs).sample
            model.fuse_lr_projections()
            fused = model(**inputs).sample
        attention = model.transformer_blocks[0].attn
        assert attention.fused_lr_projections and attention.fused_lr_k_weight.shape == (32, 32)
        assert model.state_dict().keys() == state.keys()
        model.save_pretrained(tmp_path)
        assert set(DiT4SRTransformer2DModel.from_pretrained(tmp_path).state_dict()) == set(state)
        assert 0 < relative_error(fused, separate) < 1e-6
        model.unfuse_lr_projections()
        assert not hasattr(attention, "fused_lr_q_weight")
        with torch.no_grad():
            assert torch.equal(model(**inputs).sample, separate)

    def test_released_key_mode_folds_only_queries_and_values(self):
        model = random_model(TINY_SD35_CONFIG, {})
        model.fuse_lr_projections()
        attention = model.transformer_blocks[0].attn
        assert hasattr(attention, "fused_lr_q_weight") and hasattr(attention, "fused_lr_v_weight")
        assert not hasattr(attention, "fused_lr_k_weight")

    def test_without_lr_attention_nothing_is_fused(self):
        model = random_model(TINY_SD35_CONFIG, {"lr_attention": False})
        model.fuse_lr_projections()
        assert not model.transformer_blocks[0].attn.fused_lr_projections

    def test_bf16_fused_within_round_off(self):
        model = random_model(TINY_SD35_CONFIG, {})
        inputs = make_inputs()
        with torch.no_grad():
            reference = model(**inputs).sample
            low = model.to(torch.bfloat16)
            low.fuse_lr_projections()
            half = {name: value if name == "timestep" else value.to(torch.bfloat16) for name, value in inputs.items()}
            fused = low(**half).sample.float()
        assert relative_error(fused, reference) < 0.03

    def test_refuses_lora_adapters(self):
        from peft import LoraConfig

        model = random_model(TINY_SD35_CONFIG, {})
        model.add_adapter(LoraConfig(r=2, target_modules=["to_q"]))
        with pytest.raises(ValueError, match="LoRA"):
            model.fuse_lr_projections()
