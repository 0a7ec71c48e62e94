# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Named quantization presets for small GPUs, as Diffusers `PipelineQuantizationConfig`s.

The preset names and components are plain data, importable without torch, so a CLI can list them in `--help`
instantly; the backends are imported only when a config is built or a preset is checked.

Every backend Diffusers supports quantizes `nn.Linear` layers only. In the DiT4SR transformer this includes the LR
stream's `*_control` projections (same shapes as the SD3 projections they follow, about a sixth of a block's weights,
so keeping them in high precision would cost memory for layers that quantize like the others), while the depthwise
LR-injection convolution (`control_conv`), the patch embeddings and the norms stay in the load dtype.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from diffusers import PipelineQuantizationConfig

QUANTIZABLE_COMPONENTS = ("transformer", "text_encoder", "text_encoder_2", "text_encoder_3")


@dataclass(frozen=True)
class QuantizationPreset:
    """One named recipe: a backend, its weight format and the components it quantizes by default."""

    name: str
    backend: str
    package: str
    weights: str
    components: tuple[str, ...]
    description: str
    needs_cuda: bool = False
    min_compute_capability: tuple[int, int] | None = None
    dtype: str | None = None
    serializable: bool = True


QUANTIZATION_PRESETS = {
    preset.name: preset
    for preset in (
        QuantizationPreset(
            name="int8",
            backend="torchao",
            package="torchao",
            weights="int8",
            components=("transformer", "text_encoder_3"),
            description="torchao int8 weight-only for the transformer and T5 (bfloat16 compute)",
            dtype="bfloat16",
        ),
        QuantizationPreset(
            name="float8",
            backend="torchao",
            package="torchao",
            weights="float8",
            components=("transformer", "text_encoder_3"),
            description="torchao float8 weight-only for the transformer and T5 (GPUs of compute capability 8.9+)",
            min_compute_capability=(8, 9),
            dtype="bfloat16",
        ),
        QuantizationPreset(
            name="int8-quanto",
            backend="quanto",
            package="optimum.quanto",
            weights="int8",
            components=("transformer", "text_encoder_3"),
            description="optimum-quanto int8 weights for the transformer and T5 (cannot be saved)",
            serializable=False,
        ),
        QuantizationPreset(
            name="nf4-t5",
            backend="bitsandbytes_4bit",
            package="bitsandbytes",
            weights="nf4",
            components=("text_encoder_3",),
            description="bitsandbytes 4-bit NF4 for T5 only (CUDA GPUs)",
            needs_cuda=True,
        ),
    )
}
# Bytes each quantized `nn.Linear` weight element takes (scales and block statistics excluded).
WEIGHT_BYTES_PER_ELEMENT = {"int8": 1.0, "float8": 1.0, "nf4": 0.5}


def _preset(name: str) -> QuantizationPreset:
    if name not in QUANTIZATION_PRESETS:
        raise ValueError(f"`preset` must be one of {sorted(QUANTIZATION_PRESETS)}, got {name!r}.")
    return QUANTIZATION_PRESETS[name]


