# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Photo files in and out of the pipeline, with what they carry besides colour: transparency, colour profile,
metadata and bit depth.

`read_photo` reads a file into the upright colour pixels the pipeline takes plus what the result must keep (every
reader of input images goes through it, so a photo is captioned as it is upscaled: `eight_bit_rgb`);
`upscaled_photo` joins that with the pipeline's output; `save_upscaled` does both and writes the file atomically.

- Transparency: the colour channels go through the pipeline as stored (also under fully transparent pixels); the
  alpha is resized to the output size with the pipeline's bicubic kernel, clipped, and re-attached. Formats without
  alpha (JPEG, BMP) get the image composited on `FLATTEN_BACKGROUND` (white).
- Colour profile: the model works on the file's own RGB values, as the released inference does, so the input's ICC
  profile describes the output too and is written unchanged. Outputs are RGB: a profile of another colour space (a
  grey or CMYK one) no longer fits the pixels and is dropped.
- Metadata: EXIF is kept with Orientation 1 (the pixels are turned upright on reading) and the pixel dimensions and
  resolution updated; XMP is copied unchanged; the DPI is scaled with the image, so the printed size stays the same.
  `strip_metadata=True` drops EXIF and XMP (the profile and DPI stay: they say how to show the pixels).
- Bit depth: inputs with more than 8 bits a sample (16-bit PNG and TIFF, float TIFF) are read at full precision and,
  by default, saved as 16-bit PNG or TIFF, computed from the pipeline's float output. Pillow reads 16-bit RGB as
  8 bits and cannot write it: 16-bit PNGs go through pypng, 16-bit TIFFs through tifffile.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import PIL.ExifTags
import PIL.Image
import PIL.ImageOps
import PIL.PngImagePlugin
import png
import tifffile
import torch

from .constants import BIT_DEPTHS
from .file_utils import atomic_write_file
from .image_processing import HIGH_PRECISION_MODES, pil_bicubic_resize

__all__ = [
    "BIT_DEPTHS",
    "FLATTEN_BACKGROUND",
    "SAVE_FORMATS",
    "Photo",
    "UpscaledPhoto",
    "check_save_options",
    "eight_bit_rgb",
    "read_photo",
    "read_photo_size",
    "save_upscaled",
    "upscaled_photo",
]

SAVE_FORMATS = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".webp": "WEBP",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".bmp": "BMP",
}
"""File extensions (lowercase) results can be saved as, and their format."""
FLATTEN_BACKGROUND = (1.0, 1.0, 1.0)
"""The colour (RGB in [0, 1]: white) transparent images are composited on in formats without alpha (JPEG, BMP)."""
_ALPHA_FORMATS = {"PNG", "WEBP", "TIFF"}
_SIXTEEN_BIT_FORMATS = {"PNG", "TIFF"}
_LOSSY_QUALITY = 95
"""JPEG and WebP quality: Pillow's default (75) would blur away the restored detail."""
_XMP_PNG_KEY = "XML:com.adobe.xmp"
_TIFF_XMP_TAG = 700
_ROTATED_ORIENTATIONS = {5, 6, 7, 8}
"""EXIF orientations that swap width and height."""
_TIFF_LAYOUT_TAGS = frozenset(
    {256, 257, 258, 259, 262, 273, 277, 278, 279, 284, 317, 320, 322, 323, 324, 325, 330, 338, 339, 340, 341, 347}
    | {529, 530, 531, 532, _TIFF_XMP_TAG, 34675}
)
"""TIFF tags that describe the file's own layout (size, samples, strips, tiles, ...), not the photo; and its XMP
and ICC profile, which are kept on their own."""


