# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The nodes: `DiT4SRLoader` (-> `DIT4SR_PIPELINE`) and `DiT4SRUpscale`, on ComfyUI's `comfy_api.latest` node API.

Node ids, input names and choice values are saved in users' workflows: they never change, and inputs added later are
optional. The defaults of the upscaling inputs are the released inference settings (`inference_defaults`, which the
pipeline's own defaults come from); everything that imports torch-heavy libraries runs in `execute`.
"""

from __future__ import annotations

from comfy_api.latest import io

from diffusers_dit4sr.cli.options import NO_QUANTIZATION
from diffusers_dit4sr.constants import (
    COLOR_FIXES,
    DTYPE_NAMES,
    PIXEL_MULTIPLE,
    RELEASED_DIT4SR_MODEL,
    RELEASED_SD3_MODEL,
    RELEASED_VARIANTS,
)
from diffusers_dit4sr.inference_defaults import INFERENCE_DEFAULTS
from diffusers_dit4sr.quantization import QUANTIZATION_PRESETS

from .loading import OFFLOAD_CHOICES, LoadedPipeline, load_pipeline
from .model_folders import RELEASED_MODEL, model_choices, resolve_model
from .upscaling import UpscaleSettings, upscale

CATEGORY = "image/upscaling/DiT4SR"
DiT4SRPipelineType = io.Custom("DIT4SR_PIPELINE")
MAX_SEED = 2**64 - 1
"""The largest seed `torch.Generator.manual_seed` takes, as ComfyUI's own samplers allow."""


class DiT4SRLoader(io.ComfyNode):
    """Loads a DiT4SR pipeline: a pipeline folder under `models/diffusers`, or the released weights (downloaded
    there when first run)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiT4SRLoader",
            display_name="Load DiT4SR Pipeline",
            category=CATEGORY,
            description=(
                "Loads a DiT4SR super-resolution pipeline (Stable Diffusion 3.5 with DiT4SR's transformer) for "
                "DiT4SR Upscale. The pipeline stays loaded while these inputs stay the same."
            ),
            inputs=[
                io.Combo.Input(
                    "model",
                    options=model_choices(),
                    tooltip=(
                        f"'{RELEASED_MODEL}': the authors' weights ({RELEASED_DIT4SR_MODEL} with "
                        f"{RELEASED_SD3_MODEL}, which is gated: accept its licence on the Hub and log in with "
                        "`hf auth login`), downloaded into models/diffusers when first run. The other choices are the "
                        "DiT4SR pipeline folders (with a model_index.json) under models/diffusers."
                    ),
                ),
                io.Combo.Input(
                    "variant",
                    options=list(RELEASED_VARIANTS),
                    default="q",
                    tooltip=(
                        "Which released weights: q (perceptual quality, the paper's results), f (fidelity to the "
                        "input) or r1 (the authors' revision). Only for the released model; a pipeline folder has "
                        "its own."
                    ),
                ),
                io.Combo.Input(
                    "dtype",
                    options=["auto", *DTYPE_NAMES],
                    default="auto",
                    tooltip=(
                        "Precision of the weights. auto: the quantization preset's, or what ComfyUI picks for this "
                        "device (bf16 on recent GPUs, fp32 on the CPU; --bf16-unet and the like apply)."
                    ),
                ),
                io.Combo.Input(
                    "quantization",
                    options=[NO_QUANTIZATION, *QUANTIZATION_PRESETS],
                    default=NO_QUANTIZATION,
                    tooltip="Quantizes weights while loading, for small GPUs: "
                    + "; ".join(f"{name}: {preset.description}" for name, preset in QUANTIZATION_PRESETS.items())
                    + ". Changes the image slightly.",
                ),
                io.Combo.Input(
                    "offload",
                    options=list(OFFLOAD_CHOICES),
                    default="auto",
                    tooltip=(
                        "model: each model goes to the GPU only while it runs (slower, far less GPU memory). auto: so "
                        "with --lowvram or --novram, or when the weights do not fit the GPU; otherwise they stay on "
                        "the GPU until ComfyUI needs the room for other nodes' models."
                    ),
                ),
            ],
            outputs=[DiT4SRPipelineType.Output("pipeline", display_name="pipeline")],
        )

    @classmethod
    def validate_inputs(cls, model: str, variant: str, dtype: str, quantization: str, offload: str) -> bool | str:
        """Choices are checked here, before anything runs (this ComfyUI checks only classic nodes' choices)."""
        return _check_choices(
            model=(model, model_choices()),
            variant=(variant, list(RELEASED_VARIANTS)),
            dtype=(dtype, ["auto", *DTYPE_NAMES]),
            quantization=(quantization, [NO_QUANTIZATION, *QUANTIZATION_PRESETS]),
            offload=(offload, list(OFFLOAD_CHOICES)),
        )

    @classmethod
    def execute(cls, model: str, variant: str, dtype: str, quantization: str, offload: str) -> io.NodeOutput:
        source = resolve_model(model)
        return io.NodeOutput(
            load_pipeline(source, variant=variant, dtype=dtype, quantization=quantization, offload=offload)
        )


class DiT4SRUpscale(io.ComfyNode):
    """Upscales an image batch with a DiT4SR pipeline."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiT4SRUpscale",
            display_name="DiT4SR Upscale",
            category=CATEGORY,
            description=(
                "Real-world super-resolution with DiT4SR: restores and upscales degraded photos. Large images are "
                "processed in overlapping tiles; each image of a batch gets the same result as alone."
            ),
            inputs=[
                DiT4SRPipelineType.Input("pipeline", tooltip="A pipeline from Load DiT4SR Pipeline."),
                io.Image.Input(
                    "image", tooltip="The images to upscale; each image of a batch gets the result it would get alone."
                ),
                io.String.Input(
                    "prompt",
                    multiline=True,
                    default="",
                    tooltip=(
                        "A caption of the image: what is in it, not how degraded it is. Empty: no caption. The "
                        "released quality prompt is appended to it either way."
                    ),
                ),
                io.Float.Input(
                    "scale_by",
                    default=float(INFERENCE_DEFAULTS.upscale),
                    min=1.0,
                    max=16.0,
                    step=0.05,
                    tooltip="Upscaling factor: each side becomes round(scale_by x side). The released models are x4.",
                ),
                io.Int.Input(
                    "steps",
                    default=INFERENCE_DEFAULTS.num_inference_steps,
                    min=1,
                    max=200,
                    tooltip="Denoising steps (released: 40). Fewer are faster and less detailed.",
                ),
                io.Int.Input(
                    "seed",
                    default=0,
                    min=0,
                    max=MAX_SEED,
                    control_after_generate=True,
                    tooltip="Seed of the noise; each image of a batch starts from it. Other nodes are not affected.",
                ),
                io.Float.Input(
                    "guidance",
                    default=float(INFERENCE_DEFAULTS.guidance_scale),
                    min=0.0,
                    max=30.0,
                    step=0.1,
                    optional=True,
                    tooltip="Classifier-free guidance scale (released: 8); 1 or less turns guidance off (faster).",
                ),
                io.Combo.Input(
                    "color_fix",
                    options=list(COLOR_FIXES),
                    default=INFERENCE_DEFAULTS.color_fix,
                    optional=True,
                    tooltip="Colour correction towards the input: adain (released), wavelet, or none.",
                ),
                io.Int.Input(
                    "tile_size",
                    default=INFERENCE_DEFAULTS.tile_size,
                    min=256,
                    max=4096,
                    step=PIXEL_MULTIPLE,
                    optional=True,
                    tooltip=(
                        f"Side of the denoising tiles in output pixels (a multiple of {PIXEL_MULTIPLE}; released: "
                        "512, what the models were trained at). Larger tiles need more GPU memory."
                    ),
                ),
                io.Float.Input(
                    "lr_injection_scale",
                    default=float(INFERENCE_DEFAULTS.lr_injection_scale),
                    min=0.0,
                    max=4.0,
                    step=0.05,
                    optional=True,
                    tooltip="How strongly the input image steers the result (released: 1.2).",
                ),
                io.Mask.Input(
                    "mask",
                    optional=True,
                    tooltip="A mask of the image (e.g. its alpha from Load Image), upscaled beside it to the same size.",
                ),
            ],
            outputs=[
                io.Image.Output("upscaled_image", display_name="image"),
                io.Mask.Output("upscaled_mask", display_name="mask", tooltip="The mask upscaled (zeros without one)."),
            ],
        )

    @classmethod
    def validate_inputs(cls, color_fix: str | None = None) -> bool | str:
        return _check_choices(color_fix=(color_fix, list(COLOR_FIXES)))

    @classmethod
    def execute(
        cls,
        pipeline: LoadedPipeline,
        image,
        prompt: str,
        scale_by: float,
        steps: int,
        seed: int,
        guidance: float = float(INFERENCE_DEFAULTS.guidance_scale),
        color_fix: str = INFERENCE_DEFAULTS.color_fix,
        tile_size: int = INFERENCE_DEFAULTS.tile_size,
        lr_injection_scale: float = float(INFERENCE_DEFAULTS.lr_injection_scale),
        mask=None,
    ) -> io.NodeOutput:
        settings = UpscaleSettings(
            prompt=prompt,
            scale_by=scale_by,
            steps=steps,
            seed=seed,
            guidance=guidance,
            color_fix=color_fix,
            tile_size=tile_size,
            lr_injection_scale=lr_injection_scale,
        )
        return io.NodeOutput(*upscale(pipeline, image, settings, mask))


def _check_choices(**choices: tuple[str | None, list[str]]) -> bool | str:
    """`True`, or what is wrong with the first value (by input name) that is not among its options (`None`: the input
    is linked to another node's output, or not given)."""
    for name, (value, options) in choices.items():
        if value is not None and value not in options:
            listed = ", ".join(repr(option) for option in options)
            return f"{name} {value!r} is not among the choices ({listed}); reload the page (R) to refresh the lists"
    return True
