# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Image quality of super-resolution results, measured as the DiT4SR paper measured it: with pyiqa (IQA-PyTorch).

`evaluate` pairs results with references by name, checks everything it can before any metric model loads, then
scores the images with one pyiqa metric at a time (each freed before the next) and returns an `EvaluationReport`
(Markdown, JSON, CSV). Every metric is named by its exact pyiqa name, because the variants differ: pyiqa's `maniqa`
is the KonIQ model, `maniqa-pipal` the one the paper's numbers match (`docs/evaluation.md` gives the evidence).
pyiqa is an optional dependency (`pip install diffusers-dit4sr[eval]`, PolyForm Noncommercial licence); it is
imported only when metrics are created.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import gc
import io
import json
import math
import os
import pickle
import re
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import PIL.Image
import torch

from .constants import DEFAULT_EVALUATION_METRICS, EVALUATION_BENCHMARKS
from .devices import resolve_device
from .errors import one_line
from .file_utils import atomic_write_path

__all__ = [
    "BENCHMARKS",
    "BENCHMARK_IMAGE_COUNTS",
    "DEFAULT_METRICS",
    "PAPER_RESULTS",
    "PAPER_SOURCE",
    "EvaluationReport",
    "ImagePair",
    "MetricScores",
    "MetricUnavailableError",
    "check_image_pairs",
    "check_metrics",
    "evaluate",
    "pair_images",
    "reference_key",
]

DEFAULT_METRICS = DEFAULT_EVALUATION_METRICS
"""The paper's five metrics (Table 1), as pyiqa names; `lpips` needs references and is left out without them."""
Y_CHANNEL_METRICS = ("psnr", "ssim")
"""Computed on the Y channel (BT.601, `color_space="ycbcr"`), as OSEDiff's and TSD-SR's evaluation scripts did."""
SET_METRICS = ("fid",)
"""Metrics of a whole folder against another, without per-image values."""

BENCHMARKS = EVALUATION_BENCHMARKS
"""The paper's four x4 test sets."""
BENCHMARK_IMAGE_COUNTS = {"drealsr": 93, "realsr": 100, "reallr200": 200, "reallq250": 250}
"""Images in each of the paper's x4 test sets."""
PAPER_SOURCE = "Duan et al., DiT4SR (ICCV 2025), Table 1, row DiT4SR (dit4sr_q, 40 steps, guidance 8, LLaVA captions)"
PAPER_RESULTS: dict[str, dict[str, float]] = {
    "drealsr": {"lpips": 0.365, "musiq": 64.950, "maniqa-pipal": 0.627, "clipiqa+_vitL14_512": 0.548, "liqe": 3.964},
    "realsr": {"lpips": 0.319, "musiq": 68.073, "maniqa-pipal": 0.661, "clipiqa+_vitL14_512": 0.550, "liqe": 3.977},
    "reallr200": {"musiq": 70.469, "maniqa-pipal": 0.645, "clipiqa+_vitL14_512": 0.588, "liqe": 4.331},
    "reallq250": {"musiq": 71.832, "maniqa-pipal": 0.632, "clipiqa+_vitL14_512": 0.578, "liqe": 4.356},
}
"""The paper's numbers for DiT4SR per set, keyed by the pyiqa metric they correspond to (`docs/evaluation.md`)."""

_DOWNLOAD = re.compile(r'Downloading: "(\S+)" to (\S+)')
"""How pyiqa (`load_file_from_url`) and torch.hub announce a download: the URL and the file it is saved as."""
_URL = re.compile(r"https?://[^\s'\"<>)]+")
_ROLE_SUFFIX = re.compile(r"(?:[_-](?:lr|hr|lq|hq|gt|sr)\d*|[_-]?x\d+)$", re.IGNORECASE)
_LISTED_NAMES = 5
_MESSAGE_LENGTH = 300
"""Longest library message quoted in a metric's error (pyiqa and its dependencies can raise pages)."""
Progress = Callable[[str, int, int], None]
"""Called as `progress(metric, images_done, images_total)` after every batch."""


class MetricUnavailableError(RuntimeError):
    """A metric could not be created: its weights cannot be downloaded or loaded, or a module it needs is missing.

    The message is one line naming the metric and, for weights, the file and where pyiqa looks for it.
    """


