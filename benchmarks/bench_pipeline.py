# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Wall time, phase times and peak memory of `StableDiffusion3SRPipeline` (random weights), per configuration.

    python benchmarks/bench_pipeline.py --preset sd35-medium --lr-size 512 --upscale 4 --steps 40 \\
        --tile-batch-sizes auto 1 --cpu-offload --cache none first_block taylorseer
    python benchmarks/bench_pipeline.py --preset tiny --device cpu --lr-size 40 --steps 2 \\
        --process-size 0 --tile-size 64 --tile-overlap 32 --tile-batch-sizes 2 1
    python benchmarks/bench_pipeline.py --preset tiny --device cpu --lr-size 32 --steps 4 --images 8 \\
        --tile-batch-sizes auto --warmup-steps 1 --repeats 3   # cross-image batching vs one call per image

Every configuration upscales the same synthetic LR images (`--images`, one by default) with the same noise, in this
order: each tile batch size
(`tile_batch_size`; "auto" is the pipeline's adaptive default), then CPU offload, each caching hook, and regional
compilation last (it stays on). Caching, offload and compilation use the first tile batch size. Each configuration
gets a short warm-up call (`--warmup-steps`) before its timed calls; the compiled one gets two, and its compile time
is the first minus the second.

Reported per configuration: wall time of the whole call (synchronized), the time, count and peak memory of each phase
(text encoding, VAE encode, transformer calls, VAE decode), the batch rows of the transformer calls, the transformer's
model TFLOP/s (FLOPs of uncached forwards, `breakdown.forward_flops`, over the transformer time), and the largest
absolute difference of the output image from the first configuration's. The JSON under `benchmarks/results/` is
rewritten (atomically) after every configuration, so an interrupted run keeps what it measured.
"""

from __future__ import annotations

import argparse
import math
import resource
import statistics
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

import accelerate
import torch
import torch.nn.functional as F
import transformers
from bench_transformer import (
    DTYPES,
    PRESETS,
    RESULTS_DIR,
    build_model,
    machine_info,
    synchronize,
    write_json_atomically,
)
from breakdown import forward_flops
from diffusers import AutoencoderKL, FirstBlockCacheConfig, FlowMatchEulerDiscreteScheduler, TaylorSeerCacheConfig
from diffusers.utils import logging as diffusers_logging
from torch import nn
from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

from diffusers_dit4sr import DiT4SRTransformer2DModel, StableDiffusion3SRPipeline
from diffusers_dit4sr.image_processing import plan_sizes
from diffusers_dit4sr.pipelines import DEFAULT_MAX_SEQUENCE_LENGTH
from diffusers_dit4sr.tiling import plan_tiles
from diffusers_dit4sr.tiny import make_tiny_clip_tokenizer, make_tiny_pipeline, make_tiny_t5_tokenizer

PROMPT = "a red brick house by a lake"
MAX_SEQUENCE_LENGTH = DEFAULT_MAX_SEQUENCE_LENGTH
"""T5 tokens; with CLIP's 77 the transformer sees 333 text tokens, as in the released inference."""
CACHES: dict[str, Callable[[], object]] = {
    "first_block": lambda: FirstBlockCacheConfig(threshold=0.05),
    "taylorseer": lambda: TaylorSeerCacheConfig(cache_interval=5, disable_cache_before_step=3),
}
"""Caching-hook configs, untuned (random weights): Diffusers' suggested defaults."""
PHASES = ("text_encoding", "vae_encode", "transformer", "vae_decode")
# SD3.5-medium's components (shared/design/diffusers-notes.md); the text encoders' vocabularies are sized to the
# tiny offline tokenizers at build time.
SD35_CLIP_L = {
    "hidden_size": 768,
    "intermediate_size": 3072,
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "projection_dim": 768,
}
SD35_CLIP_G = {
    "hidden_size": 1280,
    "intermediate_size": 5120,
    "num_attention_heads": 20,
    "num_hidden_layers": 32,
    "projection_dim": 1280,
    "hidden_act": "gelu",
}
SD35_T5_XXL = {
    "d_model": 4096,
    "d_ff": 10240,
    "d_kv": 64,
    "num_heads": 64,
    "num_layers": 24,
    "feed_forward_proj": "gated-gelu",
    "dropout_rate": 0.0,
}
SD35_VAE = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ("DownEncoderBlock2D",) * 4,
    "up_block_types": ("UpDecoderBlock2D",) * 4,
    "block_out_channels": (128, 256, 512, 512),
    "layers_per_block": 2,
    "latent_channels": 16,
    "sample_size": 1024,
    "scaling_factor": 1.5305,
    "shift_factor": 0.0609,
    "use_quant_conv": False,
    "use_post_quant_conv": False,
}


