# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-upscale`: upscale image files with a DiT4SR pipeline from the command line.

Every input image is read (EXIF orientation applied), upscaled with its noise seeded afresh (so a result depends
neither on the other images nor on how they were batched) and written atomically. With `--caption-model`, a
vision-language model first captions every pending image (saved as `<output name>.txt`, reused on later runs) and is
freed before the SR pipeline loads. Bad inputs and per-image failures are reported and skipped; the exit code says
whether anything failed. Started by `accelerate launch` or `torchrun`, the processes split the images between them
(`distributed.Processes`) and the main one prints the run's summary. See `docs/cli.md`.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import importlib.util
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import diffusers
import diffusers.utils.logging
import huggingface_hub.utils
import huggingface_hub.utils.logging
import PIL.ExifTags
import PIL.Image
import torch
import transformers.utils.logging
from diffusers.models.attention_dispatch import AttentionBackendName
from huggingface_hub.errors import EntryNotFoundError, HFValidationError
from tqdm import tqdm

from . import __version__
from .captioning import (
    DEFAULT_CAPTION_MAX_NEW_TOKENS,
    DEFAULT_CAPTION_MODEL,
    DEFAULT_CAPTION_PROMPT,
    Captioner,
    remove_focus_sentences,
)
from .distributed import ONE_PROCESS, Processes
from .file_utils import atomic_write_path, remove_stale_temporary_files
from .hub import (
    RELEASED_DIT4SR_MODEL,
    RELEASED_SD3_MODEL,
    RELEASED_VARIANTS,
    describe_hub_error,
    hub_offline_mode,
    hub_unreachable_reason,
)
from .image_processing import IMAGE_EXTENSIONS, MAX_OUTPUT_SIDE, load_image
from .pipelines import StableDiffusion3SRPipeline

PROG = "dit4sr-upscale"
DEFAULT_OUTPUT_DIR = "dit4sr_outputs"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
COLOR_FIXES = ("adain", "wavelet", "none")
ATTENTION_BACKENDS = tuple(backend.value for backend in AttentionBackendName)
PIXEL_MULTIPLE = 16
"""Tile sides and overlaps are multiples of this: the VAE's 8x downsampling times the transformer's 2x2 patches."""
SEED_RANGE = (-(2**63), 2**64 - 1)
"""The seeds `torch.Generator.manual_seed` accepts (negative ones wrap around)."""
VAE_TILING_MIN_TILE = 512
"""VAE tiling is turned on only for VAEs whose own tile is at least this many pixels (SD3.5's: 1024); smaller tiles
(test-sized VAEs) would cut ordinary images into hundreds of tiles for no memory gain."""
OUTPUT_SUFFIXES = (*IMAGE_EXTENSIONS, ".txt")
"""What the command writes into output folders: images and caption files (for the stale temporary file clean-up)."""
SAVE_OPTIONS = {"JPEG": {"quality": 95}, "WEBP": {"quality": 95}}
"""Lossy formats get a high quality: PIL's default JPEG quality (75) would blur away the restored detail."""
LOGIN_HINT = (
    f"{RELEASED_SD3_MODEL} is gated: accept its license on https://huggingface.co/{RELEASED_SD3_MODEL}, "
    "then log in with `hf auth login` (formerly `huggingface-cli login`)"
)
LOAD_ERRORS = (OSError, ValueError, EntryNotFoundError)
"""What loading raises for a missing folder, no network, no login or no access (Hub HTTP errors are `OSError`s):
their messages speak for themselves. Loading a broken folder can raise anything else too (a `KeyError` for a
`model_index.json` without components); every failure to load is one line, with the exception's name for those."""
CAPTION_ERRORS = (RuntimeError, ValueError, TypeError)
"""What captioning one batch raises for an image or a model it cannot handle (out of memory is a `RuntimeError`)."""

EXIF_TRANSPOSED = (5, 6, 7, 8)
"""EXIF orientations that swap the image's width and height (the rotations by 90 degrees)."""

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A command line that cannot run: reported like argparse's own errors, with exit code 2."""


class JobError(Exception):
    """One image could not be read, upscaled or written: reported, and the other images go on."""


@dataclass(frozen=True)
class Job:
    """One image to upscale: where it is read from and where its result goes."""

    source: Path
    target: Path

    @property
    def caption_file(self) -> Path:
        """Where `--caption-model` keeps this image's caption: beside the output, `foo.png` -> `foo.txt`."""
        return self.target.with_suffix(".txt")


@dataclass
class CaptionCounts:
    """What the captioning phase did: captions written, caption files found from an earlier run, failures."""

    written: int = 0
    reused: int = 0
    failed: int = 0

    def __add__(self, other: CaptionCounts) -> CaptionCounts:
        return CaptionCounts(self.written + other.written, self.reused + other.reused, self.failed + other.failed)


@dataclass
class RunCounts:
    """What one process did with its images (or, added up, the whole run). `stopped`: a model could not be loaded
    or prepared, so the process's pending images count as failed."""

    upscaled: int = 0
    skipped: int = 0
    failed: int = 0
    captions: CaptionCounts = field(default_factory=CaptionCounts)
    stopped: bool = False

    def __add__(self, other: RunCounts) -> RunCounts:
        return RunCounts(
            self.upscaled + other.upscaled,
            self.skipped + other.skipped,
            self.failed + other.failed,
            self.captions + other.captions,
            self.stopped or other.stopped,
        )


def one_line(error: BaseException) -> str:
    """An exception's message on one line, or its type's name when it has none."""
    return " ".join(str(error).split()) or type(error).__name__