@dataclass(frozen=True)
class Photo:
    """A photo file as read: upright colour pixels for the pipeline and what the saved result keeps."""

    pixels: PIL.Image.Image | np.ndarray
    """What to pass to the pipeline: an RGB image for 8-bit files (exactly what the released inference read), else a
    float32 `(H, W, 3)` array in [0, 1] at the file's full precision."""
    alpha: np.ndarray | None
    """The transparency, float32 `(H, W)` in [0, 1] (1 is opaque), or None for opaque images."""
    icc_profile: bytes | None
    """The embedded ICC profile, as stored."""
    exif: bytes | None
    """The EXIF block as stored, less a TIFF's own layout tags (its Orientation was applied to `pixels`)."""
    xmp: bytes | None
    """The XMP packet, as stored."""
    dpi: tuple[float, float] | None
    """Horizontal and vertical resolution of the upright image, in dots per inch."""
    bit_depth: int
    """Bits per sample of the file: 8, or 16 for anything finer (16-bit and float files)."""
    format: str
    """The file's format as Pillow names it ("PNG", "JPEG", "TIFF", ...)."""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the upright image."""
        if isinstance(self.pixels, PIL.Image.Image):
            return self.pixels.size
        return self.pixels.shape[1], self.pixels.shape[0]


@dataclass(frozen=True)
class UpscaledPhoto:
    """An upscaled photo with the source's alpha, profile and metadata, ready to save (`save`)."""

    color: np.ndarray
    """float32 `(H, W, 3)` in [0, 1]: the pipeline's output."""
    alpha: np.ndarray | None
    """float32 `(H, W)` in [0, 1]: the source's alpha resized to the output size, or None."""
    icc_profile: bytes | None
    exif: bytes | None
    """The source's EXIF with Orientation 1 and this image's dimensions and resolution, or None."""
    xmp: bytes | None
    dpi: tuple[float, float] | None
    """The source's resolution scaled with the image (the printed size stays the same)."""
    precise: bool
    """Whether `color` holds the pipeline's float output (else 8-bit values, which 16 bits would only widen)."""
    source_bit_depth: int

    def save(self, path: str | os.PathLike, *, bit_depth: int | str = "auto") -> Path:
        """
        Writes the photo atomically in the format its extension names (`SAVE_FORMATS`); returns the path.

        Args:
            path: The file to write; its extension picks the format.
            bit_depth: 8, 16 (PNG and TIFF only) or "auto": 16 where the source had more than 8 bits a sample and
                the format allows, else 8.

        Raises:
            ValueError: An unknown extension, a bad `bit_depth`, or 16 bits without the pipeline's float output
                (`output_type="np"` or `"pt"`).
        """
        path = Path(path)
        file_format = _save_format(path)
        depth = _resolve_bit_depth(bit_depth, file_format, self.source_bit_depth)
        if depth == 16 and not self.precise:
            raise ValueError(
                "`bit_depth` 16 needs the pipeline's float output: call it with output_type='np' or 'pt' (its 8-bit "
                "PIL output would only be widened)."
            )
        color, alpha = self.color, self.alpha
        if alpha is not None and file_format not in _ALPHA_FORMATS:
            background = np.asarray(FLATTEN_BACKGROUND, dtype=np.float32)
            color = color * alpha[..., None] + background * (1 - alpha[..., None])
            alpha = None
        channels = color if alpha is None else np.concatenate([color, alpha[..., None]], axis=-1)
        with atomic_write_file(path) as file:
            if depth == 16:
                samples = np.round(np.clip(channels, 0, 1) * 65535).astype(np.uint16)
                _write_sixteen_bit(samples, file, file_format, self)
            else:
                samples = np.round(np.clip(channels, 0, 1) * 255).astype(np.uint8)
                _write_eight_bit(samples, file, file_format, self)
        return path


