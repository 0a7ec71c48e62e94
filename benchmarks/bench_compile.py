# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Regional compilation of `DiT4SRTransformer2DModel` (random weights): graphs compiled, compile time, speed.

    python benchmarks/bench_compile.py --preset sd35-medium --resolution 1024 --dtype bf16      # GPU
    TORCHINDUCTOR_COMPILE_THREADS=1 python benchmarks/bench_compile.py --preset sd35-medium-narrow --device cpu \
        --dtype fp32                                                                             # CPU: 2 heads only

`compile_repeated_blocks(fullgraph=True)` compiles every block whose class is in `_repeated_blocks`. Dynamo keeps one
cache per `forward` code object, so blocks of one class share a graph as long as their structure is the same; a block
that differs (another layout of submodules) costs one more graph. The script counts the graphs the backend was handed
(`graphs_compiled`), times the first compiled forward (tracing, compiling and running) against a steady compiled one
(`compile_s` = the difference), and checks the compiled output against the eager one. Inductor's on-disk cache is
bypassed unless `--warm-inductor-cache`, so `compile_s` is what a fresh machine pays. On a shared CPU, wall times
swing with the other load; `first_call_cpu_s` (CPU seconds, the C++ compilers included when
`TORCHINDUCTOR_COMPILE_THREADS=1`) is the steadier figure. Prints one line and writes JSON under
`benchmarks/results/`.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time
from collections import Counter
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import torch
from bench_transformer import (
    DTYPES,
    PRESETS,
    RESULTS_DIR,
    VAE_SCALE_FACTOR,
    add_forward_arguments,
    build_model,
    machine_info,
    relative_error,
    synchronize,
    write_json_atomically,
)
from torch._dynamo.backends.registry import lookup_backend

from diffusers_dit4sr import DiT4SRTransformer2DModel

