# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Validates the plain-torch DiT4SR oracle itself, before it is used as the reference for the real model.

The SD3 path is checked against diffusers' `SD3Transformer2DModel`; the DiT4SR additions are checked by isolation
(an LR stream that cannot reach X leaves SD3's output unchanged), by sensitivity (every switch and weight that the
spec says matters does change the output, and the ones it says are unused do not) and by hand-computed micro cases.
"""

import functools

import pytest
import torch
import torch.nn.functional as F
from diffusers import SD3Transformer2DModel
from diffusers.models.embeddings import PatchEmbed, get_timestep_embedding

from .dit4sr_oracle import (
    LRSettings,
    depthwise_conv3x3,
    lr_attention,
    oracle_forward,
    oracle_sd3_forward,
    patch_embed,
    timestep_sinusoid,
)
from .utils import TINY_SD30_CONFIG, TINY_SD35_CONFIG, make_inputs, relative_error

CONFIGS = {"sd35": TINY_SD35_CONFIG, "sd30": TINY_SD30_CONFIG}
LATENT_SIZE = (8, 12)  # non-square: a 4 x 6 patch grid
FULL_MODEL = {"lr_key_source": "noise", "lr_attention": True, "lr_residual": True, "lr_injection": "conv"}


@functools.cache
def _sd3_model(variant: str) -> SD3Transformer2DModel:
    """A tiny SD3 transformer with every parameter random, so that no term of the forward can vanish unnoticed.

    The qk-norm weights are drawn around 1 (not 0) so the normalized attention logits stay O(1) and the attention
    pattern is far from uniform. Shared between tests: never modify it in place.
    """
    model = SD3Transformer2DModel(**CONFIGS[variant]).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            is_qk_norm = name.split(".")[-2] in ("norm_q", "norm_k", "norm_added_q", "norm_added_k")
            param.normal_(*((1.0, 0.3) if is_qk_norm else (0.0, 0.2)), generator=generator)
    return model


def _inputs(dtype: torch.dtype = torch.float32, seed: int = 1) -> dict[str, torch.Tensor]:
    """Batch-2 inputs on a non-square latent; float64 ones make the oracle return its float64 result."""
    inputs = make_inputs(2, *LATENT_SIZE, seed=seed)
    return {name: x if name == "timestep" else x.to(dtype) for name, x in inputs.items()}


def _config(variant: str, **lr_config) -> dict:
    return {**CONFIGS[variant], **FULL_MODEL, **lr_config}


def _dit4sr_state_dict(variant: str, lr_attention: bool = True, lr_injection: str = "conv") -> dict:
    """The SD3 weights plus random DiT4SR control weights (spec 3), a fresh dict safe to edit."""
    model = _sd3_model(variant)
    dim = model.inner_dim
    generator = torch.Generator().manual_seed(2)

    def random(*shape: int) -> torch.Tensor:
        return 0.2 * torch.randn(*shape, generator=generator)

    state_dict = dict(model.state_dict())
    for i in range(CONFIGS[variant]["num_layers"]):
        attentions = ["attn", "attn2"] if i in CONFIGS[variant]["dual_attention_layers"] else ["attn"]
        layers = ["to_out_control"] + (["to_q_control", "to_k_control", "to_v_control"] if lr_attention else [])
        for attn in attentions:
            for layer in layers:
                state_dict[f"transformer_blocks.{i}.{attn}.{layer}.weight"] = random(dim, dim)
                state_dict[f"transformer_blocks.{i}.{attn}.{layer}.bias"] = random(dim)
        if lr_injection == "conv":
            state_dict[f"transformer_blocks.{i}.ff.control_conv.weight"] = random(4 * dim, 1, 3, 3)
            state_dict[f"transformer_blocks.{i}.ff.control_conv.bias"] = random(4 * dim)
        elif lr_injection == "linear":
            state_dict[f"transformer_blocks.{i}.ff.control_linear.weight"] = random(4 * dim, 4 * dim)
            state_dict[f"transformer_blocks.{i}.ff.control_linear.bias"] = random(4 * dim)
    return state_dict


def _assert_same(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Equal up to float64 round-off: the two results must not depend on what was varied."""
    torch.testing.assert_close(actual, expected, rtol=1e-12, atol=1e-12)