def _report(message: str) -> None:
    """A line on stderr that does not break the progress bar."""
    tqdm.write(message, file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `dit4sr-upscale`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Upscale photos with DiT4SR (real-world super-resolution on Stable Diffusion 3.5). Without --model, the "
            f"released weights are used: {RELEASED_DIT4SR_MODEL} on top of {RELEASED_SD3_MODEL}. {LOGIN_HINT}."
        ),
        epilog="Exit codes: 0 all done, 1 some image, caption or model failed, 2 bad command line. More: docs/cli.md.",
    )
    parser.add_argument(
        "--version",
        action="version",
        version=f"{PROG} {__version__} (diffusers {diffusers.__version__}, torch {torch.__version__})",
    )
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
        "--dtype", choices=tuple(DTYPES), help="precision of the weights (default: bf16 on a GPU, fp32 on the CPU)"
    )
    model.add_argument(
        "--device",
        metavar="DEVICE",
        default="auto",
        help=(
            "'auto' (cuda, else mps, else cpu) or a torch device; under accelerate launch / torchrun, each process "
            "takes CUDA device LOCAL_RANK (default: %(default)s)"
        ),
    )
    model.add_argument(
        "--cpu-offload",
        action="store_true",
        help="keep the models in CPU memory and move each to the GPU only while it runs (for ~12 GB GPUs)",
    )

    upscaling = parser.add_argument_group("upscaling")
    upscaling.add_argument(
        "--scale",
        metavar="X",
        type=_positive_float,
        default=4.0,
        help="upscaling factor, any positive number (default: 4)",
    )
    upscaling.add_argument(
        "--steps", metavar="N", type=_positive_int, default=40, help="denoising steps (default: %(default)s)"
    )
    upscaling.add_argument(
        "--guidance",
        metavar="G",
        type=_finite_float,
        default=8.0,
        help="classifier-free guidance scale, <= 1 turns it off (default: 8)",
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
        default="adain",
        help="color correction against the input image (default: %(default)s)",
    )
    upscaling.add_argument(
        "--process-size",
        type=_non_negative_int,
        metavar="PX",
        default=512,
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
    captions.add_argument(
        "--caption-model",
        metavar="ID_OR_PATH",
        type=_non_empty,
        help=(
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
        type=_positive_int,
        help=f"longest generated caption, in tokens (default: {DEFAULT_CAPTION_MAX_NEW_TOKENS})",
    )
    captions.add_argument(
        "--caption-batch-size",
        metavar="N",
        type=_positive_int,
        help="images captioned together (default: 1, which makes each caption independent of the other images)",
    )
    captions.add_argument(
        "--caption-8bit",
        action="store_true",
        help="load --caption-model in 8 bits, as the released captioner did (needs CUDA and bitsandbytes)",
    )

    memory = parser.add_argument_group("speed and memory")
    memory.add_argument(
        "--tile-size",
        metavar="PX",
        type=_tile_size,
        default=512,
        help=f"denoising tile side, output px, a multiple of {PIXEL_MULTIPLE} (default: %(default)s)",
    )
    memory.add_argument(
        "--tile-overlap",
        metavar="PX",
        type=_tile_overlap,
        default=192,
        help=f"tile overlap, output px, a multiple of {PIXEL_MULTIPLE} below --tile-size (default: %(default)s)",
    )
    memory.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int,
        default=1,
        help=(
            "images of one size per pipeline call, their tiles batched together through the transformer; results "
            "equal one image at a time to float round-off (default: %(default)s)"
        ),
    )
    memory.add_argument(
        "--tile-batch-size",
        type=_tile_batch_size,
        metavar="N",
        default="auto",
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

    behaviour = parser.add_argument_group("behaviour")
    behaviour.add_argument("--overwrite", action="store_true", help="replace existing outputs instead of skipping")
    behaviour.add_argument(
        "--quiet",
        action="store_true",
        help="no progress bars or per-file lines; warnings, errors, summary still print",
    )
    behaviour.add_argument("--debug", action="store_true", help="show full tracebacks instead of one-line errors")
    return parser


# Option types raise `ArgumentTypeError` for every bad value: for a `ValueError`, argparse would name the function.


def _positive_int(text: str) -> int:
    value = _parse(int, text, "a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _tile_batch_size(text: str) -> int | str:
    if text == "auto":
        return text
    value = _parse(int, text, "'auto' or a positive integer")
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a positive integer, got {text}")
    return value


def _non_negative_int(text: str) -> int:
    value = _parse(int, text, "a non-negative integer")
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text}")
    return value


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


def find_images(inputs: list[str]) -> list[Path]:
    """Files, images inside folders (sorted) and glob matches (sorted), in argument order, without duplicates."""
    images = []
    for text in inputs:
        path = Path(text)
        if path.is_file():
            matches = [path]
        elif path.is_dir():
            matches = sorted(child for child in path.iterdir() if child.is_file() and _is_image_name(child))
        elif any(char in text for char in "*?["):
            # Expanded here too, for shells that pass patterns through (Windows' cmd, or a quoted pattern).
            matches = [Path(match) for match in sorted(glob.glob(text, recursive=True))]
            matches = [match for match in matches if match.is_file() and _is_image_name(match)]
        else:
            raise UsageError(f"no such file or folder: {text}")
        images.extend(matches)

    unique: dict[Path, Path] = {}
    for image in images:
        unique.setdefault(image.resolve(), image)
    if not unique:
        raise UsageError(f"no images found in {' '.join(inputs)} (looked for {', '.join(IMAGE_EXTENSIONS)})")
    return list(unique.values())


def _is_image_name(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def _names_output_file(output: str | None) -> bool:
    """`-o` names one output file (an image extension, not an existing folder) rather than a folder."""
    return output is not None and _is_image_name(Path(output)) and not Path(output).is_dir()


def plan_jobs(images: list[Path], output: str | None) -> list[Job]:
    """Pairs each image with its output path: `-o` as a file for a single image, otherwise `<folder>/<stem>.png`."""
    if _names_output_file(output):
        if len(images) > 1:
            raise UsageError(f"-o {output} names a file, but {len(images)} images were given; pass a folder instead")
        return [Job(images[0], Path(output))]

    folder = Path(output if output is not None else DEFAULT_OUTPUT_DIR)
    jobs = [Job(image, folder / f"{image.stem}.png") for image in images]
    sources_by_target: dict[Path, Path] = {}
    for job in jobs:
        if job.target in sources_by_target:
            raise UsageError(f"{sources_by_target[job.target]} and {job.source} would both be written to {job.target}")
        sources_by_target[job.target] = job.source
    return jobs


def resolve_device(name: str, processes: Processes = ONE_PROCESS) -> torch.device:
    """`auto` picks CUDA, then MPS, then the CPU; a named device must exist on this machine. One of several
    processes takes CUDA device `LOCAL_RANK` (or the CPU)."""
    if processes.several:
        return _device_of_process(name, processes)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise UsageError(
            f"--device {name}: this machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0 to "
            f"cuda:{count - 1})"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {name}: MPS is not available on this machine")
    return device


def _device_of_process(name: str, processes: Processes) -> torch.device:
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise UsageError(
            f"--device {name}: with {processes.count} processes, each takes its own CUDA device (cuda:LOCAL_RANK); "
            "pass --device auto, cuda or cpu"
        )
    if not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if processes.local_count > count:
        raise UsageError(
            f"{processes.local_count} processes were started on this machine, but it has {count} CUDA "
            f"device{'s' if count != 1 else ''}: start one process per GPU (accelerate launch --num_processes {count})"
        )
    return torch.device("cuda", processes.local_index)


def resolve_dtype(name: str | None, device: torch.device) -> torch.dtype:
    """bf16 on accelerators (the weights' precision), fp32 on the CPU, unless `--dtype` says otherwise."""
    if name is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    return DTYPES[name]


def check_model_options(args: argparse.Namespace, device: torch.device) -> None:
    """`--model`, `--variant` and `--cpu-offload` together (also the demo's options)."""
    if args.model is not None and args.variant is not None:
        raise UsageError("--variant picks one of the released models; it cannot be combined with --model")
    if args.cpu_offload and device.type == "cpu":
        raise UsageError("--cpu-offload moves models to a GPU while they run; it needs a GPU --device")


def check_options(args: argparse.Namespace, device: torch.device) -> None:
    """Option combinations that cannot work (or do not help), caught before the slow model loading."""
    check_model_options(args, device)
    if args.tile_overlap >= args.tile_size:
        raise UsageError(f"--tile-overlap ({args.tile_overlap}) must be smaller than --tile-size ({args.tile_size})")
    if args.attention_backend is not None and args.attention_backend not in ATTENTION_BACKENDS:
        raise UsageError(
            f"--attention-backend {args.attention_backend}: not a Diffusers attention backend; choose one of "
            f"{', '.join(ATTENTION_BACKENDS)}"
        )
    if args.captions_dir is not None:
        if not args.captions_dir.exists():
            raise UsageError(f"--captions-dir {args.captions_dir}: no such folder")
        if not args.captions_dir.is_dir():
            raise UsageError(f"--captions-dir {args.captions_dir}: a file, not a folder of <name>.txt captions")
        if not os.access(args.captions_dir, os.R_OK | os.X_OK):
            raise UsageError(f"--captions-dir {args.captions_dir}: cannot read this folder (permission denied)")
    check_caption_options(args, device)
    if args.dtype == "fp16" and device.type == "cpu":
        _report("warning: fp16 on the CPU is slow (CPUs lack fp16 arithmetic) and gains nothing; use fp32 or bf16")


def check_outputs(jobs: list[Job], output: str | None) -> None:
    """Where the outputs go must be a writable folder (or be creatable in one), and not where the inputs are.

    Checked before the model loads: otherwise a read-only output folder would only show after every image was
    denoised. An output folder that holds an input is refused: its outputs would replace inputs (`photo.png`), be
    skipped as existing, or be taken for inputs by the next run. A single output file (`-o photo_x4.png`) may sit
    beside its input, but not replace it.
    """
    sources = {job.source.resolve(): job.source for job in jobs}
    folders = sorted({job.target.parent for job in jobs})
    if not _names_output_file(output):
        input_folders = {source.parent: shown for source, shown in sources.items()}
        for folder in folders:
            if folder.resolve() in input_folders:
                raise UsageError(
                    f"-o {folder} is the folder of the input {input_folders[folder.resolve()]}: the outputs would "
                    "replace inputs, be skipped as existing or be taken for inputs on the next run; pass another "
                    "folder"
                )
    for job in jobs:
        if job.target.resolve() in sources:
            raise UsageError(f"-o {job.target} would replace the input {job.source} with its output; pass another -o")
    for folder in folders:
        _check_writable_folder(folder, Path(output) if output is not None else folder)


def _check_writable_folder(folder: Path, shown: Path) -> None:
    """`folder` exists as a writable folder, or can be created: its nearest existing ancestor is a writable folder.
    `shown` is what the user gave (`-o`), for the message."""
    existing = folder.absolute()
    while not existing.exists() and existing.parent != existing:
        existing = existing.parent
    if not existing.is_dir():
        if existing == shown.absolute():
            raise UsageError(
                f"-o {shown}: an existing file, not a folder (for a single input, a file name with an image "
                f"extension, {', '.join(IMAGE_EXTENSIONS)}, names the output file)"
            )
        raise UsageError(f"-o {shown}: cannot create the folder {folder}, {existing} is a file")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == folder.absolute() else f" ({existing}, where {folder} would be created)"
        raise UsageError(f"-o {shown}: cannot write there{where}: permission denied or a read-only file system")


def check_models(args: argparse.Namespace) -> None:
    """`--model` and `--caption-model` name an existing folder of the right kind, or a well-formed Hub id."""
    if args.model is not None:
        _check_model_source(
            "--model", args.model, "model_index.json", "a pipeline folder written by `save_pretrained`"
        )
    if args.caption_model is not None:
        _check_model_source("--caption-model", args.caption_model, "config.json", "a transformers model folder")


def _check_model_source(option: str, value: str, required_file: str, kind: str) -> None:
    path = Path(value)
    if path.exists():
        if not path.is_dir():
            raise UsageError(f"{option} {value}: a file; pass {kind} or a Hub id")
        if not os.access(path, os.R_OK | os.X_OK):
            raise UsageError(f"{option} {value}: cannot read this folder (permission denied)")
        if not (path / required_file).is_file():
            raise UsageError(f"{option} {value}: this folder has no {required_file}, so it is not {kind}")
        try:
            index = json.loads((path / required_file).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise UsageError(f"{option} {value}: cannot read {required_file}: {error}") from None
        if not isinstance(index, dict) or (required_file == "model_index.json" and "_class_name" not in index):
            raise UsageError(f"{option} {value}: {required_file} is not the index of {kind}")
        return
    try:
        huggingface_hub.utils.validate_repo_id(value)
    except HFValidationError:
        raise UsageError(f"{option} {value}: no such folder, and not a Hub id (namespace/name) either") from None


def check_caption_options(args: argparse.Namespace, device: torch.device) -> None:
    """The `--caption-*` options need `--caption-model`, which excludes `--prompt`; `--verbatim-captions` needs caption files."""
    if args.verbatim_captions and args.captions_dir is None and args.caption_model is None:
        raise UsageError("--verbatim-captions applies to caption files; it needs --captions-dir or --caption-model")
    if args.caption_model is None:
        caption_options = {
            "--caption-prompt": args.caption_prompt is not None,
            "--caption-max-new-tokens": args.caption_max_new_tokens is not None,
            "--caption-batch-size": args.caption_batch_size is not None,
            "--caption-8bit": args.caption_8bit,
        }
        for option, given in caption_options.items():
            if given:
                raise UsageError(f"{option} sets up --caption-model; it needs --caption-model")
        return
    if args.prompt is not None:
        raise UsageError("--prompt gives every image the same caption; it cannot be combined with --caption-model")
    if args.caption_prompt is not None and not args.caption_prompt.strip():
        raise UsageError("--caption-prompt must not be empty")
    if args.caption_8bit and device.type != "cuda":
        raise UsageError(f"--caption-8bit runs on CUDA only (bitsandbytes); --device is {device}")
    if args.caption_8bit and importlib.util.find_spec("bitsandbytes") is None:
        raise UsageError("--caption-8bit needs the bitsandbytes package: pip install bitsandbytes")


@contextlib.contextmanager
def quiet_libraries(hide_progress_bars: bool) -> Iterator[None]:
    """Lowers diffusers', transformers' and huggingface_hub's logging to errors for the duration of a run, then
    restores it.

    The released quality prompt is longer than CLIP's 77 tokens, so every image would otherwise print truncation
    warnings, and a failed download would print every retry before the one line that says why it failed.
    `hide_progress_bars` also hides their loading and download bars.
    """
    libraries = (diffusers.utils.logging, transformers.utils.logging)
    saved = [(library.get_verbosity(), library.is_progress_bar_enabled()) for library in libraries]
    hub_verbosity = huggingface_hub.utils.logging.get_verbosity()
    hub_bars_disabled = huggingface_hub.utils.are_progress_bars_disabled()
    try:
        for library in libraries:
            library.set_verbosity_error()
            if hide_progress_bars:
                library.disable_progress_bar()
        huggingface_hub.utils.logging.set_verbosity_error()
        if hide_progress_bars:
            huggingface_hub.utils.disable_progress_bars()
        yield
    finally:
        for library, (verbosity, progress_bar_enabled) in zip(libraries, saved, strict=True):
            library.set_verbosity(verbosity)
            if progress_bar_enabled:
                library.enable_progress_bar()
            else:
                library.disable_progress_bar()
        huggingface_hub.utils.logging.set_verbosity(hub_verbosity)
        if not hub_bars_disabled:
            huggingface_hub.utils.enable_progress_bars()


@contextlib.contextmanager
def quiet_loading(debug: bool) -> Iterator[None]:
    """Hides the Python warnings the libraries emit while loading models (deprecated arguments and the like, which
    the user cannot act on), unless `--debug`."""
    with warnings.catch_warnings():
        if not debug:
            warnings.filterwarnings("ignore", module=r"(diffusers|transformers|huggingface_hub|torch)(\.|$)")
        yield


@dataclass(frozen=True)
class HubAccess:
    """How models are fetched in this run: normally, or from the local cache only because the Hub cannot be reached
    (`unreachable` says why)."""

    unreachable: str | None = None

    @property
    def local_files_only(self) -> bool:
        return self.unreachable is not None


def check_hub_access(args: argparse.Namespace) -> HubAccess:
    """Asks the Hub once, within seconds, whether it can be reached, if a model to load is not a local folder.

    Unreachable (no network, DNS failing), the models are loaded from the local Hugging Face cache only: a cached
    model still works (`report_cache_only` says so), and a missing one fails at once, in one line, instead of after
    a minute of retries. In offline mode (`HF_HUB_OFFLINE=1`) nothing is asked.
    """
    sources = [args.model] + ([args.caption_model] if args.caption_model is not None else [])
    needs_hub = any(source is None or not Path(source).exists() for source in sources)  # None: the released weights
    if not needs_hub or hub_offline_mode():
        return HubAccess()
    return HubAccess(unreachable=hub_unreachable_reason())


def report_cache_only(hub: HubAccess, what: str, args: argparse.Namespace) -> None:
    if hub.local_files_only and not args.quiet:
        _report(f"note: the Hub cannot be reached ({hub.unreachable}); {what} was loaded from the local cache")


def load_pipeline(
    model: str | None, variant: str | None, dtype: torch.dtype, local_files_only: bool = False
) -> StableDiffusion3SRPipeline:
    """A converted pipeline from `--model`, or the released weights composed with SD3.5-medium."""
    if model is not None:
        return StableDiffusion3SRPipeline.from_pretrained(model, dtype=dtype, local_files_only=local_files_only)
    return StableDiffusion3SRPipeline.from_released(
        variant=variant or "q", dtype=dtype, local_files_only=local_files_only
    )


def describe_load_error(model: str | None, error: Exception, hub: HubAccess | None = None) -> str:
    """One line: what failed, the likely cause, what to do, then the library's own message.

    When the cause is the Hub (offline mode, no network, a gated or unknown repository, a missing file), the line
    names it instead of repeating the library's message, which can mislead (a missing `config.json` when offline).
    """
    if model is None:
        what = f"the released DiT4SR pipeline ({RELEASED_DIT4SR_MODEL} with {RELEASED_SD3_MODEL})"
        repos = f"{RELEASED_DIT4SR_MODEL} or {RELEASED_SD3_MODEL}"
    else:
        what, repos = f"the pipeline from {model!r}", model
    cause = _hub_cause(error, repos, hub)
    if cause is not None:
        return f"cannot load {what}: {cause}. (--debug for the traceback)"
    details = _error_details(error)
    if model is None:
        summary = (
            f"cannot load {what}. Likely cause: no Hub login, the license not accepted, or no network. Fix: "
            f"{LOGIN_HINT}; check the network, or pass --model with a local pipeline folder."
        )
    else:
        summary = (
            f"cannot load {what}. Likely cause: a folder that is not a saved pipeline, or an unreachable Hub id. "
            "Fix: pass a folder written by `save_pretrained` or the Hub id of such a pipeline (for a Hub id, check "
            "the network and `hf auth login`)."
        )
    return f"{summary} Details (--debug for the traceback): {details}"


def _hub_cause(error: Exception, repos: str, hub: HubAccess | None) -> str | None:
    cause = describe_hub_error(error, repos)
    if cause is not None and hub is not None and hub.local_files_only:
        # Loading from the cache only failed: the reason is the unreachable Hub, whatever the library says.
        return (
            f"the Hub cannot be reached ({hub.unreachable}) and {repos} is not (fully) in the local Hugging Face "
            "cache. Fix: check the network (or the proxy), or pass a local folder"
        )
    return cause


def prepare_pipeline(pipe: StableDiffusion3SRPipeline, device: torch.device, args: argparse.Namespace) -> None:
    """Places the models, applies the speed options and sets what every run wants: VAE tiling and no progress bar
    of the pipeline's own (the command counts the steps itself).

    VAE tiling only engages above the VAE's tile size (1024 px for SD3.5), where it bounds the memory of large
    outputs at a negligible cost in exactness; smaller images are encoded and decoded whole as before. A VAE whose
    tile is below `VAE_TILING_MIN_TILE` (a test-sized VAE) is left untiled.
    """
    if args.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if args.attention_backend is not None:
        pipe.transformer.set_attention_backend(args.attention_backend)
    if args.fuse_lr_projections:
        pipe.transformer.fuse_lr_projections()
    if args.compile:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    vae_tile = vae_tile_size(pipe)
    if vae_tile is None or vae_tile >= VAE_TILING_MIN_TILE:
        pipe.enable_vae_tiling()
    pipe.set_progress_bar_config(disable=True)


def vae_tile_size(pipe: StableDiffusion3SRPipeline) -> int | None:
    """The side (px) above which the VAE's tiling engages, if the VAE says (`AutoencoderKL.tile_sample_min_size`)."""
    size = getattr(pipe.vae, "tile_sample_min_size", None)
    if isinstance(size, (list, tuple)):
        size = min(size)
    return size if isinstance(size, int) else None


def screen_image(path: Path, scale: float) -> tuple[int, int]:
    """The (width, height) of an input as it will be upscaled (EXIF orientation applied), from its header alone (no
    decoding); a `JobError` if the pipeline would refuse it.

    Run on every pending input before any model loads, so that a file that is no image, or an image whose output
    would be too large, is reported at once; the pipeline checks again (with the exact decoded image).
    """
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            orientation = image.getexif().get(PIL.ExifTags.Base.Orientation)
    except Exception as error:  # noqa: BLE001 (PIL reports unreadable files with many exception types)
        raise JobError(f"cannot read {path}: {one_line(error)}") from None
    output = (max(1, round(width * scale)), max(1, round(height * scale)))
    if max(output) > MAX_OUTPUT_SIDE:
        raise JobError(
            f"cannot upscale {path}: its output would be {output[0]}x{output[1]} px, and sides above "
            f"{MAX_OUTPUT_SIDE} px are not supported; lower --scale"
        )
    return (height, width) if orientation in EXIF_TRANSPOSED else (width, height)


def read_image(path: Path) -> PIL.Image.Image:
    try:
        return load_image(path)
    except ValueError as error:
        raise JobError(str(error)) from error


def given_caption_file(job: Job, args: argparse.Namespace) -> Path | None:
    """The `<stem>.txt` of `--captions-dir` for this image, if there is one."""
    if args.captions_dir is None:
        return None
    caption_file = args.captions_dir / f"{job.source.stem}.txt"
    return caption_file if caption_file.is_file() else None


def read_caption(job: Job, args: argparse.Namespace) -> str | None:
    """The caption of one image: `--prompt` (or none); else its `--captions-dir` file; else, with `--caption-model`,
    its caption file beside the output (empty if its captioning failed, which was reported); else empty, with a
    warning that the `--captions-dir` file is missing. A caption file goes through the released
    `remove_focus_sentences` (idempotent, so a `Captioner`-written file is unchanged) unless `--verbatim-captions`."""
    if args.captions_dir is None and args.caption_model is None:
        return args.prompt
    caption_file = given_caption_file(job, args)
    if caption_file is None:
        if args.caption_model is None:
            missing = args.captions_dir / f"{job.source.stem}.txt"
            _report(f"warning: no caption file {missing}; upscaling {job.source} without a caption")
            return ""
        caption_file = job.caption_file
        if not caption_file.is_file():
            return ""
    try:
        caption = caption_file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise JobError(f"cannot read the caption {caption_file}: {error}") from error
    return caption.strip() if args.verbatim_captions else remove_focus_sentences(caption)


def load_captioner(args: argparse.Namespace, device: torch.device, local_files_only: bool = False) -> Captioner:
    """The `--caption-model` captioner, seeded with `--seed`, on the upscaling device and in its precision."""
    return Captioner(
        args.caption_model,
        prompt=args.caption_prompt or DEFAULT_CAPTION_PROMPT,
        max_new_tokens=args.caption_max_new_tokens or DEFAULT_CAPTION_MAX_NEW_TOKENS,
        batch_size=args.caption_batch_size or 1,
        seed=args.seed,
        device=device,
        dtype=resolve_dtype(args.dtype, device),
        load_in_8bit=args.caption_8bit,
        local_files_only=local_files_only,
    )


def describe_caption_load_error(model: str, error: Exception, hub: HubAccess | None = None) -> str:
    """One line, like `describe_load_error`, for `--caption-model`."""
    cause = _hub_cause(error, model, hub)
    if cause is not None:
        return f"cannot load the caption model {model!r}: {cause}. (--debug for the traceback)"
    details = _error_details(error)
    return (
        f"cannot load the caption model {model!r}. Likely cause: no such folder, a model transformers cannot load "
        "as image-text-to-text, or an unreachable Hub id. Fix: pass the Hub id or folder of a vision-language model "
        f"with its processor, e.g. {DEFAULT_CAPTION_MODEL} (for a Hub id, check the network and `hf auth login`). "
        f"Details (--debug for the traceback): {details}"
    )


def caption_all(
    jobs: list[Job], args: argparse.Namespace, device: torch.device, hub: HubAccess | None = None
) -> CaptionCounts:
    """Captions every job that has neither a `--captions-dir` file nor a caption file from an earlier run.

    Each caption file is written atomically as soon as its batch is done. An image whose captioning fails is
    reported and later upscaled without a caption; an unreadable image is left to the upscaling phase to report.
    The captioner is unloaded before returning, so that its memory is free for the SR pipeline. A captioner that
    cannot be loaded raises what its loading raised (`LOAD_ERRORS`, `ImportError`, ...).
    """
    counts = CaptionCounts()
    pending = []
    for job in jobs:
        if given_caption_file(job, args) is not None:
            continue
        if job.caption_file.is_file():
            counts.reused += 1
        else:
            pending.append(job)
    if not pending:
        return counts

    if not args.quiet:
        _report(f"captioning {_count(pending)} with {args.caption_model}")
    hub = hub or HubAccess()
    with quiet_loading(args.debug):
        captioner = load_captioner(args, device, local_files_only=hub.local_files_only)
    report_cache_only(hub, args.caption_model, args)
    try:
        with tqdm(total=len(pending), desc="Captioning", unit="image", disable=args.quiet, file=sys.stderr) as bar:
            for start in range(0, len(pending), captioner.batch_size):
                batch = pending[start : start + captioner.batch_size]
                caption_batch(captioner, batch, args, counts)
                bar.update(len(batch))
    finally:
        captioner.unload()
    return counts


def caption_batch(captioner: Captioner, batch: list[Job], args: argparse.Namespace, counts: CaptionCounts) -> None:
    """Captions the readable images of one batch and writes their caption files, counting what happened."""
    readable = []
    for job in batch:
        with contextlib.suppress(JobError):
            readable.append((job, read_image(job.source)))
    if not readable:
        return
    try:
        captions = captioner([image for _, image in readable])
    except CAPTION_ERRORS as error:
        if args.debug:
            raise
        reason = one_line(error)
        if isinstance(error, torch.cuda.OutOfMemoryError):
            reason = "out of GPU memory; try --caption-8bit, a smaller --caption-model or --caption-batch-size 1"
        for job, _ in readable:
            _report(f"{PROG}: error: cannot caption {job.source}: {reason} (upscaling it without a caption)")
            counts.failed += 1
        return
    for (job, _), caption in zip(readable, captions, strict=True):
        try:
            with atomic_write_path(job.caption_file) as temporary:
                temporary.write_text(caption + "\n", encoding="utf-8")
        except OSError as error:
            if args.debug:
                raise
            _report(
                f"{PROG}: error: cannot write {job.caption_file}: {error} (upscaling {job.source} without a caption)"
            )
            counts.failed += 1
        else:
            counts.written += 1


def _count(jobs: list[Job]) -> str:
    return f"{len(jobs)} image{'s' if len(jobs) != 1 else ''}"


def upscale_images(
    pipe: StableDiffusion3SRPipeline,
    jobs: list[Job],
    images: list[PIL.Image.Image],
    captions: list[str | None],
    args: argparse.Namespace,
    device: torch.device,
    on_step: Callable[[StableDiffusion3SRPipeline], None] | None = None,
) -> list[PIL.Image.Image]:
    """The images of `jobs` through one pipeline call, each with its own noise seeded afresh with `--seed`, so that a
    result depends neither on the order nor on the other images of the call; `on_step(pipe)` is called after every
    denoising step. A failure is a `JobError` naming the files."""
    generators = [torch.Generator(device=device).manual_seed(args.seed) for _ in images]
    progress = {}
    if on_step is not None:

        def callback(pipe: StableDiffusion3SRPipeline, step: int, timestep: torch.Tensor, tensors: dict) -> dict:
            on_step(pipe)
            return {}

        progress = {"callback_on_step_end": callback, "callback_on_step_end_tensor_inputs": []}
    names = ", ".join(str(job.source) for job in jobs)
    try:
        return pipe(
            image=images,
            prompt=[caption or "" for caption in captions],
            upscale=args.scale,
            num_inference_steps=args.steps,
            guidance_scale=args.guidance,
            color_fix=None if args.color_fix == "none" else args.color_fix,
            process_size=args.process_size,
            tile_size=args.tile_size,
            tile_overlap=args.tile_overlap,
            tile_batch_size=args.tile_batch_size,
            generator=generators,
            output_type="pil",
            **progress,
        ).images
    except torch.cuda.OutOfMemoryError as error:
        raise JobError(
            f"out of GPU memory on {names}; try --batch-size 1, --tile-batch-size 1, a smaller --tile-size or "
            "--cpu-offload"
        ) from error
    except (ValueError, RuntimeError) as error:  # e.g. an output larger than the pipeline supports
        raise JobError(f"cannot upscale {names}: {error}") from error


def write_image_atomically(image: PIL.Image.Image, target: Path) -> None:
    """Saves through a temporary file in the target's folder, so an interrupted run never leaves a partial output."""
    image_format = PIL.Image.registered_extensions()[target.suffix.lower()]
    with atomic_write_path(target) as temporary:
        image.save(temporary, format=image_format, **SAVE_OPTIONS.get(image_format, {}))


@dataclass(frozen=True)
class _Input:
    """One job's decoded image and caption, ready for the pipeline."""

    job: Job
    image: PIL.Image.Image
    caption: str | None


def process_batch(
    batch: list[Job],
    pipe: StableDiffusion3SRPipeline,
    args: argparse.Namespace,
    device: torch.device,
    on_step: Callable[[StableDiffusion3SRPipeline], None] | None = None,
) -> list[JobError]:
    """Reads, upscales and writes the images of one batch; returns the failures, each a `JobError` naming its file
    (the other images of the batch are written all the same)."""
    failures, inputs = [], []
    for job in batch:
        try:
            inputs.append(_Input(job, read_image(job.source), read_caption(job, args)))
        except JobError as error:
            failures.append(error)
    if inputs:
        failures += _upscale_and_write(inputs, pipe, args, device, on_step)
    return failures


def _upscale_and_write(
    inputs: list[_Input],
    pipe: StableDiffusion3SRPipeline,
    args: argparse.Namespace,
    device: torch.device,
    on_step: Callable[[StableDiffusion3SRPipeline], None] | None,
) -> list[JobError]:
    jobs = [item.job for item in inputs]
    try:
        results = upscale_images(
            pipe, jobs, [item.image for item in inputs], [item.caption for item in inputs], args, device, on_step
        )
    except JobError as error:
        if args.debug:
            raise
        if len(inputs) == 1:
            return [error]
        # One image may be the cause, or the batch too large for the memory: each alone, so only what fails fails.
        return [failure for item in inputs for failure in _upscale_and_write([item], pipe, args, device, on_step)]
    failures = []
    for job, result in zip(jobs, results, strict=True):
        try:
            write_image_atomically(result, job.target)
        except OSError as error:
            failures.append(JobError(f"cannot write {job.target}: {error}"))
    return failures


def plan_batches(jobs: list[Job], sizes: dict[Job, tuple[int, int]], batch_size: int) -> list[list[Job]]:
    """Splits `jobs` into pipeline calls of up to `batch_size` images of one input size (`sizes[job]`); batches
    follow the order of their first job (with `batch_size` 1, the order of `jobs`)."""
    by_size: dict[tuple[int, int], list[Job]] = {}
    for job in jobs:
        by_size.setdefault(sizes[job], []).append(job)
    batches = [
        group[start : start + batch_size] for group in by_size.values() for start in range(0, len(group), batch_size)
    ]
    position = {job: index for index, job in enumerate(jobs)}
    return sorted(batches, key=lambda batch: position[batch[0]])


class StepProgress:
    """A progress bar over the denoising steps of every image ("Upscaling 2/3 photo.png"), so that a single image
    shows progress too; a step of a batch of k images counts k steps. Call `on_step` after each step; a scheduler
    that takes another number of steps than `--steps` corrects the total."""

    def __init__(self, num_images: int, steps_per_image: int, disable: bool) -> None:
        self.bar = tqdm(
            total=num_images * steps_per_image, desc="Upscaling", unit="step", disable=disable, file=sys.stderr
        )
        self.num_images, self.steps_per_image = num_images, steps_per_image
        self.index = self.size = self.start = self.steps_done = 0

    def start_batch(self, index: int, batch: list[Job]) -> None:
        """`batch` starts; `index` images came before it."""
        self.index, self.size, self.start, self.steps_done = index, len(batch), self.bar.n, 0
        first = f"{index + 1}" if len(batch) == 1 else f"{index + 1}-{index + len(batch)}"
        others = f" (+{len(batch) - 1})" if len(batch) > 1 else ""
        self.bar.set_description(f"Upscaling {first}/{self.num_images} {batch[0].source.name}{others}")

    def on_step(self, pipe: StableDiffusion3SRPipeline) -> None:
        if self.steps_done == 0:
            steps = getattr(pipe, "num_timesteps", None)
            if isinstance(steps, int) and steps != self.steps_per_image:
                self.steps_per_image = steps
                self.bar.total = self.start + steps * (self.num_images - self.index)
        self.steps_done += 1
        self.bar.update(self.size)

    def finish_batch(self) -> None:
        """Moves on to the next batch's steps, also after a failure (or a batch retried image by image)."""
        self.bar.update(self.start + self.steps_per_image * self.size - self.bar.n)

    def close(self) -> None:
        self.bar.close()


def upscale_all(
    pipe: StableDiffusion3SRPipeline,
    jobs: list[Job],
    sizes: dict[Job, tuple[int, int]],
    args: argparse.Namespace,
    device: torch.device,
) -> tuple[int, int]:
    """Processes every job, `--batch-size` images of one size at a time, under a progress bar of denoising steps,
    reporting and counting failures; returns (upscaled, failed)."""
    upscaled = failed = 0
    progress = StepProgress(len(jobs), args.steps, disable=args.quiet)
    try:
        for batch in plan_batches(jobs, sizes, args.batch_size):
            progress.start_batch(upscaled + failed, batch)
            failures = process_batch(batch, pipe, args, device, None if args.quiet else progress.on_step)
            if failures and args.debug:
                raise failures[0]  # with its traceback and cause
            for failure in failures:
                _report(f"{PROG}: error: {failure} (skipped)")
            upscaled += len(batch) - len(failures)
            failed += len(failures)
            progress.finish_batch()
    finally:
        progress.close()
    return upscaled, failed


def remove_stale_files(jobs: list[Job], args: argparse.Namespace) -> None:
    """Removes the temporary files that a killed earlier run left in the output folders (never a running one's)."""
    for folder in sorted({job.target.parent for job in jobs}):
        for path in remove_stale_temporary_files(folder, suffixes=OUTPUT_SUFFIXES):
            if not args.quiet:
                _report(f"removed {path}, a temporary file left by an interrupted run")


def _error_details(error: Exception) -> str:
    """The library's message on one line; with the exception's name where the message alone says little."""
    message = " ".join(str(error).split())
    if isinstance(error, LOAD_ERRORS) and message:
        return message
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def run(args: argparse.Namespace, jobs: list[Job], device: torch.device, processes: Processes = ONE_PROCESS) -> int:
    """Removes stale temporary files (the main process), lets each process do its share of the jobs
    (`upscale_share`), and prints one summary for the whole run (the main process). Returns the exit code: the run's
    on the main process, `EXIT_OK` on the others (their failures are in the main process's count; a launcher that
    saw them fail first could stop the main process before its summary)."""
    if processes.is_main:
        remove_stale_files(jobs, args)
    processes.barrier()  # no process writes before the clean-up is done
    share = processes.share(sorted(jobs, key=lambda job: str(job.target))) if processes.several else jobs
    if processes.several and not args.quiet:
        _report(f"{_count(jobs)} split among {processes.count} processes, {len(share)} for the main process")
    counts = upscale_share(args, share, device)
    total = sum(processes.gather(counts), RunCounts())
    if not processes.is_main:
        return EXIT_OK
    # A lone process that could not load a model has said so in one line; that line is its whole report.
    if processes.several or not total.stopped:
        print(summary_line(total, args))
    failed = total.failed or total.captions.failed or total.stopped
    return EXIT_FAILED if failed else EXIT_OK


def summary_line(counts: RunCounts, args: argparse.Namespace) -> str:
    line = f"{counts.upscaled} upscaled, {counts.skipped} skipped (exist), {counts.failed} failed"
    if args.caption_model is not None:
        captions = counts.captions
        line += f"; captions: {captions.written} new, {captions.reused} reused, {captions.failed} failed"
    return line


def upscale_share(args: argparse.Namespace, jobs: list[Job], device: torch.device) -> RunCounts:
    """Skips existing outputs, reports inputs that cannot work (from their headers), captions the rest with
    `--caption-model`, then loads the SR pipeline (only if there is work) and upscales; returns the counts."""
    counts = RunCounts()
    todo = []
    for job in jobs:
        if job.target.exists() and not args.overwrite:
            if not args.quiet:
                print(f"skipped {job.source}: {job.target} exists (pass --overwrite to replace it)")
            counts.skipped += 1
        else:
            todo.append(job)

    sizes = {}
    for job in todo:
        try:
            sizes[job] = screen_image(job.source, args.scale)
        except JobError as error:
            _report(f"{PROG}: error: {error} (skipped)")
            counts.failed += 1
    todo = [job for job in todo if job in sizes]
    if not todo:
        return counts

    hub = check_hub_access(args)
    if args.caption_model is not None:
        try:
            counts.captions = caption_all(todo, args, device, hub)
        except Exception as error:  # a broken model folder fails in many ways: one line each (--debug: all)
            if args.debug:
                raise
            print(f"{PROG}: error: {describe_caption_load_error(args.caption_model, error, hub)}", file=sys.stderr)
            return _stopped(counts, todo)
        if not args.quiet:
            _report(f"upscaling {_count(todo)}")
    try:
        with quiet_loading(args.debug):
            pipe = load_pipeline(
                args.model, args.variant, resolve_dtype(args.dtype, device), local_files_only=hub.local_files_only
            )
    except Exception as error:  # a broken pipeline folder fails in many ways: one line each (--debug: all)
        if args.debug:
            raise
        print(f"{PROG}: error: {describe_load_error(args.model, error, hub)}", file=sys.stderr)
        return _stopped(counts, todo)
    report_cache_only(hub, args.model or "the released pipeline", args)
    try:
        prepare_pipeline(pipe, device, args)
    except (RuntimeError, ImportError, ValueError) as error:  # e.g. an attention backend's missing package
        if args.debug:
            raise
        print(f"{PROG}: error: cannot prepare the pipeline: {one_line(error)}", file=sys.stderr)
        return _stopped(counts, todo)
    upscaled, failed = upscale_all(pipe, todo, sizes, args, device)
    counts.upscaled += upscaled
    counts.failed += failed
    return counts


def _stopped(counts: RunCounts, todo: list[Job]) -> RunCounts:
    counts.failed += len(todo)
    counts.stopped = True
    return counts


def main(argv: list[str] | None = None) -> int:
    """Runs `dit4sr-upscale` with `argv` (default: the process arguments) and returns the exit code.

    Everything that can be checked without the model is checked first (options, inputs, output folders, model
    folders or ids), so that a bad command line fails at once, with exit code 2, before any loading or compute.
    Every process of a multi-process run checks the same things and comes to the same conclusion.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    processes = ONE_PROCESS
    try:
        try:
            processes = Processes.from_environment()
        except ValueError as error:
            raise UsageError(str(error)) from None
        device = resolve_device(args.device, processes)
        check_options(args, device)
        jobs = plan_jobs(find_images(args.inputs), args.output)
        check_outputs(jobs, args.output)
        check_models(args)
    except UsageError as error:
        if processes.is_main:  # every process found the same error: one says it
            parser.print_usage(sys.stderr)
            print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_USAGE

    # The other processes report problems only: progress bars and file-by-file lines come from the main one.
    args.quiet = args.quiet or not processes.is_main
    try:
        with quiet_libraries(hide_progress_bars=args.quiet):
            try:
                processes.join(device)
            except (RuntimeError, ValueError) as error:
                print(f"{PROG}: error: cannot join the other processes: {error}", file=sys.stderr)
                return EXIT_FAILED
            try:
                return run(args, jobs, device, processes)
            finally:
                processes.leave()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
