# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Photos keep their transparency, colour profile, metadata and bit depth through upscaling."""

import numpy as np
import PIL.ExifTags
import PIL.Image
import PIL.ImageCms
import png
import pytest
import tifffile
import torch

from diffusers_dit4sr.image_processing import pil_bicubic_resize
from diffusers_dit4sr.photo import (
    FLATTEN_BACKGROUND,
    check_save_options,
    read_photo,
    read_photo_size,
    save_upscaled,
    upscaled_photo,
)
from diffusers_dit4sr.tiny import make_tiny_pipeline

from .utils import camera_exif

TAGS = PIL.ExifTags.Base
SRGB = PIL.ImageCms.ImageCmsProfile(PIL.ImageCms.createProfile("sRGB")).tobytes()
XMP = b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF/></x:xmpmeta>'


def gradient(height: int, width: int) -> np.ndarray:
    """A float32 `(H, W, 3)` image in [0, 1] that differs along both axes and in each channel."""
    rows, cols = np.mgrid[0:height, 0:width].astype(np.float32)
    return np.stack([cols / max(width - 1, 1), rows / max(height - 1, 1), (rows + cols) / (height + width)], -1)


def output_like(photo, scale: int = 2) -> np.ndarray:
    """A stand-in for the pipeline's float output: the photo resized `scale` times (bicubic)."""
    pixels = photo.pixels
    if isinstance(pixels, PIL.Image.Image):
        pixels = np.asarray(pixels, dtype=np.float32) / 255
    tensor = torch.from_numpy(pixels).permute(2, 0, 1)[None]
    size = (pixels.shape[0] * scale, pixels.shape[1] * scale)
    return pil_bicubic_resize(tensor, size)[0].permute(1, 2, 0).numpy()


