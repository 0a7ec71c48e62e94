# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Where the time goes: an analytic FLOP count of one DiT4SR (or plain SD3) forward, and SVG bar charts.

    python benchmarks/breakdown.py                      # table for SD3.5-medium, 1024 px, batch 2, 154 text tokens
    python benchmarks/breakdown.py --text-tokens 333 --svg docs/performance_flops.svg
    python benchmarks/breakdown.py --pipeline-results benchmarks/results/gpu/pipeline.json --svg docs/performance_pipeline_time.svg

FLOPs count multiply-adds twice and cover the matrix work only (linear layers, the attention products QK^T and PV,
the patch-embedding and depthwise convolutions); softmax, norms, modulation and residual adds are memory-bound and
left out. The LR stream follows the released key mode by default: with a key norm, the LR tokens reuse the noise
keys and `to_k_control` is never run (`lr_key_source="lr"` counts it).
"""

from __future__ import annotations

import argparse
import json
from html import escape
from pathlib import Path

from bench_transformer import PRESETS

VAE_SCALE_FACTOR = 8
CATEGORIES = (
    "attention (QK^T, PV)",
    "noise-stream projections",
    "noise-stream MLP",
    "LR stream in shared layers",
    "LR-only layers",
    "text stream",
    "embeddings and modulation",
)
"""Categories of `forward_flops`, in plotting order."""
COLORS = ("#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#7f7f7f", "#17becf", "#e377c2")


def linear(tokens: int, fan_in: int, fan_out: int) -> int:
    """FLOPs of a linear layer (bias ignored) over `tokens` rows."""
    return 2 * tokens * fan_in * fan_out


def attention(queries: int, keys: int, width: int) -> int:
    """FLOPs of QK^T and PV over all heads (`width` = heads x head_dim)."""
    return 2 * 2 * queries * keys * width


def forward_flops(
    config: dict,
    latent_height: int,
    latent_width: int,
    batch: int,
    text_tokens: int,
    model: str = "dit4sr",
    lr_key_source: str = "noise",
    fused_lr_projections: bool = False,
) -> dict[str, int]:
    """FLOPs of one transformer forward by category (`CATEGORIES`); `model` is `"dit4sr"` or `"sd3"`.

    Per image, with N tokens per image stream and T text tokens, a DiT4SR block attends over 2N + T tokens (plain SD3:
    N + T); the LR stream runs through the shared query/value projections and the shared MLP, and adds its own
    `to_q_control`, `to_v_control`, `to_out_control` and depthwise 3x3 injection conv. `fused_lr_projections`
    (`fuse_lr_projections()`) folds each shared projection and its LR layer into one LR-only GEMM.
    """
    if model not in ("dit4sr", "sd3"):
        raise ValueError(f"`model` must be 'dit4sr' or 'sd3', got {model!r}.")
    dit4sr = model == "dit4sr"
    patch = config["patch_size"]
    n = (latent_height // patch) * (latent_width // patch)
    t = text_tokens
    d = config["num_attention_heads"] * config["attention_head_dim"]
    num_layers = config["num_layers"]
    streams = 2 if dit4sr else 1
    lr_keys = dit4sr and not (lr_key_source == "noise" and config.get("qk_norm") is not None)

    flops = dict.fromkeys(CATEGORIES, 0)
    # Patch embedding of each image stream, timestep and pooled-text MLPs, text embedder, output layer.
    flops["embeddings and modulation"] += streams * linear(n, config["in_channels"] * patch * patch, d)
    flops["embeddings and modulation"] += linear(1, 256, d) + linear(1, d, d)
    flops["embeddings and modulation"] += linear(1, config["pooled_projection_dim"], d) + linear(1, d, d)
    flops["embeddings and modulation"] += linear(1, d, 2 * d) + linear(n, d, patch * patch * config["out_channels"])
    flops["text stream"] += linear(t, config["joint_attention_dim"], d)

    def image_attention(text: bool) -> None:
        """One attention over the image streams (and the text tokens when `text`)."""
        flops["noise-stream projections"] += 4 * linear(n, d, d)  # q, k, v, out
        if dit4sr:
            lr_projections = 2 + lr_keys  # q, v (+ k)
            if not fused_lr_projections:
                flops["LR stream in shared layers"] += lr_projections * linear(n, d, d)
            flops["LR-only layers"] += (lr_projections + 1) * linear(n, d, d)  # *_control (or fused) and out
        flops["attention (QK^T, PV)"] += attention(streams * n + t * text, streams * n + t * text, d)

    for index in range(num_layers):
        last = index == num_layers - 1
        dual = index in config.get("dual_attention_layers", ())
        flops["embeddings and modulation"] += linear(1, d, (9 if dual else 6) * d) + linear(
            1, d, (2 if last else 6) * d
        )
        image_attention(text=True)
        flops["text stream"] += (3 if last else 4) * linear(t, d, d)  # add_q/k/v (+ to_add_out)
        if dual:
            image_attention(text=False)
        flops["noise-stream MLP"] += linear(n, d, 4 * d) + linear(n, 4 * d, d)
        if dit4sr:
            flops["LR stream in shared layers"] += linear(n, d, 4 * d) + linear(n, 4 * d, d)
            flops["LR-only layers"] += 2 * n * 4 * d * 9  # depthwise 3x3 injection conv
        if not last:
            flops["text stream"] += linear(t, d, 4 * d) + linear(t, 4 * d, d)
    return {category: batch * value for category, value in flops.items()}


def svg_stacked_bars(rows: list[tuple[str, dict[str, float]]], unit: str, title: str) -> str:
    """A horizontal stacked-bar chart, one bar per `(label, {category: value})`, as a standalone SVG document."""
    categories = list(dict.fromkeys(category for _, values in rows for category in values))
    label_width, bar_width, bar_height, gap, top = 260, 560, 26, 14, 44
    scale = bar_width / max(sum(values.values()) for _, values in rows)
    legend_top = top + len(rows) * (bar_height + gap) + 20
    height = legend_top + 20 * len(categories) + 10
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_width + bar_width + 90}" height="{height}" '
        'font-family="sans-serif" font-size="13">',
        '<rect width="100%" height="100%" fill="white"/>',
        f'<text x="10" y="24" font-size="15" font-weight="bold">{escape(title)}</text>',
    ]
    for row, (label, values) in enumerate(rows):
        y = top + row * (bar_height + gap)
        parts.append(f'<text x="10" y="{y + 18}">{escape(label)}</text>')
        x = label_width
        for category in categories:
            width = values.get(category, 0) * scale
            color = COLORS[categories.index(category) % len(COLORS)]
            parts.append(f'<rect x="{x:.1f}" y="{y}" width="{width:.1f}" height="{bar_height}" fill="{color}"/>')
            x += width
        parts.append(f'<text x="{x + 6:.1f}" y="{y + 18}">{sum(values.values()):.3g} {escape(unit)}</text>')
    for index, category in enumerate(categories):
        y = legend_top + 20 * index
        color = COLORS[index % len(COLORS)]
        parts.append(f'<rect x="{label_width}" y="{y}" width="14" height="14" fill="{color}"/>')
        parts.append(f'<text x="{label_width + 20}" y="{y + 12}">{escape(category)}</text>')
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def flop_rows(
    config: dict, resolution: int, batch: int, text_tokens: int, tile: int
) -> list[tuple[str, dict[str, float]]]:
    """TFLOP by category: plain SD3 and DiT4SR (separate and folded LR projections) at `resolution`, and DiT4SR on
    one `tile`-pixel pipeline tile."""
    latent, tile_latent = resolution // VAE_SCALE_FACTOR, tile // VAE_SCALE_FACTOR

    def tflop(size: int, model: str = "dit4sr", fused: bool = False) -> dict[str, float]:
        counts = forward_flops(config, size, size, batch, text_tokens, model, fused_lr_projections=fused)
        return {category: value / 1e12 for category, value in counts.items()}

    return [
        (f"SD3.5-medium, {resolution} px", tflop(latent, model="sd3")),
        (f"DiT4SR, {resolution} px", tflop(latent)),
        (f"DiT4SR folded, {resolution} px", tflop(latent, fused=True)),
        (f"DiT4SR, one {tile} px tile", tflop(tile_latent)),
    ]


def time_rows(results_path: Path) -> list[tuple[str, dict[str, float]]]:
    """Measured seconds by phase for each configuration of a `bench_pipeline.py` JSON."""
    payload = json.loads(results_path.read_text())
    rows = []
    for result in payload["configurations"]:
        if "error" in result:
            continue
        phases = {
            phase: result["phases"][phase]["seconds"]
            for phase in ("text_encoding", "vae_encode", "transformer", "vae_decode")
        }
        phases["other"] = max(result["wall_s"] - sum(phases.values()), 0.0)
        rows.append((result["name"], phases))
    return rows


def markdown_table(rows: list[tuple[str, dict[str, float]]], unit: str) -> str:
    categories = list(dict.fromkeys(category for _, values in rows for category in values))
    lines = [
        "| " + " | ".join(["", *categories, "total"]) + " |",
        "|" + "---|" * (len(categories) + 2),
    ]
    for label, values in rows:
        total = sum(values.values())
        cells = [f"{values.get(c, 0):.3g} ({100 * values.get(c, 0) / total:.0f}%)" for c in categories]
        lines.append("| " + " | ".join([label, *cells, f"{total:.3g} {unit}"]) + " |")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", choices=sorted(PRESETS), default="sd35-medium")
    parser.add_argument("--resolution", type=int, default=1024, help="output image side in pixels")
    parser.add_argument("--batch", type=int, default=2, help="2 = one image with classifier-free guidance")
    parser.add_argument("--text-tokens", type=int, default=154)
    parser.add_argument("--tile", type=int, default=512, help="pipeline tile side in pixels")
    parser.add_argument("--pipeline-results", type=Path, default=None, help="plot measured phase times of this JSON")
    parser.add_argument("--svg", type=Path, default=None, help="write the chart here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.pipeline_results:
        rows, unit, title = time_rows(args.pipeline_results), "s", "Pipeline wall time by phase (measured)"
    else:
        rows = flop_rows(PRESETS[args.preset], args.resolution, args.batch, args.text_tokens, args.tile)
        unit = "TFLOP"
        title = f"TFLOP per transformer forward ({args.preset}, batch {args.batch}, {args.text_tokens} text tokens)"
    print(markdown_table(rows, unit))
    if args.svg:
        args.svg.parent.mkdir(parents=True, exist_ok=True)
        args.svg.write_text(svg_stacked_bars(rows, unit, title))
        print(f"wrote {args.svg}")


if __name__ == "__main__":
    main()
