# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""DiT4SR real-world image super-resolution as a Diffusers library.

The names below are imported on first use (PEP 562), so that importing a light module of the package (the command
line's option parser, `constants`) does not import torch and Diffusers. `model_index.json` records our classes by
module path (`diffusers_dit4sr.models.transformer_dit4sr`, `diffusers_dit4sr.pipelines.pipeline_stable_diffusion_3_sr`);
Diffusers 0.42 does not import such a module itself (`_get_library_or_raise` looks it up in `sys.modules`), so the
pipeline module imports the transformer's, and loading with `StableDiffusion3SRPipeline.from_pretrained` has both.

What the quantization backends log while Diffusers imports them is hidden (`backend_logging.hide_import_noise`).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .backend_logging import hide_import_noise

__version__ = "0.1.0.dev0"

hide_import_noise()

_EXPORTS = {
    "Captioner": ".captioning",
    "remove_focus_sentences": ".captioning",
    "DiT4SRTransformer2DModel": ".models",
    "StableDiffusion3SRPipeline": ".pipelines",
    "StableDiffusion3SRPipelineOutput": ".pipelines",
    "RunCounts": ".upscaling",
    "UpscaleSettings": ".upscaling",
    "upscale_files": ".upscaling",
}

__all__ = [
    "Captioner",
    "DiT4SRTransformer2DModel",
    "RunCounts",
    "StableDiffusion3SRPipeline",
    "StableDiffusion3SRPipelineOutput",
    "UpscaleSettings",
    "remove_focus_sentences",
    "upscale_files",
]

if TYPE_CHECKING:
    from .captioning import Captioner, remove_focus_sentences
    from .models import DiT4SRTransformer2DModel
    from .pipelines import StableDiffusion3SRPipeline, StableDiffusion3SRPipelineOutput
    from .upscaling import RunCounts, UpscaleSettings, upscale_files


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value  # imported once
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