@dataclass(frozen=True)
class ImagePair:
    """One result and the reference (ground truth) it is compared with, if any."""

    result: Path
    reference: Path | None = None


@dataclass(frozen=True)
class MetricScores:
    """One metric over the evaluated images.

    Attributes:
        metric: the exact pyiqa name.
        lower_better: whether a lower value means a better image (LPIPS, NIQE, FID, ...).
        mean: the mean over the images (for set metrics such as FID, the one value).
        per_image: one value per `EvaluationReport.pairs` entry, in order; `None` for set metrics.
        options: the options the pyiqa metric was created with, weight paths included.
    """

    metric: str
    lower_better: bool
    mean: float
    per_image: tuple[float, ...] | None
    options: Mapping[str, Any]


@dataclass(frozen=True)
class EvaluationReport:
    """What `evaluate` measured: the image pairs and, per metric, its scores."""

    pairs: tuple[ImagePair, ...]
    scores: tuple[MetricScores, ...]

    def __getitem__(self, metric: str) -> MetricScores:
        for scores in self.scores:
            if scores.metric == metric:
                return scores
        raise KeyError(f"{metric!r} was not measured; measured: {', '.join(s.metric for s in self.scores)}")

    def to_dict(self, benchmark: str | None = None) -> dict[str, Any]:
        """A JSON-ready summary: per metric its pyiqa name, direction, mean and every image's value."""
        _check_benchmark(benchmark)
        paper = PAPER_RESULTS.get(benchmark, {}) if benchmark else {}
        metrics = {}
        for scores in self.scores:
            entry: dict[str, Any] = {
                "pyiqa_name": scores.metric,
                "lower_better": scores.lower_better,
                "mean": scores.mean,
                "options": {key: _jsonable(value) for key, value in scores.options.items()},
            }
            if scores.per_image is not None:
                entry["per_image"] = {
                    str(pair.result): value for pair, value in zip(self.pairs, scores.per_image, strict=True)
                }
            if scores.metric in paper:
                entry["paper"] = paper[scores.metric]
                entry["difference"] = scores.mean - paper[scores.metric]
            metrics[scores.metric] = entry
        summary: dict[str, Any] = {"images": len(self.pairs), "metrics": metrics}
        if benchmark:
            summary["benchmark"] = {"name": benchmark, "images": BENCHMARK_IMAGE_COUNTS[benchmark]}
            summary["benchmark"]["source"] = PAPER_SOURCE
        summary["pairs"] = [
            {"result": str(pair.result), "reference": None if pair.reference is None else str(pair.reference)}
            for pair in self.pairs
        ]
        return summary

    def to_markdown(self, benchmark: str | None = None) -> str:
        """A Markdown table of the means; with `benchmark`, the paper's numbers beside them and the difference."""
        _check_benchmark(benchmark)
        paper = PAPER_RESULTS.get(benchmark, {}) if benchmark else {}
        header = "| metric (pyiqa name) | better | mean |"
        rule = "| --- | --- | ---: |"
        if benchmark:
            header += " paper | difference |"
            rule += " ---: | ---: |"
        lines = [header, rule]
        measured = {scores.metric for scores in self.scores}
        for scores in self.scores:
            line = f"| `{scores.metric}` | {'lower' if scores.lower_better else 'higher'} | {scores.mean:.4f} |"
            if benchmark:
                if scores.metric in paper:
                    line += f" {paper[scores.metric]:.3f} | {scores.mean - paper[scores.metric]:+.4f} |"
                else:
                    line += " - | - |"
            lines.append(line)
        for metric, value in paper.items():
            if metric not in measured:
                lines.append(
                    f"| `{metric}` | {'lower' if metric == 'lpips' else 'higher'} | not measured | {value:.3f} | - |"
                )
        text = f"{len(self.pairs)} images\n\n" + "\n".join(lines) + "\n"
        if benchmark:
            expected = BENCHMARK_IMAGE_COUNTS[benchmark]
            text += f"\nPaper: {PAPER_SOURCE}; set {benchmark}, {expected} images.\n"
            if len(self.pairs) != expected:
                text += f"Note: {len(self.pairs)} images evaluated, the paper's {benchmark} has {expected}.\n"
        return text

    def to_csv(self) -> str:
        """One row per image: the result, its reference, and each per-image metric's value."""
        per_image = [scores for scores in self.scores if scores.per_image is not None]
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(["result", "reference", *(scores.metric for scores in per_image)])
        for index, pair in enumerate(self.pairs):
            reference = "" if pair.reference is None else str(pair.reference)
            writer.writerow([str(pair.result), reference, *(repr(scores.per_image[index]) for scores in per_image)])
        return buffer.getvalue()

    def save_json(self, path: str | os.PathLike, benchmark: str | None = None) -> None:
        """Writes `to_dict(benchmark)` to `path` atomically."""
        text = json.dumps(self.to_dict(benchmark), indent=2) + "\n"
        with atomic_write_path(path) as temporary:
            temporary.write_text(text, encoding="utf-8")

    def save_csv(self, path: str | os.PathLike) -> None:
        """Writes `to_csv()` to `path` atomically."""
        with atomic_write_path(path) as temporary:
            temporary.write_text(self.to_csv(), encoding="utf-8", newline="")


