# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""GPU memory of a DiT4SR training step at SD3.5-medium size, predicted from measurements on the CPU.

    python benchmarks/training_memory.py --resolution 512 --batch-sizes 1 2 4
    python benchmarks/training_memory.py --preset tiny --resolution 128 --batch-sizes 1 2

One training step of `examples/train_dit4sr.py` (fp32 weights, bf16 autocast, loss, backward) runs on the CPU
through `live_memory.LiveTensorBytes`, which counts what it creates: activations kept for the backward pass, the
autocast copies of the weights, temporaries and the gradients. A full-size step would take long on a CPU, so it runs on
three shallow models of full width (4 blocks, 2 of them dual-attention; 5 with a third dual-attention block; 5 with
a plain block) at batch 1 and 2; the differences give the cost of each block type and of each sample, which are
extrapolated to the preset's depth and the requested batch sizes. (With gradient checkpointing the peak holds one
block's recomputation, which is why the base has two dual-attention blocks: from there on the cost is linear in the
blocks; `tests/test_benchmarks.py` checks the extrapolation against a deeper model measured directly.) Added analytically: the fp32 weights, AdamW's two fp32 states per
trainable parameter, and the frozen VAE and text encoders that the script keeps on the GPU in the autocast dtype.
Not counted: the CUDA context, fragmentation, kernel workspaces and the VAE encode of on-the-fly batches (it runs
before the transformer, with none of its activations alive).
"""

from __future__ import annotations

import argparse
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_pipeline import build_pipeline
from bench_transformer import PRESETS, RESULTS_DIR, machine_info, write_json_atomically
from live_memory import LiveTensorBytes, weight_bytes

from diffusers_dit4sr import DiT4SRTransformer2DModel

GIB = 2**30
TRAINABLE = ("lr_branch", "full")
FROZEN_ON_GPU = ("vae", "text_encoder", "text_encoder_2", "text_encoder_3")


def trainable_parameters(model: DiT4SRTransformer2DModel, trainable: str) -> list[torch.nn.Parameter]:
    """What `--trainable` trains (`select_trainable_parameters` of the training script, without LoRA)."""
    used = model.lr_branch_parameters()
    if trainable == "lr_branch":
        return list(used.values())
    unused = model.lr_branch_parameters(include_unused=True).keys() - used.keys()
    return [param for name, param in model.named_parameters() if name not in unused]


def step_bytes(config: dict, trainable: str, checkpointing: bool, batch: int, latent: int, text_tokens: int) -> int:
    """Peak bytes that one training step creates (everything but the weights), measured on the CPU."""
    torch.manual_seed(0)
    model = DiT4SRTransformer2DModel(**config).train()
    model.requires_grad_(False)
    for param in trainable_parameters(model, trainable):
        param.requires_grad_(True)
    if checkpointing:
        model.enable_gradient_checkpointing()
    channels = config["in_channels"]
    inputs = {
        "hidden_states": torch.randn(batch, channels, latent, latent),
        "lr_hidden_states": torch.randn(batch, channels, latent, latent),
        "encoder_hidden_states": torch.randn(batch, text_tokens, config["joint_attention_dim"]),
        "pooled_projections": torch.randn(batch, config["pooled_projection_dim"]),
        "timestep": torch.rand(batch) * 1000,
    }
    with LiveTensorBytes() as counter:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            prediction = model(**inputs, return_dict=False)[0]
        loss = (prediction.float() - inputs["hidden_states"]).pow(2).mean()
        loss.backward()
    return counter.peak


def per_part_bytes(config: dict, trainable: str, checkpointing: bool, latent: int, text_tokens: int) -> dict:
    """Step bytes split into a fixed part, one dual-attention block, one plain block, and one sample of each."""
    shallow = {
        "base": {**config, "num_layers": 4, "dual_attention_layers": (0, 1)},
        "dual": {**config, "num_layers": 5, "dual_attention_layers": (0, 1, 2)},
        "plain": {**config, "num_layers": 5, "dual_attention_layers": (0, 1)},
    }
    measured = {
        (name, batch): step_bytes(shallow_config, trainable, checkpointing, batch, latent, text_tokens)
        for name, shallow_config in shallow.items()
        for batch in (1, 2)
    }
    parts = {}
    for batch in (1, 2):
        base = measured["base", batch]
        parts[batch] = {
            "base": base,
            "dual": measured["dual", batch] - base,
            "plain": measured["plain", batch] - base,
        }
    return {
        name: {"fixed": 2 * parts[1][name] - parts[2][name], "per_sample": parts[2][name] - parts[1][name]}
        for name in parts[1]
    }


def extrapolate(parts: dict, config: dict, batch: int) -> int:
    """Step bytes of the preset's depth: the 4-block base, then its other dual-attention and plain blocks."""
    extra_dual = len(config["dual_attention_layers"]) - 2
    extra_plain = config["num_layers"] - 4 - extra_dual
    counts = {"base": 1, "dual": extra_dual, "plain": extra_plain}
    return sum(count * (parts[name]["fixed"] + batch * parts[name]["per_sample"]) for name, count in counts.items())


