# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Loading a DiT4SR pipeline inside ComfyUI, and handing its models to ComfyUI's model management.

The device is ComfyUI's (`get_torch_device`: the CPU with `--cpu`), and so is the default precision (`unet_dtype`,
which honours `--bf16-unet` and the like). The models are one `ModelPatcher` for ComfyUI: before a run,
`load_models_gpu` unloads other nodes' models until ours fit beside the activations the run needs and moves ours to
the GPU; afterwards they stay there until ComfyUI unloads them for another node (to the offload device, the CPU unless
`--gpu-only`), as its own checkpoints do. With `offload` (by default under `--lowvram` and `--novram`, or when the
weights do not fit the GPU), Diffusers' model CPU offload moves one model at a time instead, and ComfyUI only frees
room for the largest one.

diffusers-dit4sr, and with it Diffusers and transformers, is imported when a node runs (`import_library`), so that a
version clash is an error on the node, not an import failure of the node pack.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import comfy.model_management
import comfy.model_patcher
import torch

from diffusers_dit4sr.errors import one_line
from diffusers_dit4sr.inference_defaults import INFERENCE_DEFAULTS

from .model_folders import ModelSource

OFFLOAD_CHOICES = ("auto", "none", "model")
"""`offload`: `auto` (model offload under --lowvram/--novram or when the weights do not fit), never, or always."""


def import_library() -> SimpleNamespace:
    """The parts of diffusers-dit4sr the nodes use. A `RuntimeError` with the installed versions and the fix when they
    cannot be imported (a Diffusers or transformers that another node pack installed, say)."""
    try:
        return SimpleNamespace(
            constants=importlib.import_module("diffusers_dit4sr.constants"),
            downloads=importlib.import_module("diffusers_dit4sr.downloads"),
            image_processing=importlib.import_module("diffusers_dit4sr.image_processing"),
            pipelines=importlib.import_module("diffusers_dit4sr.pipelines"),
            quantization=importlib.import_module("diffusers_dit4sr.quantization"),
            runtime=importlib.import_module("diffusers_dit4sr.runtime"),
        )
    except Exception as error:  # an ImportError, or anything a mismatched library raises while importing
        cause = error
        while cause.__cause__ is not None:  # Diffusers' lazy imports wrap the ImportError in RuntimeErrors
            cause = cause.__cause__
        versions = ", ".join(f"{name} {_version(name)}" for name in ("diffusers-dit4sr", "diffusers", "transformers"))
        message = " ".join(str(cause).split()) or type(cause).__name__
        raise RuntimeError(
            f"DiT4SR cannot import its libraries ({type(cause).__name__}: {message}); installed: {versions}. "
            "Fix: in ComfyUI's Python, `pip install -U diffusers-dit4sr` installs the versions it needs "
            "(`pip check` lists the packages that clash)"
        ) from error


def _version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


class PipelineModels(torch.nn.Module):
    """A pipeline's models (transformer, VAE, text encoders) as one module: what ComfyUI's `ModelPatcher` measures,
    moves to the GPU and unloads."""

    def __init__(self, pipe: Any) -> None:
        super().__init__()
        for name, component in pipe.components.items():
            if isinstance(component, torch.nn.Module):
                self.add_module(name, component)


@dataclass(repr=False)
class LoadedPipeline:
    """The loader's output (`DIT4SR_PIPELINE`): the pipeline and how its models reach the device."""

    pipe: Any
    """A `StableDiffusion3SRPipeline`."""
    name: str
    device: torch.device
    offload: bool
    patcher: comfy.model_patcher.ModelPatcher | None
    """ComfyUI's handle on the models (kept as long as the pipeline: ComfyUI forgets models whose patcher is gone);
    `None` under model offload."""

    def __repr__(self) -> str:  # ComfyUI shows inputs in error reports: not the pipeline's whole configuration
        how = "model offload" if self.offload else "ComfyUI's model management"
        return f"DiT4SR pipeline {self.name!r} on {self.device} ({how})"

    def ready(self, activation_bytes: int) -> None:
        """Makes room on the device for the models and `activation_bytes` of activations (ComfyUI unloads other
        models as needed) and puts the models there."""
        if self.patcher is not None:
            comfy.model_management.load_models_gpu(
                [self.patcher], memory_required=activation_bytes, force_full_load=True
            )
        elif self.device.type != "cpu":
            largest = max(comfy.model_management.module_size(model) for model in _models(self.pipe))
            comfy.model_management.free_memory(largest + activation_bytes, self.device)

    def activation_bytes(self, tile_size: int) -> int:
        """The transformer's peak activations for one guided tile of `tile_size` pixels (its tile batch then grows
        into whatever memory is left)."""
        side = tile_size // self.pipe.vae_scale_factor
        text_tokens = self.pipe.tokenizer_max_length + INFERENCE_DEFAULTS.max_sequence_length
        return self.pipe.transformer.estimate_activation_memory(2, side, side, text_tokens)