def reference_key(stem: str) -> str:
    """The name a result and its reference share once a trailing role or scale tag is dropped.

    `Canon_001_LR4` and `Canon_001_HR` (RealSR v3), `Canon_10_x1` and `Canon_10_x4` (DRealSR), `0801x4` and `0801`
    (DIV2K) share their key. Tags: `_LR`, `_HR`, `_LQ`, `_HQ`, `_GT`, `_SR` (any case, `-` too, digits allowed),
    and `_x<N>` / `x<N>`.
    """
    return _ROLE_SUFFIX.sub("", stem)


def pair_images(
    results: Sequence[str | os.PathLike], references: Sequence[str | os.PathLike] | None
) -> list[ImagePair]:
    """Pairs every result with its reference by file name, in the order of `results`.

    A result pairs with the reference of the same stem (extension ignored): the StableSR / SeeSR test sets name LR
    and HR files alike (`Canon_001_LR4.png`, `Canon_10_x1.png` in both folders), and `dit4sr-upscale` keeps the
    LR's stem. Results and references left over are then paired by `reference_key` (the raw RealSR and DRealSR
    names, `Nikon_026_LR4` with `Nikon_026_HR`).

    Args:
        results: The result images.
        references: The ground-truth images, or `None` (every pair's `reference` is then `None`).

    Raises:
        ValueError: No result, a result without a reference, a reference without a result, or a name that two
            files share on one side; the message names the files.
    """
    result_paths = [Path(path) for path in results]
    if not result_paths:
        raise ValueError("results must name at least one image")
    if references is None:
        return [ImagePair(path) for path in result_paths]
    reference_paths = [Path(path) for path in references]
    if not reference_paths:
        raise ValueError("references must name at least one image, or be None")

    by_stem = _unique_by(reference_paths, lambda path: path.stem, "references")
    _unique_by(result_paths, lambda path: path.stem, "results")
    matches: dict[Path, Path] = {path: by_stem[path.stem] for path in result_paths if path.stem in by_stem}
    left_results = [path for path in result_paths if path not in matches]
    taken = set(matches.values())
    left_references = [path for path in reference_paths if path not in taken]
    if left_results and left_references:
        by_key = _unique_by(left_references, lambda path: reference_key(path.stem), "references")
        _unique_by(left_results, lambda path: reference_key(path.stem), "results")
        for path in left_results:
            if reference_key(path.stem) in by_key:
                matches[path] = by_key[reference_key(path.stem)]
        left_results = [path for path in result_paths if path not in matches]
        taken = set(matches.values())
        left_references = [path for path in reference_paths if path not in taken]
    if left_results:
        raise ValueError(
            f"no reference for {_list(left_results)} (a reference has the same name, or the same name without a "
            "suffix such as _LR4, _HR or _x4)"
        )
    if left_references:
        raise ValueError(f"no result for the references {_list(left_references)}")
    return [ImagePair(path, matches[path]) for path in result_paths]


