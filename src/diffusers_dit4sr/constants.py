# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Names and limits shared by the library, the command line and the demo, importable without torch.

The command lines' option parsers import only torch-free modules of the library (this one, `inference_defaults`,
`quantization`, `errors`), so that `--help` answers at once. The released inference settings are in
`inference_defaults`, whence the pipeline's `__call__` takes its defaults.
"""

__all__ = [
    "BIT_DEPTHS",
    "COLOR_FIXES",
    "DEFAULT_CAPTION_MAX_NEW_TOKENS",
    "DEFAULT_CAPTION_MODEL",
    "DEFAULT_CAPTION_PROMPT",
    "DEFAULT_CAPTION_TEMPERATURE",
    "DEFAULT_CAPTION_TOP_P",
    "DEFAULT_EVALUATION_METRICS",
    "DEFAULT_OUTPUT_DIR",
    "DEMO_MAX_FILE_SIZE",
    "DEMO_MAX_INPUT_SIDE",
    "DEMO_MAX_OUTPUT_SIDE",
    "DEMO_QUEUE_SIZE",
    "DTYPE_NAMES",
    "EVALUATION_BENCHMARKS",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "IMAGE_EXTENSIONS",
    "MAX_OUTPUT_SIDE",
    "NO_COLOR_FIX",
    "OUTPUT_SUFFIXES",
    "PIXEL_MULTIPLE",
    "RELEASED_DIT4SR_MODEL",
    "RELEASED_SD3_MODEL",
    "RELEASED_LR_KEY_SOURCES",
    "RELEASED_VARIANTS",
    "SEED_RANGE",
    "color_fix_argument",
]

RELEASED_SD3_MODEL = "stabilityai/stable-diffusion-3.5-medium"
"""The base model whose VAE, text encoders and scheduler the released DiT4SR weights were trained with (gated)."""
RELEASED_DIT4SR_MODEL = "acceptee/DiT4SR"
"""The repository of the released DiT4SR transformers, one per variant in `dit4sr_{variant}/transformer`."""
RELEASED_LR_KEY_SOURCES = {"q": "noise", "f": "noise", "r1": "lr"}
"""The `lr_key_source` each released variant was trained with: `q` (perceptual quality, the paper's results) and `f`
(fidelity) reuse the noise tokens' keys; `r1` (the authors' revision with the corrected attention) uses its own."""
RELEASED_VARIANTS = tuple(RELEASED_LR_KEY_SOURCES)
"""The released DiT4SR transformers, in `dit4sr_{variant}/transformer` of `RELEASED_DIT4SR_MODEL`."""

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")
"""Image files the command line and the training data pick up (any case)."""
OUTPUT_SUFFIXES = (*IMAGE_EXTENSIONS, ".txt")
"""What folder jobs write into output folders: images and caption files (for the stale temporary file clean-up)."""
DEFAULT_OUTPUT_DIR = "dit4sr_outputs"
"""Where `dit4sr-upscale` writes without `-o`."""
BIT_DEPTHS = ("auto", 8, 16)
"""Bit depths a result can be saved with: `"auto"` is 16 for inputs of more than 8 bits where the format allows."""
EVALUATION_BENCHMARKS = ("drealsr", "realsr", "reallr200", "reallq250")
"""The paper's four x4 test sets (`dit4sr-evaluate --benchmark`)."""
DEFAULT_EVALUATION_METRICS = ("lpips", "musiq", "maniqa-pipal", "clipiqa+_vitL14_512", "liqe")
"""The paper's five metrics (Table 1), as pyiqa names; `lpips` needs references and is left out without them."""
MAX_OUTPUT_SIDE = 16384
"""Largest output side in pixels the pipeline accepts (tiled denoising and VAE tiling keep memory bounded)."""
DEMO_MAX_INPUT_SIDE = 2048
"""Largest input side, in pixels, the demo page accepts by default: larger photos are rarely low-resolution."""
DEMO_MAX_OUTPUT_SIDE = 4096
"""Largest output side, in pixels, the demo page makes by default; a 4096 px square takes minutes on a large GPU."""
DEMO_MAX_FILE_SIZE = 50 * 2**20
"""Largest upload, in bytes, the demo page accepts by default (50 MB): a 2048 px photo takes at most 48 MB, as an
uncompressed float TIFF; a 16-bit PNG at most 32 MB."""
DEMO_QUEUE_SIZE = 20
"""Requests the demo page lets wait by default; more are turned away with a "queue full" message."""
PIXEL_MULTIPLE = 16
"""Tile sides and overlaps are multiples of this: the VAE's 8x downsampling times the transformer's 2x2 patches."""
SEED_RANGE = (-(2**63), 2**64 - 1)
"""The seeds `torch.Generator.manual_seed` accepts (negative ones wrap around)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
"""The exit codes of the commands: all done, something failed, a bad command line, interrupted (Ctrl+C)."""

DTYPE_NAMES = ("bf16", "fp16", "fp32")
"""The weight precisions users choose by name (`runtime.resolve_dtype` maps them to torch dtypes)."""

NO_COLOR_FIX = "none"
COLOR_FIXES = ("adain", "wavelet", NO_COLOR_FIX)
"""Colour corrections by name, as users choose them; `"none"` is the pipeline's `color_fix=None`."""

DEFAULT_CAPTION_MODEL = "llava-hf/llava-1.5-13b-hf"
"""The released captioner, LLaVA-1.5-13B, in its transformers conversion."""
DEFAULT_CAPTION_PROMPT = (
    "Please describe the actual objects in the image in a very detailed manner. Please do not include descriptions "
    "related to the focus and bokeh of this image. Please do not include descriptions like the background is blurred."
)
"""The released instruction: DiT4SR should hear what is in the photo, not how degraded or defocused it looks."""
DEFAULT_CAPTION_TEMPERATURE = 0.2
DEFAULT_CAPTION_TOP_P = 0.7
DEFAULT_CAPTION_MAX_NEW_TOKENS = 512
"""The released sampling: temperature 0.2, top-p 0.7, at most 512 new tokens."""


def color_fix_argument(name: str) -> str | None:
    """The pipeline's `color_fix` for a user's choice among `COLOR_FIXES` (`"none"` -> `None`)."""
    if name not in COLOR_FIXES:
        raise ValueError(f"color_fix must be one of {', '.join(COLOR_FIXES)}, got {name!r}")
    return None if name == NO_COLOR_FIX else name