def resolve_components(preset: str, components: list[str] | tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The components `preset` quantizes: `components` when given (checked), else the preset's default."""
    if components is None:
        return _preset(preset).components
    unknown = [name for name in components if name not in QUANTIZABLE_COMPONENTS]
    if unknown or not components:
        raise ValueError(
            f"`components` must be a non-empty list of {QUANTIZABLE_COMPONENTS}, got {list(components)!r}."
        )
    return tuple(dict.fromkeys(components))


def check_quantization(
    preset: str,
    device: str | torch.device | None = None,
    components: list[str] | tuple[str, ...] | None = None,
    dtype: str | torch.dtype | None = None,
) -> None:
    """Raises a ValueError if `preset` cannot run here, before loading: one line naming what to fix first (the
    device: no CUDA GPU, or one too old), then everything else that is missing (the backend's package, the dtype).

    Args:
        preset: A name of `QUANTIZATION_PRESETS`.
        device: Where the pipeline will run (`"cuda"`, `"cuda:1"`, `"cpu"`, ...); `None` skips the device checks.
        components: Components to quantize (default: the preset's).
        dtype: The load dtype; presets that compute in bfloat16 refuse another one.
    """
    spec = _preset(preset)
    resolve_components(preset, components)
    problems = [] if device is None else _device_problems(spec, device)
    problems += _package_problems(spec)
    if dtype is not None and spec.dtype is not None and str(dtype).removeprefix("torch.") != spec.dtype:
        problems.append(f"computes in {spec.dtype} ({spec.backend} loads its layers so); got dtype {dtype}.")
    if problems:
        also = "".join(f" It also {problem}" for problem in problems[1:])
        raise ValueError(f"Quantization preset {preset!r} {problems[0]}{also}")


def _package_problems(spec: QuantizationPreset) -> list[str]:
    """The backend package `spec` needs, if it is not installed, as the rest of a sentence about the preset."""
    if importlib.util.find_spec(spec.package.split(".")[0]) is None or importlib.util.find_spec(spec.package) is None:
        distribution = "optimum-quanto" if spec.backend == "quanto" else spec.package
        return [f"needs the `{distribution}` package: `pip install {distribution}`."]
    return []


def _device_problems(spec: QuantizationPreset, device: str | torch.device) -> list[str]:
    """What keeps `spec` from running on `device`, as the rest of a sentence about the preset (none: `[]`)."""
    import torch

    device = torch.device(device)
    if spec.needs_cuda and device.type != "cuda":
        return [f"needs a CUDA GPU (Diffusers quantizes with {spec.package} only on CUDA); got device {device}."]
    if device.type != "cuda" or spec.min_compute_capability is None:
        return []
    if not torch.cuda.is_available():
        return [f"was asked for device {device}, but CUDA is unavailable."]
    capability = torch.cuda.get_device_capability(device)
    if capability >= spec.min_compute_capability:
        return []
    needed = ".".join(map(str, spec.min_compute_capability))
    return [f"needs a GPU of compute capability {needed} or higher; {device} has {capability[0]}.{capability[1]}."]


def _backend_configs(spec: QuantizationPreset) -> tuple[Any, Any]:
    """The Diffusers config (for the transformer) and the Transformers config (for the text encoders) of `spec`."""
    import diffusers
    import transformers

    if spec.backend == "torchao":
        from torchao.quantization import Float8WeightOnlyConfig, Int8WeightOnlyConfig

        weights = {"int8": Int8WeightOnlyConfig, "float8": Float8WeightOnlyConfig}[spec.weights]
        return diffusers.TorchAoConfig(weights()), transformers.TorchAoConfig(weights())
    if spec.backend == "quanto":
        return diffusers.QuantoConfig(weights_dtype=spec.weights), transformers.QuantoConfig(weights=spec.weights)
    options = {"load_in_4bit": True, "bnb_4bit_quant_type": spec.weights}
    return diffusers.BitsAndBytesConfig(**options), transformers.BitsAndBytesConfig(**options)


def pipeline_quantization_config(
    preset: str, components: list[str] | tuple[str, ...] | None = None
) -> PipelineQuantizationConfig:
    """A `PipelineQuantizationConfig` quantizing `components` with `preset`'s backend.

    Pass it as `quantization_config` to `StableDiffusion3SRPipeline.from_released` or `from_pretrained`.

    Args:
        preset: A name of `QUANTIZATION_PRESETS`.
        components: Which of `QUANTIZABLE_COMPONENTS` to quantize (default: the preset's).

    Raises:
        ValueError: An unknown preset or component, or a backend whose package is not installed (naming it).
    """
    from diffusers import PipelineQuantizationConfig

    spec = _preset(preset)
    components = resolve_components(preset, components)
    missing = _package_problems(spec)
    if missing:
        raise ValueError(f"Quantization preset {preset!r} {missing[0]}")
    diffusers_config, transformers_config = _backend_configs(spec)
    mapping = {name: diffusers_config if name == "transformer" else transformers_config for name in components}
    return PipelineQuantizationConfig(quant_mapping=mapping)


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers as stored, counting quantized tensors by their inner data."""

    def stored_bytes(tensor) -> int:
        if hasattr(tensor, "__tensor_flatten__"):
            names, _ = tensor.__tensor_flatten__()
            return sum(stored_bytes(getattr(tensor, name)) for name in names)
        return tensor.numel() * tensor.element_size()

    return sum(stored_bytes(tensor) for tensor in [*module.parameters(), *module.buffers()])