def expected_alpha(alpha: np.ndarray, size: tuple[int, int], levels: int = 255) -> np.ndarray:
    resized = pil_bicubic_resize(torch.from_numpy(alpha)[None, None], size)[0, 0].numpy()
    return np.round(resized * levels)


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_alpha_is_resized_and_reattached(tmp_path, mode):
    rgb = (gradient(12, 10) * 255).round().astype(np.uint8)
    alpha = np.zeros((12, 10), np.uint8)
    alpha[3:9, 2:7] = 255
    alpha[5, 4] = 128
    if mode == "RGBA":
        image = PIL.Image.fromarray(np.dstack([rgb, alpha]), "RGBA")
    elif mode == "LA":
        image = PIL.Image.fromarray(np.dstack([rgb[..., 0], alpha]), "LA")
    else:  # a palette with a transparent entry (tRNS): index 0 is transparent
        indices = np.where(alpha > 0, 1 + (rgb[..., 0] // 32), 0).astype(np.uint8)
        image = PIL.Image.fromarray(indices, "P")
        image.putpalette([0, 0, 0] + [v for i in range(8) for v in (i * 32, 255 - i * 32, 90)])
        image.info["transparency"] = 0
        alpha = np.where(alpha > 0, 255, 0).astype(np.uint8)
    source_path = tmp_path / "in.png"
    image.save(source_path, transparency=0) if mode == "P" else image.save(source_path)

    photo = read_photo(source_path)
    assert photo.pixels.mode == "RGB"
    np.testing.assert_allclose(photo.alpha, alpha / 255, atol=1e-6)
    target = save_upscaled(photo, output_like(photo), tmp_path / "out.png")

    with PIL.Image.open(target) as result:
        assert result.mode == "RGBA" and result.size == (20, 24)
        saved_alpha = np.asarray(result)[..., 3]
    np.testing.assert_array_equal(saved_alpha, expected_alpha(alpha.astype(np.float32) / 255, (24, 20)))


def test_alpha_is_composited_on_white_for_jpeg(tmp_path):
    image = PIL.Image.new("RGBA", (8, 8), (0, 0, 0, 0))
    image.paste((200, 10, 10, 255), (0, 0, 4, 8))
    image.save(tmp_path / "in.png")
    photo = read_photo(tmp_path / "in.png")
    save_upscaled(photo, output_like(photo), tmp_path / "out.jpg")
    with PIL.Image.open(tmp_path / "out.jpg") as result:
        assert result.mode == "RGB"
        pixels = np.asarray(result, dtype=np.float32)
    np.testing.assert_allclose(pixels[4, 14], np.asarray(FLATTEN_BACKGROUND) * 255, atol=4)
    np.testing.assert_allclose(pixels[4, 1], (200, 10, 10), atol=12)


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tiff"])
def test_profile_and_camera_exif_are_kept_and_pixels_upright(tmp_path, suffix):
    # Stored 6x4 (landscape), orientation 6: shown rotated 90 degrees clockwise, 4 wide and 6 high.
    stored = np.zeros((4, 6, 3), np.uint8)
    stored[0, :] = (255, 0, 0)  # the stored top row becomes the right column once upright
    source = tmp_path / "camera.jpg"
    PIL.Image.fromarray(stored).save(
        source, quality=100, icc_profile=SRGB, exif=camera_exif(6), dpi=(300, 300), xmp=XMP
    )

    photo = read_photo(source)
    assert photo.size == (4, 6) and photo.icc_profile == SRGB and photo.xmp == XMP
    target = save_upscaled(photo, output_like(photo), tmp_path / f"out{suffix}")

    with PIL.Image.open(target) as result:
        assert result.size == (8, 12)
        assert result.info["icc_profile"] == SRGB
        exif = result.getexif()
        dpi = result.info.get("dpi")
        pixels = np.asarray(result.convert("RGB"), dtype=np.int16)
    assert exif[TAGS.Make] == "Canon" and exif[TAGS.Model] == "EOS R5"
    assert exif[TAGS.Orientation] == 1
    exif_ifd = exif.get_ifd(PIL.ExifTags.IFD.Exif)
    assert exif_ifd[TAGS.DateTimeOriginal] == "2021:06:05 14:03:02"
    assert (exif_ifd[TAGS.ExifImageWidth], exif_ifd[TAGS.ExifImageHeight]) == (8, 12)
    assert pixels[6, -1, 0] > 150 and pixels[6, 0, 0] < 60  # red on the right, upright
    if suffix in (".png", ".jpg", ".tiff"):
        np.testing.assert_allclose([float(v) for v in dpi], (600, 600), atol=0.1)  # scaled with the image


def test_strip_metadata_drops_exif_and_xmp_but_keeps_the_profile(tmp_path):
    source = tmp_path / "camera.jpg"
    PIL.Image.new("RGB", (6, 4), (40, 90, 160)).save(source, icc_profile=SRGB, exif=camera_exif(1), xmp=XMP)
    photo = read_photo(source)
    for suffix in (".png", ".jpg"):
        save_upscaled(photo, output_like(photo), tmp_path / f"out{suffix}", strip_metadata=True)
        with PIL.Image.open(tmp_path / f"out{suffix}") as result:
            assert len(result.getexif()) == 0
            assert "xmp" not in result.info and "exif" not in result.info
            assert result.info["icc_profile"] == SRGB


def test_no_profile_in_none_out(tmp_path):
    PIL.Image.new("RGB", (6, 4), (40, 90, 160)).save(tmp_path / "in.png")
    photo = read_photo(tmp_path / "in.png")
    save_upscaled(photo, output_like(photo), tmp_path / "out.png")
    with PIL.Image.open(tmp_path / "out.png") as result:
        assert "icc_profile" not in result.info and len(result.getexif()) == 0


def test_a_profile_of_another_colour_space_is_not_written(tmp_path):
    gray_profile = SRGB[:16] + b"GRAY" + SRGB[20:]  # what matters is the header's colour space
    PIL.Image.new("L", (6, 4), 128).save(tmp_path / "gray.jpg", icc_profile=gray_profile)
    photo = read_photo(tmp_path / "gray.jpg")
    assert photo.icc_profile == gray_profile
    save_upscaled(photo, output_like(photo), tmp_path / "out.png")
    with PIL.Image.open(tmp_path / "out.png") as result:
        assert result.mode == "RGB" and "icc_profile" not in result.info


def test_tensor_output_saves_as_the_array_output(tmp_path):
    PIL.Image.new("RGB", (6, 4), (40, 90, 160)).save(tmp_path / "in.png")
    photo = read_photo(tmp_path / "in.png")
    output = output_like(photo)
    save_upscaled(photo, output, tmp_path / "array.png")
    save_upscaled(photo, torch.from_numpy(output).permute(2, 0, 1)[None], tmp_path / "tensor.png")
    with PIL.Image.open(tmp_path / "array.png") as array, PIL.Image.open(tmp_path / "tensor.png") as tensor:
        np.testing.assert_array_equal(np.asarray(array), np.asarray(tensor))


def test_cmyk_jpeg_keeps_its_colour(tmp_path):
    colour = (30, 120, 200)
    PIL.Image.new("RGB", (16, 16), colour).convert("CMYK").save(tmp_path / "cmyk.jpg", quality=100)
    photo = read_photo(tmp_path / "cmyk.jpg")
    assert photo.format == "JPEG" and photo.pixels.mode == "RGB"
    np.testing.assert_allclose(np.asarray(photo.pixels, dtype=np.float32).mean((0, 1)), colour, atol=6)
    save_upscaled(photo, output_like(photo), tmp_path / "out.png")
    with PIL.Image.open(tmp_path / "out.png") as result:
        np.testing.assert_allclose(np.asarray(result, dtype=np.float32).mean((0, 1)), colour, atol=6)


def write_png16(path, samples: np.ndarray) -> None:
    height, width, planes = samples.shape
    writer = png.Writer(width, height, greyscale=planes < 3, alpha=planes in (2, 4), bitdepth=16)
    with open(path, "wb") as file:
        writer.write(file, samples.reshape(height, width * planes))


@pytest.mark.parametrize("planes", [1, 3, 4])
def test_sixteen_bit_png_is_read_at_full_precision(tmp_path, planes):
    samples = np.round(np.dstack([gradient(16, 40), gradient(16, 40)[..., :1]])[..., :planes] * 65535)
    write_png16(tmp_path / "in.png", samples.astype(np.uint16))
    photo = read_photo(tmp_path / "in.png")
    assert photo.bit_depth == 16 and photo.pixels.dtype == np.float32
    expected_color = samples[..., :3] if planes >= 3 else np.repeat(samples, 3, axis=-1)
    np.testing.assert_allclose(photo.pixels * 65535, expected_color, atol=1e-2)
    if planes == 4:
        np.testing.assert_allclose(photo.alpha * 65535, samples[..., 3], atol=1e-2)


def test_sixteen_bit_tiff_round_trip_with_alpha_and_profile(tmp_path):
    samples = np.round(np.dstack([gradient(10, 30), gradient(10, 30)[..., 1]]) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "in.tif", samples, photometric="rgb", extrasamples=("unassalpha",), iccprofile=SRGB)
    photo = read_photo(tmp_path / "in.tif")
    assert photo.bit_depth == 16 and photo.icc_profile == SRGB
    np.testing.assert_allclose(photo.pixels * 65535, samples[..., :3], atol=1e-2)
    save_upscaled(photo, output_like(photo), tmp_path / "out.tif")
    with tifffile.TiffFile(tmp_path / "out.tif") as tiff:
        result = tiff.pages[0].asarray()
        assert tiff.pages[0].tags["InterColorProfile"].value == SRGB
    assert result.dtype == np.uint16 and result.shape == (20, 60, 4)
    np.testing.assert_array_equal(result[..., 3], expected_alpha(photo.alpha, (20, 60), levels=65535))


def test_orientation_of_sixteen_bit_files_matches_pillow(tmp_path):
    samples = np.round(gradient(4, 6) * 65535).astype(np.uint16)
    for orientation in range(1, 9):
        path = tmp_path / f"o{orientation}.tif"
        tifffile.imwrite(path, samples, photometric="rgb", extratags=[(274, "H", 1, orientation, True)])
        eight_bit = PIL.Image.fromarray((samples // 257).astype(np.uint8))
        exif = PIL.Image.Exif()
        exif[TAGS.Orientation] = orientation
        eight_bit.save(tmp_path / "o.png", exif=exif)
        reference = read_photo(tmp_path / "o.png").pixels
        assert read_photo(path).size == reference.size, orientation
        np.testing.assert_allclose(read_photo(path).pixels * 255, np.asarray(reference), atol=1)


def test_eight_bit_tiff_with_orientation_and_alpha_is_upright(tmp_path):
    # Pillow 12 turns such TIFFs wrongly upright on loading (orientations 5 to 8).
    stored = np.random.default_rng(0).integers(0, 256, (4, 6, 4), dtype=np.uint8)
    exif = PIL.Image.Exif()
    exif[TAGS.Orientation] = 6
    exif[TAGS.Make] = "Scanner"
    PIL.Image.fromarray(stored, "RGBA").save(tmp_path / "in.tif", exif=exif, dpi=(100, 200))
    photo = read_photo(tmp_path / "in.tif")
    np.testing.assert_array_equal(np.asarray(photo.pixels), np.rot90(stored[..., :3], -1))
    np.testing.assert_array_equal(photo.alpha * 255, np.rot90(stored[..., 3], -1))
    assert photo.dpi == (200.0, 100.0)
    save_upscaled(photo, output_like(photo), tmp_path / "out.jpg")
    with PIL.Image.open(tmp_path / "out.jpg") as result:
        exif = result.getexif()
        assert result.info["dpi"] == (400, 200)
    assert exif[TAGS.Make] == "Scanner" and exif[TAGS.Orientation] == 1
    assert TAGS.StripOffsets not in exif and TAGS.BitsPerSample not in exif  # the TIFF's layout is not the JPEG's


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_sixteen_bit_outputs_carry_profile_and_metadata(tmp_path, suffix):
    source = tmp_path / "camera.jpg"
    PIL.Image.new("RGB", (6, 4), (40, 90, 160)).save(
        source, icc_profile=SRGB, exif=camera_exif(3), dpi=(300, 300), xmp=XMP
    )
    photo = read_photo(source)
    save_upscaled(photo, output_like(photo), tmp_path / f"out{suffix}", bit_depth=16)
    with PIL.Image.open(tmp_path / f"out{suffix}") as result:
        assert result.size == (12, 8)
        assert result.info["icc_profile"] == SRGB
        np.testing.assert_allclose([float(v) for v in result.info["dpi"]], (600, 600), atol=0.1)
        exif = result.getexif()
        xmp = result.info.get("xmp") or result.tag_v2.get(700)
    assert exif[TAGS.Make] == "Canon" and exif[TAGS.Model] == "EOS R5"
    assert exif.get(TAGS.Orientation, 1) == 1
    assert xmp == XMP
    if suffix == ".png":
        assert exif.get_ifd(PIL.ExifTags.IFD.Exif)[TAGS.DateTimeOriginal] == "2021:06:05 14:03:02"
        with open(tmp_path / "out.png", "rb") as file:
            reader = png.Reader(file=file)
            reader.preamble()
            assert reader.bitdepth == 16
    else:
        with tifffile.TiffFile(tmp_path / "out.tif") as tiff:
            assert tiff.pages[0].dtype == np.uint16


def test_bit_depth_checks_and_eight_bit_output(tmp_path):
    write_png16(tmp_path / "in.png", np.round(gradient(8, 8) * 65535).astype(np.uint16))
    photo = read_photo(tmp_path / "in.png")
    output = output_like(photo)
    with pytest.raises(ValueError, match="`bit_depth` must be 8, 16 or 'auto'"):
        save_upscaled(photo, output, tmp_path / "out.png", bit_depth=12)
    with pytest.raises(ValueError, match="`bit_depth` 16 needs a PNG or TIFF file"):
        save_upscaled(photo, output, tmp_path / "out.jpg", bit_depth=16)
    with pytest.raises(ValueError, match="output_type='np'"):
        save_upscaled(photo, PIL.Image.fromarray((output * 255).astype(np.uint8)), tmp_path / "out.png")
    with pytest.raises(ValueError, match="extension must be one of"):
        save_upscaled(photo, output, tmp_path / "out.gif")
    assert not list(tmp_path.glob("out*"))
    with pytest.raises(ValueError, match="`bit_depth` 16 needs a PNG or TIFF file, not WEBP"):
        check_save_options("x.WEBP", bit_depth="16")
    check_save_options("x.TIFF", bit_depth="16")
    save_upscaled(photo, output, tmp_path / "out8.png", bit_depth=8)
    save_upscaled(photo, output, tmp_path / "auto.jpg")  # auto: 8 bits where the format has no 16
    with PIL.Image.open(tmp_path / "out8.png") as result:
        assert result.mode == "RGB"


@pytest.mark.slow
def test_sixteen_bit_png_through_the_tiny_pipeline_keeps_sixteen_bits(tmp_path):
    # A smooth ramp of 4096 levels: 8 bits would keep at most 256 of them.
    ramp = np.linspace(0, 1, 64 * 64, dtype=np.float64).reshape(64, 64)
    samples = np.round(np.dstack([ramp, ramp[::-1], ramp.T]) * 65535).astype(np.uint16)
    write_png16(tmp_path / "scan.png", samples)
    photo = read_photo(tmp_path / "scan.png")
    pipe = make_tiny_pipeline()
    output = pipe(
        image=photo.pixels,
        prompt="",
        upscale=1.0,
        num_inference_steps=1,
        process_size=64,
        tile_size=64,
        tile_overlap=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    save_upscaled(photo, output, tmp_path / "scan_x1.png")

    with open(tmp_path / "scan_x1.png", "rb") as file:
        width, height, rows, info = png.Reader(file=file).asDirect()
        result = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, 3)
    assert info["bitdepth"] == 16 and (width, height) == (64, 64)
    assert len(np.unique(result)) > 256
    np.testing.assert_array_equal(result, np.round(np.clip(output, 0, 1) * 65535))


def test_upscaled_photo_rejects_bad_outputs(tmp_path):
    PIL.Image.new("RGB", (4, 4)).save(tmp_path / "in.png")
    photo = read_photo(tmp_path / "in.png")
    with pytest.raises(ValueError, match=r"`output` arrays must be \(H, W, 3\)"):
        upscaled_photo(photo, np.zeros((4, 4, 2), np.float32))
    with pytest.raises(TypeError, match="`output` must be"):
        upscaled_photo(photo, [1, 2, 3])


def test_read_photo_names_a_broken_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="cannot read .*broken.png"):
        read_photo(tmp_path / "broken.png")


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp", ".tif"])
@pytest.mark.parametrize("orientation, size", [(1, (30, 20)), (6, (20, 30)), (8, (20, 30))])
def test_read_photo_size_gives_the_upright_size_from_the_header_alone(
    tmp_path, monkeypatch, suffix, orientation, size
):
    path = tmp_path / f"photo{suffix}"
    PIL.Image.fromarray((gradient(20, 30) * 255).astype(np.uint8)).save(path, exif=camera_exif(orientation))
    assert read_photo_size(path) == size == read_photo(path).size
    (tmp_path / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match=f"cannot read {tmp_path / 'broken.png'}: cannot identify image file"):
        read_photo_size(tmp_path / "broken.png")
    # No format decodes its pixels for it (Pillow's PNG `getexif` does, looking for a late eXIf chunk).
    monkeypatch.setattr(PIL.Image.Image, "load", lambda self: pytest.fail(f"decoded {path.name}"))
    assert read_photo_size(path) == size
