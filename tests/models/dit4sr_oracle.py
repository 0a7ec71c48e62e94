# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Test oracle: a slow, explicit, plain-torch statement of the DiT4SR transformer forward pass.

Written from the DiT4SR specification (`dit4sr-spec.md`, sections 1-3) and from the math of diffusers'
`SD3Transformer2DModel`, without any diffusers module or `nn.Module` layer: every step reads its weights from a state
dict by name and is computed in float64, so the result is the reference that fp32 implementations are compared
against. One function per concept, in the order the spec reads.

Two quantities are defined by SD3 in float32 and are therefore formed in float32 before the float64 math: the
timestep sinusoid's argument `t * freq` (for t ~ 1000 its float32 rounding moves the features by up to ~1e-4, far
above any fp32 tolerance) and the coordinates of the stored positional-embedding table.
"""

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_NORM_EPS = 1e-6
_TIMESTEP_CHANNELS = 256
_StateDict = dict[str, torch.Tensor]


@dataclass(frozen=True)
class LRSettings:
    """The DiT4SR config switches (spec 3.1 and 3.5); the defaults are the full model."""

    key_source: str = "noise"
    attention: bool = True
    residual: bool = True
    injection: str = "conv"

    @classmethod
    def from_config(cls, config: dict) -> "LRSettings":
        settings = cls(
            key_source=config.get("lr_key_source", cls.key_source),
            attention=config.get("lr_attention", cls.attention),
            residual=config.get("lr_residual", cls.residual),
            injection=config.get("lr_injection", cls.injection),
        )
        if settings.key_source not in ("noise", "lr"):
            raise ValueError(f"Unknown lr_key_source: {settings.key_source!r}.")
        if settings.injection not in ("conv", "linear", "none"):
            raise ValueError(f"Unknown lr_injection: {settings.injection!r}.")
        if not settings.attention and not settings.residual:
            # Model A's LR branch *is* the residual path; model B removes it. The spec defines no combination.
            raise ValueError("lr_attention=False and lr_residual=False together are not defined by the spec.")
        return settings


# ----------------------------------------------------------------------------------------------------------------
# Primitives
# ----------------------------------------------------------------------------------------------------------------


def _param(state_dict: _StateDict, name: str, like: torch.Tensor) -> torch.Tensor:
    """Reads one weight as float64 on the device of `like`."""
    return state_dict[name].to(device=like.device, dtype=torch.float64)


def linear(x: torch.Tensor, state_dict: _StateDict, prefix: str) -> torch.Tensor:
    """`x W^T + b` with the Linear weights stored under `prefix`."""
    return x @ _param(state_dict, prefix + ".weight", x).T + _param(state_dict, prefix + ".bias", x)


def silu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU, tanh approximation: 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x**3)))


def layer_norm(x: torch.Tensor, eps: float = _NORM_EPS) -> torch.Tensor:
    """LayerNorm over the last axis without affine parameters (biased variance)."""
    mean = x.mean(dim=-1, keepdim=True)
    variance = ((x - mean) ** 2).mean(dim=-1, keepdim=True)
    return (x - mean) / torch.sqrt(variance + eps)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = _NORM_EPS) -> torch.Tensor:
    """RMSNorm over the last axis (the head dimension for qk-norm): x / sqrt(mean(x^2) + eps) * weight."""
    return x / torch.sqrt((x**2).mean(dim=-1, keepdim=True) + eps) * weight


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """Adaptive LayerNorm: LN(x) * (1 + scale) + shift, with per-sample (B, D) shift and scale."""
    return layer_norm(x) * (1.0 + scale[:, None, :]) + shift[:, None, :]


def modulation(temb: torch.Tensor, state_dict: _StateDict, prefix: str) -> list[torch.Tensor]:
    """The chunks of `linear(silu(temb))` of an AdaLN layer, each (B, D).

    AdaLayerNormZero gives (shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp), SD3.5's dual version
    appends (shift_msa2, scale_msa2, gate_msa2), and AdaLayerNormContinuous gives (scale, shift).
    """
    emb = linear(silu(temb), state_dict, prefix + ".linear")
    return list(emb.chunk(emb.shape[-1] // temb.shape[-1], dim=-1))


def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d)) v for (B, heads, tokens, d) tensors, written out explicitly."""
    logits = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])
    weights = torch.exp(logits - logits.amax(dim=-1, keepdim=True))
    return (weights / weights.sum(dim=-1, keepdim=True)) @ value