def load_pipeline(source: ModelSource, *, variant: str, dtype: str, quantization: str, offload: str) -> LoadedPipeline:
    """Loads the pipeline of `source` for ComfyUI's device; the arguments are the loader's inputs, and every
    `ValueError` and `RuntimeError` names the input at fault."""
    library = import_library()
    device = comfy.model_management.get_torch_device()
    preset = None if quantization == "none" else quantization
    if offload not in OFFLOAD_CHOICES:
        raise ValueError(f"offload must be one of {', '.join(OFFLOAD_CHOICES)}, got {offload!r}")
    if offload == "model" and device.type == "cpu":
        raise ValueError("offload 'model' moves each model to the GPU while it runs; ComfyUI runs on the CPU here")
    torch_dtype = _torch_dtype(library, dtype, device, preset)
    quantization_config = None
    if preset is not None:
        try:
            library.quantization.check_quantization(preset, device=device, dtype=torch_dtype)
        except ValueError as error:
            raise ValueError(f"quantization {preset}: {error}") from None
        quantization_config = library.quantization.pipeline_quantization_config(preset)

    options = {"dtype": torch_dtype, "local_files_only": True, "quantization_config": quantization_config}
    pipeline_class = library.pipelines.StableDiffusion3SRPipeline
    if source.released:
        folders = _released_folders(library, source, variant)
        what = f"the released DiT4SR pipeline (variant {variant}) from {folders.sd3} and {folders.transformer}"
    else:
        what = f"the pipeline in {source.folder}"
    try:
        with library.runtime.quiet_loading():
            if source.released:
                pipe = pipeline_class.from_released(
                    variant, sd3_model=str(folders.sd3), dit4sr_model=str(folders.dit4sr), **options
                )
            else:
                pipe = pipeline_class.from_pretrained(str(source.folder), **options)
    except Exception as error:  # a broken folder fails in many ways; each is one line
        details = one_line(error)
        raise RuntimeError(f"model {source.choice!r}: cannot load {what}: {details}") from error

    models = PipelineModels(pipe)
    model_offload = _model_offload(offload, device, comfy.model_management.module_size(models))
    if model_offload:
        library.runtime.prepare_pipeline(pipe, device, cpu_offload=True)
        patcher = None
    else:
        offload_device = comfy.model_management.unet_offload_device()
        library.runtime.prepare_pipeline(pipe, offload_device)
        patcher = comfy.model_patcher.ModelPatcher(models, load_device=device, offload_device=offload_device)
    return LoadedPipeline(pipe=pipe, name=source.choice, device=device, offload=model_offload, patcher=patcher)


def _torch_dtype(library: SimpleNamespace, dtype: str, device: torch.device, preset: str | None) -> torch.dtype:
    """`dtype` as a torch dtype; `auto` is the quantization preset's own, else what ComfyUI picks for this device."""
    if dtype != "auto":
        return library.runtime.resolve_dtype(dtype, device)
    if preset is not None and library.quantization.QUANTIZATION_PRESETS[preset].dtype is not None:
        return library.runtime.pipeline_dtype(None, device, preset)
    return comfy.model_management.unet_dtype(
        device=device, supported_dtypes=[torch.bfloat16, torch.float16, torch.float32]
    )


def _model_offload(offload: str, device: torch.device, weight_bytes: int) -> bool:
    if offload != "auto":
        return offload == "model"
    if device.type == "cpu":
        return False
    state = comfy.model_management.vram_state
    if state in (comfy.model_management.VRAMState.LOW_VRAM, comfy.model_management.VRAMState.NO_VRAM):
        return True
    room = comfy.model_management.get_total_memory(device) - comfy.model_management.minimum_inference_memory()
    return weight_bytes > room


def _released_folders(library: SimpleNamespace, source: ModelSource, variant: str):
    """A complete copy of the released weights in any `diffusers` model folder, or else a download into the first;
    a `RuntimeError` naming the folders to fill and the commands that fill them when the download fails."""
    downloads = library.downloads
    for root in source.roots:
        folders = downloads.released_folders(root, variant)
        if not folders.missing():
            return folders
    target = downloads.released_folders(source.roots[0], variant)
    try:
        return downloads.download_released(source.roots[0], variant)
    except OSError as error:  # `HubLoadError`, or a full disk
        commands = "; ".join(downloads.download_commands(target))
        raise RuntimeError(
            f"model {source.choice!r} (variant {variant}): {one_line(error)} To install it by hand, "
            f"put its files into {target.sd3} and {target.transformer}: {commands}"
        ) from error


def _models(pipe: Any) -> list[torch.nn.Module]:
    return [component for component in pipe.components.values() if isinstance(component, torch.nn.Module)]