def read_photo(path: str | os.PathLike | bytes) -> Photo:
    """
    Reads an image file: its pixels turned upright as its EXIF orientation says, with its alpha, ICC profile, EXIF,
    XMP, DPI, bit depth and format.

    8-bit images become RGB as Pillow converts them (CMYK, palette and grey images included); RGBA, LA and palette
    or colour-key (tRNS) transparency give the alpha. 16-bit PNG and TIFF files (grey or RGB, with or without alpha)
    and float TIFFs are read at full precision.

    Args:
        path: The file, or its content (`bytes`, e.g. an image stored in a 🤗 dataset), read the same way.

    Raises:
        ValueError: The file cannot be decoded; the message names it.
    """
    source = path if isinstance(path, bytes) else Path(path)
    try:
        with _open_binary(source) as file, PIL.Image.open(file) as image:
            return _read_open_photo(image, source)
    except Exception as error:  # noqa: BLE001 (PIL reports unreadable files with many exception types)
        name = f"{len(source)} bytes of image data" if isinstance(source, bytes) else source
        raise ValueError(f"cannot read {name}: {error}") from error


def _open_binary(source: Path | bytes) -> BinaryIO:
    """The file at `source`, or an in-memory file of its bytes, opened for reading."""
    return io.BytesIO(source) if isinstance(source, bytes) else open(source, "rb")


def read_photo_size(path: str | os.PathLike) -> tuple[int, int]:
    """
    The (width, height) of the photo in an image file, turned upright as its EXIF orientation says (as `read_photo`
    reads it), from the file's header alone: nothing is decoded, so a small file that would decode into gigabytes
    is measured at no cost.

    Args:
        path: The image file.

    Raises:
        ValueError: The header cannot be read; the message names the file.
    """
    path = Path(path)
    try:
        with PIL.Image.open(path) as image:
            width, height = image.size
            if image.format == "TIFF":  # as stored: Pillow 12 gives a turned TIFF's upright size
                width, height = image.tag_v2.get(256, width), image.tag_v2.get(257, height)
            # The base class reads what the header gave; PNG's own `getexif` decodes the pixels to find a late eXIf.
            orientation = PIL.Image.Image.getexif(image).get(PIL.ExifTags.Base.Orientation)
    except Exception as error:  # noqa: BLE001 (PIL reports unreadable files with many exception types)
        raise ValueError(f"cannot read {path}: {error}") from error
    return (height, width) if orientation in _ROTATED_ORIENTATIONS else (width, height)


def _read_open_photo(image: PIL.Image.Image, path: Path | bytes) -> Photo:
    # Pillow turns TIFFs upright on loading (wrongly for orientations 5 to 8 in Pillow 12) and drops their
    # Orientation: such TIFFs are read with tifffile instead. PNGs may carry their EXIF after the pixels.
    orientation = image.getexif().get(PIL.ExifTags.Base.Orientation, 1)
    file_format = image.format or ""
    bits = _bits_per_sample(image, path)
    samples = None
    if file_format == "TIFF" and (bits > 8 or orientation != 1):
        samples = _read_tiff_samples(path)
        if samples is None and bits > 8:
            raise ValueError("16-bit and float TIFFs must be grey or RGB")
    if samples is None:
        image.load()
        orientation = image.getexif().get(PIL.ExifTags.Base.Orientation, orientation)
        if bits > 8 and file_format == "PNG":
            samples = _read_png_samples(path)
        elif image.mode in HIGH_PRECISION_MODES:
            samples = (np.asarray(image, dtype=np.float64) / HIGH_PRECISION_MODES[image.mode])[..., None]
            bits = 16
    if samples is None:  # an 8-bit image, converted as Pillow converts it
        pixels, alpha = _rgb_and_alpha(PIL.ImageOps.exif_transpose(image))
    elif samples.dtype == np.uint8:  # an 8-bit TIFF read by tifffile to be turned upright
        upright = _transpose(samples, orientation)
        pixels, alpha = _rgb_and_alpha(PIL.Image.fromarray(upright.squeeze(-1) if upright.shape[-1] == 1 else upright))
    else:
        if np.issubdtype(samples.dtype, np.integer):
            samples = samples.astype(np.float32) / np.iinfo(samples.dtype).max
        samples = np.clip(np.nan_to_num(samples.astype(np.float32)), 0, 1)
        pixels, alpha = _split_alpha(_transpose(samples, orientation))
    info = image.info
    xmp = info.get("xmp") or info.get(_XMP_PNG_KEY)
    if xmp is None and file_format == "TIFF":
        xmp = image.tag_v2.get(_TIFF_XMP_TAG)
    dpi = info.get("dpi")
    if dpi is not None:
        dpi = (float(dpi[0]), float(dpi[1]))
        dpi = dpi[::-1] if orientation in _ROTATED_ORIENTATIONS else dpi
    return Photo(
        pixels=pixels,
        alpha=alpha,
        icc_profile=info.get("icc_profile") or None,
        exif=_exif_bytes(image.getexif(), file_format),
        xmp=xmp.encode() if isinstance(xmp, str) else (bytes(xmp) if xmp else None),
        dpi=dpi if dpi is not None and min(dpi) > 0 else None,
        bit_depth=16 if bits > 8 else 8,
        format=file_format,
    )


