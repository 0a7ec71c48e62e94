# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The command line of `dit4sr-upscale` (`build_parser`) and the option groups it shares with `dit4sr-demo`
(`add_model_options`, `add_caption_model_options`; `model_options` turns them into `runtime.open_pipeline`'s keyword
arguments).

Only argparse and the torch-free modules `constants`, `inference_defaults`, `quantization` and `errors` are imported
here, so `--help` and `--version` answer at once. The defaults of the upscaling options are
`inference_defaults.INFERENCE_DEFAULTS`, the source of the pipeline's own defaults. Option types raise
`ArgumentTypeError` for every bad value: for a `ValueError`, argparse would name the function.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import math
from collections.abc import Callable
from pathlib import Path

from .. import __version__
from ..constants import (
    BIT_DEPTHS,
    COLOR_FIXES,
    DEFAULT_CAPTION_MAX_NEW_TOKENS,
    DEFAULT_CAPTION_MODEL,
    DEFAULT_OUTPUT_DIR,
    DTYPE_NAMES,
    IMAGE_EXTENSIONS,
    PIXEL_MULTIPLE,
    RELEASED_DIT4SR_MODEL,
    RELEASED_SD3_MODEL,
    RELEASED_VARIANTS,
    SEED_RANGE,
)
from ..errors import gated_access_fix
from ..inference_defaults import INFERENCE_DEFAULTS
from ..quantization import QUANTIZABLE_COMPONENTS, QUANTIZATION_PRESETS

__all__ = [
    "NO_QUANTIZATION",
    "PROG",
    "add_caption_model_options",
    "add_model_options",
    "build_parser",
    "model_options",
]

PROG = "dit4sr-upscale"
GATED_HINT = f"{RELEASED_SD3_MODEL} is gated: {gated_access_fix(RELEASED_SD3_MODEL)}"
NO_QUANTIZATION = "none"
"""The `--quantize` choice that loads the weights as they are."""


def _version() -> str:
    versions = ", ".join(f"{name} {importlib.metadata.version(name)}" for name in ("diffusers", "torch"))
    return f"{PROG} {__version__} ({versions})"


def add_model_options(parser: argparse.ArgumentParser, *, several_processes: bool = False) -> argparse._ArgumentGroup:
    """Adds the "model" group: `--model`, `--variant`, `--dtype`, `--device`, `--cpu-offload`, `--quantize`,
    `--quantize-components`.

    Args:
        parser: The command's parser.
        several_processes: The program runs under `accelerate launch` / `torchrun` too (`--device` says how).

    Returns:
        The group, for more options of the same kind.
    """
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        metavar="ID_OR_PATH",
        type=_non_empty,
        help="a folder written by `save_pretrained` (or the Hub id of such a pipeline) instead of the released weights",
    )
    model.add_argument(
        "--variant", choices=RELEASED_VARIANTS, help="which released DiT4SR model, without --model (default: q)"
    )
    model.add_argument(
        "--dtype",
        choices=DTYPE_NAMES,
        help=(
            "precision of the weights (default: bf16 on a GPU and with --quantize "
            f"{'/'.join(name for name, preset in QUANTIZATION_PRESETS.items() if preset.dtype == 'bfloat16')}, "
            "fp32 on the CPU)"
        ),
    )
    launched = (
        "; under accelerate launch / torchrun, each process takes CUDA device LOCAL_RANK" if several_processes else ""
    )
    model.add_argument(
        "--device",
        metavar="DEVICE",
        default="auto",
        help=f"'auto' (cuda, else mps, else cpu) or a torch device{launched} (default: %(default)s)",
    )
    model.add_argument(
        "--cpu-offload",
        action="store_true",
        help="keep the models in CPU memory and move each to the GPU only while it runs (for ~12 GB GPUs)",
    )
    model.add_argument(
        "--quantize",
        choices=(NO_QUANTIZATION, *QUANTIZATION_PRESETS),
        default=NO_QUANTIZATION,
        help=(
            "quantize weights to fit small GPUs (docs/usage.md): int8/float8 = torchao weight-only for the "
            "transformer and T5 (bfloat16; float8 needs compute capability 8.9+), int8-quanto = optimum-quanto int8 "
            "(cannot be saved), nf4-t5 = bitsandbytes 4-bit for T5 only (CUDA) (default: %(default)s)"
        ),
    )
    model.add_argument(
        "--quantize-components",
        nargs="+",
        choices=QUANTIZABLE_COMPONENTS,
        metavar="NAME",
        help=f"what --quantize quantizes, of: {' '.join(QUANTIZABLE_COMPONENTS)} (default: the preset's)",
    )
    return model