def _assert_differ(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """Clearly different (far above round-off): what was varied is wired into the output."""
    assert relative_error(actual, expected) > 1e-3


# ------------------------------------------------------------------------------------------------------------------
# 1. The SD3 path equals diffusers
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["sd35", "sd30"])
def test_sd3_oracle_matches_diffusers(variant: str) -> None:
    """SD3.5-style (RMS qk-norm, dual attention) and SD3.0-style tiny models agree with the oracle in fp32."""
    model = _sd3_model(variant)
    inputs = _inputs()
    del inputs["lr_hidden_states"]
    with torch.no_grad():
        expected = model(**inputs).sample
    actual = oracle_sd3_forward(model.state_dict(), dict(model.config), **inputs)

    assert actual.shape == expected.shape == (2, 4, *LATENT_SIZE)
    assert actual.dtype == torch.float32
    assert relative_error(actual, expected) < 1e-5


# ------------------------------------------------------------------------------------------------------------------
# 2. An LR stream that cannot reach X leaves SD3 unchanged
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["sd35", "sd30"])
def test_lr_stream_without_attention_or_injection_is_sd3(variant: str) -> None:
    """lr_attention=False and lr_injection="none" cut every path from R to X (the modulation depends on temb only).

    The state dict holds no q/k/v control weights, as in that ablation, so the oracle must not read them.
    """
    config = _config(variant, lr_attention=False, lr_residual=True, lr_injection="none")
    state_dict = _dit4sr_state_dict(variant, lr_attention=False, lr_injection="none")
    inputs = _inputs(torch.float64)
    actual = oracle_forward(state_dict, config, **inputs, lr_injection_scale=1.2)
    del inputs["lr_hidden_states"]
    _assert_same(actual, oracle_sd3_forward(state_dict, config, **inputs))


# ------------------------------------------------------------------------------------------------------------------
# 3. Every DiT4SR feature is wired
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["sd35", "sd30"])
def test_output_depends_on_lr_latent(variant: str) -> None:
    state_dict, config = _dit4sr_state_dict(variant), _config(variant)
    inputs = _inputs(torch.float64)
    other_lr = {**inputs, "lr_hidden_states": _inputs(torch.float64, seed=3)["lr_hidden_states"]}
    _assert_differ(oracle_forward(state_dict, config, **inputs), oracle_forward(state_dict, config, **other_lr))


@pytest.mark.parametrize("lr_injection", ["conv", "linear"])
def test_injection_scale_changes_output(lr_injection: str) -> None:
    state_dict = _dit4sr_state_dict("sd35", lr_injection=lr_injection)
    config, inputs = _config("sd35", lr_injection=lr_injection), _inputs(torch.float64)
    _assert_differ(
        oracle_forward(state_dict, config, **inputs, lr_injection_scale=1.2),
        oracle_forward(state_dict, config, **inputs, lr_injection_scale=1.0),
    )


def test_zero_injection_conv_makes_scale_irrelevant() -> None:
    state_dict = _dit4sr_state_dict("sd35")
    for name in list(state_dict):
        if ".ff.control_conv." in name:
            state_dict[name] = torch.zeros_like(state_dict[name])
    config, inputs = _config("sd35"), _inputs(torch.float64)
    _assert_same(
        oracle_forward(state_dict, config, **inputs, lr_injection_scale=1.2),
        oracle_forward(state_dict, config, **inputs, lr_injection_scale=1.0),
    )


@pytest.mark.parametrize("variant", ["sd35", "sd30"])
def test_key_source_matters_only_with_qk_norm(variant: str) -> None:
    """Spec 3.1: "noise" and "lr" keys differ with norm_k; without it both are to_k_control(to_k R^)."""
    state_dict, inputs = _dit4sr_state_dict(variant), _inputs(torch.float64)
    noise_keys = oracle_forward(state_dict, _config(variant, lr_key_source="noise"), **inputs)
    lr_keys = oracle_forward(state_dict, _config(variant, lr_key_source="lr"), **inputs)
    if CONFIGS[variant]["qk_norm"] is None:
        _assert_same(noise_keys, lr_keys)
    else:
        _assert_differ(noise_keys, lr_keys)


