# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Helpers shared by the test modules."""

import importlib
import importlib.machinery
import importlib.util
import socket
from pathlib import Path
from types import ModuleType, SimpleNamespace

import PIL.ExifTags
import PIL.Image
import pytest
from huggingface_hub.errors import HfHubHTTPError

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
HEADLESS_CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
)
"""How the browser tests start Debian's Chromium: headless, as root in a container, without a GPU or its own traffic."""


def import_benchmark(name: str) -> ModuleType:
    """Imports a module of `benchmarks/`, which import each other as top-level modules."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(BENCHMARKS))
        return importlib.import_module(name)


def pretend_installed(monkeypatch: pytest.MonkeyPatch, package: str, installed: bool) -> None:
    """Makes `importlib.util.find_spec` say whether `package` is installed, for checks that look before importing."""
    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args, **kwargs):
        if name == package or name.startswith(package + "."):
            return importlib.machinery.ModuleSpec(name, loader=None) if installed else None
        return real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


# --- Hub failures, as the libraries raise them --------------------------------------------------------------------


def hub_http_error(kind: type[HfHubHTTPError], status: int, url: str = "https://huggingface.co/api/models/me/x"):
    """A Hub HTTP exception as huggingface_hub raises it (its constructor reads the response's headers and request)."""
    response = SimpleNamespace(status_code=status, headers={}, request=SimpleNamespace(url=url))
    return kind(f"{status} Client Error for url: {url}", response=response)


def wrapped(cause: BaseException, context: BaseException | None = None) -> OSError:
    """What diffusers and transformers raise: an OSError with a misleading message, the Hub's exception as its cause."""
    cause.__context__ = context
    error = OSError("me/x does not appear to have a file named config.json.")
    error.__cause__ = cause
    return error


def dns_failure() -> ConnectionError:
    """A failed DNS lookup, as requests raises it."""
    error = ConnectionError("[Errno -2] Name or service not known")
    error.__cause__ = socket.gaierror(-2, "Name or service not known")
    return error


# --- Photos -----------------------------------------------------------------------------------------------------------


def camera_exif(orientation: int) -> PIL.Image.Exif:
    """EXIF as a camera writes it: make, model, orientation and the date taken (in the Exif sub-IFD)."""
    exif = PIL.Image.Exif()
    exif[PIL.ExifTags.Base.Make] = "Canon"
    exif[PIL.ExifTags.Base.Model] = "EOS R5"
    exif[PIL.ExifTags.Base.Orientation] = orientation
    exif.get_ifd(PIL.ExifTags.IFD.Exif)[PIL.ExifTags.Base.DateTimeOriginal] = "2021:06:05 14:03:02"
    return exif