@dataclass(frozen=True)
class Configuration:
    tile_batch_size: int | str
    cache: str = "none"
    cpu_offload: bool = False
    compile: bool = False
    one_image_per_call: bool = False
    """With `--images N`: N pipeline calls of one image instead of one call of N (cross-image tile batching)."""

    @property
    def name(self) -> str:
        extras = [self.cache] * (self.cache != "none") + ["offload"] * self.cpu_offload + ["compile"] * self.compile
        extras += ["one_image_per_call"] * self.one_image_per_call
        return "+".join([f"tile_batch={self.tile_batch_size}", *extras])

    @property
    def reference(self) -> str | None:
        """The configuration this one changes (same tile batch size, nothing else), if any."""
        plain = Configuration(self.tile_batch_size)
        return None if self == plain else plain.name


def configurations(args: argparse.Namespace) -> list[Configuration]:
    first = args.tile_batch_sizes[0]
    planned = [Configuration(size) for size in args.tile_batch_sizes]
    if args.cpu_offload:
        planned.append(Configuration(first, cpu_offload=True))
    planned += [Configuration(first, cache=cache) for cache in args.cache if cache != "none"]
    if args.images > 1:
        planned.append(Configuration(first, one_image_per_call=True))
    if args.compile:
        planned.append(Configuration(first, compile=True))
    return planned


def build_sd35_pipeline(device: torch.device, dtype: torch.dtype) -> StableDiffusion3SRPipeline:
    """Every component at SD3.5-medium size with random weights (std 0.02), built directly on `device`."""
    clip_tokenizer, clip_tokenizer_2, t5_tokenizer = (
        make_tiny_clip_tokenizer(),
        make_tiny_clip_tokenizer(),
        make_tiny_t5_tokenizer(),
    )

    def clip(shape: dict) -> nn.Module:
        config = CLIPTextConfig(
            **shape,
            vocab_size=len(clip_tokenizer),
            max_position_embeddings=clip_tokenizer.model_max_length,
            bos_token_id=clip_tokenizer.bos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
            pad_token_id=clip_tokenizer.pad_token_id,
        )
        return build_model(CLIPTextModelWithProjection, {"config": config}, device, dtype)

    t5_config = T5Config(
        **SD35_T5_XXL,
        vocab_size=len(t5_tokenizer),
        pad_token_id=t5_tokenizer.pad_token_id,
        eos_token_id=t5_tokenizer.eos_token_id,
        decoder_start_token_id=t5_tokenizer.pad_token_id,
    )
    return StableDiffusion3SRPipeline(
        transformer=build_model(DiT4SRTransformer2DModel, PRESETS["sd35-medium"], device, dtype),
        scheduler=FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=3.0),
        vae=build_model(AutoencoderKL, SD35_VAE, device, dtype),
        text_encoder=clip(SD35_CLIP_L),
        tokenizer=clip_tokenizer,
        text_encoder_2=clip(SD35_CLIP_G),
        tokenizer_2=clip_tokenizer_2,
        text_encoder_3=build_model(T5EncoderModel, {"config": t5_config}, device, dtype),
        tokenizer_3=t5_tokenizer,
    )