@pytest.mark.parametrize(
    "variant, lr_key_source, used",
    [("sd35", "noise", False), ("sd35", "lr", True), ("sd30", "noise", True), ("sd30", "lr", True)],
)
def test_to_k_control_is_unused_only_by_released_qk_norm_keys(variant: str, lr_key_source: str, used: bool) -> None:
    """The released quirk: with norm_k and "noise" keys, k_R = norm_k(norm_k(to_k X^)) never reads to_k_control."""
    state_dict, inputs = _dit4sr_state_dict(variant), _inputs(torch.float64)
    config = _config(variant, lr_key_source=lr_key_source)
    perturbed = {name: tensor + 0.5 if ".to_k_control." in name else tensor for name, tensor in state_dict.items()}
    expected = oracle_forward(state_dict, config, **inputs)
    actual = oracle_forward(perturbed, config, **inputs)
    if used:
        _assert_differ(actual, expected)
    else:
        _assert_same(actual, expected)


@pytest.mark.parametrize("ablation", [{"lr_attention": False}, {"lr_residual": False}, {"lr_injection": "none"}])
def test_ablation_switches_change_output(ablation: dict) -> None:
    """Models A, B and C of spec 3.5 each differ from the full model on the same weights."""
    state_dict, inputs = _dit4sr_state_dict("sd35"), _inputs(torch.float64)
    full = oracle_forward(state_dict, _config("sd35"), **inputs)
    _assert_differ(oracle_forward(state_dict, _config("sd35", **ablation), **inputs), full)


def test_undefined_ablation_combination_is_rejected() -> None:
    """Without LR attention there is no O_R, so lr_residual=False has nothing to act on."""
    config = _config("sd35", lr_attention=False, lr_residual=False)
    with pytest.raises(ValueError, match="lr_attention=False and lr_residual=False"):
        oracle_forward(_dit4sr_state_dict("sd35", lr_attention=False), config, **_inputs())


# ------------------------------------------------------------------------------------------------------------------
# 4. Hand-computed pieces
# ------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "variant, lr_key_source, lr_residual",
    [("sd35", "noise", True), ("sd35", "lr", True), ("sd35", "noise", False), ("sd30", "noise", True)],
)
def test_lr_attention_matches_functional_restatement(variant: str, lr_key_source: str, lr_residual: bool) -> None:
    """Spec 3.1 on block 0, restated with torch's linear, rms_norm and SDPA: keys, control projections, residual."""
    state_dict = {name: tensor.double() for name, tensor in _dit4sr_state_dict(variant).items()}
    qk_norm, p = CONFIGS[variant]["qk_norm"], "transformer_blocks.0.attn."
    generator = torch.Generator().manual_seed(6)
    x_hat, r_hat, c_hat = (torch.randn(2, n, 32, generator=generator, dtype=torch.float64) for n in (24, 24, 5))

    def proj(x: torch.Tensor, *names: str) -> torch.Tensor:
        for name in names:
            x = F.linear(x, state_dict[p + name + ".weight"], state_dict[p + name + ".bias"])
        return x.unflatten(-1, (4, 8)).transpose(1, 2)

    def norm(x: torch.Tensor, name: str) -> torch.Tensor:
        return x if qk_norm is None else F.rms_norm(x, (8,), state_dict[p + name + ".weight"], eps=1e-6)

    k_x = norm(proj(x_hat, "to_k"), "norm_k")
    if qk_norm is not None and lr_key_source == "noise":
        k_r = norm(k_x, "norm_k")
    else:
        k_r = norm(proj(r_hat, "to_k", "to_k_control"), "norm_k")
    query = torch.cat(
        [
            norm(proj(x_hat, "to_q"), "norm_q"),
            norm(proj(r_hat, "to_q", "to_q_control"), "norm_q"),
            norm(proj(c_hat, "add_q_proj"), "norm_added_q"),
        ],
        dim=2,
    )
    key = torch.cat([k_x, k_r, norm(proj(c_hat, "add_k_proj"), "norm_added_k")], dim=2)
    value = torch.cat([proj(x_hat, "to_v"), proj(r_hat, "to_v", "to_v_control"), proj(c_hat, "add_v_proj")], dim=2)
    o_x, o_r, o_c = F.scaled_dot_product_attention(query, key, value).transpose(1, 2).flatten(2).split([24, 24, 5], 1)

    def out(x: torch.Tensor, name: str) -> torch.Tensor:
        return F.linear(x, state_dict[p + name + ".weight"], state_dict[p + name + ".bias"])

    expected = (
        out(o_x, "to_out.0"),
        out(o_r + r_hat if lr_residual else o_r, "to_out_control"),
        out(o_c, "to_add_out"),
    )
    lr = LRSettings.from_config(_config(variant, lr_key_source=lr_key_source, lr_residual=lr_residual))
    actual = lr_attention(state_dict, p[:-1], 4, qk_norm, x_hat, r_hat, c_hat, lr, context_pre_only=False)
    for actual_part, expected_part in zip(actual, expected, strict=True):
        _assert_same(actual_part, expected_part)


