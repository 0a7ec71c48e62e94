# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The web page to try DiT4SR: drop in a photo, compare it before and after, download the result.

`build_demo(pipe, captioner)` makes the Gradio app around an already-loaded pipeline, to launch, mount in another
app or deploy as a Space; `DemoHandlers` holds what its events call, so they can be tested without a browser. The
`dit4sr-demo` command, which loads one pipeline (and optionally a captioner) and serves it, is `cli.demo`. Requests
run one at a time, in the order they came; Stop, or closing the page, interrupts a running request after its current
denoising step. See `docs/demo.md`.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .captioning import Captioner
from .constants import (
    COLOR_FIXES,
    DEMO_MAX_FILE_SIZE,
    DEMO_MAX_INPUT_SIDE,
    DEMO_MAX_OUTPUT_SIDE,
    DEMO_QUEUE_SIZE,
    MAX_OUTPUT_SIDE,
    color_fix_argument,
)
from .errors import one_line
from .image_processing import pil_bicubic_resize, plan_sizes, to_rgb_tensors
from .inference_defaults import INFERENCE_DEFAULTS
from .photo import Photo, eight_bit_rgb, read_photo, read_photo_size, save_upscaled
from .pipelines import StableDiffusion3SRPipeline
from .runtime import CAPTION_ERRORS

try:
    import gradio as gr
except ImportError as error:  # the `demo` extra
    raise ImportError("the DiT4SR demo needs Gradio: pip install 'diffusers-dit4sr[demo]'") from error

MAX_SEED = 2**32 - 1
PROCESS_SIZE = INFERENCE_DEFAULTS.process_size
"""The page starts from the released settings (`INFERENCE_DEFAULTS`); the tile overlap is the released one for tiles
of twice its side or more, and half the tile side for smaller tiles."""
CONCURRENCY_ID = "dit4sr"
"""The queue shared by every event that runs a model: one at a time."""
CACHE_LIFETIME_S = 3600
"""Uploads and results are deleted from Gradio's cache after an hour (checked every hour)."""
DESCRIPTION = (
    "Real-world super-resolution with [DiT4SR](https://huggingface.co/papers/2503.23580) on Stable Diffusion 3.5. "
    "Upload or paste a photo, optionally describe it, and compare the bicubic enlargement (left) with DiT4SR "
    "(right). Inputs up to {max_input_side} px a side and {max_file_size}, outputs up to {max_output_side} px."
)

ProgressFn = Callable[..., Any]
"""`gr.Progress` or anything called like it: `progress((done, total), desc=...)`."""


