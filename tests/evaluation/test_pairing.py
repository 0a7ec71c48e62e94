# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Pairing results with references by name, the checks before any metric loads, and the reports (no pyiqa)."""

import csv
import io
import json
import math
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from diffusers_dit4sr.evaluation import (
    BENCHMARK_IMAGE_COUNTS,
    PAPER_RESULTS,
    PAPER_SOURCE,
    EvaluationReport,
    ImagePair,
    MetricScores,
    check_image_pairs,
    pair_images,
    reference_key,
)


def write_image(path: Path, size: tuple[int, int] = (8, 6), seed: int = 0) -> Path:
    pixels = np.random.default_rng(seed).integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    PIL.Image.fromarray(pixels).save(path)
    return path


# Real names from the test sets (StableSR-TestSets / SeeSR / OSEDiff's benchmark folders, RealSR v3, DRealSR).
@pytest.mark.parametrize(
    "stem, key",
    [
        ("Nikon_026_LR4", "Nikon_026"),
        ("Nikon_026_HR", "Nikon_026"),
        ("Canon_001_LR4", "Canon_001"),
        ("Canon_10_x1", "Canon_10"),
        ("Canon_10_x4", "Canon_10"),
        ("DSC_1412_x1", "DSC_1412"),
        ("panasonic_103_x1", "panasonic_103"),
        ("0801x4", "0801"),
        ("0801", "0801"),
        ("005", "005"),
        ("P1140090_x1", "P1140090"),
        ("IMG_107_gt", "IMG_107"),
        ("box", "box"),  # a trailing x without digits is part of the name
    ],
)
def test_reference_key(stem, key):
    assert reference_key(stem) == key


def test_results_pair_with_references_of_the_same_name_first(tmp_path):
    # StableSR-TestSets (as SeeSR and OSEDiff use them): test_LR and test_HR share each file name.
    names = ["Canon_001_LR4.png", "Nikon_026_LR4.png", "Canon_10_x1.png", "sony_1_x1.png"]
    results = [tmp_path / "results" / name for name in names]
    references = [tmp_path / "test_HR" / name for name in reversed(names)]

    pairs = pair_images(results, references)

    assert pairs == [ImagePair(result, tmp_path / "test_HR" / result.name) for result in results]


def test_raw_set_names_pair_by_their_key(tmp_path):
    results = [tmp_path / "out" / name for name in ("Nikon_026_LR4.png", "Canon_10_x1.png", "0801x4.jpg")]
    references = [tmp_path / "gt" / name for name in ("0801.png", "Canon_10_x4.png", "Nikon_026_HR.png")]

    pairs = pair_images(results, references)

    assert [(pair.result.name, pair.reference.name) for pair in pairs] == [
        ("Nikon_026_LR4.png", "Nikon_026_HR.png"),
        ("Canon_10_x1.png", "Canon_10_x4.png"),
        ("0801x4.jpg", "0801.png"),
    ]


def test_an_exact_name_wins_over_a_key(tmp_path):
    results = [tmp_path / "out" / "a_x1.png", tmp_path / "out" / "a_x4.png"]
    references = [tmp_path / "gt" / "a_x4.png", tmp_path / "gt" / "a_x1.png"]
    assert [pair.reference.name for pair in pair_images(results, references)] == ["a_x1.png", "a_x4.png"]


def test_without_references_every_result_stands_alone(tmp_path):
    results = [tmp_path / "001.png", tmp_path / "002.png"]
    assert pair_images(results, None) == [ImagePair(results[0]), ImagePair(results[1])]


@pytest.mark.parametrize(
    "results, references, message",
    [
        (["a.png", "b.png"], ["a.png"], "no reference for {out}/b.png"),
        (["a.png"], ["a.png", "c_HR.png"], "no result for the references {gt}/c_HR.png"),
        (["a.png", "a.jpg"], ["a.png"], "the results {out}/a.png and {out}/a.jpg have the same name 'a'"),
        (["x_LR4.png"], ["x_HR.png", "x_GT.png"], "the references {gt}/x_HR.png and {gt}/x_GT.png have the same name"),
        ([], ["a.png"], "results must name at least one image"),
    ],
)
def test_pairing_errors_name_the_files(tmp_path, results, references, message):
    out, gt = tmp_path / "out", tmp_path / "gt"
    with pytest.raises(ValueError) as error:
        pair_images([out / name for name in results], [gt / name for name in references])
    assert message.format(out=out, gt=gt) in str(error.value)


def test_a_long_list_of_unpaired_files_is_shortened(tmp_path):
    results = [tmp_path / f"{index:03d}.png" for index in range(9)]
    with pytest.raises(ValueError, match=r"005.png and 3 more \(a reference has the same name"):
        pair_images(results, [tmp_path / "gt" / "zzz.png"] + [tmp_path / "gt" / "000.png"])