def plan(args: argparse.Namespace) -> dict:
    config = PRESETS[args.preset]
    latent = args.resolution // 8
    with torch.device("meta"):
        full = DiT4SRTransformer2DModel(**config)
    weights = weight_bytes(full)
    pipe = build_pipeline(args.preset, torch.device("meta"), torch.bfloat16)
    frozen = sum(weight_bytes(getattr(pipe, name)) for name in FROZEN_ON_GPU)

    rows = []
    for trainable in TRAINABLE:
        trained = sum(param.numel() for param in trainable_parameters(full, trainable))
        optimizer = 2 * 4 * trained  # AdamW: exp_avg and exp_avg_sq in fp32
        for checkpointing in (False, True):
            start = time.perf_counter()
            parts = per_part_bytes(config, trainable, checkpointing, latent, args.text_tokens)
            print(f"measured {trainable}, checkpointing {checkpointing} in {time.perf_counter() - start:.0f} s")
            for batch in args.batch_sizes:
                step = extrapolate(parts, config, batch)
                rows.append(
                    {
                        "trainable": trainable,
                        "trainable_parameters": trained,
                        "gradient_checkpointing": checkpointing,
                        "batch": batch,
                        "weights_gib": weights / GIB,
                        "optimizer_gib": optimizer / GIB,
                        "step_gib": step / GIB,
                        "frozen_models_gib": frozen / GIB,
                        "total_gib": (weights + optimizer + step + frozen) / GIB,
                    }
                )
    return {
        "benchmark": "training_memory",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": machine_info(torch.device("cpu")),
        "settings": {key: value for key, value in vars(args).items() if key != "output"},
        "rows": rows,
    }


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sd35-medium")
    parser.add_argument("--resolution", type=int, default=512, help="training crop side in pixels")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--text-tokens", type=int, default=154, help="77 CLIP + 77 T5 tokens, as released")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    result = plan(args)
    print(
        f"{'trainable':<10} {'ckpt':<5} {'batch':>5} {'weights':>8} {'AdamW':>8} {'step':>8} {'frozen':>8} {'total':>8}  GiB"
    )
    for row in result["rows"]:
        print(
            f"{row['trainable']:<10} {'yes' if row['gradient_checkpointing'] else 'no':<5} {row['batch']:>5} "
            f"{row['weights_gib']:8.2f} {row['optimizer_gib']:8.2f} {row['step_gib']:8.2f} "
            f"{row['frozen_models_gib']:8.2f} {row['total_gib']:8.2f}"
        )
    output = args.output or RESULTS_DIR / f"training_memory_{args.preset}_{args.resolution}px.json"
    write_json_atomically(output, result)
    print(f"wrote {output}")
    return result


if __name__ == "__main__":
    main()