class DemoHandlers:
    """What the demo page's events call: caption, upscale and stop. One pipeline serves every request, one at a time.

    Args:
        pipe: a pipeline, already on its device (and prepared as `dit4sr-upscale` prepares it).
        captioner: fills the caption box from the photo; `None` leaves captions to the user.
        max_input_side: largest input side accepted, in pixels.
        max_output_side: largest output side made, in pixels (at most the pipeline's `MAX_OUTPUT_SIDE`).
        max_file_size: largest input file accepted, in bytes.

    Invalid requests raise `gr.Error`, which Gradio shows in the page, naming the user's file (never the server's
    path). A photo's size is read from its header and checked before it is decoded: a small file that would decode
    into gigabytes costs nothing. Each result is written as a PNG to a
    temporary folder, replacing the previous one (Gradio keeps its own copy in its cache), with what the photo had
    besides colour (`photo.save_upscaled`: alpha, colour profile, EXIF, XMP, DPI, 16 bits).
    """

    def __init__(
        self,
        pipe: StableDiffusion3SRPipeline,
        captioner: Captioner | None = None,
        *,
        max_input_side: int = DEMO_MAX_INPUT_SIDE,
        max_output_side: int = DEMO_MAX_OUTPUT_SIDE,
        max_file_size: int = DEMO_MAX_FILE_SIZE,
    ) -> None:
        for name, value, maximum in (
            ("max_input_side", max_input_side, math.inf),
            ("max_output_side", max_output_side, MAX_OUTPUT_SIDE),
            ("max_file_size", max_file_size, math.inf),
        ):
            _check_limit(name, value, maximum)
        self.pipe, self.captioner = pipe, captioner
        self.max_input_side, self.max_output_side = max_input_side, max_output_side
        self.max_file_size = max_file_size
        self._lock = threading.Lock()  # the models serve one request at a time, whoever calls
        self._stop = threading.Event()
        self._running_session: str | None = None
        self._results = tempfile.TemporaryDirectory(prefix="dit4sr-demo-")
        self._last_result: Path | None = None

    def caption(self, image_path: str | None) -> str:
        """The captioner's description of the photo (the caption box's new text)."""
        if self.captioner is None:
            raise _user_error("No captioner is configured for this demo: describe the photo in the caption yourself.")
        image = eight_bit_rgb(self._read(image_path).pixels)
        with self._lock:
            try:
                return self.captioner(image)[0]
            except CAPTION_ERRORS as error:
                raise gr.Error(f"Cannot caption this photo: {one_line(error)}") from error

    def upscale(
        self,
        image_path: str | None,
        caption: str | None,
        scale: float | None,
        steps: float | None,
        guidance: float | None,
        seed: float | None,
        randomize_seed: bool,
        color_fix: str,
        tile_size: float | None,
        progress: ProgressFn = gr.Progress(),  # noqa: B008 (Gradio finds its progress bar by this default)
        request: gr.Request | None = None,
    ) -> tuple[tuple[PIL.Image.Image, str] | None, str | None, str, int]:
        """Upscales the photo; returns the before/after pair, the result's PNG path, a line about it and the seed.

        The pair is opaque 8-bit RGB: the photo bicubic-upscaled to the output size, and the result; the PNG keeps
        the photo's alpha, profile, metadata and bit depth. A stopped run returns no images and says after how many
        steps it stopped.

        Args:
            image_path: The uploaded photo (Gradio's copy, named as the visitor's file).
            caption: What the photo shows (empty: no caption).
            scale, steps, guidance, color_fix, tile_size: The page's settings (`upscale`, `num_inference_steps`,
                `guidance_scale`, `color_fix` with `"none"`, `tile_size`); the tile overlap follows the tile size.
            seed, randomize_seed: The noise's seed, or a new one drawn from 0 to `MAX_SEED`.
            progress: Called after every denoising step.
            request: Gradio's request, whose session Stop acts on.

        Raises:
            gr.Error: A request the page refuses (no photo, a bad setting, a photo or output over the limits) or the
                pipeline's own errors, as a message for the page.
        """
        photo = self._read(image_path)
        scale = _number("Scale", scale, minimum=0, inclusive=False)
        steps = _integer("Steps", steps, minimum=1)
        guidance = _number("Guidance", guidance)
        tile_size = _integer("Tile size", tile_size, minimum=1)
        seed = random.randint(0, MAX_SEED) if randomize_seed else _integer("Seed", seed, minimum=0, maximum=MAX_SEED)
        try:
            color_fix = color_fix_argument(color_fix)
        except ValueError:
            raise _user_error(f"Color fix must be one of {', '.join(COLOR_FIXES)}, got {color_fix!r}.") from None
        output_height, output_width = self._check_sizes(photo, scale)

        session = _session_of(request)
        steps_done = 0

        def on_step_end(pipe: StableDiffusion3SRPipeline, step: int, timestep: Any, kwargs: dict) -> dict:
            nonlocal steps_done
            steps_done = step + 1
            progress((steps_done, pipe.num_timesteps), desc="Denoising", unit="steps")
            if self._stop.is_set():
                pipe._interrupt = True  # the pipeline skips the remaining steps
            return {}

        with self._lock:
            self._stop.clear()
            self._running_session = session
            start = time.perf_counter()
            try:
                result = self.pipe(
                    image=photo.pixels,
                    prompt=(caption or "").strip() or None,
                    upscale=scale,
                    num_inference_steps=steps,
                    guidance_scale=guidance,
                    color_fix=color_fix,
                    process_size=PROCESS_SIZE,
                    tile_size=tile_size,
                    tile_overlap=min(INFERENCE_DEFAULTS.tile_overlap, tile_size // 32 * 16),
                    generator=torch.Generator(device=self.pipe._execution_device).manual_seed(seed),
                    callback_on_step_end=on_step_end,
                    output_type="np",  # float: 16-bit photos are saved from it
                ).images[0]
            except torch.cuda.OutOfMemoryError as error:
                # The page's visitor can change the scale and the tile size; the server's options (CPU offload, a
                # quantization preset: docs/usage.md, Small GPUs) are the operator's.
                raise gr.Error("Out of GPU memory: lower the scale or the tile size.") from error
            except (ValueError, TypeError) as error:
                raise gr.Error(f"Cannot upscale this photo: {one_line(error)}") from error
            finally:
                self._running_session = None
            seconds = time.perf_counter() - start
            if self.pipe.interrupt and steps_done < self.pipe.num_timesteps:
                return None, None, f"Stopped after {steps_done} of {self.pipe.num_timesteps} steps.", seed
            path = self._save(photo, result, Path(image_path).stem, scale)

        before = _bicubic(photo.pixels, (output_height, output_width))
        width, height = photo.size
        info = (
            f"**{output_width} × {output_height} px** (×{scale:g} from {width} × {height} px), "
            f"{steps} step{'s' if steps != 1 else ''} in {seconds:.1f} s, seed {seed}"
        )
        return (before, eight_bit_rgb(result)), str(path), info, seed

    def stop(self, request: gr.Request | None = None) -> None:
        """Interrupts the running upscale after its current step, if it is the caller's (their session's) own."""
        if self._running_session is not None and self._running_session == _session_of(request):
            self._stop.set()

    def _read(self, image_path: str | None) -> Photo:
        """The photo at `image_path` (an upload in Gradio's cache, named as the user's file), checked against the
        limits before it is decoded: its file size, then its sides from its header."""
        if not image_path:
            raise _user_error("Upload a photo first.")
        name = Path(image_path).name
        try:
            file_size = os.path.getsize(image_path)
            if file_size <= self.max_file_size:
                width, height = read_photo_size(image_path)
        except (OSError, ValueError) as error:
            raise _unreadable(name, image_path, error) from error
        if file_size > self.max_file_size:
            raise _user_error(
                f"{name} is {_megabytes(file_size)}; this demo accepts files up to {_megabytes(self.max_file_size)}."
            )
        if max(width, height) > self.max_input_side:
            raise _user_error(
                f"{name} is {width} × {height} px; this demo accepts photos up to {self.max_input_side} px a side. "
                "Downscale it first."
            )
        try:
            return read_photo(image_path)
        except ValueError as error:
            raise _unreadable(name, image_path, error) from error

    def _check_sizes(self, photo: Photo, scale: float) -> tuple[int, int]:
        """The output's (height, width), which must fit `max_output_side`.

        So must the photo's enlargement to the process size, which small scales make huge (x0.01 would enlarge it
        100-fold before the model works at 512 px).
        """
        input_width, input_height = photo.size
        plan = plan_sizes(input_height, input_width, scale, PROCESS_SIZE, self.pipe.pixel_multiple)
        height, width = plan.output_size
        if max(height, width) > self.max_output_side:
            raise _user_error(
                f"×{scale:g} of {input_width} × {input_height} px makes {width} × {height} px; this demo makes "
                f"images up to {self.max_output_side} px a side. Lower the scale."
            )
        enlarged_height, enlarged_width = plan.enlarged_size
        if max(enlarged_height, enlarged_width) > self.max_output_side:
            raise _user_error(
                f"×{scale:g} is too small for {input_width} × {input_height} px: the photo would first be enlarged to "
                f"{enlarged_width} × {enlarged_height} px so that the model works at {PROCESS_SIZE} px, and this demo "
                f"enlarges up to {self.max_output_side} px a side. Raise the scale."
            )
        return height, width

    def _save(self, photo: Photo, result: np.ndarray, stem: str, scale: float) -> Path:
        """Writes the result of `photo` as a PNG in a fresh folder, with the photo's alpha, profile, metadata and
        bit depth, and deletes the previous result's."""
        if self._last_result is not None:
            shutil.rmtree(self._last_result.parent, ignore_errors=True)
        folder = Path(tempfile.mkdtemp(dir=self._results.name))
        path = save_upscaled(photo, result, folder / f"{stem}_dit4sr_x{scale:g}.png")
        self._last_result = path
        return path


class DemoBlocks(gr.Blocks):
    """The demo's `gr.Blocks`: `launch()` bounds uploads to the demo's `max_file_size` unless given another one, so
    that a Space's plain `demo.launch()` is bounded too (Gradio's default is no limit)."""

    max_upload_size: int = DEMO_MAX_FILE_SIZE

    def launch(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("max_file_size", self.max_upload_size)
        return super().launch(*args, **kwargs)


def build_demo(
    pipe: StableDiffusion3SRPipeline,
    captioner: Captioner | None = None,
    *,
    max_input_side: int = DEMO_MAX_INPUT_SIDE,
    max_output_side: int = DEMO_MAX_OUTPUT_SIDE,
    max_file_size: int = DEMO_MAX_FILE_SIZE,
    queue_size: int = DEMO_QUEUE_SIZE,
    title: str = "DiT4SR super-resolution",
) -> DemoBlocks:
    """The demo page around `pipe` (and `captioner`), as a `gr.Blocks` app: `.launch()` it, mount it with
    `gr.mount_gradio_app`, or make it a Space's `app.py` (`examples/app.py`).

    Events that run a model share one queue slot, so requests run one at a time; at most `queue_size` wait, and
    more are turned away. Uploads above `max_file_size` bytes are refused by `launch()` before they are stored
    (pass `max_file_size=` to `gr.mount_gradio_app` when mounting), and by the handlers before they are read; photos
    above `max_input_side` px a side before they are decoded. Gradio's analytics are off.
    """
    _check_limit("queue_size", queue_size, math.inf)
    handlers = DemoHandlers(
        pipe, captioner, max_input_side=max_input_side, max_output_side=max_output_side, max_file_size=max_file_size
    )
    with DemoBlocks(title=title, analytics_enabled=False, delete_cache=(CACHE_LIFETIME_S, CACHE_LIFETIME_S)) as demo:
        demo.max_upload_size = max_file_size
        gr.Markdown(f"# {title}")
        gr.Markdown(
            DESCRIPTION.format(
                max_input_side=max_input_side, max_output_side=max_output_side, max_file_size=_megabytes(max_file_size)
            )
        )
        with gr.Row():
            with gr.Column():
                image = gr.Image(
                    label="Low-resolution photo",
                    type="filepath",
                    image_mode=None,  # the uploaded file's own path: `read_photo` keeps its alpha, profile, EXIF, bits
                    sources=["upload", "clipboard"],
                    height=240,
                    elem_id="lr-image",
                )
                with gr.Row(equal_height=True):
                    caption = gr.Textbox(
                        label="Caption",
                        placeholder="What the photo shows (optional)",
                        lines=2,
                        scale=4,
                        elem_id="caption",
                    )
                    caption_button = gr.Button(
                        "Caption", visible=captioner is not None, scale=1, elem_id="caption-button"
                    )
                with gr.Row():
                    scale = gr.Number(
                        INFERENCE_DEFAULTS.upscale,
                        label="Scale",
                        info="any positive factor",
                        step=0.5,
                        elem_id="scale",
                    )
                    steps = gr.Slider(
                        1, 100, INFERENCE_DEFAULTS.num_inference_steps, step=1, label="Steps", elem_id="steps"
                    )
                    guidance = gr.Slider(
                        0,
                        20,
                        INFERENCE_DEFAULTS.guidance_scale,
                        step=0.5,
                        label="Guidance",
                        info="≤ 1: off",
                        elem_id="guidance",
                    )
                with gr.Row():
                    seed = gr.Number(0, label="Seed", precision=0, minimum=0, maximum=MAX_SEED, elem_id="seed")
                    randomize_seed = gr.Checkbox(False, label="Randomize seed", elem_id="randomize-seed")
                    color_fix = gr.Dropdown(
                        list(COLOR_FIXES), value=INFERENCE_DEFAULTS.color_fix, label="Color fix", elem_id="color-fix"
                    )
                tile_size = gr.Slider(
                    256,
                    1024,
                    INFERENCE_DEFAULTS.tile_size,
                    step=64,
                    label="Tile size (px)",
                    info="smaller: less memory",
                    elem_id="tile-size",
                )
                with gr.Row():
                    run_button = gr.Button("Upscale", variant="primary", elem_id="run")
                    stop_button = gr.Button("Stop", variant="stop", elem_id="stop")
            with gr.Column():
                comparison = gr.ImageSlider(
                    label="Bicubic | DiT4SR",
                    format="png",
                    interactive=False,
                    buttons=["fullscreen"],
                    max_height=640,
                    elem_id="comparison",
                )
                info = gr.Markdown(elem_id="result-info")
                download = gr.DownloadButton("Download PNG (full resolution)", elem_id="download")

        run_event = run_button.click(
            handlers.upscale,
            inputs=[image, caption, scale, steps, guidance, seed, randomize_seed, color_fix, tile_size],
            outputs=[comparison, download, info, seed],
            show_progress_on=[comparison],
            concurrency_limit=1,
            concurrency_id=CONCURRENCY_ID,
        )
        # Gradio cancels the event (and drops it from the queue) but cannot stop the thread it runs in: the handler
        # sets the pipeline's interrupt flag.
        stop_button.click(handlers.stop, cancels=[run_event], queue=False)
        demo.unload(handlers.stop)
        if captioner is not None:
            for trigger in (caption_button.click, image.upload):
                trigger(
                    handlers.caption,
                    inputs=[image],
                    outputs=[caption],
                    concurrency_limit=1,
                    concurrency_id=CONCURRENCY_ID,
                )
    demo.queue(max_size=queue_size)
    return demo


def _check_limit(name: str, value: int, maximum: float) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise ValueError(f"{name} must be an integer in [1, {maximum}], got {value!r}")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.3g} MB"


def _unreadable(name: str, path: str, error: Exception) -> gr.Error:
    """The page's message for an upload that cannot be read: the user's file name, never the server's path."""
    reason = one_line(error.__cause__ or error).replace(str(path), name)
    return _user_error(f"Cannot read {name} as an image: {reason}")


def _user_error(message: str) -> gr.Error:
    """A message for the page about the request itself, which the server log need not trace."""
    return gr.Error(message, print_exception=False)


def _session_of(request: gr.Request | None) -> str:
    """The page session a request comes from; direct calls (no request) share one."""
    return getattr(request, "session_hash", None) or ""


def _number(name: str, value: float | None, minimum: float = -math.inf, inclusive: bool = True) -> float:
    if value is None or isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise _user_error(f"{name} must be a number, got {value!r}.")
    if value < minimum or (value == minimum and not inclusive):
        bound = f"at least {minimum:g}" if inclusive else f"above {minimum:g}"
        raise _user_error(f"{name} must be {bound}, got {value:g}.")
    return float(value)


def _integer(name: str, value: float | None, minimum: int, maximum: float = math.inf) -> int:
    number = _number(name, value)
    if number != int(number) or not minimum <= number <= maximum:
        upper = "" if maximum == math.inf else f" and at most {maximum:.0f}"
        raise _user_error(f"{name} must be a whole number of at least {minimum}{upper}, got {number:g}.")
    return int(number)


def _bicubic(pixels: PIL.Image.Image | np.ndarray, size: tuple[int, int]) -> PIL.Image.Image:
    """A photo's `pixels` bicubic-resized to `size` (height, width) as 8-bit RGB, with the kernel the pipeline
    enlarges them with."""
    if isinstance(pixels, PIL.Image.Image):
        return pixels.resize((size[1], size[0]), PIL.Image.Resampling.BICUBIC)
    rgb = to_rgb_tensors(pixels)[0]  # 16-bit or float, read at full precision
    return eight_bit_rgb(pil_bicubic_resize(rgb[None], size)[0].permute(1, 2, 0).numpy())