def check_metrics(metrics: Sequence[str], *, with_references: bool) -> dict[str, tuple[bool, bool]]:
    """Checks metric names against pyiqa's list. Imports pyiqa (no model is created).

    Args:
        metrics: Exact pyiqa metric names.
        with_references: Whether references are given (full-reference metrics need them; `fid` counts as one).

    Returns:
        `{name: (full_reference, lower_better)}`, in the order of `metrics`.

    Raises:
        ValueError: An unknown name (listing close ones), a duplicate, or a full-reference metric without
            references.
    """
    if isinstance(metrics, str) or not metrics:
        raise ValueError(f"metrics must be a non-empty sequence of pyiqa metric names, got {metrics!r}")
    configs = _pyiqa_configs()
    known = sorted(configs)
    checked = {}
    for name in metrics:
        if name in checked:
            raise ValueError(f"metric {name!r} is named twice")
        if name not in configs:
            close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
            hint = f"; close: {', '.join(close)}" if close else ""
            raise ValueError(f"unknown pyiqa metric {name!r}{hint} (all: pyiqa.list_models())")
        full_reference = configs[name].get("metric_mode") == "FR" or name in SET_METRICS
        if full_reference and not with_references:
            raise ValueError(f"metric {name!r} compares with references (ground truth); pass references")
        checked[name] = (full_reference, bool(configs[name].get("lower_better", False)))
    return checked