def eight_bit_rgb(pixels: PIL.Image.Image | np.ndarray) -> PIL.Image.Image:
    """A photo's `pixels` (`Photo.pixels`) as an 8-bit RGB image, for models that take only those (a captioner) and
    for previews: 8-bit images as they are, finer ones rounded as the pipeline's "pil" output is."""
    if isinstance(pixels, PIL.Image.Image):
        return pixels
    return PIL.Image.fromarray((np.clip(pixels, 0, 1) * 255).round().astype(np.uint8))


def _rgb_and_alpha(image: PIL.Image.Image) -> tuple[PIL.Image.Image, np.ndarray | None]:
    """An 8-bit image as RGB, and its alpha (RGBA, LA, PA, palette or colour-key transparency) or None."""
    alpha = None
    if image.has_transparency_data:
        alpha = np.asarray(image.convert("RGBA"), dtype=np.float32)[..., 3] / 255
    return image.convert("RGB"), alpha


def _exif_bytes(exif: PIL.Image.Exif, file_format: str) -> bytes | None:
    """The EXIF block to keep; a TIFF's own layout tags (strips, samples, ...) describe only that file."""
    if file_format == "TIFF":
        for tag in _TIFF_LAYOUT_TAGS & set(exif):
            del exif[tag]
    return exif.tobytes() if len(exif) else None


def upscaled_photo(
    source: Photo,
    output: PIL.Image.Image | np.ndarray | torch.Tensor,
    *,
    strip_metadata: bool = False,
) -> UpscaledPhoto:
    """
    The image to save for `source` from one of the pipeline's outputs.

    The source's alpha is resized to the output size (bicubic, clipped); its ICC profile is kept if it is an RGB one;
    its EXIF gets Orientation 1 and the new dimensions; its DPI is scaled with the image.

    Args:
        source: The photo as read (`read_photo`).
        output: One pipeline output: a float `(H, W, 3)` array (`output_type="np"`), a float `(3, H, W)` tensor
            (`"pt"`), or an 8-bit PIL image (`"pil"`, which cannot give 16-bit files).
        strip_metadata: Drop EXIF and XMP (the colour profile and DPI stay).
    """
    color, precise = _output_array(output)
    height, width = color.shape[:2]
    source_width, source_height = source.size
    alpha = None
    if source.alpha is not None:
        resized = pil_bicubic_resize(torch.from_numpy(source.alpha)[None, None], (height, width))
        alpha = resized[0, 0].numpy()
    dpi = None
    if source.dpi is not None:
        dpi = (source.dpi[0] * width / source_width, source.dpi[1] * height / source_height)
    icc_profile = source.icc_profile if _is_rgb_profile(source.icc_profile) else None
    exif = None if strip_metadata or source.exif is None else _updated_exif(source.exif, width, height, dpi)
    return UpscaledPhoto(
        color=color,
        alpha=alpha,
        icc_profile=icc_profile,
        exif=exif,
        xmp=None if strip_metadata else source.xmp,
        dpi=dpi,
        precise=precise,
        source_bit_depth=source.bit_depth,
    )


