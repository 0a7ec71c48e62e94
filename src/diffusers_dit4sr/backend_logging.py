# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Quiets what optional quantization backends log when they are imported, for programs that own the terminal.

Diffusers imports torchao and bitsandbytes whenever they are installed (to know its quantizers), and they log at
import time when their compiled kernels do not fit the installed torch or cannot be downloaded: lines a user of
`dit4sr-upscale` cannot act on, printed before the one line that matters. Library code never calls this: importing
`diffusers_dit4sr` leaves other libraries' logging alone.
"""

from __future__ import annotations

import logging

__all__ = ["BACKEND_LOGGERS", "quiet_backend_imports"]

BACKEND_LOGGERS = ("torchao", "bitsandbytes", "kernels", "torch.utils._pytree", "diffusers.quantizers")
"""The loggers that speak when the backends are imported (`kernels`: bitsandbytes' kernel downloads; torch's `_pytree`:
torchao's enum registrations)."""


def quiet_backend_imports() -> None:
    """Raises `BACKEND_LOGGERS` to errors; call it before the first import of Diffusers."""
    for name in BACKEND_LOGGERS:
        logging.getLogger(name).setLevel(logging.ERROR)
