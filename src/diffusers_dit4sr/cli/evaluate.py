# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-evaluate`: image quality of super-resolution results with pyiqa, as the DiT4SR paper measured it.

The command line around `diffusers_dit4sr.evaluation`: it finds the images (files, folders, globs, as
`dit4sr-upscale`), checks everything before any metric model loads (exit code 2 with one line), shows a progress
bar per metric, prints a Markdown table and writes the JSON and CSV reports. A metric that cannot be created (its
weights cannot be downloaded, say) is reported in one line and the others still run (exit code 1). The evaluation
module (torch, pyiqa) is imported after parsing, so that `--help` needs neither. See `docs/evaluation.md`.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..constants import DEFAULT_EVALUATION_METRICS, EVALUATION_BENCHMARKS, EXIT_FAILED, EXIT_OK, EXIT_USAGE
from .main import UsageError
from .messages import CommandLineTerms

PROG = "dit4sr-evaluate"
PAPER_METRICS_HELP = ", ".join(
    f"{name} (with --reference)" if name == "lpips" else name for name in DEFAULT_EVALUATION_METRICS
)


def build_parser() -> argparse.ArgumentParser:
    """The command line of `dit4sr-evaluate`."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Measure super-resolution results with pyiqa metrics, as the DiT4SR paper did; with --benchmark, beside "
            "the paper's Table 1. Needs pyiqa: pip install 'diffusers-dit4sr[eval]'."
        ),
        epilog=(
            "Exit codes: 0 all metrics measured, 1 some metric could not be created or scored, 2 bad command line. "
            "More: docs/evaluation.md."
        ),
    )
    parser.add_argument("results", nargs="+", metavar="RESULT", help="result images: files, folders or glob patterns")
    parser.add_argument(
        "--reference",
        metavar="GT",
        help=(
            "ground-truth images (a folder, file or glob), paired with the results by name: the same name, or the "
            "same name without a suffix such as _LR4, _HR or _x4; needed by lpips, psnr, ssim, dists, fid"
        ),
    )
    parser.add_argument(
        "--benchmark",
        choices=EVALUATION_BENCHMARKS,
        help="print the paper's Table 1 numbers for DiT4SR on this set beside the results, with the difference",
    )
    parser.add_argument(
        "--metrics",
        metavar="NAME,...",
        type=_metric_list,
        help=(
            f"exact pyiqa metric names, comma-separated (default: the paper's {PAPER_METRICS_HELP}); also e.g. psnr, "
            "ssim (Y channel, BT.601), dists, niqe, fid (folder against folder), musiq-spaq, maniqa"
        ),
    )
    parser.add_argument(
        "--weights",
        metavar="METRIC=PATH",
        action="append",
        type=_weights_option,
        default=[],
        help="load METRIC's weights from a local file (pyiqa's pretrained_model_path); may be repeated",
    )
    parser.add_argument(
        "--crop-border",
        metavar="PX",
        type=_non_negative_int,
        default=0,
        help="pixels cut off each border for psnr and ssim (default: %(default)s)",
    )
    parser.add_argument(
        "--device", default="auto", help="'auto' (cuda, else mps, else cpu) or a torch device (default: auto)"
    )
    parser.add_argument(
        "--batch-size",
        metavar="N",
        type=_positive_int,
        default=1,
        help="images scored together, where they have one size (default: %(default)s); the values do not change",
    )
    parser.add_argument("--output", metavar="JSON", type=Path, help="write the report as JSON to this file")
    parser.add_argument("--csv", metavar="CSV", type=Path, help="write one row per image to this CSV file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser


def _metric_list(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"must be comma-separated metric names, got {text!r}")
    return names


def _weights_option(text: str) -> tuple[str, Path]:
    metric, separator, path = text.partition("=")
    if not separator or not metric.strip() or not path:
        raise argparse.ArgumentTypeError(f"must be METRIC=PATH, got {text!r}")
    return metric.strip(), Path(path)


def _positive_int(text: str) -> int:
    value = _int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _non_negative_int(text: str) -> int:
    value = _int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def _int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def main(argv: list[str] | None = None) -> int:
    """Runs `dit4sr-evaluate` with `argv` (default: the process arguments) and returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    terms = CommandLineTerms(parser)
    try:
        from .. import evaluation
    except ImportError as error:
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_FAILED

    try:
        plan = _plan(args, evaluation)
    except ImportError as error:  # pyiqa is missing
        print(f"{PROG}: error: {error}", file=sys.stderr)
        return EXIT_FAILED
    except (UsageError, ValueError, TypeError) as error:
        parser.print_usage(sys.stderr)
        print(f"{PROG}: error: {terms(str(error))}", file=sys.stderr)
        return EXIT_USAGE
    return _run(args, plan, evaluation, terms)


