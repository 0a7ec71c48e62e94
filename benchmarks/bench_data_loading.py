# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Data-loading throughput of training: HR samples per second from an image folder, a local parquet dataset, and the
same parquet files streamed, with 0 and 2 DataLoader workers, with and without the Real-ESRGAN degradation.

Every source holds the same synthetic photos (PNG files of `--photo-size`, smooth colour regions plus fine texture,
written once under `--data-dir`). A sample is what training reads: the file decoded (`read_photo`), a random
`--resolution` crop and flip; "with degradation" also degrades each batch into (LR, HR) pairs on the CPU in the main
process, as training does on its device. Throughput is `--batches` batches of `--batch` after one untimed batch
(which starts the workers), timed `--repeats` times (round the configurations, so that the machine's load falls on
all of them alike); the median is reported, with the load average before and after.

    python benchmarks/bench_data_loading.py --photos 48 --photo-size 1536x1024 --batch 8 --batches 6 --repeats 3

The result is printed and written as JSON under benchmarks/results/ (atomically).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import datasets
import numpy as np
import PIL.Image
import torch
from bench_degradation import RESULTS_DIR, machine_info, synthetic_hr, write_json_atomic
from torch.utils.data import DataLoader

from diffusers_dit4sr.training import RealESRGANDegradation
from diffusers_dit4sr.training.datasets import HRImageDataset, collate_samples
from diffusers_dit4sr.training.hf_datasets import DatasetSource, RowsDataset, load_training_rows
from diffusers_dit4sr.training.hf_streaming import StreamedRowsDataset, StreamLoader

SOURCES = ("folder", "parquet", "streamed parquet")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=48, help="synthetic photos in each source")
    parser.add_argument("--photo-size", default="1536x1024", help="WIDTHxHEIGHT of the photos")
    parser.add_argument("--shards", type=int, default=4, help="parquet files (streamed: split across workers)")
    parser.add_argument("--resolution", type=int, default=512, help="HR crop side (released: 512)")
    parser.add_argument("--batch", type=int, default=8, help="samples per batch (released: 8 per GPU)")
    parser.add_argument("--batches", type=int, default=6, help="timed batches per repeat")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader worker counts")
    parser.add_argument("--shuffle-buffer-size", type=int, default=16, help="streamed: rows per shuffled block")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--data-dir", type=Path, default=None, help="where to write the photos (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=None, help="JSON path (default: benchmarks/results/...)")
    args = parser.parse_args(argv)
    try:
        args.width, args.height = (int(side) for side in args.photo_size.lower().split("x"))
    except ValueError:
        parser.error(f"--photo-size must be WIDTHxHEIGHT, got {args.photo_size!r}")
    if min(args.photos, args.shards, args.batch, args.batches, args.repeats, args.shuffle_buffer_size) < 1:
        parser.error("--photos, --shards, --batch, --batches, --repeats and --shuffle-buffer-size must be >= 1")
    if min(args.width, args.height) < args.resolution:
        parser.error("--photo-size must be at least --resolution on both sides")
    if args.photos < args.batch * (args.batches + 1):
        parser.error("--photos must hold --batches + 1 batches (an epoch covers the timed batches)")
    return args