def model_options(args: argparse.Namespace) -> dict:
    """The options of `add_model_options` (but `--device`) as the keyword arguments of `runtime.open_pipeline` and
    `runtime.check_model_options`."""
    return {
        "model": args.model,
        "variant": args.variant,
        "dtype": args.dtype,
        "cpu_offload": args.cpu_offload,
        "quantize": None if args.quantize == NO_QUANTIZATION else args.quantize,
        "quantize_components": args.quantize_components,
    }


def add_caption_model_options(group: argparse._ArgumentGroup, *, caption_model_help: str) -> None:
    """`--caption-model` (with `caption_model_help`) and `--caption-8bit`, into `group`."""
    group.add_argument("--caption-model", metavar="ID_OR_PATH", type=_non_empty, help=caption_model_help)
    group.add_argument(
        "--caption-8bit",
        action="store_true",
        help="load --caption-model in 8 bits, as the released captioner did (needs CUDA and bitsandbytes)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The command line of `dit4sr-upscale`."""
    released = INFERENCE_DEFAULTS
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Upscale photos with DiT4SR (real-world super-resolution on Stable Diffusion 3.5). Without --model, the "
            f"released weights are used: {RELEASED_DIT4SR_MODEL} on top of {RELEASED_SD3_MODEL}. {GATED_HINT}."
        ),
        epilog="Exit codes: 0 all done, 1 some image, caption or model failed, 2 bad command line. More: docs/cli.md.",
    )
    parser.add_argument("--version", action="version", version=_version())
    parser.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help=f"image files, folders (the images directly inside: {' '.join(IMAGE_EXTENSIONS)}) or glob patterns",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="OUT",
        type=_non_empty,
        help=(
            f"output folder, created if needed (default: ./{DEFAULT_OUTPUT_DIR}/, one <name>.png per input); with a "
            "single input image, also a file path whose extension picks the format"
        ),
    )

    add_model_options(parser, several_processes=True)

    upscaling = parser.add_argument_group("upscaling")
    upscaling.add_argument(
        "--scale",
        metavar="X",
        type=_positive_float,
        default=released.upscale,
        help="upscaling factor, any positive number (default: %(default)g)",
    )
    upscaling.add_argument(
        "--steps",
        metavar="N",
        type=_integer(1),
        default=released.num_inference_steps,
        help="denoising steps (default: %(default)s)",
    )
    upscaling.add_argument(
        "--guidance",
        metavar="G",
        type=_finite_float,
        default=released.guidance_scale,
        help="classifier-free guidance scale, <= 1 turns it off (default: %(default)g)",
    )
    upscaling.add_argument(
        "--seed",
        metavar="N",
        type=_seed,
        default=0,
        help="seed of the noise, the same for every image (default: %(default)s)",
    )
    upscaling.add_argument(
        "--color-fix",
        choices=COLOR_FIXES,
        default=released.color_fix,
        help="color correction against the input image (default: %(default)s)",
    )
    upscaling.add_argument(
        "--process-size",
        type=_integer(0),
        metavar="PX",
        default=released.process_size,
        help=(
            "outputs with a smaller short side are processed at this short side and resized back; the released "
            "models saw 512 px crops (default: %(default)s)"
        ),
    )

    captions = parser.add_argument_group("captions")
    given_captions = captions.add_mutually_exclusive_group()
    given_captions.add_argument("--prompt", metavar="TEXT", help="caption for every image (default: no caption)")
    given_captions.add_argument(
        "--captions-dir",
        type=_folder,
        metavar="DIR",
        help=(
            "folder with a <name>.txt caption per image; a missing file means no caption, or a generated one with "
            "--caption-model"
        ),
    )
    captions.add_argument(
        "--verbatim-captions",
        action="store_true",
        help=(
            "use caption files as written; by default their sentences about focus, blur, depth or position are "
            "dropped, as the released test script did with its prompt files"
        ),
    )
    add_caption_model_options(
        captions,
        caption_model_help=(
            f"caption every image with this transformers vision-language model first, e.g. {DEFAULT_CAPTION_MODEL} "
            "(the released captioner); captions are saved as <output name>.txt beside the outputs and reused, not "
            "regenerated, on later runs"
        ),
    )
    captions.add_argument(
        "--caption-prompt", metavar="TEXT", help="instruction for --caption-model (default: the released one)"
    )
    captions.add_argument(
        "--caption-max-new-tokens",
        metavar="N",
        type=_integer(1),
        help=f"longest generated caption, in tokens (default: {DEFAULT_CAPTION_MAX_NEW_TOKENS})",
    )
    captions.add_argument(
        "--caption-batch-size",
        metavar="N",
        type=_integer(1),
        help="images captioned together (default: 1, which makes each caption independent of the other images)",
    )

    memory = parser.add_argument_group("speed and memory")
    memory.add_argument(
        "--tile-size",
        metavar="PX",
        type=_tile_size,
        default=released.tile_size,
        help=f"denoising tile side, output px, a multiple of {PIXEL_MULTIPLE} (default: %(default)s)",
    )
    memory.add_argument(
        "--tile-overlap",
        metavar="PX",
        type=_tile_overlap,
        default=released.tile_overlap,
        help=f"tile overlap, output px, a multiple of {PIXEL_MULTIPLE} below --tile-size (default: %(default)s)",
    )
    memory.add_argument(
        "--batch-size",
        metavar="N",
        type=_integer(1),
        default=1,
        help=(
            "images of one size per pipeline call, their tiles batched together through the transformer; results "
            "equal one image at a time to float round-off (default: %(default)s)"
        ),
    )
    memory.add_argument(
        "--tile-batch-size",
        type=_integer(1, auto=True),
        metavar="N",
        default=released.tile_batch_size,
        help=(
            "tiles run through the transformer at once; 'auto' takes as many as the free GPU memory holds and "
            "halves on out-of-memory (default: %(default)s)"
        ),
    )

    speed = parser.add_argument_group("speed")
    speed.add_argument(
        "--attention-backend",
        metavar="NAME",
        help=(
            "a Diffusers attention kernel, e.g. _native_cudnn, _native_flash or flash (default: PyTorch's "
            "scaled_dot_product_attention chooses)"
        ),
    )
    speed.add_argument(
        "--fuse-lr-projections",
        action="store_true",
        help=(
            "fold each LR projection into the one before it: one matrix product instead of two (same images to "
            "float round-off)"
        ),
    )
    speed.add_argument(
        "--compile",
        action="store_true",
        help=(
            "compile the transformer's repeated block with torch.compile: the first image waits for the compiler, "
            "the others run faster"
        ),
    )

    outputs = parser.add_argument_group("outputs")
    outputs.add_argument(
        "--bit-depth",
        type=_bit_depth,
        choices=BIT_DEPTHS,
        default="auto",
        help=(
            "bits a sample of the outputs: 'auto' is 16 for 16-bit and float inputs where the format has 16 bits "
            "(PNG, TIFF), else 8 (default: %(default)s)"
        ),
    )
    outputs.add_argument(
        "--strip-metadata",
        action="store_true",
        help="write no EXIF and no XMP (camera, date, GPS, ...); the colour profile and DPI stay",
    )

    behaviour = parser.add_argument_group("behaviour")
    behaviour.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping")
    behaviour.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or per-file lines; warnings, errors, summary still print",
    )
    behaviour.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return parser


