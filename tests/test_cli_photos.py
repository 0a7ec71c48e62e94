# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""`dit4sr-upscale` keeps what a photo has besides colour: transparency, colour profile, EXIF, bit depth;
end to end, in-process, with the real tiny pipeline saved to a folder (offline, CPU)."""

from pathlib import Path

import numpy as np
import PIL.ExifTags
import PIL.Image
import PIL.ImageCms
import PIL.ImageOps
import png
import pytest
import torch

from diffusers_dit4sr import runtime
from diffusers_dit4sr.cli.main import main
from diffusers_dit4sr.image_processing import pil_bicubic_resize

from .utils import camera_exif

FAST_OPTIONS = [
    "--steps", "1", "--scale", "2", "--device", "cpu", "--dtype", "fp32",
    "--tile-size", "64", "--tile-overlap", "32", "--process-size", "64", "--quiet",
]  # fmt: skip
TAGS = PIL.ExifTags.Base
SRGB = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()


@pytest.fixture
def upscale(tiny_pipeline_dir, capsys):
    """Runs the CLI on the tiny pipeline with fast settings; checks that it succeeded."""

    def run(*args: object) -> None:
        code = main([*map(str, args), "--model", str(tiny_pipeline_dir), *FAST_OPTIONS])
        assert code == 0, capsys.readouterr().err

    return run


def random_pixels(height: int, width: int, channels: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)


@pytest.mark.slow
def test_transparency_is_kept(upscale, tmp_path):
    alpha = np.zeros((12, 10), np.uint8)
    alpha[3:9, 2:7] = 255
    alpha[5, 4] = 128
    rgb = random_pixels(12, 10, 3)
    (tmp_path / "in").mkdir()
    PIL.Image.fromarray(np.dstack([rgb, alpha]), "RGBA").save(tmp_path / "in" / "rgba.png")
    PIL.Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA").save(tmp_path / "in" / "la.png")
    palette = PIL.Image.fromarray(np.where(alpha > 0, 1 + rgb[..., 0] // 64, 0).astype(np.uint8), "P")
    palette.putpalette([0, 0, 0, 250, 0, 0, 0, 250, 0, 0, 0, 250, 250, 250, 0])
    palette.save(tmp_path / "in" / "palette.png", transparency=0)

    upscale(tmp_path / "in", "-o", tmp_path / "out")

    for name in ("rgba", "la", "palette"):
        with PIL.Image.open(tmp_path / "in" / f"{name}.png") as source:
            source_alpha = np.asarray(source.convert("RGBA"), dtype=np.float32)[..., 3] / 255
        resized = pil_bicubic_resize(torch.from_numpy(source_alpha)[None, None], (24, 20))[0, 0].numpy()
        with PIL.Image.open(tmp_path / "out" / f"{name}.png") as output:
            assert (output.mode, output.size) == ("RGBA", (20, 24)), name
            output_alpha = np.asarray(output, dtype=np.float32)[..., 3]
        np.testing.assert_allclose(output_alpha, np.round(np.clip(resized, 0, 1) * 255), atol=1, err_msg=name)
        assert output_alpha.min() == 0 and output_alpha.max() == 255  # transparent stays transparent


@pytest.mark.slow
def test_a_jpeg_keeps_its_profile_camera_and_date_and_comes_out_upright(upscale, tmp_path):
    source = tmp_path / "camera.jpg"
    PIL.Image.fromarray(random_pixels(8, 12, 3)).save(source, icc_profile=SRGB, exif=camera_exif(orientation=6))
    with PIL.Image.open(source) as image:  # the pixels as they are shown: turned upright (8 x 12 -> 12 x 8)
        PIL.ImageOps.exif_transpose(image).convert("RGB").save(tmp_path / "upright.png")

    for suffix in (".png", ".jpg"):
        upscale(source, "-o", tmp_path / f"out{suffix}")
    upscale(tmp_path / "upright.png", "-o", tmp_path / "reference.png")

    for suffix in (".png", ".jpg"):
        with PIL.Image.open(tmp_path / f"out{suffix}") as output:
            assert output.size == (16, 24)
            assert output.info["icc_profile"] == SRGB
            exif = output.getexif()
            assert (exif[TAGS.Make], exif[TAGS.Model], exif[TAGS.Orientation]) == ("Canon", "EOS R5", 1)
            assert exif.get_ifd(PIL.ExifTags.IFD.Exif)[TAGS.DateTimeOriginal] == "2021:06:05 14:03:02"
            if suffix == ".png":  # the same image as the upright photo's: turned before the model saw it
                with PIL.Image.open(tmp_path / "reference.png") as reference:
                    np.testing.assert_array_equal(np.asarray(output), np.asarray(reference))


def test_strip_metadata_drops_exif_and_keeps_the_profile(upscale, tmp_path):
    source = tmp_path / "camera.jpg"
    PIL.Image.fromarray(random_pixels(8, 12, 3)).save(source, icc_profile=SRGB, exif=camera_exif(orientation=1))

    upscale(source, "-o", tmp_path / "shared.jpg", "--strip-metadata")

    with PIL.Image.open(tmp_path / "shared.jpg") as output:
        assert "exif" not in output.info and len(output.getexif()) == 0
        assert output.info["icc_profile"] == SRGB and output.size == (24, 16)


def read_png_samples(path: Path) -> tuple[int, np.ndarray]:
    with path.open("rb") as file:
        width, height, rows, info = png.Reader(file=file).asDirect()
        samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows])
    return info["bitdepth"], samples.reshape(height, width, info["planes"])


def test_a_sixteen_bit_png_gives_a_sixteen_bit_png_unless_told_otherwise(upscale, tmp_path):
    rows, cols = np.mgrid[0:12, 0:10]
    deep = np.stack([cols * 6000 + rows * 300, rows * 5000 + 7, (rows * cols * 500) % 65536], -1).astype(np.uint16)
    with (tmp_path / "scan.png").open("wb") as file:
        png.Writer(10, 12, greyscale=False, bitdepth=16).write(file, deep.reshape(12, -1))

    upscale(tmp_path / "scan.png", "-o", tmp_path / "out")
    upscale(tmp_path / "scan.png", "-o", tmp_path / "scan_8bit.png", "--bit-depth", "8")

    bit_depth, samples = read_png_samples(tmp_path / "out" / "scan.png")
    assert (bit_depth, samples.shape) == (16, (24, 20, 3))
    assert len(np.unique(samples)) > 256  # computed from the float output, not 8-bit values widened
    bit_depth, eight_bit = read_png_samples(tmp_path / "scan_8bit.png")
    assert bit_depth == 8
    np.testing.assert_allclose(eight_bit, samples / 257, atol=0.51)  # the same image, rounded to 8 bits


def test_a_cmyk_jpeg_keeps_its_colour(upscale, tmp_path):
    source = tmp_path / "print.jpg"
    PIL.Image.new("CMYK", (12, 10), (20, 180, 200, 30)).save(source)
    with PIL.Image.open(source) as image:
        expected = np.asarray(image.convert("RGB"), dtype=np.float64).mean(axis=(0, 1))

    upscale(source, "-o", tmp_path / "out")

    with PIL.Image.open(tmp_path / "out" / "print.png") as output:
        assert (output.mode, output.size, output.info.get("icc_profile")) == ("RGB", (24, 20), None)
        # A flat colour stays that colour (the default AdaIN colour fix matches the input's mean and spread).
        np.testing.assert_allclose(np.asarray(output, dtype=np.float64).mean(axis=(0, 1)), expected, atol=2)


def test_sixteen_bits_for_a_jpeg_is_a_usage_error_before_loading(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(runtime, "load_pipeline", lambda *args, **kwargs: pytest.fail("a model was loaded"))
    source = tmp_path / "photo.png"
    PIL.Image.fromarray(random_pixels(8, 12, 3)).save(source)

    code = main([str(source), "-o", str(tmp_path / "photo.jpg"), "--bit-depth", "16", "--device", "cpu"])

    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err[-1] == (
        f"dit4sr-upscale: error: {tmp_path / 'photo.jpg'}: --bit-depth 16 needs a PNG or TIFF file, not JPEG."
    )
    assert not (tmp_path / "photo.jpg").exists()


@pytest.mark.slow
def test_an_output_that_cannot_hold_the_metadata_fails_alone(upscale, tiny_pipeline_dir, tmp_path, capsys):
    exif = camera_exif(orientation=1)
    exif[TAGS.ImageDescription] = "x" * 70_000  # a JPEG's EXIF segment holds at most 64 KB
    source = tmp_path / "annotated.png"
    PIL.Image.fromarray(random_pixels(8, 12, 3)).save(source, exif=exif)

    code = main([str(source), "-o", str(tmp_path / "annotated.jpg"), "--model", str(tiny_pipeline_dir), *FAST_OPTIONS])

    captured = capsys.readouterr()
    assert code == 1 and captured.out.strip() == "0 upscaled, 0 skipped (exist), 1 failed"
    assert f"cannot write {tmp_path / 'annotated.jpg'}: EXIF data is too long" in captured.err
    assert sorted(path.name for path in tmp_path.iterdir()) == ["annotated.png"]  # no temporary file left
    upscale(source, "-o", tmp_path / "shared.jpg", "--strip-metadata")  # without the EXIF, it fits