# SD3.0-medium's shape: no dual attention, no qk-norm.
SD3_MEDIUM = {**PRESETS["sd35-medium"], "pos_embed_max_size": 192, "dual_attention_layers": (), "qk_norm": None}
# The same 24 blocks (the same graphs to compile) with 2 heads of 64 channels instead of 24: on a CPU the forward of
# the full-width model takes longer than compiling it, and would drown the compile time in its noise.
NARROW = {
    "num_attention_heads": 2,
    "caption_projection_dim": 128,
    "joint_attention_dim": 256,
    "pooled_projection_dim": 256,
}
COMPILE_PRESETS = {
    **PRESETS,
    "sd3-medium": SD3_MEDIUM,
    "sd35-medium-narrow": {**PRESETS["sd35-medium"], **NARROW},
    "sd3-medium-narrow": {**SD3_MEDIUM, **NARROW},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_forward_arguments(parser, COMPILE_PRESETS, resolution=128)
    parser.add_argument("--backend", default="inductor", help="torch.compile backend (inductor, aot_eager, eager)")
    parser.add_argument("--fuse-lr-projections", action="store_true", help="fold the LR projections first")
    parser.add_argument("--warm-inductor-cache", action="store_true", help="allow inductor's on-disk cache")
    parser.add_argument("--iters", type=int, default=3, help="timed forwards, eager and compiled (medians)")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    parser.add_argument("--note", default="", help="free text stored with the settings (e.g. the code measured)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    return parser.parse_args(argv)


def cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (the C++ compilers inductor runs).

    Less sensitive to other load on the machine than wall time. Inductor's compile workers are children that never
    finish while the process runs, so with `TORCHINDUCTOR_COMPILE_THREADS` > 1 their share is missing.
    """
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def median_seconds(forward, device: torch.device, iters: int) -> float:
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        forward()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.resolution % (VAE_SCALE_FACTOR * 2):
        raise SystemExit(f"--resolution must be a multiple of {VAE_SCALE_FACTOR * 2}, got {args.resolution}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    config = COMPILE_PRESETS[args.preset]
    latent_size = args.resolution // VAE_SCALE_FACTOR
    generator = torch.Generator(device).manual_seed(0)

    def randn(*shape):
        return torch.randn(shape, generator=generator, device=device).to(dtype)

    latents = randn(args.batch, config["in_channels"], latent_size, latent_size)
    inputs = {
        "hidden_states": latents,
        "lr_hidden_states": randn(*latents.shape),
        "encoder_hidden_states": randn(args.batch, args.text_tokens, config["joint_attention_dim"]),
        "pooled_projections": randn(args.batch, config["pooled_projection_dim"]),
        "timestep": torch.full((args.batch,), 500.0, device=device),
    }
    model = build_model(DiT4SRTransformer2DModel, config, device, dtype)
    if args.fuse_lr_projections:
        model.fuse_lr_projections()

    @torch.inference_mode()
    def forward():
        return model(**inputs, lr_injection_scale=1.2, return_dict=False)[0]

    eager_output = forward()
    eager_s = median_seconds(forward, device, args.iters)

    graph_sizes, graph_seconds = [], []
    inner_backend = lookup_backend(args.backend)

    def counting_backend(graph_module, example_inputs):
        graph_sizes.append(len(graph_module.graph.nodes))
        start = time.perf_counter()
        compiled_graph = inner_backend(graph_module, example_inputs)
        graph_seconds.append(time.perf_counter() - start)
        return compiled_graph

    torch.compiler.reset()
    model.compile_repeated_blocks(fullgraph=True, backend=counting_backend)
    fresh_cache = nullcontext() if args.warm_inductor_cache else torch._inductor.utils.fresh_inductor_cache()
    with fresh_cache:
        start, start_cpu = time.perf_counter(), cpu_seconds()
        compiled_output = forward()
        synchronize(device)
        first_call_s = time.perf_counter() - start
        first_call_cpu_s = cpu_seconds() - start_cpu
        compiled_s = median_seconds(forward, device, args.iters)
    graphs_after_first_call = len(graph_sizes)

    compiled = Counter(type(block).__name__ for block in model.transformer_blocks if block._compiled_call_impl)
    eager = Counter(type(block).__name__ for block in model.transformer_blocks if not block._compiled_call_impl)
    results = {
        "graphs_compiled": len(graph_sizes),
        "recompiles_after_first_call": len(graph_sizes) - graphs_after_first_call,
        "graph_nodes": graph_sizes,
        # Wall seconds the backend took for each graph (dynamo's tracing comes on top). Inductor reuses the C++
        # kernels it already built for an earlier graph, so a graph that repeats another one's ops costs less.
        "graph_backend_s": graph_seconds,
        "blocks_compiled": dict(compiled),
        "blocks_eager": dict(eager),
        "first_call_s": first_call_s,
        # What the first call took beyond a steady compiled call: tracing and compiling.
        "compile_s": first_call_s - compiled_s,
        # CPU seconds of the first call (see `cpu_seconds`), compile and one forward.
        "first_call_cpu_s": first_call_cpu_s,
        "eager_median_s": eager_s,
        "compiled_median_s": compiled_s,
        "relative_error_vs_eager": relative_error(compiled_output.float(), eager_output.float()),
        "load_average_1min": os.getloadavg()[0],
    }
    print(
        f"{args.preset} {args.resolution}px b{args.batch} {args.dtype} ({args.backend}): "
        f"{results['graphs_compiled']} graph(s) for {sum(compiled.values())} compiled blocks {dict(compiled)}, "
        f"compile {results['compile_s']:.1f} s; eager {eager_s * 1e3:.1f} ms, compiled {compiled_s * 1e3:.1f} ms "
        f"per forward; relative error {results['relative_error_vs_eager']:.1e}"
    )

    payload = {
        "benchmark": "regional_compile",
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {
            **machine_info(device),
            "torch_threads": torch.get_num_threads(),
            "inductor_compile_threads": torch._inductor.config.compile_threads,
        },
        "settings": {
            "preset": args.preset,
            "resolution": args.resolution,
            "latent": [latent_size, latent_size],
            "batch": args.batch,
            "text_tokens": args.text_tokens,
            "dtype": args.dtype,
            "backend": args.backend,
            "fuse_lr_projections": args.fuse_lr_projections,
            "fresh_inductor_cache": not args.warm_inductor_cache,
            "iters": args.iters,
            "repeated_blocks": list(model._repeated_blocks),
            "note": args.note,
        },
        "results": results,
    }
    variant = "_fused" * args.fuse_lr_projections
    output = args.output or RESULTS_DIR / (
        f"compile_{args.preset}_{args.resolution}px_b{args.batch}_{args.dtype}{variant}_{args.backend}_{device.type}.json"
    )
    write_json_atomically(output, payload)
    print(f"wrote {output}")
    return payload


if __name__ == "__main__":
    main()
