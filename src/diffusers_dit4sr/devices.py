# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Where models run and in which precision: the one device and dtype resolution of the library (upscaling,
captioning, evaluation), the command lines and the demo."""

from __future__ import annotations

import torch

from .constants import DTYPE_NAMES
from .distributed import ONE_PROCESS, Processes

__all__ = ["DTYPES", "resolve_device", "resolve_dtype"]

DTYPES = dict(zip(DTYPE_NAMES, (torch.bfloat16, torch.float16, torch.float32), strict=True))
"""The torch dtype of each precision name of `constants.DTYPE_NAMES`."""


def resolve_device(
    name: str | torch.device | None = "auto", processes: Processes = ONE_PROCESS, *, option: str = "device"
) -> torch.device:
    """The device `name` says.

    Args:
        name: `"auto"` (or `None`) picks CUDA, then MPS, then the CPU; a named device (`"cuda:1"`, a `torch.device`)
            must exist on this machine.
        processes: This process's place in a multi-process run: one of several takes CUDA device `LOCAL_RANK` (or
            the CPU), and `name` must then be `"auto"`, `"cuda"` or `"cpu"`.
        option: How messages name the argument (`"--device"` on the command line).

    Raises:
        ValueError: A device this machine does not have; the message starts with `option` and the name.
        TypeError: `name` is neither a string nor a `torch.device`.
    """
    if name is None:
        name = "auto"
    if not isinstance(name, (str, torch.device)):
        raise TypeError(f"{option} must be a str or torch.device, got {name!r}")
    if processes.several:
        return _device_of_process(str(name), processes, option)
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise ValueError(f"{option} {name}: {error}") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"{option} {name}: CUDA is not available on this machine")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        count = torch.cuda.device_count()
        raise ValueError(
            f"{option} {name}: this machine has {count} CUDA device{'s' if count != 1 else ''} (cuda:0 to "
            f"cuda:{count - 1})"
        )
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"{option} {name}: MPS is not available on this machine")
    return device


def _device_of_process(name: str, processes: Processes, option: str) -> torch.device:
    kind = ("cuda" if torch.cuda.is_available() else "cpu") if name == "auto" else name
    if kind == "cpu":
        return torch.device("cpu")
    if kind != "cuda":
        raise ValueError(
            f"{option} {name}: with {processes.count} processes, each takes its own CUDA device (cuda:LOCAL_RANK); "
            f"pass {option} auto, cuda or cpu"
        )
    if not torch.cuda.is_available():
        raise ValueError(f"{option} {name}: CUDA is not available on this machine")
    count = torch.cuda.device_count()
    if processes.local_count > count:
        raise ValueError(
            f"{processes.local_count} processes were started on this machine, but it has {count} CUDA "
            f"device{'s' if count != 1 else ''}: start one process per GPU (accelerate launch --num_processes {count})"
        )
    return torch.device("cuda", processes.local_index)


def resolve_dtype(name: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The precision `name` says.

    Args:
        name: One of `DTYPE_NAMES`, or a torch dtype; `None`: bf16 on accelerators (the weights' precision) and fp32
            on the CPU.
        device: Where the model runs.

    Raises:
        ValueError: An unknown name.
    """
    if name is None:
        return torch.float32 if device.type == "cpu" else torch.bfloat16
    if isinstance(name, torch.dtype):
        return name
    if name not in DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    return DTYPES[name]
