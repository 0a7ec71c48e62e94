# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Throughput of the Real-ESRGAN degradation: (LR, HR) training pairs per second.

Each iteration degrades one batch of HR crops with a fresh random draw (as training does), so iteration times
vary with the drawn branches (resize factors, noise type, ...); the median over `--iters` timed iterations is
reported, after `--warmup` untimed ones, along with the mean-based throughput a long run would see.

    python benchmarks/bench_degradation.py --batch 16 --size 512 --device cuda --iters 50 --warmup 5

The result is printed and written as JSON under benchmarks/results/ (atomically: temp file + os.replace).
"""

import argparse
import json
import os
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path

import torch
import torch.nn.functional as F

from diffusers_dit4sr.file_utils import atomic_write_path
from diffusers_dit4sr.training import RealESRGANDegradation

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16, help="HR crops per batch")
    parser.add_argument("--size", type=int, default=512, help="HR crop size in pixels (divisible by the scale, 4)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--iters", type=int, default=20, help="timed iterations")
    parser.add_argument("--warmup", type=int, default=3, help="untimed iterations first")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    if args.batch < 1 or args.size < 4 or args.iters < 1 or args.warmup < 0:
        parser.error("--batch and --iters must be >= 1, --size >= 4 and --warmup >= 0")
    return args


def synthetic_hr(batch: int, size: int, seed: int) -> torch.Tensor:
    """HR-like crops: smooth color regions plus fine texture, in [0, 1]."""
    generator = torch.Generator().manual_seed(seed)
    coarse = torch.rand(batch, 3, max(size // 32, 2), max(size // 32, 2), generator=generator)
    smooth = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
    texture = torch.rand(batch, 3, size, size, generator=generator)
    return (0.85 * smooth + 0.15 * texture).clamp(0, 1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    elif device.type == "mps":
        torch.mps.synchronize()


def machine_info(device: torch.device) -> dict[str, object]:
    info: dict[str, object] = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
    return info


def write_json_atomic(path: Path, data: dict[str, object]) -> None:
    with atomic_write_path(path) as temporary:
        temporary.write_text(json.dumps(data, indent=2) + "\n")


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    degrade = RealESRGANDegradation().to(device)
    hr = synthetic_hr(args.batch, args.size, args.seed).to(device)
    generator = torch.Generator(device=device).manual_seed(args.seed)

    times = []
    for step in range(args.warmup + args.iters):
        synchronize(device)
        start = time.perf_counter()
        degrade(hr, generator=generator)
        synchronize(device)
        if step >= args.warmup:
            times.append(time.perf_counter() - start)

    median = statistics.median(times)
    result = {
        "benchmark": "degradation",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "batch": args.batch,
        "size": args.size,
        "iters": args.iters,
        "warmup": args.warmup,
        "seed": args.seed,
        "median_batch_seconds": median,
        "min_batch_seconds": min(times),
        "max_batch_seconds": max(times),
        "pairs_per_second": args.batch / median,
        "mean_pairs_per_second": args.batch * len(times) / sum(times),
        "machine": machine_info(device),
    }
    output = args.output or RESULTS_DIR / f"bench_degradation_{device.type}_{args.size}px_b{args.batch}.json"
    write_json_atomic(output, result)
    print(
        f"degradation {args.batch}x{args.size}px on {device}: {result['pairs_per_second']:.2f} pairs/s "
        f"(median {median * 1000:.1f} ms/batch over {args.iters} iters; "
        f"mean-based {result['mean_pairs_per_second']:.2f} pairs/s) -> {output}"
    )
    return result


if __name__ == "__main__":
    main()