def _integer(minimum: int, *, auto: bool = False) -> Callable[[str], int | str]:
    """An option type for integers of at least `minimum` (0 or 1); with `auto`, the word 'auto' too."""
    expected = "a positive integer" if minimum == 1 else "a non-negative integer"
    if auto:
        expected = f"'auto' or {expected}"

    def parse(text: str) -> int | str:
        if auto and text == "auto":
            return text
        value = _parse(int, text, expected)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
        return value

    return parse


def _positive_float(text: str) -> float:
    value = _parse(float, text, "a positive number")
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def _finite_float(text: str) -> float:
    value = _parse(float, text, "a number")
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text}")
    return value


def _seed(text: str) -> int:
    low, high = SEED_RANGE
    expected = f"an integer from {low} to {high}"
    value = _parse(int, text, expected)
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text}")
    return value


def _tile_size(text: str) -> int:
    expected = f"a positive multiple of {PIXEL_MULTIPLE}"
    value = _parse(int, text, expected)
    if value < 1 or value % PIXEL_MULTIPLE:
        raise argparse.ArgumentTypeError(
            f"must be {expected} ({_nearby_multiples(value, PIXEL_MULTIPLE)}), got {text}"
        )
    return value


def _tile_overlap(text: str) -> int:
    expected = f"a non-negative multiple of {PIXEL_MULTIPLE}"
    value = _parse(int, text, expected)
    if value < 0 or value % PIXEL_MULTIPLE:
        raise argparse.ArgumentTypeError(f"must be {expected} ({_nearby_multiples(value, 0)}), got {text}")
    return value


def _nearby_multiples(value: int, smallest: int) -> str:
    below = value // PIXEL_MULTIPLE * PIXEL_MULTIPLE
    candidates = [str(multiple) for multiple in (below, below + PIXEL_MULTIPLE) if multiple >= smallest]
    return "e.g. " + (" or ".join(candidates) or str(smallest))


def _bit_depth(text: str) -> int | str:
    """'8' and '16' as numbers, as `BIT_DEPTHS` holds them; `choices` checks the value."""
    return int(text) if text.isdigit() else text


def _non_empty(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must not be empty")
    return text


def _folder(text: str) -> Path:
    return Path(_non_empty(text))


def _parse(kind: type[int] | type[float], text: str, expected: str) -> int | float:
    try:
        return kind(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {expected}, got {text!r}") from None