def test_sizes_are_checked_from_the_headers(tmp_path):
    result = write_image(tmp_path / "out" / "a.png", size=(8, 6))
    same = write_image(tmp_path / "gt" / "a.png", size=(8, 6), seed=1)
    other = write_image(tmp_path / "gt2" / "a.png", size=(6, 8))
    broken = tmp_path / "out" / "b.png"
    broken.write_bytes(b"not an image")

    assert check_image_pairs([ImagePair(result, same)]) == [(8, 6)]
    with pytest.raises(ValueError, match=f"{result} is 8x6 but its reference {other} is 6x8"):
        check_image_pairs([ImagePair(result, other)])
    with pytest.raises(ValueError, match=f"cannot read the image {broken}"):
        check_image_pairs([ImagePair(broken)])


# --- Reports -----------------------------------------------------------------------------------------------------


@pytest.fixture
def report(tmp_path) -> EvaluationReport:
    pairs = (ImagePair(tmp_path / "Canon_001_LR4.png", tmp_path / "gt" / "Canon_001_LR4.png"),) + (
        ImagePair(tmp_path / "Canon_002_LR4.png", tmp_path / "gt" / "Canon_002_LR4.png"),
    )
    return EvaluationReport(
        pairs,
        (
            MetricScores("lpips", True, 0.3, (0.25, 0.35), {}),
            MetricScores("musiq", False, 66.5, (65.0, 68.0), {"pretrained_model_path": "m.pth"}),
            MetricScores("fid", True, 40.0, None, {}),
        ),
    )


def test_json_report_has_every_metric_with_its_name_direction_mean_and_values(report, tmp_path):
    report.save_json(tmp_path / "report.json", benchmark="realsr")
    data = json.loads((tmp_path / "report.json").read_text(encoding="utf-8"))

    assert data["images"] == 2
    assert data["benchmark"] == {"name": "realsr", "images": 100, "source": PAPER_SOURCE}
    lpips = data["metrics"]["lpips"]
    assert lpips["pyiqa_name"] == "lpips" and lpips["lower_better"] is True and lpips["mean"] == 0.3
    assert lpips["per_image"] == {str(tmp_path / "Canon_001_LR4.png"): 0.25, str(tmp_path / "Canon_002_LR4.png"): 0.35}
    assert lpips["paper"] == 0.319 and math.isclose(lpips["difference"], 0.3 - 0.319)
    assert data["metrics"]["musiq"]["lower_better"] is False
    assert data["metrics"]["musiq"]["options"] == {"pretrained_model_path": "m.pth"}
    assert "per_image" not in data["metrics"]["fid"] and "paper" not in data["metrics"]["fid"]
    assert data["pairs"][1] == {
        "result": str(tmp_path / "Canon_002_LR4.png"),
        "reference": str(tmp_path / "gt" / "Canon_002_LR4.png"),
    }


def test_csv_report_has_one_row_per_image(report, tmp_path):
    report.save_csv(tmp_path / "images.csv")
    rows = list(csv.reader(io.StringIO((tmp_path / "images.csv").read_text(encoding="utf-8"))))

    assert rows[0] == ["result", "reference", "lpips", "musiq"]  # fid has no per-image values
    assert rows[1] == [str(tmp_path / "Canon_001_LR4.png"), str(tmp_path / "gt" / "Canon_001_LR4.png"), "0.25", "65.0"]
    assert len(rows) == 3 and float(rows[2][3]) == 68.0


def test_markdown_table_with_the_papers_numbers(report):
    text = report.to_markdown("realsr")
    lines = text.splitlines()

    assert lines[0] == "2 images"
    assert "| `lpips` | lower | 0.3000 | 0.319 | -0.0190 |" in lines
    assert "| `musiq` | higher | 66.5000 | 68.073 | -1.5730 |" in lines
    assert "| `fid` | lower | 40.0000 | - | - |" in lines
    assert "| `maniqa-pipal` | higher | not measured | 0.661 | - |" in lines  # the paper's, not measured here
    assert PAPER_SOURCE in text and "Note: 2 images evaluated, the paper's realsr has 100." in text


def test_markdown_table_without_a_benchmark(report):
    lines = report.to_markdown().splitlines()
    assert lines[2] == "| metric (pyiqa name) | better | mean |"
    assert "| `lpips` | lower | 0.3000 |" in lines and not any("paper" in line.lower() for line in lines)


def test_unknown_benchmark_and_metric(report):
    with pytest.raises(ValueError, match="benchmark must be one of drealsr, realsr, reallr200, reallq250"):
        report.to_markdown("div2k")
    with pytest.raises(KeyError, match="'niqe' was not measured"):
        report["niqe"]
    assert report["musiq"].mean == 66.5


def test_paper_numbers():
    # Paper Table 1, row DiT4SR (design/dit4sr-spec.md section 7).
    assert PAPER_RESULTS["drealsr"] == {
        "lpips": 0.365, "musiq": 64.950, "maniqa-pipal": 0.627, "clipiqa+_vitL14_512": 0.548, "liqe": 3.964
    }  # fmt: skip
    assert PAPER_RESULTS["reallq250"]["musiq"] == 71.832 and "lpips" not in PAPER_RESULTS["reallr200"]
    assert BENCHMARK_IMAGE_COUNTS == {"drealsr": 93, "realsr": 100, "reallr200": 200, "reallq250": 250}