def save_upscaled(
    source: Photo,
    output: PIL.Image.Image | np.ndarray | torch.Tensor,
    path: str | os.PathLike,
    *,
    bit_depth: int | str = "auto",
    strip_metadata: bool = False,
) -> Path:
    """
    Saves the pipeline's `output` for `source` to `path` (atomically), keeping the source's alpha, colour profile,
    metadata and bit depth as `upscaled_photo` and `UpscaledPhoto.save` describe; returns the path.

    Args:
        source, output, strip_metadata: As in `upscaled_photo`.
        path, bit_depth: As in `UpscaledPhoto.save`; checked (`check_save_options`) before any work.
    """
    check_save_options(path, bit_depth=bit_depth)
    return upscaled_photo(source, output, strip_metadata=strip_metadata).save(path, bit_depth=bit_depth)


def check_save_options(path: str | os.PathLike, *, bit_depth: int | str = "auto") -> None:
    """
    Checks, before any work, that results can be saved to `path` with `bit_depth` (the command line calls it before
    loading the model; `save_upscaled` calls it too).

    Args:
        path: The output file; its extension must be one of `SAVE_FORMATS`.
        bit_depth: One of `BIT_DEPTHS`; 16 needs PNG or TIFF.

    Raises:
        ValueError: The first of these that fails.
    """
    _resolve_bit_depth(bit_depth, _save_format(Path(path)), source_bit_depth=8)


def _save_format(path: Path) -> str:
    file_format = SAVE_FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise ValueError(f"cannot save {path}: its extension must be one of {', '.join(sorted(SAVE_FORMATS))}.")
    return file_format


def _resolve_bit_depth(bit_depth: int | str, file_format: str, source_bit_depth: int) -> int:
    if isinstance(bit_depth, str) and bit_depth.isdigit():
        bit_depth = int(bit_depth)
    if bit_depth not in BIT_DEPTHS:
        raise ValueError(f"`bit_depth` must be 8, 16 or 'auto', got {bit_depth!r}.")
    if bit_depth == "auto":
        return 16 if source_bit_depth > 8 and file_format in _SIXTEEN_BIT_FORMATS else 8
    if bit_depth == 16 and file_format not in _SIXTEEN_BIT_FORMATS:
        raise ValueError(f"`bit_depth` 16 needs a PNG or TIFF file, not {file_format}.")
    return bit_depth


def _output_array(output: PIL.Image.Image | np.ndarray | torch.Tensor) -> tuple[np.ndarray, bool]:
    """The pipeline's output as a float32 `(H, W, 3)` array in [0, 1], and whether it had more than 8 bits."""
    if isinstance(output, PIL.Image.Image):
        return np.asarray(output.convert("RGB"), dtype=np.float32) / 255, False
    if isinstance(output, torch.Tensor):
        if output.ndim == 4 and output.shape[0] == 1:
            output = output[0]
        if output.ndim != 3 or output.shape[0] != 3 or not output.is_floating_point():
            raise ValueError(f"`output` tensors must be float (3, H, W), got {output.dtype} {tuple(output.shape)}.")
        output = output.detach().to("cpu", torch.float32).permute(1, 2, 0).numpy()
    if isinstance(output, np.ndarray):
        if output.ndim == 4 and output.shape[0] == 1:
            output = output[0]
        if output.ndim != 3 or output.shape[2] != 3:
            raise ValueError(f"`output` arrays must be (H, W, 3), got shape {output.shape}.")
        if output.dtype == np.uint8:
            return output.astype(np.float32) / 255, False
        if not np.issubdtype(output.dtype, np.floating):
            raise ValueError(f"`output` arrays must be uint8 or float in [0, 1], got dtype {output.dtype}.")
        return np.clip(output.astype(np.float32), 0, 1), True
    raise TypeError(f"`output` must be a PIL image, numpy array or torch tensor, got {type(output).__name__}.")


def _is_rgb_profile(profile: bytes | None) -> bool:
    """Whether an ICC profile describes RGB data (its header's colour space field, bytes 16 to 20)."""
    return profile is not None and profile[16:20] == b"RGB "