def evaluate(
    results: Sequence[str | os.PathLike],
    references: Sequence[str | os.PathLike] | None = None,
    *,
    metrics: Sequence[str] | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 1,
    crop_border: int = 0,
    metric_options: Mapping[str, Mapping[str, Any]] | None = None,
    progress: Progress | None = None,
) -> EvaluationReport:
    """Scores result images with pyiqa metrics, one metric model at a time.

    Args:
        results: the image files to score.
        references: ground-truth files, paired with `results` by name (`pair_images`); needed by full-reference
            metrics (LPIPS, PSNR, ...). Each pair must have one size.
        metrics: exact pyiqa names (default: `DEFAULT_METRICS`, without `lpips` when there are no references).
            `psnr` and `ssim` are computed on the Y channel (BT.601), in float64; `fid` compares the two sets as a
            whole.
        device: where the metric models run (default: CUDA, else MPS, else the CPU: `devices.resolve_device`).
        batch_size: images scored together (only images of one size are batched); the values do not depend on it.
        crop_border: pixels cut from each border before `psnr` and `ssim`, as SR papers often do (default 0).
        metric_options: per metric, keyword arguments for `pyiqa.create_metric`, e.g.
            `{"musiq": {"pretrained_model_path": "musiq_koniq.pth"}}` to load weights from a local file.
        progress: called as `progress(metric, images_done, images_total)` after every batch.

    Everything is checked before the first metric model loads: metric names, options, pairs, that each image can
    be opened and that a result and its reference have one size (`ValueError` / `TypeError` naming the argument or
    the files). A metric whose weights cannot be obtained raises `MetricUnavailableError` (one line).
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if isinstance(crop_border, bool) or not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f"crop_border must be an int >= 0, got {crop_border!r}")
    if isinstance(results, (str, os.PathLike)) or (
        references is not None and isinstance(references, (str, os.PathLike))
    ):
        raise TypeError("results and references must be sequences of image paths, not one path")
    pairs = pair_images(results, references)
    with_references = references is not None
    if metrics is None:
        metrics = [name for name in DEFAULT_METRICS if with_references or name != "lpips"]
    kinds = check_metrics(list(metrics), with_references=with_references)
    metric_options = dict(metric_options or {})
    for name, options in metric_options.items():
        if name not in kinds:
            raise ValueError(f"metric_options names {name!r}, which is not among the metrics {', '.join(kinds)}")
        if not isinstance(options, Mapping):
            raise TypeError(f"metric_options[{name!r}] must be a mapping of keyword arguments, got {options!r}")
    sizes = check_image_pairs(pairs)
    device = resolve_device(device)

    scores = []
    for name, (full_reference, lower_better) in kinds.items():
        options = dict(metric_options.get(name, {}))
        if name in Y_CHANNEL_METRICS:
            options = {"test_y_channel": True, "color_space": "ycbcr", "crop_border": crop_border, **options}
        metric = _create_metric(name, device, options)
        try:
            if name in SET_METRICS:
                value = _score_set(metric, pairs)
                scores.append(MetricScores(name, lower_better, value, None, options))
                if progress is not None:
                    progress(name, len(pairs), len(pairs))
                continue
            values = _score_images(metric, name, pairs, sizes, full_reference, device, batch_size, progress)
        finally:
            del metric
            _free_memory(device)
        scores.append(MetricScores(name, lower_better, float(np.mean(values)), tuple(values), options))
    return EvaluationReport(tuple(pairs), tuple(scores))


# --- Checks ------------------------------------------------------------------------------------------------------


def _check_benchmark(benchmark: str | None) -> None:
    if benchmark is not None and benchmark not in BENCHMARKS:
        raise ValueError(f"benchmark must be one of {', '.join(BENCHMARKS)}, got {benchmark!r}")


def _unique_by(paths: list[Path], key: Callable[[Path], str], side: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in paths:
        other = found.setdefault(key(path), path)
        if other != path:
            raise ValueError(f"the {side} {other} and {path} have the same name {key(path)!r}; pass one of them")
    return found


def _list(paths: Sequence[Path]) -> str:
    shown = ", ".join(str(path) for path in paths[:_LISTED_NAMES])
    more = len(paths) - _LISTED_NAMES
    return f"{shown} and {more} more" if more > 0 else shown


def check_image_pairs(pairs: Sequence[ImagePair]) -> list[tuple[int, int]]:
    """Checks that each image opens and each result has the size of its reference, from the file headers only.

    Args:
        pairs: The pairs of `pair_images`.

    Returns:
        The results' sizes (width, height), in order.

    Raises:
        ValueError: An image that does not open, or a result whose size differs from its reference's (naming both).
    """
    sizes = []
    for pair in pairs:
        size = _image_size(pair.result)
        if pair.reference is not None:
            reference_size = _image_size(pair.reference)
            if reference_size != size:
                raise ValueError(
                    f"{pair.result} is {size[0]}x{size[1]} but its reference {pair.reference} is "
                    f"{reference_size[0]}x{reference_size[1]}; full-reference metrics need one size"
                )
        sizes.append(size)
    return sizes


def _image_size(path: Path) -> tuple[int, int]:
    try:
        with PIL.Image.open(path) as image:
            return image.size
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as error:
        raise ValueError(f"cannot read the image {path}: {error}") from error


def _pyiqa_configs() -> dict[str, dict]:
    try:
        from pyiqa.default_model_configs import DEFAULT_CONFIGS
    except ImportError as error:
        raise ImportError(
            f"evaluation needs pyiqa: pip install 'diffusers-dit4sr[eval]' (it could not be imported: {error})"
        ) from error
    return DEFAULT_CONFIGS


# --- Metrics -----------------------------------------------------------------------------------------------------


def _create_metric(name: str, device: torch.device, options: dict[str, Any]) -> torch.nn.Module:
    """`pyiqa.create_metric`, its failures turned into one `MetricUnavailableError` line.

    pyiqa and torchvision announce each download (`Downloading: "URL" to PATH`) on stdout or stderr; the messages
    still show, and the last one names the file a failed download was for and where it was to be saved.
    """
    import pyiqa

    stdout, stderr = _Recorder(sys.stdout), _Recorder(sys.stderr)
    try:
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            return pyiqa.create_metric(name, device=device, **options)
    except ImportError as error:
        raise MetricUnavailableError(
            f"metric {name!r} cannot be created: pyiqa needs the module {error.name or error} "
            f"({one_line(error, max_length=_MESSAGE_LENGTH)}); install it in this environment"
        ) from error
    except (OSError, RuntimeError, ValueError, pickle.UnpicklingError) as error:
        downloads = _DOWNLOAD.findall(stdout.text + stderr.text)
        raise MetricUnavailableError(_describe_unavailable(name, error, options, downloads)) from error


class _Recorder(io.TextIOBase):
    """A text stream that writes through to `stream` and keeps a copy of what was written."""

    def __init__(self, stream: Any) -> None:
        self.stream, self.parts = stream, []

    def write(self, text: str) -> int:
        self.parts.append(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    @property
    def text(self) -> str:
        return "".join(self.parts)


def _describe_unavailable(
    name: str, error: BaseException, options: Mapping[str, Any], downloads: list[tuple[str, str]]
) -> str:
    local = options.get("pretrained_model_path")
    if local is not None and not downloads:
        return f"metric {name!r} cannot load its weights from {local}: {one_line(error, max_length=_MESSAGE_LENGTH)}"
    if downloads:  # pyiqa's or torchvision's own download
        url, path = downloads[-1]
        where = f"it looks for {Path(path).name} in {Path(path).parent}; put the file there"
    else:
        url = _find_url(error)
        where = "it looks in the Hugging Face cache; download it where there is network, or copy the cache"
        if url is None:  # e.g. OpenAI's CLIP package, which downloads without naming the file
            return (
                f"metric {name!r} cannot be created: {one_line(error, max_length=_MESSAGE_LENGTH)}; pyiqa metrics download their weights on "
                f"first use into {Path(torch.hub.get_dir()) / 'pyiqa'}, {Path(torch.hub.get_dir()) / 'checkpoints'}, "
                f"{Path.home() / '.cache' / 'clip'} (CLIP) or the Hugging Face cache: run it once where there is "
                "network, or copy those folders"
            )
    return (
        f"metric {name!r} needs {url}, which cannot be downloaded here ({one_line(error, max_length=_MESSAGE_LENGTH)}); {where}"
        f"{', or pass a local file (`pretrained_model_path`)' if 'pretrained_model_path' not in options else ''}"
    )


def _find_url(error: BaseException | None) -> str | None:
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        match = _URL.search(str(error))
        if match:
            return match.group(0).rstrip(".,;:")
        error = error.__cause__ or error.__context__
    return None


def _score_images(
    metric: torch.nn.Module,
    name: str,
    pairs: list[ImagePair],
    sizes: list[tuple[int, int]],
    full_reference: bool,
    device: torch.device,
    batch_size: int,
    progress: Progress | None,
) -> list[float]:
    # PSNR and SSIM in float64, so that they are exact to 1e-6 whatever the image; the networks in float32.
    dtype = torch.float64 if name in Y_CHANNEL_METRICS else torch.float32
    values: list[float] = [math.nan] * len(pairs)
    done = 0
    for batch in _batches(sizes, batch_size):
        images = torch.stack([_read_tensor(pairs[index].result) for index in batch]).to(device, dtype)
        with torch.no_grad():
            if full_reference:
                references = torch.stack([_read_tensor(pairs[index].reference) for index in batch])
                references = references.to(device, dtype)
                batch_scores = metric(images, references)
            else:
                batch_scores = metric(images)
        batch_scores = batch_scores.detach().double().reshape(len(batch), -1).mean(dim=1).cpu().tolist()
        for index, value in zip(batch, batch_scores, strict=True):
            values[index] = float(value)
        done += len(batch)
        if progress is not None:
            progress(name, done, len(pairs))
    return values


def _batches(sizes: list[tuple[int, int]], batch_size: int) -> Iterator[list[int]]:
    """Indices of images of one size, at most `batch_size` at a time, in order of first appearance."""
    by_size: dict[tuple[int, int], list[int]] = {}
    for index, size in enumerate(sizes):
        by_size.setdefault(size, []).append(index)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            yield indices[start : start + batch_size]


def _read_tensor(path: Path) -> torch.Tensor:
    """An image file as a float RGB tensor (3, H, W) in [0, 1], as pyiqa reads images."""
    with PIL.Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(pixels).permute(2, 0, 1).contiguous()


def _score_set(metric: torch.nn.Module, pairs: list[ImagePair]) -> float:
    """A set metric (FID) of the results against the references, through two folders of links to them."""
    with tempfile.TemporaryDirectory(prefix="dit4sr-evaluate-") as folder:
        results, references = Path(folder, "results"), Path(folder, "references")
        results.mkdir()
        references.mkdir()
        for index, pair in enumerate(pairs):
            _link(pair.result, results / f"{index:06d}{pair.result.suffix.lower()}")
            _link(pair.reference, references / f"{index:06d}{pair.reference.suffix.lower()}")
        with torch.no_grad():
            return float(metric(str(results), str(references)))


def _link(source: Path, target: Path) -> None:
    try:
        target.symlink_to(source.resolve())
    except OSError:  # no symlinks (Windows without the privilege): copy
        target.write_bytes(source.read_bytes())


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _jsonable(value: Any) -> Any:
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
