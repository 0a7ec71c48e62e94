# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Forward latency and peak memory of `DiT4SRTransformer2DModel` (random weights), optionally beside plain SD3.

    python benchmarks/bench_transformer.py --preset sd35-medium --resolution 1024 --batch 2 --dtype bf16
    python benchmarks/bench_transformer.py --preset tiny --device cpu --iters 20
    python benchmarks/bench_transformer.py --preset sd35-medium --numerics --baseline-sd3 --fuse-lr-projections

Prints one line per model and writes the numbers, with the machine and library versions, as JSON under
`benchmarks/results/`. Timings are medians over `--iters` forwards after `--warmup` forwards. `--numerics` times
nothing: it compares outputs with the plain fp32 forward of the same weights (folded projections in fp32, then the
`--dtype` model, plain and folded, with `--attention-backend`); plain SD3's `--dtype` error is the yardstick for
"within round-off".
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import diffusers
import torch
from accelerate import init_empty_weights
from diffusers import SD3Transformer2DModel

from diffusers_dit4sr import DiT4SRTransformer2DModel
from diffusers_dit4sr.file_utils import atomic_write_path
from diffusers_dit4sr.tiny import TINY_TRANSFORMER_CONFIG

PRESETS = {
    "tiny": TINY_TRANSFORMER_CONFIG,
    "sd35-medium": {
        "sample_size": 128,
        "patch_size": 2,
        "in_channels": 16,
        "out_channels": 16,
        "num_layers": 24,
        "attention_head_dim": 64,
        "num_attention_heads": 24,
        "joint_attention_dim": 4096,
        "caption_projection_dim": 1536,
        "pooled_projection_dim": 2048,
        "pos_embed_max_size": 384,
        "dual_attention_layers": tuple(range(13)),
        "qk_norm": "rms_norm",
    },
}
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
VAE_SCALE_FACTOR = 8
RESULTS_DIR = Path(__file__).parent / "results"