def _plan(args: argparse.Namespace, evaluation) -> dict:
    """Everything checked before any metric model loads; the arguments of `evaluate` for each metric."""
    from ..devices import resolve_device
    from ..upscaling.jobs import find_images

    results = find_images(args.results)  # a PlanError (a ValueError) when nothing is found
    references = find_images([args.reference]) if args.reference is not None else None
    with_references = references is not None
    metrics = args.metrics or [name for name in evaluation.DEFAULT_METRICS if with_references or name != "lpips"]
    evaluation.check_metrics(metrics, with_references=with_references)
    metric_options: dict[str, dict] = {}
    for metric, path in args.weights:
        if metric not in metrics:
            raise UsageError(f"--weights {metric}={path}: {metric!r} is not among the metrics ({', '.join(metrics)})")
        if not path.is_file():
            raise UsageError(f"--weights {metric}={path}: no such file")
        metric_options[metric] = {"pretrained_model_path": os.fspath(path)}
    for path in (args.output, args.csv):
        if path is not None and (path.is_dir() or not path.parent.resolve().is_dir()):
            raise UsageError(f"cannot write {path}: not a file in an existing folder")
    device = resolve_device(args.device, option="--device")
    pairs = evaluation.pair_images(results, references)
    evaluation.check_image_pairs(pairs)
    return {
        "results": results,
        "references": references,
        "metrics": metrics,
        "metric_options": metric_options,
        "device": device,
    }


def _run(args: argparse.Namespace, plan: dict, evaluation, terms: CommandLineTerms) -> int:
    from tqdm import tqdm

    scores, pairs, failed = [], None, False
    for metric in plan["metrics"]:
        with tqdm(desc=metric, total=len(plan["results"]), unit="image", disable=args.quiet, file=sys.stderr) as bar:

            def progress(name: str, done: int, total: int, bar=bar) -> None:
                bar.update(done - bar.n)

            try:
                report = evaluation.evaluate(
                    plan["results"],
                    plan["references"],
                    metrics=[metric],
                    device=plan["device"],
                    batch_size=args.batch_size,
                    crop_border=args.crop_border,
                    metric_options={k: v for k, v in plan["metric_options"].items() if k == metric},
                    progress=progress,
                )
            except evaluation.MetricUnavailableError as error:
                bar.close()
                print(f"{PROG}: error: {terms(str(error))}", file=sys.stderr)
                failed = True
                continue
        pairs = report.pairs
        scores.extend(report.scores)
    if not scores:
        return EXIT_FAILED
    report = evaluation.EvaluationReport(pairs, tuple(scores))
    print(report.to_markdown(args.benchmark), end="")
    try:
        if args.output is not None:
            report.save_json(args.output, args.benchmark)
        if args.csv is not None:
            report.save_csv(args.csv)
    except OSError as error:
        print(f"{PROG}: error: cannot write the report: {error}", file=sys.stderr)
        return EXIT_FAILED
    return EXIT_FAILED if failed else EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
