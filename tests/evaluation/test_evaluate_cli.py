# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-evaluate`: exit codes, the checks before any metric loads, reports, on the real pyiqa where needed."""

import csv
import importlib.util
import json
from pathlib import Path

import numpy as np
import PIL.Image
import pytest
import torch

from diffusers_dit4sr.cli.evaluate import build_parser, main

needs_pyiqa = pytest.mark.skipif(
    importlib.util.find_spec("pyiqa") is None,
    reason="needs pyiqa (pip install 'diffusers-dit4sr[eval]'; CI runs these in its evaluation environment)",
)


def write_image(path: Path, size: tuple[int, int] = (40, 32), seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels).save(path)
    return path


@pytest.fixture
def folders(tmp_path) -> tuple[Path, Path]:
    """Results named like dit4sr-upscale's outputs of RealSR v3 inputs, references like its HR files."""
    for index, stem in enumerate(["Canon_001", "Nikon_026"]):
        write_image(tmp_path / "results" / f"{stem}_LR4.png", seed=index)
        write_image(tmp_path / "gt" / f"{stem}_HR.png", seed=10 + index)
    return tmp_path / "results", tmp_path / "gt"


@pytest.fixture
def no_metric(monkeypatch):
    if importlib.util.find_spec("pyiqa") is not None:
        import pyiqa

        monkeypatch.setattr(pyiqa, "create_metric", lambda *args, **kwargs: pytest.fail("a metric was created"))


def one_error_line(capsys) -> str:
    captured = capsys.readouterr()
    lines = [line for line in captured.err.splitlines() if line.startswith("dit4sr-evaluate: error:")]
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    return lines[0]


def test_help_lists_the_options_and_exit_codes(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--reference", "--benchmark", "--metrics", "--weights", "--crop-border", "--batch-size", "--csv"):
        assert option in text
    assert "Exit codes: 0 all metrics measured" in text and "clipiqa+_vitL14_512" in text


@pytest.mark.parametrize(
    "args, message",
    [
        (["--batch-size", "0"], "must be a positive integer"),
        (["--weights", "musiq"], "must be METRIC=PATH"),
        (["--metrics", "psnr,,ssim"], "must be comma-separated metric names"),
        (["--benchmark", "div2k"], "invalid choice: 'div2k'"),
    ],
)
def test_bad_options_exit_2(folders, args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([str(folders[0]), *args])
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


@needs_pyiqa
def test_usage_errors_exit_2_with_one_line_before_any_metric_loads(folders, tmp_path, capsys, no_metric):
    results, gt = folders
    write_image(tmp_path / "gt-small" / "Canon_001_HR.png", size=(8, 8))
    write_image(tmp_path / "gt-small" / "Nikon_026_HR.png")
    cases = [
        ([str(tmp_path / "missing")], "no such file or folder"),
        ([str(results), "--reference", str(tmp_path / "gt-small"), "--metrics", "psnr"], "is 40x32 but its reference"),
        (
            [str(results / "Canon_001_LR4.png"), "--reference", str(gt), "--metrics", "psnr"],
            "no result for the references",
        ),
        ([str(results), "--metrics", "lpips"], "metric 'lpips' compares with references"),
        ([str(results), "--metrics", "musiqq"], "unknown pyiqa metric 'musiqq'"),
        ([str(results), "--metrics", "musiq", "--weights", "niqe=x.pth"], "'niqe' is not among the metrics (musiq)"),
        ([str(results), "--metrics", "musiq", "--weights", f"musiq={tmp_path / 'no.pth'}"], "no such file"),
        ([str(results), "--metrics", "musiq", "--output", str(tmp_path / "no" / "r.json")], "cannot write"),
    ]
    if not torch.cuda.is_available():
        cases.append(([str(results), "--metrics", "musiq", "--device", "cuda"], "CUDA is not available"))
    for args, message in cases:
        assert main(args) == 2, args
        assert message in one_error_line(capsys), args


@needs_pyiqa
def test_a_run_prints_the_table_and_writes_the_reports(folders, tmp_path, capsys):
    results, gt = folders
    args = [str(results), "--reference", str(gt), "--metrics", "psnr,ssim", "--benchmark", "realsr", "--quiet"]

    assert main([*args, "--output", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")]) == 0

    out = capsys.readouterr().out
    assert out.startswith("2 images\n") and "| `psnr` | higher |" in out and "| `ssim` | higher |" in out
    assert "| `lpips` | lower | not measured | 0.319 | - |" in out and "Table 1" in out
    data = json.loads((tmp_path / "r.json").read_text(encoding="utf-8"))
    assert list(data["metrics"]) == ["psnr", "ssim"] and data["benchmark"]["name"] == "realsr"
    psnr = data["metrics"]["psnr"]
    assert psnr["pyiqa_name"] == "psnr" and psnr["lower_better"] is False
    assert list(psnr["per_image"]) == [str(results / "Canon_001_LR4.png"), str(results / "Nikon_026_LR4.png")]
    assert psnr["mean"] == pytest.approx(np.mean(list(psnr["per_image"].values())))
    rows = list(csv.DictReader((tmp_path / "r.csv").read_text(encoding="utf-8").splitlines()))
    assert [row["reference"] for row in rows] == [str(gt / "Canon_001_HR.png"), str(gt / "Nikon_026_HR.png")]
    assert float(rows[1]["ssim"]) == pytest.approx(data["metrics"]["ssim"]["per_image"][rows[1]["result"]])


@needs_pyiqa
def test_a_metric_without_weights_is_one_line_and_the_others_still_run(folders, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr("pyiqa.utils.download_util.DEFAULT_CACHE_DIR", str(tmp_path / "hub" / "pyiqa"))
    results, gt = folders

    assert main([str(results), "--reference", str(gt), "--metrics", "musiq,psnr", "--quiet"]) == 1

    captured = capsys.readouterr()
    assert "| `psnr` | higher |" in captured.out and "`musiq`" not in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("dit4sr-evaluate: error:")]
    assert len(errors) == 1 and "metric 'musiq' needs" in errors[0] and "musiq_koniq_ckpt-e95806b9.pth" in errors[0]
    assert "or pass a local file (--weights)" in errors[0]


def test_the_parser_defaults():
    args = build_parser().parse_args(["out"])
    assert (args.metrics, args.batch_size, args.crop_border, args.device, args.weights) == (None, 1, 0, "auto", [])