@pytest.mark.parametrize("grid_h, grid_w", [(2, 3), (3, 5)])
def test_depthwise_conv3x3_on_non_square_grid(grid_h: int, grid_w: int) -> None:
    """The injection conv equals an explicit sum over in-grid (row, col) neighbours and torch's grouped conv."""
    generator = torch.Generator().manual_seed(4)
    batch, channels = 2, 3
    tokens = torch.randn(batch, grid_h * grid_w, channels, generator=generator, dtype=torch.float64)
    weight = torch.randn(channels, 1, 3, 3, generator=generator, dtype=torch.float64)
    bias = torch.randn(channels, generator=generator, dtype=torch.float64)

    expected = torch.empty_like(tokens)
    for b in range(batch):
        for row in range(grid_h):
            for col in range(grid_w):
                for ch in range(channels):
                    total = bias[ch].item()
                    for i in range(3):
                        for j in range(3):
                            r, c = row + i - 1, col + j - 1
                            if 0 <= r < grid_h and 0 <= c < grid_w:
                                total += weight[ch, 0, i, j].item() * tokens[b, r * grid_w + c, ch].item()
                    expected[b, row * grid_w + col, ch] = total

    actual = depthwise_conv3x3(tokens, weight, bias, grid_h, grid_w)
    _assert_same(actual, expected)
    as_image = tokens.transpose(1, 2).reshape(batch, channels, grid_h, grid_w)
    conv = F.conv2d(as_image, weight, bias, padding=1, groups=channels)
    _assert_same(actual, conv.flatten(2).transpose(1, 2))


@pytest.mark.parametrize("latent_size", [LATENT_SIZE, (14, 6)])
def test_patch_embed_crop_matches_diffusers(latent_size: tuple[int, int]) -> None:
    """Patchify + centered crop of the sincos table equal diffusers' PatchEmbed, incl. odd crop offsets (7 x 3)."""
    generator = torch.Generator().manual_seed(5)
    module = PatchEmbed(height=16, width=16, patch_size=2, in_channels=4, embed_dim=32, pos_embed_max_size=16)
    with torch.no_grad():
        for param in module.parameters():
            param.normal_(0.0, 0.2, generator=generator)
    latent = torch.randn(2, 4, *latent_size, generator=generator)
    with torch.no_grad():
        expected = module(latent)
    weights = {f"pos_embed.{name}": tensor for name, tensor in module.state_dict().items()}
    actual = patch_embed(latent, weights, TINY_SD35_CONFIG)
    torch.testing.assert_close(actual.float(), expected, rtol=1e-6, atol=1e-6)


def test_timestep_sinusoid_matches_sd3() -> None:
    """SD3's float32 sinusoid (flip to [cos, sin], no frequency shift) up to float32 cos/sin round-off."""
    timestep = torch.tensor([0.0, 0.5, 31.25, 999.7, 1000.0])
    expected = get_timestep_embedding(timestep, 256, flip_sin_to_cos=True, downscale_freq_shift=0)
    torch.testing.assert_close(timestep_sinusoid(timestep).float(), expected, rtol=0, atol=1e-6)
