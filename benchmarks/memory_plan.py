# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Predicted GPU memory of the pipeline job, phase by phase, computed without a GPU.

    python benchmarks/memory_plan.py --preset sd35-medium --lr-size 512 --upscale 4 --gpu-memory-gib 12
    python benchmarks/memory_plan.py --preset tiny --lr-size 40 --process-size 0 --tile-size 64 --tile-overlap 32

Every component is built on the meta device (nothing is allocated). Weights are counted from their tensors, and
activations tensor by tensor (`live_memory.LiveTensorBytes`) with attention kernels that do not store the N x N
scores (`live_memory.output_only_attention`), through the same calls the pipeline makes: each text encoder on one
prompt, the VAE encode of the output-sized LR image, one transformer call with the tile batch that
`tile_batch_size="auto"` picks on a card of `--gpu-memory-gib`, and the VAE decode.

Two placements: everything on the GPU, and `enable_model_cpu_offload()`, where a phase holds the models the offload
hooks leave on the GPU (the transformer phase keeps the VAE, which encoded the LR image just before).
`--quantize PRESET` predicts the weights of a quantization preset (`diffusers_dit4sr.quantization`): each `nn.Linear`
weight of the quantized components takes the preset's bytes per element (1 for int8/float8, 0.5 for NF4; scales not
counted), everything else the load dtype. Not counted:
the CUDA context, allocator fragmentation, kernel workspaces and the small tensors that live across phases (prompt
embeddings, latents); `bench_pipeline.py` measures the real peaks.
"""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path
from unittest import mock

import torch
from bench_pipeline import MAX_SEQUENCE_LENGTH, add_job_arguments, build_pipeline, plan_job
from bench_transformer import DTYPES, PRESETS, RESULTS_DIR, machine_info, write_json_atomically
from live_memory import LiveTensorBytes, output_only_attention, weight_bytes

from diffusers_dit4sr.pipelines import pipeline_stable_diffusion_3_sr as pipeline_module
from diffusers_dit4sr.quantization import (
    QUANTIZABLE_COMPONENTS,
    QUANTIZATION_PRESETS,
    WEIGHT_BYTES_PER_ELEMENT,
    resolve_components,
)

GIB = 2**30
TEXT_ENCODERS = ("text_encoder", "text_encoder_2", "text_encoder_3")
# Which models each phase holds on the GPU under model CPU offload.
OFFLOAD_RESIDENTS = {
    "text_encoder": ("text_encoder",),
    "text_encoder_2": ("text_encoder_2",),
    "text_encoder_3": ("text_encoder_3",),
    "vae_encode": ("vae",),
    "transformer": ("transformer", "vae"),
    "vae_decode": ("vae",),
}


def peak_activation_bytes(run) -> int:
    with torch.no_grad(), output_only_attention(), LiveTensorBytes() as counter:
        run()
    return counter.peak


def component_activations(pipe, job: dict, dtype: torch.dtype) -> dict[str, int]:
    """Peak activation bytes of the text encoders' and the VAE's calls (the same in every placement)."""
    meta = torch.device("meta")
    text_tokens = {
        "text_encoder": pipe.tokenizer_max_length,
        "text_encoder_2": pipe.tokenizer_max_length,
        "text_encoder_3": MAX_SEQUENCE_LENGTH,
    }
    activations = {
        name: peak_activation_bytes(
            lambda name=name: getattr(pipe, name)(
                torch.zeros(1, text_tokens[name], dtype=torch.long, device=meta), output_hidden_states=True
            )
        )
        for name in TEXT_ENCODERS
    }
    height, width = (side * pipe.vae_scale_factor for side in job["latent"])
    image = torch.empty(1, 3, height, width, device=meta, dtype=dtype)
    activations["vae_encode"] = peak_activation_bytes(lambda: pipe.vae.encode(image))
    latent = torch.empty(1, pipe.transformer.config.out_channels, *job["latent"], device=meta, dtype=dtype)
    activations["vae_decode"] = peak_activation_bytes(lambda: pipe.vae.decode(latent))
    return activations


def transformer_activations(pipe, job: dict, rows: int, dtype: torch.dtype) -> int:
    """Peak activation bytes of one transformer call over `rows` tile rows."""
    meta = torch.device("meta")
    config = pipe.transformer.config
    tile = torch.empty(rows, config.in_channels, *job["tile_latent"], device=meta, dtype=dtype)
    inputs = {
        "hidden_states": tile,
        "lr_hidden_states": torch.empty_like(tile),
        "encoder_hidden_states": torch.empty(
            rows, job["text_tokens"], config.joint_attention_dim, device=meta, dtype=dtype
        ),
        "pooled_projections": torch.empty(rows, config.pooled_projection_dim, device=meta, dtype=dtype),
        "timestep": torch.empty(rows, device=meta, dtype=dtype),
    }
    return peak_activation_bytes(lambda: pipe.transformer(**inputs, return_dict=False))


def auto_tile_batch(pipe, job: dict, card_bytes: int, resident_bytes: int, guidance: float) -> int:
    """The tile batch `tile_batch_size="auto"` picks when `resident_bytes` of weights sit on the card."""
    pipe._guidance_scale = guidance
    available = max(0, card_bytes - resident_bytes)
    with mock.patch.object(pipeline_module, "available_memory", lambda device: available):
        return pipe._fitting_tile_batch_size(
            job["tiles"], *job["tile_latent"], job["text_tokens"], torch.device("cuda")
        )


def quantized_weight_bytes(module: torch.nn.Module, preset: str, dtype: torch.dtype) -> int:
    """Predicted bytes of `module` with its `nn.Linear` weights quantized by `preset`."""
    linear_elements = sum(layer.weight.numel() for layer in module.modules() if isinstance(layer, torch.nn.Linear))
    bytes_per_element = WEIGHT_BYTES_PER_ELEMENT[QUANTIZATION_PRESETS[preset].weights]
    return int(weight_bytes(module) - linear_elements * (dtype.itemsize - bytes_per_element))


def plan(args: argparse.Namespace) -> dict:
    dtype = DTYPES[args.dtype]
    pipe = build_pipeline(args.preset, torch.device("meta"), dtype)
    if args.vae_tiling:
        pipe.enable_vae_tiling()
    job = plan_job(pipe, args)
    weights = {name: weight_bytes(getattr(pipe, name)) for name in (*TEXT_ENCODERS, "transformer", "vae")}
    if args.quantize != "none":
        for name in resolve_components(args.quantize, args.quantize_components):
            weights[name] = quantized_weight_bytes(getattr(pipe, name), args.quantize, dtype)
    rows_per_tile = 2 if args.guidance > 1 else 1
    card = int(args.gpu_memory_gib * GIB)
    components = component_activations(pipe, job, dtype)

    placements = {}
    for placement, residents in (
        ("all_on_gpu", dict.fromkeys(OFFLOAD_RESIDENTS, tuple(weights))),
        ("model_cpu_offload", OFFLOAD_RESIDENTS),
    ):
        resident = {phase: sum(weights[name] for name in names) for phase, names in residents.items()}
        tile_batch = auto_tile_batch(pipe, job, card, resident["transformer"], args.guidance)
        activations = components | {
            "transformer": transformer_activations(pipe, job, tile_batch * rows_per_tile, dtype)
        }
        phases = {
            phase: {
                "models": list(residents[phase]),
                "weights_gib": resident[phase] / GIB,
                "activations_gib": activations[phase] / GIB,
                "total_gib": (resident[phase] + activations[phase]) / GIB,
            }
            for phase in OFFLOAD_RESIDENTS
        }
        peak_phase = max(phases, key=lambda phase: phases[phase]["total_gib"])
        placements[placement] = {
            "tile_batch": tile_batch,
            "transformer_calls_per_step": -(-job["tiles"] // tile_batch),
            "phases": phases,
            "peak_phase": peak_phase,
            "peak_gib": phases[peak_phase]["total_gib"],
            "fits": phases[peak_phase]["total_gib"] <= args.gpu_memory_gib,
        }
    return {
        "benchmark": "memory_plan",
        "kind": "prediction (no GPU run)",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(torch.device("cpu")),
        "settings": {key: value for key, value in vars(args).items() if key != "output"} | job,
        "weights_gib": {name: value / GIB for name, value in weights.items()},
        "activation_estimate_gib_per_tile": job["activation_estimate_gib_per_tile"],
        "placements": placements,
    }


def print_plan(result: dict) -> None:
    card = result["settings"]["gpu_memory_gib"]
    print(f"Predicted (not measured) GPU memory, quantization: {result['settings']['quantize']}")
    for placement, planned in result["placements"].items():
        print(
            f"{placement}: tile batch {planned['tile_batch']} of {result['settings']['tiles']} on a {card:g} GiB card; "
            f"peak {planned['peak_gib']:.2f} GiB in {planned['peak_phase']}"
            + ("" if planned["fits"] else ": does not fit")
        )
        for phase, numbers in planned["phases"].items():
            print(
                f"  {phase:<15} weights {numbers['weights_gib']:7.3f} + activations {numbers['activations_gib']:7.3f}"
                f" = {numbers['total_gib']:7.3f} GiB  ({', '.join(numbers['models'])})"
            )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sd35-medium")
    add_job_arguments(parser)
    parser.add_argument("--gpu-memory-gib", type=float, default=12.0, help="card size that `auto` plans for")
    parser.add_argument("--vae-tiling", action="store_true", help="pipe.enable_vae_tiling()")
    parser.add_argument(
        "--quantize", choices=["none", *sorted(QUANTIZATION_PRESETS)], default="none", help="quantization preset"
    )
    parser.add_argument(
        "--quantize-components",
        nargs="+",
        choices=QUANTIZABLE_COMPONENTS,
        default=None,
        help="components the preset quantizes (default: the preset's)",
    )
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = plan(args)
    print_plan(result)
    output = args.output or RESULTS_DIR / (
        f"memory_plan_{args.preset}_{args.lr_size}to{result['settings']['output_size'][0]}px_{args.dtype}"
        f"_{args.gpu_memory_gib:g}gib{'_vae_tiling' * args.vae_tiling}"
        f"{'' if args.quantize == 'none' else '_' + args.quantize}.json"
    )
    write_json_atomically(output, result)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