def write_sources(args: argparse.Namespace, root: Path) -> dict[str, Path]:
    """The photos as PNG files in `root/photos` and as `--shards` parquet files in `root/parquet` (same bytes)."""
    photos = root / "photos"
    photos.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(args.photos):
        path = photos / f"photo{index:04d}.png"
        if not path.exists():
            pixels = synthetic_hr(1, max(args.width, args.height), seed=index)[0, :, : args.height, : args.width]
            array = (pixels.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
            PIL.Image.fromarray(array).save(path)
        paths.append(path)
    parquet = root / "parquet"
    if not parquet.is_dir():
        rows = {"image": [{"bytes": path.read_bytes(), "path": path.name} for path in paths]}
        table = datasets.Dataset.from_dict(rows, features=datasets.Features(image=datasets.Image()))
        parquet.mkdir()
        for shard in range(args.shards):
            table.shard(args.shards, shard, contiguous=True).to_parquet(parquet / f"train-{shard:05d}.parquet")
    return {"photos": photos, "parquet": parquet}


def batches(source: str, workers: int, args: argparse.Namespace, paths: dict[str, Path], cache: Path):
    """An iterator over the batches of one source, as training reads them."""
    if source == "folder":
        dataset = HRImageDataset(paths["photos"], resolution=args.resolution, seed=0)
    else:
        rows = load_training_rows(
            [DatasetSource(str(paths["parquet"] / "*.parquet"))],
            streaming=source == "streamed parquet",
            cache_dir=cache,
        )
        if source == "streamed parquet":
            streamed = StreamedRowsDataset(
                rows, resolution=args.resolution, seed=0, shuffle_buffer_size=args.shuffle_buffer_size
            )
            return iter(StreamLoader(streamed, batch_size=args.batch, num_workers=workers))
        dataset = RowsDataset(rows, resolution=args.resolution, seed=0)
    loader = DataLoader(
        dataset, batch_size=args.batch, shuffle=True, num_workers=workers, collate_fn=collate_samples, drop_last=True
    )
    return iter(loader)


def time_source(source: str, workers: int, degrade, args: argparse.Namespace, paths, root: Path) -> float:
    """Samples per second over `--batches` batches after one untimed batch."""
    iterator = batches(source, workers, args, paths, root / "cache")
    generator = torch.Generator().manual_seed(0)
    for step in range(args.batches + 1):
        if step == 1:
            start = time.perf_counter()
        batch = next(iterator)
        if degrade is not None:
            degrade(batch["pixel_values"], generator=generator)
    elapsed = time.perf_counter() - start
    del iterator  # stops the workers
    return args.batch * args.batches / elapsed


def _load_average() -> list[float] | None:
    """The machine's 1, 5 and 15 minute load averages (Linux), or None."""
    path = Path("/proc/loadavg")
    return [float(value) for value in path.read_text().split()[:3]] if path.exists() else None


def main(argv: list[str] | None = None) -> dict[str, object]:
    args = parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    degradation = RealESRGANDegradation()
    load_before = _load_average()
    with tempfile.TemporaryDirectory() as temporary:
        root = args.data_dir or Path(temporary)
        paths = write_sources(args, root)
        configurations = [
            (source, workers, degraded) for source in SOURCES for workers in args.workers for degraded in (False, True)
        ]
        rates: dict[tuple, list[float]] = {configuration: [] for configuration in configurations}
        # Repeats go round the configurations, so that a change in the machine's load falls on all of them.
        for _ in range(args.repeats):
            for source, workers, degraded in configurations:
                degrade = degradation if degraded else None
                rates[source, workers, degraded].append(time_source(source, workers, degrade, args, paths, root))
        results = []
        for (source, workers, degraded), runs in rates.items():
            results.append(
                {
                    "source": source,
                    "workers": workers,
                    "degradation": degraded,
                    "samples_per_second": statistics.median(runs),
                    "repeats": runs,
                }
            )
            print(
                f"{source:>16} | {workers} workers | {'with' if degraded else 'without'} degradation | "
                f"{results[-1]['samples_per_second']:6.2f} samples/s (runs: {', '.join(f'{rate:.2f}' for rate in runs)})"
            )
        file_bytes = sum(path.stat().st_size for path in paths["photos"].glob("*.png")) / args.photos
    result = {
        "benchmark": "data_loading",
        "timestamp": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "photos": args.photos,
            "photo_size": [args.width, args.height],
            "mean_png_bytes": round(file_bytes),
            "shards": args.shards,
            "resolution": args.resolution,
            "batch": args.batch,
            "batches": args.batches,
            "repeats": args.repeats,
            "shuffle_buffer_size": args.shuffle_buffer_size,
            "datasets": datasets.__version__,
        },
        "load_average_before": load_before,
        "load_average_after": _load_average(),
        "results": results,
        "machine": machine_info(torch.device("cpu")),
    }
    output = args.output or RESULTS_DIR / (
        f"data_loading_cpu_{args.width}x{args.height}_{args.resolution}px_b{args.batch}.json"
    )
    write_json_atomic(output, result)
    print(f"-> {output}")
    return result


if __name__ == "__main__":
    main()