def build_pipeline(preset: str, device: torch.device, dtype: torch.dtype) -> StableDiffusion3SRPipeline:
    if preset == "sd35-medium":
        pipe = build_sd35_pipeline(device, dtype)
    else:
        pipe = make_tiny_pipeline().to(device=device, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def synthetic_lr_image(size: int, seed: int) -> torch.Tensor:
    """A `(3, size, size)` LR-like image in [0, 1]: smooth color regions plus fine texture."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(1, 3, max(size // 16, 2), max(size // 16, 2), generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)[0]
    texture = torch.rand(3, size, size, generator=generator)
    return (0.85 * smooth + 0.15 * texture).clamp(0, 1)


class Probe:
    """While attached to a pipeline: the device time and call count of each phase (`PHASES`), its peak GPU memory,
    and the batch rows of every transformer call."""

    def __init__(self, device: torch.device):
        self.device = device
        self.intervals: dict[str, list] = {phase: [] for phase in PHASES}
        self.peaks: dict[str, int] = {}
        self.rows: list[int] = []
        self.phase = "other"
        self.start = None

    def _now(self):
        if self.device.type != "cuda":
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def _switch(self, phase: str) -> None:
        """Credits the peak memory since the last switch to the phase that ends, and starts `phase`."""
        if self.device.type == "cuda":
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0), torch.cuda.max_memory_allocated(self.device))
            torch.cuda.reset_peak_memory_stats(self.device)
        self.phase = phase

    def enter(self, phase: str) -> None:
        self._switch(phase)
        self.start = self._now()

    def exit(self) -> None:
        self.intervals[self.phase].append((self.start, self._now()))
        self._switch("other")

    @contextmanager
    def attached(self, pipe: StableDiffusion3SRPipeline) -> Iterator[Probe]:
        modules = {"transformer": [pipe.transformer]}
        modules["text_encoding"] = [
            encoder for encoder in (pipe.text_encoder, pipe.text_encoder_2, pipe.text_encoder_3) if encoder is not None
        ]
        handles = []
        for phase, phase_modules in modules.items():
            for module in phase_modules:
                handles.append(module.register_forward_pre_hook(self._pre_hook(phase), with_kwargs=True))
                # `always_call`: a call that raises (out of memory with tile_batch_size="auto") is timed too.
                handles.append(module.register_forward_hook(lambda *_: self.exit(), always_call=True))
        # The pipeline calls the VAE's `encode`/`decode` methods, which module hooks do not see.
        for phase, method in (("vae_encode", "encode"), ("vae_decode", "decode")):
            setattr(pipe.vae, method, self._timed(phase, getattr(pipe.vae, method)))
        try:
            yield self
        finally:
            for handle in handles:
                handle.remove()
            del pipe.vae.encode, pipe.vae.decode

    def _pre_hook(self, phase: str):
        def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
            if phase == "transformer":
                self.rows.append(kwargs["hidden_states"].shape[0])
            self.enter(phase)

        return hook

    def _timed(self, phase: str, method: Callable) -> Callable:
        def timed(*args, **kwargs):
            self.enter(phase)
            try:
                return method(*args, **kwargs)
            finally:
                self.exit()

        return timed

    def summary(self) -> dict:
        synchronize(self.device)
        self._switch("other")
        phases = {}
        for phase, intervals in self.intervals.items():
            if self.device.type == "cuda":
                seconds = sum(start.elapsed_time(end) for start, end in intervals) / 1e3
            else:
                seconds = sum(end - start for start, end in intervals)
            phases[phase] = {"seconds": seconds, "calls": len(intervals)}
            if self.device.type == "cuda":
                phases[phase]["peak_memory_gib"] = self.peaks.get(phase, 0) / 2**30
        summary = {
            "phases": phases,
            "transformer_rows": {str(rows): count for rows, count in sorted(Counter(self.rows).items())},
        }
        if self.device.type == "cuda":
            summary["peak_memory_gib"] = max(self.peaks.values()) / 2**30
            summary["peak_memory_outside_phases_gib"] = self.peaks.get("other", 0) / 2**30
        return summary


def call_pipeline(
    pipe: StableDiffusion3SRPipeline,
    images: list[torch.Tensor],
    args: argparse.Namespace,
    configuration: Configuration,
    steps: int,
) -> torch.Tensor:
    """The job's images upscaled in one call (or one call each), image `i` seeded with `seed + i` either way."""

    def upscale(first: int, count: int) -> torch.Tensor:
        return pipe(
            image=images[first : first + count],
            prompt=[PROMPT] * count,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            upscale=args.upscale,
            process_size=args.process_size,
            num_inference_steps=steps,
            guidance_scale=args.guidance,
            tile_size=args.tile_size,
            tile_overlap=args.tile_overlap,
            tile_batch_size=configuration.tile_batch_size,
            generator=[torch.Generator(args.device).manual_seed(args.seed + first + i) for i in range(count)],
            output_type="pt",
        ).images

    if configuration.one_image_per_call:
        return torch.cat([upscale(index, 1) for index in range(len(images))])
    return upscale(0, len(images))


def timed_call(
    pipe: StableDiffusion3SRPipeline,
    images: list[torch.Tensor],
    args: argparse.Namespace,
    configuration: Configuration,
    steps: int,
) -> tuple[float, torch.Tensor]:
    """Wall time of one synchronized run of the job, and its output."""
    device = torch.device(args.device)
    synchronize(device)
    start = time.perf_counter()
    images = call_pipeline(pipe, images, args, configuration, steps)
    synchronize(device)
    return time.perf_counter() - start, images


@contextmanager
def configured(
    pipe: StableDiffusion3SRPipeline, configuration: Configuration, args: argparse.Namespace
) -> Iterator[None]:
    """Applies the configuration's cache, offload or compilation, and undoes the first two afterwards."""
    device = torch.device(args.device)
    if configuration.cache != "none":
        pipe.transformer.enable_cache(CACHES[configuration.cache]())
    if configuration.cpu_offload:
        pipe.enable_model_cpu_offload(device=device)
        if args.offload_memory_limit_gib and device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory
            torch.cuda.set_per_process_memory_fraction(min(args.offload_memory_limit_gib * 2**30 / total, 1.0), device)
    if configuration.compile:
        pipe.transformer.compile_repeated_blocks(fullgraph=True)
    try:
        yield
    finally:
        if configuration.cache != "none":
            pipe.transformer.disable_cache()
        if configuration.cpu_offload:
            if device.type == "cuda":
                torch.cuda.set_per_process_memory_fraction(1.0, device)
            pipe.remove_all_hooks()
            pipe.to(device)
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure(
    pipe: StableDiffusion3SRPipeline,
    images: list[torch.Tensor],
    args: argparse.Namespace,
    configuration: Configuration,
    job: dict,
) -> tuple[dict, torch.Tensor]:
    """Times one configuration: warm-up call(s), then `--repeats` timed calls; the last one's phases and output."""
    device = torch.device(args.device)
    result = {"name": configuration.name, **asdict(configuration), "reference": configuration.reference}
    with configured(pipe, configuration, args):
        warmup_steps = max(args.warmup_steps, 1) if configuration.compile else args.warmup_steps
        warmup_calls = 2 if configuration.compile else int(warmup_steps > 0)
        warmups = [timed_call(pipe, images, args, configuration, warmup_steps)[0] for _ in range(warmup_calls)]
        if configuration.compile:
            result["compile_s"] = warmups[0] - warmups[1]
        walls = []
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
            probe = Probe(device)
            with probe.attached(pipe):
                wall, outputs = timed_call(pipe, images, args, configuration, args.steps)
            walls.append(wall)
    result.update(wall_s=statistics.median(walls), wall_all_s=walls, warmup_calls_s=warmups, **probe.summary())
    result["images_per_s"] = len(images) / result["wall_s"]
    transformer_s = result["phases"]["transformer"]["seconds"]
    flops = sum(count * model_flops(pipe, job, int(rows)) for rows, count in result["transformer_rows"].items())
    result["transformer_model_tflop_per_s"] = flops / transformer_s / 1e12 if transformer_s else None
    if device.type != "cuda":
        # Process-wide high-water mark of resident memory (Linux reports KiB), not this configuration's alone.
        result["process_peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    result["output"] = {
        "shape": list(outputs.shape),
        "mean": outputs.float().mean().item(),
        "finite": bool(torch.isfinite(outputs).all()),
    }
    return result, outputs


def model_flops(pipe: StableDiffusion3SRPipeline, job: dict, rows: int) -> int:
    """FLOPs of one uncached transformer forward over `rows` tiles of the job."""
    config = pipe.transformer.config
    fused = any(getattr(module, "fused_lr_projections", False) for module in pipe.transformer.modules())
    counts = forward_flops(
        config,
        *job["tile_latent"],
        rows,
        job["text_tokens"],
        lr_key_source=config.lr_key_source,
        fused_lr_projections=fused,
    )
    return sum(counts.values())


def plan_job(pipe: StableDiffusion3SRPipeline, args: argparse.Namespace) -> dict:
    """Output size, latent size and tiles of the job, as the pipeline plans them."""
    plan = plan_sizes(args.lr_size, args.lr_size, args.upscale, args.process_size, pipe.pixel_multiple)
    latent = [side // pipe.vae_scale_factor for side in plan.padded_size]
    tiles = plan_tiles(*latent, args.tile_size // pipe.vae_scale_factor, args.tile_overlap // pipe.vae_scale_factor)
    text_tokens = pipe.tokenizer_max_length + MAX_SEQUENCE_LENGTH
    rows_per_tile = 2 if args.guidance > 1 else 1
    tile_bytes = pipe.transformer.estimate_activation_memory(
        rows_per_tile, tiles[0].height, tiles[0].width, text_tokens
    )
    return {
        "output_size": list(plan.output_size),
        "latent": latent,
        "tiles": len(tiles),
        "tile_latent": [tiles[0].height, tiles[0].width],
        "text_tokens": text_tokens,
        # What `tile_batch_size="auto"` budgets per tile; compare with the transformer phase's peak minus the weights.
        "activation_estimate_gib_per_tile": tile_bytes / 2**30,
    }


def compare_outputs(results: list[dict], outputs: dict[str, torch.Tensor]) -> None:
    """Adds each output's largest absolute difference from the first configuration's."""
    reference = next(iter(outputs.values()))
    for result in results:
        if result["name"] in outputs:
            result["max_abs_diff_vs_first"] = (outputs[result["name"]] - reference).abs().max().item()


def ratios(results: list[dict]) -> dict:
    walls = {result["name"]: result["wall_s"] for result in results if "wall_s" in result}
    one = Configuration(1).name
    summary = {
        "speedup_over_reference": {
            result["name"]: walls[result["reference"]] / result["wall_s"]
            for result in results
            if result.get("reference") in walls and "wall_s" in result
        }
    }
    if one in walls:
        summary["speedup_over_tile_batch_1"] = {name: walls[one] / wall for name, wall in walls.items() if name != one}
    return summary


def print_table(results: list[dict]) -> None:
    print(
        f"{'configuration':<34}{'wall s':>9}{'transformer s (calls)':>24}{'text s':>8}{'VAE enc s':>10}"
        f"{'VAE dec s':>10}{'peak GiB':>10}{'max|diff|':>11}"
    )
    for result in results:
        if "error" in result:
            print(f"{result['name']:<34}  failed: {result['error']}")
            continue
        phases = result["phases"]
        transformer = f"{phases['transformer']['seconds']:.2f} ({phases['transformer']['calls']})"
        peak = result.get("peak_memory_gib", result.get("process_peak_rss_gib", math.nan))
        print(
            f"{result['name']:<34}{result['wall_s']:>9.2f}{transformer:>24}{phases['text_encoding']['seconds']:>8.2f}"
            f"{phases['vae_encode']['seconds']:>10.2f}{phases['vae_decode']['seconds']:>10.2f}{peak:>10.2f}"
            f"{result.get('max_abs_diff_vs_first', math.nan):>11.2e}"
        )


def tile_batch_size(text: str) -> int | str:
    """A positive integer, or a mode name such as "auto" passed to the pipeline as it is."""
    return int(text) if text.isdigit() else text


def add_job_arguments(parser: argparse.ArgumentParser) -> None:
    """The job `plan_job` reads: image size, upscale, guidance and tiling (also used by `memory_plan.py`)."""
    parser.add_argument("--lr-size", type=int, default=512, help="side of the square LR image in pixels")
    parser.add_argument("--upscale", type=float, default=4.0, help="output side = lr-size x upscale")
    parser.add_argument("--guidance", type=float, default=8.0)
    parser.add_argument("--process-size", type=int, default=512, help="the pipeline's process_size (0: never enlarge)")
    parser.add_argument("--tile-size", type=int, default=512, help="tile side in output pixels")
    parser.add_argument("--tile-overlap", type=int, default=192, help="tile overlap in output pixels")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    add_job_arguments(parser)
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument(
        "--images", type=int, default=1, help="LR images per job; above 1 also times one pipeline call per image"
    )
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--tile-batch-sizes", type=tile_batch_size, nargs="+", default=["auto", 1], help="each measured"
    )
    parser.add_argument("--cpu-offload", action="store_true", help="also measure with enable_model_cpu_offload()")
    parser.add_argument(
        "--offload-memory-limit-gib",
        type=float,
        default=None,
        help="cap the GPU memory of the offload run (torch.cuda.set_per_process_memory_fraction), e.g. 12",
    )
    parser.add_argument(
        "--cache", nargs="+", choices=["none", *CACHES], default=["none"], help="caching hooks to measure"
    )
    parser.add_argument("--attention-backend", default=None, help="a diffusers attention backend, e.g. _native_cudnn")
    parser.add_argument("--fuse-lr-projections", action="store_true", help="pipe.transformer.fuse_lr_projections()")
    parser.add_argument("--vae-tiling", action="store_true", help="pipe.enable_vae_tiling() in every configuration")
    parser.add_argument("--compile", action="store_true", help="also measure with regional compilation (last)")
    parser.add_argument("--warmup-steps", type=int, default=2, help="steps of the warm-up call (0: none)")
    parser.add_argument("--repeats", type=int, default=1, help="timed calls per configuration (median reported)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.steps < 1 or args.repeats < 1 or args.warmup_steps < 0 or args.lr_size < 1:
        parser.error("--steps, --repeats and --lr-size must be >= 1 and --warmup-steps >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    start = time.perf_counter()
    pipe = build_pipeline(args.preset, device, dtype)
    if args.attention_backend:
        pipe.transformer.set_attention_backend(args.attention_backend)
    if args.fuse_lr_projections:
        pipe.transformer.fuse_lr_projections()
    if args.vae_tiling:
        pipe.enable_vae_tiling()
    synchronize(device)
    build_s = time.perf_counter() - start
    job = plan_job(pipe, args)
    images = [synthetic_lr_image(args.lr_size, args.seed + index) for index in range(args.images)]
    output = args.output or RESULTS_DIR / (
        f"pipeline_{args.preset}_{args.lr_size}to{job['output_size'][0]}px_{args.steps}steps_{args.dtype}_{device.type}"
        + (f"_{args.images}images" if args.images > 1 else "")
        + ".json"
    )
    payload = {
        "benchmark": "pipeline",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device)
        | {"transformers": transformers.__version__, "accelerate": accelerate.__version__},
        "settings": {key: value for key, value in vars(args).items() if key != "output"} | job,
        "build_s": build_s,
        "parameters": {
            name: sum(param.numel() for param in component.parameters())
            for name, component in pipe.components.items()
            if isinstance(component, nn.Module)
        },
        "configurations": [],
    }
    if device.type == "cuda":
        payload["machine"]["gpu_memory_gib"] = torch.cuda.get_device_properties(device).total_memory / 2**30
        payload["weights_on_gpu_gib"] = torch.cuda.memory_allocated(device) / 2**30
    print(f"built {args.preset} pipeline in {build_s:.1f} s; {job['output_size']} px output, {job['tiles']} tiles")

    outputs: dict[str, torch.Tensor] = {}
    for configuration in configurations(args):
        try:
            result, outputs[configuration.name] = measure(pipe, images, args, configuration, job)
        except Exception as error:  # noqa: BLE001 -- one failing configuration (OOM, ...) must not lose the others
            traceback.print_exc()
            result = {"name": configuration.name, **asdict(configuration), "error": f"{type(error).__name__}: {error}"}
        payload["configurations"].append(result)
        compare_outputs(payload["configurations"], outputs)
        payload["ratios"] = ratios(payload["configurations"])
        write_json_atomically(output, payload)
        timing = f"{result['wall_s']:.2f} s, {result['images_per_s']:.3f} images/s" if "wall_s" in result else ""
        print(f"{result['name']}: " + (timing or result["error"]))
    print_table(payload["configurations"])
    for name, speedup in payload["ratios"].get("speedup_over_tile_batch_1", {}).items():
        print(f"speedup of {name} over tile_batch=1: {speedup:.2f}x")
    print(f"wrote {output}")
    return payload


if __name__ == "__main__":
    # Diffusers warns on every call that the tiny offline tokenizers truncate the (long) default prompts.
    diffusers_logging.set_verbosity_error()
    main()