def _updated_exif(raw: bytes, width: int, height: int, dpi: tuple[float, float] | None) -> bytes:
    """The EXIF block with Orientation 1 and the pixel dimensions (and resolution, where given) of the output."""
    exif = PIL.Image.Exif()
    exif.load(raw)
    tags = PIL.ExifTags.Base
    exif[tags.Orientation] = 1
    for tag, value in ((tags.ImageWidth, width), (tags.ImageLength, height)):
        if tag in exif:
            exif[tag] = value
    if dpi is not None and tags.XResolution in exif and exif.get(tags.ResolutionUnit, 2) == 2:
        exif[tags.XResolution], exif[tags.YResolution] = dpi
    exif_ifd = exif.get_ifd(PIL.ExifTags.IFD.Exif)
    if exif_ifd:
        exif_ifd[tags.ExifImageWidth] = width
        exif_ifd[tags.ExifImageHeight] = height
    return exif.tobytes()


def _bits_per_sample(image: PIL.Image.Image, path: Path | bytes) -> int:
    if image.format == "PNG":
        with _open_binary(path) as file:
            reader = png.Reader(file=file)
            reader.preamble()
            return reader.bitdepth
    if image.format == "TIFF":
        bits = image.tag_v2.get(258, 8)
        return max(bits) if isinstance(bits, tuple) else int(bits)
    return 8


def _read_png_samples(path: Path | bytes) -> np.ndarray:
    """A PNG of more than 8 bits as float32 `(H, W, C)` in [0, 1] (C: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA)."""
    with _open_binary(path) as file:
        width, height, rows, info = png.Reader(file=file).asDirect()
        samples = np.vstack([np.asarray(row, dtype=np.uint16) for row in rows]).reshape(height, width, info["planes"])
    return samples.astype(np.float32) / (2 ** info["bitdepth"] - 1)


def _read_tiff_samples(path: Path | bytes) -> np.ndarray | None:
    """The first image of a grey or RGB TIFF as stored, `(H, W, C)` (C: 1 grey, 2 grey + alpha, 3 RGB, 4 RGBA);
    None for other TIFFs (palette, CMYK, YCbCr: Pillow converts those)."""
    with _open_binary(path) as file, tifffile.TiffFile(file) as tiff:
        page = tiff.pages[0]
        if page.photometric not in (tifffile.PHOTOMETRIC.MINISBLACK, tifffile.PHOTOMETRIC.RGB):
            return None
        samples = page.asarray()
        if page.planarconfig == tifffile.PLANARCONFIG.SEPARATE and page.samplesperpixel > 1:
            samples = np.moveaxis(samples, 0, -1)
        colour_samples = 3 if page.photometric == tifffile.PHOTOMETRIC.RGB else 1
    if samples.ndim == 2:
        samples = samples[..., None]
    return samples[..., : colour_samples + 1]


def _transpose(samples: np.ndarray, orientation: int) -> np.ndarray:
    """`(H, W, C)` samples turned upright as EXIF `orientation` says (what `PIL.ImageOps.exif_transpose` does)."""
    transposed = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.transpose(1, 0, 2),
        6: lambda a: np.rot90(a, -1),
        7: lambda a: a[::-1, ::-1].transpose(1, 0, 2),
        8: lambda a: np.rot90(a, 1),
    }
    return np.ascontiguousarray(transposed[orientation](samples)) if orientation in transposed else samples


