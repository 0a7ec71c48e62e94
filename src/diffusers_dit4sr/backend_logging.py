# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""What optional quantization backends log when Diffusers imports them: hidden, for every user of the package, and
quieter still for programs that own the terminal.

Diffusers imports torchao (and bitsandbytes) whenever they are installed, to know its quantizers, and they log at
import time when their compiled kernels do not fit the installed torch: "Failed to load .../torchao/_C_mxfp8...",
torch's `_pytree` deprecation of torchao's enum registrations, Diffusers' "Unable to import `torchao` Tensor
objects", "Skipping import of cpp extensions", bitsandbytes' "Failed to load CPU gemm_4bit_forward". Nothing failed
that the user could act on. `hide_import_noise`, which the package runs on import, drops exactly those records (a
filter on the loggers that emit them; levels, handlers and every other message stay as they are).
`quiet_backend_imports` is for the command line only: it raises the backends' loggers to errors.
"""

from __future__ import annotations

import logging
import re

__all__ = ["BACKEND_LOGGERS", "IMPORT_NOISE", "hide_import_noise", "quiet_backend_imports"]

BACKEND_LOGGERS = ("torchao", "bitsandbytes", "kernels", "torch.utils._pytree", "diffusers.quantizers")
"""The loggers that speak when the backends are imported (`kernels`: bitsandbytes' kernel downloads; torch's `_pytree`:
torchao's enum registrations)."""

IMPORT_NOISE = {
    "torchao": re.compile(r"Failed to load \S*torchao\S*: |Skipping import of cpp extensions"),
    "torchao.kernel.intmm": re.compile(r"Detected no triton"),
    "torch.utils._pytree": re.compile(r"is an Enum subclass and is now natively supported by torch\.compile"),
    "diffusers.quantizers.torchao.torchao_quantizer": re.compile(r"Unable to import `torchao` Tensor objects"),
    "bitsandbytes.backends.cpu.ops": re.compile(r"Failed to load CPU gemm_4bit_forward from kernels-community"),
}
"""The messages the backends log on import, by the logger that logs them (torchao 0.15 to 0.18 beside torch 2.13 and
2.14, bitsandbytes 0.50 on a CPU, whose optional kernel download is refused, Diffusers 0.42)."""


class _ImportNoise(logging.Filter):
    """Drops the records of one logger whose message matches `pattern`."""

    def __init__(self, pattern: re.Pattern[str]) -> None:
        super().__init__()
        self.pattern = pattern

    def filter(self, record: logging.LogRecord) -> bool:
        return self.pattern.search(record.getMessage()) is None


def hide_import_noise() -> None:
    """Filters `IMPORT_NOISE` out of the loggers that emit it (once; later calls change nothing)."""
    for name, pattern in IMPORT_NOISE.items():
        logger = logging.getLogger(name)
        if not any(isinstance(existing, _ImportNoise) for existing in logger.filters):
            logger.addFilter(_ImportNoise(pattern))


def quiet_backend_imports() -> None:
    """Raises `BACKEND_LOGGERS` to errors; call it before the first import of Diffusers."""
    for name in BACKEND_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