def build_model(model_cls, config: dict, device: torch.device, dtype: torch.dtype) -> torch.nn.Module:
    """Random-weight model built directly on `device` in `dtype`: std 0.02 keeps activations in range; speed only.

    The cast happens on the meta device, so no fp32 copy is ever allocated (T5-XXL alone would be 19 GB). Buffers
    (e.g. the position-embedding table) keep their real values: `to_empty` would leave them uninitialized.
    """
    with init_empty_weights():
        model = model_cls(**config)
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    # `nn.Module.to`: Diffusers' `ModelMixin.to` warns on every dtype cast of a model without fp32 modules.
    torch.nn.Module.to(model, device="meta", dtype=dtype).to_empty(device=device)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
        for name, buffer in buffers.items():
            model.get_buffer(name).copy_(buffer)
    return model.eval()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(forward, device: torch.device, warmup: int, iters: int) -> dict:
    for _ in range(warmup):
        forward()
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        held_before = torch.cuda.memory_allocated(device)
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        forward()
        synchronize(device)
        times.append(time.perf_counter() - start)
    result = {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times), "iters": iters}
    if device.type == "cuda":
        result["peak_memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        # Beyond the weights and inputs: what a forward's activations and kernel workspaces took at their peak.
        result["activation_peak_gib"] = result["peak_memory_gib"] - held_before / 2**30
    else:
        # Process-wide high-water mark of resident memory (Linux reports KiB).
        result["peak_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return result


def machine_info(device: torch.device) -> dict:
    info = {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["cuda"] = torch.version.cuda
    return info


def relative_error(output: torch.Tensor, reference: torch.Tensor) -> float:
    """`||output - reference|| / ||reference||`, in float64."""
    reference = reference.double()
    return ((output.double() - reference).norm() / reference.norm()).item()


@torch.inference_mode()
def compare_numerics(
    model_cls, config: dict, inputs: dict, extra: dict, device: torch.device, args: argparse.Namespace
) -> dict:
    """Relative errors of the folded and the `--dtype` forwards against the plain fp32 forward of the same weights."""
    model = build_model(model_cls, config, device, torch.float32)
    reference = model(**inputs, **extra, return_dict=False)[0]
    foldable = hasattr(model, "fuse_lr_projections")
    errors = {}
    if foldable:
        model.fuse_lr_projections()
        errors["fp32_fused"] = relative_error(model(**inputs, **extra, return_dict=False)[0], reference)
        model.unfuse_lr_projections()
    low_precision = torch.nn.Module.to(copy.deepcopy(model), dtype=DTYPES[args.dtype])
    del model
    if args.attention_backend:
        low_precision.set_attention_backend(args.attention_backend)
    low_inputs = {name: value.to(DTYPES[args.dtype]) for name, value in inputs.items() if name != "timestep"}
    low_inputs["timestep"] = inputs["timestep"]
    output = low_precision(**low_inputs, **extra, return_dict=False)[0]
    errors[args.dtype] = relative_error(output, reference)
    if foldable:
        low_precision.fuse_lr_projections()
        errors[f"{args.dtype}_fused"] = relative_error(
            low_precision(**low_inputs, **extra, return_dict=False)[0], reference
        )
    return errors


def write_json_atomically(path: Path, payload: dict) -> None:
    with atomic_write_path(path) as temporary:
        temporary.write_text(json.dumps(payload, indent=2) + "\n")


def add_forward_arguments(parser: argparse.ArgumentParser, presets: dict, resolution: int) -> None:
    """The options of one transformer forward: model preset, shape, text length, precision, device."""
    parser.add_argument("--preset", choices=sorted(presets), default="tiny")
    parser.add_argument("--resolution", type=int, default=resolution, help="output image side in pixels")
    parser.add_argument("--batch", type=int, default=2, help="2 = one image with classifier-free guidance")
    parser.add_argument("--text-tokens", type=int, default=154, help="77 CLIP + 77 T5 tokens in released training")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_forward_arguments(parser, PRESETS, resolution=1024)
    parser.add_argument("--attention-backend", default=None, help="a diffusers attention backend, e.g. _native_cudnn")
    parser.add_argument("--lr-injection-scale", type=float, default=1.2)
    parser.add_argument("--baseline-sd3", action="store_true", help="also time plain SD3 with the same config")
    parser.add_argument("--fuse-lr-projections", action="store_true", help="fold the LR projections (inference)")
    parser.add_argument("--compile", action="store_true", help="regional compilation of the repeated blocks")
    parser.add_argument("--numerics", action="store_true", help="compare outputs with fp32 instead of timing")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.numerics and args.compile:
        parser.error("--numerics compares eager forwards; it cannot be combined with --compile")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.resolution % (VAE_SCALE_FACTOR * 2):
        raise SystemExit(f"--resolution must be a multiple of {VAE_SCALE_FACTOR * 2}, got {args.resolution}")
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = PRESETS[args.preset]
    latent_size = args.resolution // VAE_SCALE_FACTOR
    generator = torch.Generator(device).manual_seed(0)

    def randn(*shape):
        # fp32 draws, cast: the same inputs in every precision.
        return torch.randn(shape, generator=generator, device=device).to(torch.float32 if args.numerics else dtype)

    latents = randn(args.batch, config["in_channels"], latent_size, latent_size)
    inputs = {
        "hidden_states": latents,
        "encoder_hidden_states": randn(args.batch, args.text_tokens, config["joint_attention_dim"]),
        "pooled_projections": randn(args.batch, config["pooled_projection_dim"]),
        "timestep": torch.full((args.batch,), 500.0, device=device),
    }
    runs = {"dit4sr": (DiT4SRTransformer2DModel, {**inputs, "lr_hidden_states": randn(*latents.shape)})}
    if args.baseline_sd3:
        runs["sd3"] = (SD3Transformer2DModel, inputs)

    results = {}
    for name, (model_cls, model_inputs) in runs.items():
        extra = {"lr_injection_scale": args.lr_injection_scale} if name == "dit4sr" else {}
        if args.numerics:
            results[name] = compare_numerics(model_cls, config, model_inputs, extra, device, args)
            print(f"{name:>7}: relative error vs fp32: " + ", ".join(f"{k} {v:.2e}" for k, v in results[name].items()))
            if device.type == "cuda":
                torch.cuda.empty_cache()
            continue
        model = build_model(model_cls, config, device, dtype)
        if args.attention_backend:
            model.set_attention_backend(args.attention_backend)
        if args.fuse_lr_projections and name == "dit4sr":
            model.fuse_lr_projections()

        @torch.inference_mode()
        def forward(model=model, model_inputs=model_inputs, extra=extra):
            return model(**model_inputs, **extra, return_dict=False)

        first_call_s = None
        if args.compile:
            model.compile_repeated_blocks(fullgraph=True)
            start = time.perf_counter()
            forward()
            synchronize(device)
            first_call_s = time.perf_counter() - start
        results[name] = time_forward(forward, device, args.warmup, args.iters)
        if first_call_s is not None:
            # The first call compiles; what it took beyond a steady call is the compile time.
            results[name]["compile_s"] = first_call_s - results[name]["median_s"]
        results[name]["parameters"] = sum(param.numel() for param in model.parameters())
        if name == "dit4sr":
            estimate = model.estimate_activation_memory(args.batch, latent_size, latent_size, args.text_tokens)
            results[name]["activation_estimate_gib"] = estimate / 2**30
        memory = results[name].get("peak_memory_gib", results[name].get("peak_rss_gib"))
        print(
            f"{name:>7}: {results[name]['median_s'] * 1e3:9.2f} ms/forward (median of {args.iters}), peak {memory:.2f} GiB"
        )
        del model
        if device.type == "cuda":
            torch.cuda.empty_cache()
    if "sd3" in results and args.numerics:
        results["dit4sr_over_sd3"] = results["dit4sr"][args.dtype] / results["sd3"][args.dtype]
        print(f"DiT4SR / SD3 {args.dtype} error ratio: {results['dit4sr_over_sd3']:.2f}")
    elif "sd3" in results:
        results["dit4sr_over_sd3"] = results["dit4sr"]["median_s"] / results["sd3"]["median_s"]
        print(f"DiT4SR / SD3 time ratio: {results['dit4sr_over_sd3']:.2f}")

    payload = {
        "benchmark": "transformer_numerics" if args.numerics else "transformer_forward",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(device),
        "settings": {
            "preset": args.preset,
            "resolution": args.resolution,
            "latent": [latent_size, latent_size],
            "batch": args.batch,
            "text_tokens": args.text_tokens,
            "dtype": args.dtype,
            "attention_backend": args.attention_backend or "default",
            "lr_injection_scale": args.lr_injection_scale,
            "fuse_lr_projections": args.fuse_lr_projections,
            "compile": args.compile,
            "numerics": args.numerics,
        },
        "results": results,
    }
    variant = "_fused" * args.fuse_lr_projections + "_compiled" * args.compile + "_numerics" * args.numerics
    output = args.output or RESULTS_DIR / (
        f"transformer_{args.preset}_{args.resolution}px_b{args.batch}_{args.dtype}{variant}_{device.type}.json"
    )
    write_json_atomically(output, payload)
    print(f"wrote {output}")


if __name__ == "__main__":
    main()