def _split_alpha(samples: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """`(H, W, C)` samples -> an RGB `(H, W, 3)` array and the alpha `(H, W)` (C of 2 or 4) or None."""
    channels = samples.shape[-1]
    alpha = samples[..., -1].copy() if channels in (2, 4) else None
    color = samples[..., :3] if channels >= 3 else np.repeat(samples[..., :1], 3, axis=-1)
    return np.ascontiguousarray(color, dtype=np.float32), alpha


def _write_eight_bit(samples: np.ndarray, file: BinaryIO, file_format: str, photo: UpscaledPhoto) -> None:
    image = PIL.Image.fromarray(samples, "RGBA" if samples.shape[-1] == 4 else "RGB")
    options: dict = {}
    if photo.dpi is not None:
        options["dpi"] = photo.dpi
    if file_format != "BMP":
        if photo.icc_profile is not None:
            options["icc_profile"] = photo.icc_profile
        if photo.exif is not None:
            options["exif"] = photo.exif
    if file_format in ("JPEG", "WEBP"):
        options["quality"] = _LOSSY_QUALITY
        if photo.xmp is not None:
            options["xmp"] = photo.xmp
    if file_format == "PNG" and photo.xmp is not None:
        options["pnginfo"] = PIL.PngImagePlugin.PngInfo()
        options["pnginfo"].add_itxt(_XMP_PNG_KEY, photo.xmp.decode("utf-8", errors="replace"))
    if file_format == "TIFF" and photo.xmp is not None:  # Pillow writes `tiffinfo` instead of `exif`: merge them
        tiffinfo = PIL.Image.Exif()
        if photo.exif is not None:
            tiffinfo.load(photo.exif)
        tiffinfo[_TIFF_XMP_TAG] = photo.xmp
        options["tiffinfo"] = tiffinfo
    image.save(file, format=file_format, **options)


def _write_sixteen_bit(samples: np.ndarray, file: BinaryIO, file_format: str, photo: UpscaledPhoto) -> None:
    height, width, channels = samples.shape
    if file_format == "PNG":
        encoded = io.BytesIO()
        writer = png.Writer(width, height, greyscale=False, alpha=channels == 4, bitdepth=16, compression=6)
        writer.write(encoded, samples.reshape(height, width * channels))
        chunks = list(png.Reader(bytes=encoded.getvalue()).chunks())
        png.write_chunks(file, chunks[:1] + _png_metadata_chunks(photo) + chunks[1:])
        return
    extratags = []
    if photo.xmp is not None:
        extratags.append((_TIFF_XMP_TAG, "B", len(photo.xmp), photo.xmp, True))
    if photo.exif is not None:  # the main IFD's tags; the EXIF sub-IFD has no place in tifffile's writer
        exif = PIL.Image.Exif()
        exif.load(photo.exif)
        tags = PIL.ExifTags.Base
        for tag in (tags.Make, tags.Model, tags.DateTime, tags.Artist, tags.Copyright, tags.ImageDescription):
            if isinstance(exif.get(tag), str):
                extratags.append((tag, "s", 0, exif[tag], True))
    encoded = io.BytesIO()  # tifffile takes the name of a file object, which ours (a bare descriptor) lacks
    tifffile.imwrite(
        encoded,
        samples,
        photometric="rgb",
        extrasamples=("unassalpha",) if channels == 4 else None,
        compression="zlib",
        iccprofile=photo.icc_profile,
        resolution=photo.dpi,
        resolutionunit="INCH" if photo.dpi is not None else None,
        extratags=extratags,
        metadata=None,
    )
    file.write(encoded.getbuffer())


def _png_metadata_chunks(photo: UpscaledPhoto) -> list[tuple[bytes, bytes]]:
    """PNG chunks for the ICC profile (iCCP), DPI (pHYs), EXIF (eXIf) and XMP (iTXt), to follow the header."""
    chunks = []
    if photo.icc_profile is not None:
        chunks.append((b"iCCP", b"ICC profile\0\0" + zlib.compress(photo.icc_profile)))
    if photo.dpi is not None:
        per_metre = [round(value / 0.0254) for value in photo.dpi]
        chunks.append((b"pHYs", struct.pack(">IIB", per_metre[0], per_metre[1], 1)))
    if photo.exif is not None:
        chunks.append((b"eXIf", photo.exif.removeprefix(b"Exif\0\0")))
    if photo.xmp is not None:
        chunks.append((b"iTXt", _XMP_PNG_KEY.encode() + b"\0\0\0\0\0" + photo.xmp))
    return chunks