def split_heads(x: torch.Tensor, num_heads: int) -> torch.Tensor:
    """(B, N, heads * d) -> (B, heads, N, d)."""
    batch, tokens, dim = x.shape
    return x.reshape(batch, tokens, num_heads, dim // num_heads).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, heads, N, d) -> (B, N, heads * d)."""
    batch, num_heads, tokens, head_dim = x.shape
    return x.transpose(1, 2).reshape(batch, tokens, num_heads * head_dim)


# ----------------------------------------------------------------------------------------------------------------
# Embeddings (spec 2)
# ----------------------------------------------------------------------------------------------------------------


def sincos_1d(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """[sin(p w_k), cos(p w_k)] with w_k = 10000^(-k / (dim / 2)), k < dim / 2: (M,) -> (M, dim)."""
    omega = 1.0 / 10000.0 ** (torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim / 2))
    angles = positions.to(torch.float64)[:, None] * omega[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)


def cropped_pos_embed(config: dict, dim: int, grid_h: int, grid_w: int, device: torch.device) -> torch.Tensor:
    """SD3's positional embedding for a (grid_h, grid_w) patch grid, (grid_h * grid_w, dim) in row-major order.

    SD3 stores a table for a square grid of `pos_embed_max_size` M cells whose coordinates are `i / (M / base)`
    (base = sample_size // patch_size; float32, as the stored table was built) and takes its centered crop, rows
    [top, top + grid_h) and columns [left, left + grid_w) with top = (M - grid_h) // 2, left = (M - grid_w) // 2.
    Each token's embedding is [sincos(column coordinate), sincos(row coordinate)], dim / 2 channels each.
    """
    max_size = config["pos_embed_max_size"]
    if max_size is None:
        raise ValueError("The oracle implements SD3's cropped positional embedding only: set `pos_embed_max_size`.")
    if grid_h > max_size or grid_w > max_size:
        raise ValueError(f"Patch grid {grid_h}x{grid_w} exceeds pos_embed_max_size={max_size}.")
    base_size = config["sample_size"] // config["patch_size"]
    cells = torch.arange(max_size, dtype=torch.float32, device=device) / (max_size / base_size)
    top, left = (max_size - grid_h) // 2, (max_size - grid_w) // 2
    row_emb = sincos_1d(cells[top : top + grid_h], dim // 2)  # (grid_h, dim / 2)
    col_emb = sincos_1d(cells[left : left + grid_w], dim // 2)  # (grid_w, dim / 2)
    table = torch.cat([col_emb[None, :, :].expand(grid_h, -1, -1), row_emb[:, None, :].expand(-1, grid_w, -1)], dim=-1)
    return table.reshape(grid_h * grid_w, dim)


def patch_embed(latent: torch.Tensor, state_dict: _StateDict, config: dict) -> torch.Tensor:
    """Patchify (B, C, h, w) into row-major p x p patches, project with `pos_embed.proj`, add the cropped pos embed.

    The projection is the stride-p, p x p Conv2d written as a matmul over flattened (C, p, p) patches.
    """
    p = config["patch_size"]
    batch, channels, height, width = latent.shape
    grid_h, grid_w = height // p, width // p
    patches = latent.to(torch.float64).reshape(batch, channels, grid_h, p, grid_w, p)
    patches = patches.permute(0, 2, 4, 1, 3, 5).reshape(batch, grid_h * grid_w, channels * p * p)
    weight = _param(state_dict, "pos_embed.proj.weight", patches)  # (D, C, p, p)
    tokens = patches @ weight.reshape(weight.shape[0], -1).T + _param(state_dict, "pos_embed.proj.bias", patches)
    return tokens + cropped_pos_embed(config, weight.shape[0], grid_h, grid_w, latent.device)


def timestep_sinusoid(timestep: torch.Tensor, channels: int = _TIMESTEP_CHANNELS) -> torch.Tensor:
    """SD3's timestep features [cos(t f_k), sin(t f_k)], f_k = exp(-ln(10000) k / (channels / 2)).

    The frequencies and the products t * f_k are SD3's float32 values (see the module docstring); cos and sin are
    taken in float64.
    """
    half = channels // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=timestep.device) * (-math.log(10000.0) / half))
    angles = (timestep.to(torch.float32)[:, None] * freqs[None, :]).to(torch.float64)
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def _silu_mlp(x: torch.Tensor, state_dict: _StateDict, prefix: str) -> torch.Tensor:
    """linear_2(SiLU(linear_1(x)))."""
    return linear(silu(linear(x, state_dict, prefix + ".linear_1")), state_dict, prefix + ".linear_2")


def conditioning_embedding(
    timestep: torch.Tensor, pooled_projections: torch.Tensor, state_dict: _StateDict
) -> torch.Tensor:
    """temb = MLP_t(sinusoid(t)) + MLP_pooled(pooled): (B, D)."""
    t_emb = _silu_mlp(timestep_sinusoid(timestep), state_dict, "time_text_embed.timestep_embedder")
    return t_emb + _silu_mlp(pooled_projections.to(torch.float64), state_dict, "time_text_embed.text_embedder")


# ----------------------------------------------------------------------------------------------------------------
# MM-DiT-Control block (spec 3)
# ----------------------------------------------------------------------------------------------------------------


def _qk_norm(x: torch.Tensor, state_dict: _StateDict, name: str, qk_norm: str | None) -> torch.Tensor:
    """Per-head RMSNorm with weight `name`; identity when the model has no qk-norm."""
    return x if qk_norm is None else rms_norm(x, _param(state_dict, name + ".weight", x))


def lr_attention(
    state_dict: _StateDict,
    prefix: str,
    num_heads: int,
    qk_norm: str | None,
    x_hat: torch.Tensor,
    r_hat: torch.Tensor | None,
    c_hat: torch.Tensor | None,
    lr: LRSettings,
    context_pre_only: bool,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """Joint attention over noise, LR and text tokens (spec 3.1; 3.2 when `c_hat` is None).

    Returns (attn_out_X, attn_out_R, text output); attn_out_R is None without an LR stream (plain SD3) and the text
    output is None without text or in a context_pre_only block.
    """
    p = prefix + "."
    q_x = _qk_norm(split_heads(linear(x_hat, state_dict, p + "to_q"), num_heads), state_dict, p + "norm_q", qk_norm)
    k_x = _qk_norm(split_heads(linear(x_hat, state_dict, p + "to_k"), num_heads), state_dict, p + "norm_k", qk_norm)
    v_x = split_heads(linear(x_hat, state_dict, p + "to_v"), num_heads)
    queries, keys, values = [q_x], [k_x], [v_x]

    if r_hat is not None and lr.attention:
        q_r = linear(linear(r_hat, state_dict, p + "to_q"), state_dict, p + "to_q_control")
        q_r = _qk_norm(split_heads(q_r, num_heads), state_dict, p + "norm_q", qk_norm)
        if qk_norm is not None and lr.key_source == "noise":
            # Released behaviour: the LR tokens reuse the noise tokens' normalized keys, normalized once more.
            k_r = _qk_norm(k_x, state_dict, p + "norm_k", qk_norm)
        else:
            k_r = linear(linear(r_hat, state_dict, p + "to_k"), state_dict, p + "to_k_control")
            k_r = _qk_norm(split_heads(k_r, num_heads), state_dict, p + "norm_k", qk_norm)
        v_r = split_heads(linear(linear(r_hat, state_dict, p + "to_v"), state_dict, p + "to_v_control"), num_heads)
        queries.append(q_r)
        keys.append(k_r)
        values.append(v_r)

    if c_hat is not None:
        q_c = split_heads(linear(c_hat, state_dict, p + "add_q_proj"), num_heads)
        k_c = split_heads(linear(c_hat, state_dict, p + "add_k_proj"), num_heads)
        queries.append(_qk_norm(q_c, state_dict, p + "norm_added_q", qk_norm))
        keys.append(_qk_norm(k_c, state_dict, p + "norm_added_k", qk_norm))
        values.append(split_heads(linear(c_hat, state_dict, p + "add_v_proj"), num_heads))

    outputs = attention(torch.cat(queries, dim=2), torch.cat(keys, dim=2), torch.cat(values, dim=2))
    outputs = merge_heads(outputs).split([q.shape[2] for q in queries], dim=1)

    attn_out_x = linear(outputs[0], state_dict, p + "to_out.0")
    if r_hat is None:
        attn_out_r = None
    elif not lr.attention:
        attn_out_r = linear(r_hat, state_dict, p + "to_out_control")
    elif lr.residual:
        attn_out_r = linear(outputs[1] + r_hat, state_dict, p + "to_out_control")
    else:
        attn_out_r = linear(outputs[1], state_dict, p + "to_out_control")
    text_out = None
    if c_hat is not None and not context_pre_only:
        text_out = linear(outputs[-1], state_dict, p + "to_add_out")
    return attn_out_x, attn_out_r, text_out


def depthwise_conv3x3(
    tokens: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, grid_h: int, grid_w: int
) -> torch.Tensor:
    """Depthwise 3x3 convolution (zero padding 1) of row-major tokens on a (grid_h, grid_w) grid.

    out[r, c, ch] = bias[ch] + sum_{i, j in 0..2} weight[ch, 0, i, j] * in[r + i - 1, c + j - 1, ch], with
    out-of-grid neighbours zero (PyTorch's Conv2d cross-correlation convention). (B, N, ch) -> (B, N, ch).
    """
    batch, _, channels = tokens.shape
    grid = F.pad(tokens.reshape(batch, grid_h, grid_w, channels), (0, 0, 1, 1, 1, 1))
    out = bias.expand(batch, grid_h, grid_w, channels).clone()
    for i in range(3):
        for j in range(3):
            out = out + weight[:, 0, i, j] * grid[:, i : i + grid_h, j : j + grid_w, :]
    return out.reshape(batch, grid_h * grid_w, channels)


def lr_injection(
    h_x: torch.Tensor,
    h_r: torch.Tensor,
    state_dict: _StateDict,
    prefix: str,
    lr: LRSettings,
    scale: float,
    grid: tuple[int, int],
) -> torch.Tensor:
    """H_X + s * inject(H_R) between the MLP layers (spec 3.3 and 3.5): depthwise conv, per-token linear or none."""
    if lr.injection == "none":
        return h_x
    if lr.injection == "linear":
        return h_x + scale * linear(h_r, state_dict, prefix + ".control_linear")
    weight = _param(state_dict, prefix + ".control_conv.weight", h_r)
    bias = _param(state_dict, prefix + ".control_conv.bias", h_r)
    return h_x + scale * depthwise_conv3x3(h_r, weight, bias, *grid)


def feed_forward(y_hat: torch.Tensor, state_dict: _StateDict, prefix: str) -> torch.Tensor:
    """SD3's MLP: net.2(GELU_tanh(net.0.proj(y)))."""
    return linear(gelu_tanh(linear(y_hat, state_dict, prefix + ".net.0.proj")), state_dict, prefix + ".net.2")


def _gated(gate: torch.Tensor, update: torch.Tensor | None) -> torch.Tensor | None:
    """gate (B, D) * update (B, N, D); None stays None (no LR stream)."""
    return None if update is None else gate[:, None, :] * update


def mmdit_control_block(
    state_dict: _StateDict,
    config: dict,
    index: int,
    x: torch.Tensor,
    r: torch.Tensor | None,
    c: torch.Tensor,
    temb: torch.Tensor,
    grid: tuple[int, int],
    lr: LRSettings,
    lr_injection_scale: float,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One MM-DiT-Control block on the noise X, LR R and text C streams; `r=None` is SD3's JointTransformerBlock.

    X and R share every SD3 weight and every modulation; the last block is context_pre_only (its text output is
    None).
    """
    p = f"transformer_blocks.{index}."
    num_heads, qk_norm = config["num_attention_heads"], config["qk_norm"]
    dual = index in tuple(config["dual_attention_layers"])
    context_pre_only = index == config["num_layers"] - 1

    def lr_modulate(stream: torch.Tensor | None, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor | None:
        return None if stream is None else modulate(stream, shift, scale)

    mod = modulation(temb, state_dict, p + "norm1")
    shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod[:6]
    if context_pre_only:
        c_scale_msa, c_shift_msa = modulation(temb, state_dict, p + "norm1_context")
    else:
        c_shift_msa, c_scale_msa, c_gate_msa, c_shift_mlp, c_scale_mlp, c_gate_mlp = modulation(
            temb, state_dict, p + "norm1_context"
        )

    # Joint attention (spec 3.1): one modulation for X and R.
    x_hat, r_hat = modulate(x, shift_msa, scale_msa), lr_modulate(r, shift_msa, scale_msa)
    c_hat = modulate(c, c_shift_msa, c_scale_msa)
    out_x, out_r, out_c = lr_attention(
        state_dict, p + "attn", num_heads, qk_norm, x_hat, r_hat, c_hat, lr, context_pre_only
    )
    x_update, r_update = _gated(gate_msa, out_x), _gated(gate_msa, out_r)

    # Dual attention (spec 3.2): the second modulation of the block input, no text tokens.
    if dual:
        shift_msa2, scale_msa2, gate_msa2 = mod[6:]
        x_hat2, r_hat2 = modulate(x, shift_msa2, scale_msa2), lr_modulate(r, shift_msa2, scale_msa2)
        out_x2, out_r2, _ = lr_attention(
            state_dict, p + "attn2", num_heads, qk_norm, x_hat2, r_hat2, None, lr, context_pre_only
        )
        x_update = x_update + _gated(gate_msa2, out_x2)
        r_update = None if r is None else r_update + _gated(gate_msa2, out_r2)
    x = x + x_update
    r = None if r is None else r + r_update

    # MLP with LR injection (spec 3.3): one modulation for X and R.
    h_x = gelu_tanh(linear(modulate(x, shift_mlp, scale_mlp), state_dict, p + "ff.net.0.proj"))
    if r is not None:
        h_r = gelu_tanh(linear(modulate(r, shift_mlp, scale_mlp), state_dict, p + "ff.net.0.proj"))
        h_x = lr_injection(h_x, h_r, state_dict, p + "ff", lr, lr_injection_scale, grid)
        r = r + _gated(gate_mlp, linear(h_r, state_dict, p + "ff.net.2"))
    x = x + _gated(gate_mlp, linear(h_x, state_dict, p + "ff.net.2"))

    # Text stream, as in SD3.
    if context_pre_only:
        return x, r, None
    c = c + _gated(c_gate_msa, out_c)
    c = c + _gated(c_gate_mlp, feed_forward(modulate(c, c_shift_mlp, c_scale_mlp), state_dict, p + "ff_context"))
    return x, r, c


# ----------------------------------------------------------------------------------------------------------------
# Output (spec 3.4) and the full forward
# ----------------------------------------------------------------------------------------------------------------


def unpatchify(tokens: torch.Tensor, patch_size: int, channels: int, grid_h: int, grid_w: int) -> torch.Tensor:
    """(B, N, p * p * C) tokens, each laid out as (p_row, p_col, C), -> (B, C, grid_h * p, grid_w * p)."""
    batch = tokens.shape[0]
    x = tokens.reshape(batch, grid_h, grid_w, patch_size, patch_size, channels)
    return x.permute(0, 5, 1, 3, 2, 4).reshape(batch, channels, grid_h * patch_size, grid_w * patch_size)


def _forward(
    state_dict: _StateDict,
    config: dict,
    hidden_states: torch.Tensor,
    lr_hidden_states: torch.Tensor | None,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor,
    timestep: torch.Tensor,
    lr_injection_scale: float,
) -> torch.Tensor:
    """The shared forward; `lr_hidden_states=None` runs plain SD3 (no LR stream)."""
    if config["qk_norm"] not in (None, "rms_norm"):
        raise NotImplementedError(f"qk_norm={config['qk_norm']!r}: SD3 and SD3.5 use None or 'rms_norm'.")
    lr = LRSettings.from_config(config)
    patch_size = config["patch_size"]
    grid = (hidden_states.shape[-2] // patch_size, hidden_states.shape[-1] // patch_size)

    x = patch_embed(hidden_states, state_dict, config)
    r = None if lr_hidden_states is None else patch_embed(lr_hidden_states, state_dict, config)
    temb = conditioning_embedding(timestep, pooled_projections, state_dict)
    c = linear(encoder_hidden_states.to(torch.float64), state_dict, "context_embedder")

    for index in range(config["num_layers"]):
        x, r, c = mmdit_control_block(state_dict, config, index, x, r, c, temb, grid, lr, lr_injection_scale)

    out_scale, out_shift = modulation(temb, state_dict, "norm_out")
    x = linear(modulate(x, out_shift, out_scale), state_dict, "proj_out")
    out_channels = config["out_channels"] or config["in_channels"]
    return unpatchify(x, patch_size, out_channels, *grid).to(hidden_states.dtype)


def oracle_forward(
    state_dict: _StateDict,
    config: dict,
    hidden_states: torch.Tensor,
    lr_hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor,
    timestep: torch.Tensor,
    lr_injection_scale: float = 1.0,
) -> torch.Tensor:
    """Reference DiT4SR forward: the velocity prediction (B, out_channels, h, w) in `hidden_states`' dtype.

    `state_dict` uses SD3Transformer2DModel's parameter names plus the DiT4SR `*_control` names; `config` is an
    SD3Transformer2DModel config plus `lr_key_source`, `lr_attention`, `lr_residual`, `lr_injection` (defaults:
    "noise", True, True, "conv"). Computed in float64.
    """
    return _forward(
        state_dict,
        config,
        hidden_states,
        lr_hidden_states,
        encoder_hidden_states,
        pooled_projections,
        timestep,
        lr_injection_scale,
    )


def oracle_sd3_forward(
    state_dict: _StateDict,
    config: dict,
    hidden_states: torch.Tensor,
    encoder_hidden_states: torch.Tensor,
    pooled_projections: torch.Tensor,
    timestep: torch.Tensor,
) -> torch.Tensor:
    """The same code path without any LR stream, i.e. plain SD3; used to validate the oracle against diffusers."""
    return _forward(state_dict, config, hidden_states, None, encoder_hidden_states, pooled_projections, timestep, 1.0)
