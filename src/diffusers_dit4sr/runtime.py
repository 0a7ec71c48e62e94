# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Getting models ready to run, for every program of the library: the `dit4sr-upscale` command, the `dit4sr-demo`
page and the demo's Space (`examples/app.py`).

Where and in which precision is `devices.resolve_device` and `resolve_dtype` (re-exported here for the programs).
`check_hub_access` asks the Hub once whether it can be reached; `open_pipeline` checks its options
(`check_model_options`), loads (quantized with a preset of `quantization`, if asked) and prepares the pipeline
(`prepare_pipeline`: offloading, attention backend, fused projections, compilation, VAE tiling); `open_captioner`
loads a `Captioner`. Both turn any failure to load into a `LoadError` whose message is one line that names the cause
and the fix (`describe_load_error`, `describe_caption_load_error`). Messages name the parameters of these functions
(`` `quantize='nf4-t5'` ``); the commands say their options instead (`cli.messages`).
"""

from __future__ import annotations

import contextlib
import importlib.util
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import diffusers.utils.logging
import huggingface_hub.utils
import huggingface_hub.utils.logging
import torch
import transformers.utils.logging
from diffusers.models.attention_dispatch import AttentionBackendName
from huggingface_hub.errors import EntryNotFoundError

from .captioning import Captioner
from .constants import DEFAULT_CAPTION_MODEL, RELEASED_DIT4SR_MODEL, RELEASED_SD3_MODEL
from .devices import DTYPES, resolve_device, resolve_dtype
from .errors import gated_access_fix, one_line
from .hub import describe_hub_error, hub_offline_mode, hub_unreachable_reason
from .pipelines import StableDiffusion3SRPipeline
from .quantization import QUANTIZATION_PRESETS, check_quantization, pipeline_quantization_config

if TYPE_CHECKING:
    from diffusers import PipelineQuantizationConfig

__all__ = [
    "ATTENTION_BACKENDS",
    "CAPTION_ERRORS",
    "DTYPES",
    "LOAD_ERRORS",
    "HubAccess",
    "LoadError",
    "check_attention_backend",
    "check_caption_8bit",
    "check_hub_access",
    "check_model_options",
    "describe_caption_load_error",
    "describe_load_error",
    "load_pipeline",
    "open_captioner",
    "open_pipeline",
    "pipeline_dtype",
    "prepare_pipeline",
    "quiet_libraries",
    "quiet_loading",
    "resolve_device",
    "resolve_dtype",
    "vae_tile_size",
]

ATTENTION_BACKENDS = tuple(backend.value for backend in AttentionBackendName)
VAE_TILING_MIN_TILE = 512
"""VAE tiling is turned on only for VAEs whose own tile is at least this many pixels (SD3.5's: 1024); smaller tiles
(test-sized VAEs) would cut ordinary images into hundreds of tiles for no memory gain."""
LOAD_ERRORS = (OSError, ValueError, EntryNotFoundError)
"""What loading raises for a missing folder, no network, no login or no access (Hub HTTP errors are `OSError`s):
their messages speak for themselves. Loading a broken folder can raise anything else too (a `KeyError` for a
`model_index.json` without components); every failure to load is one line, with the exception's name for those."""
_TRACEBACK_HINT = "`debug=True` for the traceback"
CAPTION_ERRORS = (RuntimeError, ValueError, TypeError)
"""What captioning one batch raises for an image or a model it cannot handle (out of memory is a `RuntimeError`)."""


class LoadError(Exception):
    """A model could not be loaded or prepared. The message is one line (cause, fix, the library's message); the
    original exception is the `__cause__`."""


def _error_details(error: BaseException) -> str:
    """The library's message on one line; with the exception's name where the message alone says little."""
    message = one_line(error)
    if isinstance(error, LOAD_ERRORS) or message == type(error).__name__:
        return message
    return f"{type(error).__name__}: {message}"


def check_attention_backend(name: str | None) -> None:
    """A `ValueError` unless `name` is `None` or one of Diffusers' attention backends."""
    if name is not None and name not in ATTENTION_BACKENDS:
        raise ValueError(
            f"`attention_backend={name!r}`: not a Diffusers attention backend; choose one of "
            f"{', '.join(ATTENTION_BACKENDS)}"
        )


def check_model_options(
    *,
    model: str | None,
    variant: str | None,
    cpu_offload: bool,
    device: torch.device,
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
    quantize_components: list[str] | tuple[str, ...] | None = None,
) -> None:
    """Checks the model options of `open_pipeline` before anything loads.

    Args:
        model, variant, cpu_offload, device, dtype, quantize, quantize_components: As in `open_pipeline`.

    Raises:
        ValueError: Options that contradict each other or cannot run here, named as these parameters: a released
            `variant` with a `model`, `cpu_offload` without a GPU, `quantize_components` without a `quantize` preset,
            or a preset that cannot run on `device` in `dtype` (`quantization.check_quantization`: no CUDA, a GPU
            too old, a missing package, another dtype than the preset's).
    """
    if model is not None and variant is not None:
        raise ValueError("`variant` picks one of the released models; it cannot be combined with `model`")
    if cpu_offload and device.type == "cpu":
        raise ValueError("`cpu_offload` moves models to a GPU while they run; it needs a GPU `device`")
    if quantize is None:
        if quantize_components is not None:
            raise ValueError("`quantize_components` picks what `quantize` quantizes; it needs `quantize`")
        return
    try:
        check_quantization(
            quantize, device=device, components=quantize_components, dtype=pipeline_dtype(dtype, device, quantize)
        )
    except ValueError as error:
        raise ValueError(f"`quantize={quantize!r}`: {error}") from None


def check_caption_8bit(device: torch.device) -> None:
    """Loading a captioner in 8 bits needs a CUDA device and bitsandbytes: a `ValueError` saying which is missing."""
    if device.type != "cuda":
        raise ValueError(f"`Captioner(load_in_8bit=True)` runs on CUDA only (bitsandbytes); `device` is {device}")
    if importlib.util.find_spec("bitsandbytes") is None:
        raise ValueError("`Captioner(load_in_8bit=True)` needs the bitsandbytes package: pip install bitsandbytes")


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
def quiet_loading(debug: bool = False) -> Iterator[None]:
    """Hides the Python warnings the libraries emit while loading models (deprecated arguments and the like, which
    the user cannot act on), unless `debug`."""
    with warnings.catch_warnings():
        if not debug:
            warnings.filterwarnings("ignore", module=r"(diffusers|transformers|huggingface_hub|torch)(\.|$)")
        yield


@dataclass(frozen=True)
class HubAccess:
    """How models are fetched: normally, or from the local cache only because the Hub cannot be reached
    (`unreachable` says why)."""

    unreachable: str | None = None

    @property
    def local_files_only(self) -> bool:
        return self.unreachable is not None

    def cache_note(self, what: str) -> str | None:
        """What to tell the user after `what` was loaded from the cache only (`None`: loaded normally)."""
        if not self.local_files_only:
            return None
        return f"note: the Hub cannot be reached ({self.unreachable}); {what} was loaded from the local cache"


def check_hub_access(*sources: str | None) -> HubAccess:
    """Asks the Hub once, within seconds, whether it can be reached, if a model to load is not a local folder.

    Unreachable (no network, DNS failing), the models are loaded from the local Hugging Face cache only: a cached
    model still works, and a missing one fails at once, in one line, instead of after a minute of retries. In offline
    mode (`HF_HUB_OFFLINE=1`) nothing is asked.

    Args:
        *sources: The models to load: local folders or Hub ids; `None` stands for the released weights.

    Returns:
        The `HubAccess` to pass to `open_pipeline` and `open_captioner`.
    """
    needs_hub = any(source is None or not Path(source).exists() for source in sources)
    if not needs_hub or hub_offline_mode():
        return HubAccess()
    return HubAccess(unreachable=hub_unreachable_reason())


def pipeline_dtype(dtype: str | torch.dtype | None, device: torch.device, quantize: str | None = None) -> torch.dtype:
    """The precision a pipeline loads in.

    Args:
        dtype: A name of `DTYPE_NAMES` or a torch dtype (`resolve_dtype`); `None` for the default.
        device: Where the pipeline runs.
        quantize: A preset of `quantization.QUANTIZATION_PRESETS`, or `None`.

    Returns:
        `dtype`; without one, the dtype the `quantize` preset computes in (bf16 for torchao's), else the device's
        default (bf16 on accelerators, fp32 on the CPU).
    """
    preset = QUANTIZATION_PRESETS.get(quantize) if quantize is not None else None
    if dtype is None and preset is not None and preset.dtype is not None:
        return getattr(torch, preset.dtype)
    return resolve_dtype(dtype, device)


def load_pipeline(
    model: str | None,
    variant: str | None,
    dtype: torch.dtype,
    local_files_only: bool = False,
    quantization_config: PipelineQuantizationConfig | None = None,
) -> StableDiffusion3SRPipeline:
    """Loads a pipeline, without checks or preparation (`open_pipeline` does both).

    Args:
        model: A folder written by `save_pretrained`, or the Hub id of one; `None` for the released weights.
        variant: The released variant, without `model` (default `"q"`).
        dtype: The dtype every component loads in.
        local_files_only: Load from the local Hugging Face cache only.
        quantization_config: Quantizes the components it names, in either case.
    """
    options = {"dtype": dtype, "local_files_only": local_files_only, "quantization_config": quantization_config}
    if model is not None:
        return StableDiffusion3SRPipeline.from_pretrained(model, **options)
    return StableDiffusion3SRPipeline.from_released(variant=variant or "q", **options)


def describe_load_error(model: str | None, error: BaseException, hub: HubAccess | None = None) -> str:
    """One line: what failed, the likely cause, what to do, then the library's own message.

    When the cause is the Hub (offline mode, no network, a gated or unknown repository, a missing file), the line
    names it instead of repeating the library's message, which can mislead (a missing `config.json` when offline).

    Args:
        model: What was loaded, as passed to `open_pipeline` (`None`: the released weights).
        error: What loading raised.
        hub: The `HubAccess` it was loaded with; an unreachable Hub is then named as the cause.
    """
    if model is None:
        what = f"the released DiT4SR pipeline ({RELEASED_DIT4SR_MODEL} with {RELEASED_SD3_MODEL})"
        repos = f"{RELEASED_DIT4SR_MODEL} or {RELEASED_SD3_MODEL}"
    else:
        what, repos = f"the pipeline from {model!r}", model
    cause = _hub_cause(error, repos, hub)
    if cause is not None:
        return f"cannot load {what}: {cause}. ({_TRACEBACK_HINT})"
    details = _error_details(error)
    if model is None:
        summary = (
            f"cannot load {what}. Likely cause: no Hub login, the license not accepted, or no network. Fix: "
            f"{RELEASED_SD3_MODEL} is gated: {gated_access_fix(RELEASED_SD3_MODEL)}; check the network, or pass "
            "`model` a local pipeline folder."
        )
    else:
        summary = (
            f"cannot load {what}. Likely cause: a folder that is not a saved pipeline, or an unreachable Hub id. "
            "Fix: pass a folder written by `save_pretrained` or the Hub id of such a pipeline (for a Hub id, check "
            "the network and `hf auth login`)."
        )
    return f"{summary} Details ({_TRACEBACK_HINT}): {details}"


def describe_caption_load_error(model: str, error: BaseException, hub: HubAccess | None = None) -> str:
    """One line, like `describe_load_error`, for a caption model."""
    cause = _hub_cause(error, model, hub)
    if cause is not None:
        return f"cannot load the caption model {model!r}: {cause}. ({_TRACEBACK_HINT})"
    details = _error_details(error)
    return (
        f"cannot load the caption model {model!r}. Likely cause: no such folder, a model transformers cannot load "
        "as image-text-to-text, or an unreachable Hub id. Fix: pass the Hub id or folder of a vision-language model "
        f"with its processor, e.g. {DEFAULT_CAPTION_MODEL} (for a Hub id, check the network and `hf auth login`). "
        f"Details ({_TRACEBACK_HINT}): {details}"
    )


def _hub_cause(error: BaseException, repos: str, hub: HubAccess | None) -> str | None:
    cause = describe_hub_error(error, repos)
    if cause is not None and hub is not None and hub.local_files_only:
        # Loading from the cache only failed: the reason is the unreachable Hub, whatever the library says.
        return (
            f"the Hub cannot be reached ({hub.unreachable}) and {repos} is not (fully) in the local Hugging Face "
            "cache. Fix: check the network (or the proxy), or pass a local folder"
        )
    return cause


def prepare_pipeline(
    pipe: StableDiffusion3SRPipeline,
    device: torch.device,
    *,
    cpu_offload: bool = False,
    attention_backend: str | None = None,
    fuse_lr_projections: bool = False,
    compile: bool = False,
) -> None:
    """Places the models, applies the speed options and sets what every program wants: VAE tiling and no progress
    bar of the pipeline's own (the programs show their own progress).

    VAE tiling only engages above the VAE's tile size (1024 px for SD3.5), where it bounds the memory of large
    outputs at a negligible cost in exactness; smaller images are encoded and decoded whole as before. A VAE whose
    tile is below `VAE_TILING_MIN_TILE` (a test-sized VAE) is left untiled.

    Args:
        pipe: The loaded pipeline.
        device: Where it runs.
        cpu_offload: Keep the models in CPU memory and move each to `device` only while it runs
            (`enable_model_cpu_offload`) instead of moving them all there.
        attention_backend: A Diffusers attention backend for the transformer (`None`: PyTorch's default).
        fuse_lr_projections: Fold each LR projection into the SD3 projection before it.
        compile: Compile the transformer's repeated blocks (`compile_repeated_blocks(fullgraph=True)`).
    """
    if cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
    else:
        pipe.to(device)
    if attention_backend is not None:
        pipe.transformer.set_attention_backend(attention_backend)
    if fuse_lr_projections:
        pipe.transformer.fuse_lr_projections()
    if compile:
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


def open_pipeline(
    model: str | None = None,
    *,
    variant: str | None = None,
    device: torch.device,
    dtype: str | torch.dtype | None = None,
    quantize: str | None = None,
    quantize_components: list[str] | tuple[str, ...] | None = None,
    hub: HubAccess | None = None,
    cpu_offload: bool = False,
    attention_backend: str | None = None,
    fuse_lr_projections: bool = False,
    compile: bool = False,
    debug: bool = False,
) -> StableDiffusion3SRPipeline:
    """Loads the pipeline (`model`, or the released `variant`) and prepares it on `device` (`prepare_pipeline`).

    Args:
        model: A folder written by `save_pretrained`, or the Hub id of one; `None` for the released weights.
        variant: The released variant (`"q"`, `"f"`, `"r1"`), without `model` (default `"q"`).
        device: Where the pipeline runs (`resolve_device`).
        dtype: The precision (`pipeline_dtype`: by default the `quantize` preset's, else the device's).
        quantize: A preset of `quantization.QUANTIZATION_PRESETS`, applied while loading.
        quantize_components: What `quantize` quantizes (default: the preset's components).
        hub: From `check_hub_access` (default: the Hub is used normally).
        cpu_offload, attention_backend, fuse_lr_projections, compile: As in `prepare_pipeline`.
        debug: Let the library's own exception through and show the libraries' warnings.

    Raises:
        ValueError: Options that cannot run here, before anything loads (`check_model_options`).
        LoadError: Any failure to load or prepare, with one line saying why (a broken folder fails in many ways:
            bad JSON, truncated weights, an unknown class, no components).
    """
    check_model_options(
        model=model,
        variant=variant,
        cpu_offload=cpu_offload,
        device=device,
        dtype=dtype,
        quantize=quantize,
        quantize_components=quantize_components,
    )
    hub = hub or HubAccess()
    dtype = pipeline_dtype(dtype, device, quantize)
    quantization_config = None if quantize is None else pipeline_quantization_config(quantize, quantize_components)
    try:
        with quiet_loading(debug):
            pipe = load_pipeline(
                model,
                variant,
                dtype,
                local_files_only=hub.local_files_only,
                quantization_config=quantization_config,
            )
    except Exception as error:
        if debug:
            raise
        raise LoadError(describe_load_error(model, error, hub)) from error
    try:
        prepare_pipeline(
            pipe,
            device,
            cpu_offload=cpu_offload,
            attention_backend=attention_backend,
            fuse_lr_projections=fuse_lr_projections,
            compile=compile,
        )
    except (RuntimeError, ImportError, ValueError) as error:  # e.g. an attention backend's missing package, or OOM
        if debug:
            raise
        raise LoadError(f"cannot prepare the pipeline: {one_line(error)}") from error
    return pipe


def open_captioner(
    model: str,
    *,
    device: torch.device,
    dtype: torch.dtype | None = None,
    hub: HubAccess | None = None,
    debug: bool = False,
    **options,
) -> Captioner:
    """Loads a `Captioner`.

    Args:
        model: A folder or Hub id of a transformers vision-language model.
        device: Where it runs.
        dtype: Its precision (`resolve_dtype`'s default when `None`).
        hub: From `check_hub_access` (default: the Hub is used normally).
        debug: Let the library's own exception through and show the libraries' warnings.
        **options: The `Captioner`'s other keyword arguments.

    Raises:
        LoadError: Any failure to load, with one line saying why (`describe_caption_load_error`).
    """
    hub = hub or HubAccess()
    try:
        with quiet_loading(debug):
            return Captioner(
                model,
                device=device,
                dtype=resolve_dtype(dtype, device),
                local_files_only=hub.local_files_only,
                **options,
            )
    except Exception as error:
        if debug:
            raise
        raise LoadError(describe_caption_load_error(model, error, hub)) from error
