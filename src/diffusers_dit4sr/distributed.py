# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The processes of a multi-process run (`accelerate launch`, `torchrun`): who they are, which share of a job list
each takes, and how they wait for and count with each other.

A launcher tells each process its place through the environment (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`,
`LOCAL_WORLD_SIZE`); a process started on its own is the only one. Each process takes every `count`-th item of the
(sorted) job list, starting at its rank: the split depends on nothing but the list and the number of processes, so
every process computes it alone, without talking to the others. Talking (a barrier, gathering results) goes through
accelerate's `PartialState`, which joins the launcher's process group (NCCL between GPUs, gloo on the CPU).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, TypeVar

import torch
from accelerate import PartialState

__all__ = ["COLLECTIVE_TIMEOUT", "ONE_PROCESS", "Processes", "share"]

T = TypeVar("T")

COLLECTIVE_TIMEOUT = timedelta(days=7)
"""How long a process waits for the others at a barrier or a gather. Processes finish their shares at different
times (a process whose model failed to load waits for the others' whole runs), so the default (10 to 30 minutes)
would kill long runs; a process that dies still ends the run at once, through the launcher."""


def share(items: Sequence[T], index: int, count: int) -> list[T]:
    """One process's share of `items`: items `index`, `index + count`, ... (strided, so that every process gets a
    similar mix of the list, and the shares of `count` processes cover it once).

    Args:
        items: The whole list, in the same order on every process.
        index: The process's rank, from 0.
        count: The number of processes.
    """
    if count < 1 or not 0 <= index < count:
        raise ValueError(f"process index {index} is not in 0..{count - 1}")
    return list(items[index::count])


@dataclass(frozen=True)
class Processes:
    """This process's place in its run: `index` of `count` processes (all machines), `local_index` of
    `local_count` on this machine."""

    index: int = 0
    count: int = 1
    local_index: int = 0
    local_count: int = 1

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Processes:
        """Reads the launcher's variables; without them, the only process. Raises `ValueError` for values that
        contradict each other (a hand-made environment)."""
        environ = os.environ if environ is None else environ
        values = {}
        for name, default in (("RANK", 0), ("WORLD_SIZE", 1), ("LOCAL_RANK", None), ("LOCAL_WORLD_SIZE", None)):
            text = environ.get(name)
            if text is None or text == "":
                values[name] = default
                continue
            try:
                values[name] = int(text)
            except ValueError:
                raise ValueError(f"the environment variable {name}={text!r} is not an integer") from None
        count, index = values["WORLD_SIZE"], values["RANK"]
        local_index = index if values["LOCAL_RANK"] is None else values["LOCAL_RANK"]
        local_count = count if values["LOCAL_WORLD_SIZE"] is None else values["LOCAL_WORLD_SIZE"]
        if count < 1 or not 0 <= index < count:
            raise ValueError(f"the environment says RANK={index} and WORLD_SIZE={count}: RANK must be below it")
        if not 1 <= local_count <= count or not 0 <= local_index < local_count:
            raise ValueError(
                f"the environment says LOCAL_RANK={local_index} and LOCAL_WORLD_SIZE={local_count} with "
                f"WORLD_SIZE={count}: LOCAL_RANK must be below LOCAL_WORLD_SIZE, which cannot exceed WORLD_SIZE"
            )
        return cls(index, count, local_index, local_count)

    @property
    def is_main(self) -> bool:
        """The process that speaks for the run (its summary): rank 0."""
        return self.index == 0

    @property
    def several(self) -> bool:
        return self.count > 1

    def share(self, items: Sequence[T]) -> list[T]:
        """This process's share of `items` (see [`share`])."""
        return share(items, self.index, self.count)

    def join(self, device: torch.device) -> None:
        """Joins the launcher's process group (NCCL for CUDA devices, gloo on the CPU). A lone process does nothing."""
        if not self.several or (torch.distributed.is_available() and torch.distributed.is_initialized()):
            return
        # `cpu=True` is what makes accelerate see the ranks of a CPU run (it would take one process otherwise).
        PartialState(cpu=device.type == "cpu", timeout=COLLECTIVE_TIMEOUT)

    def barrier(self) -> None:
        """Waits until every process got here."""
        if self.several:
            torch.distributed.barrier()

    def gather(self, value: Any) -> list[Any]:
        """`value` of every process, in rank order, on every process (any picklable value)."""
        if not self.several:
            return [value]
        values: list[Any] = [None] * self.count
        torch.distributed.all_gather_object(values, value)
        return values

    def leave(self) -> None:
        """Leaves the process group, so that the launcher sees a clean exit."""
        if self.several and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


ONE_PROCESS = Processes()
"""A process started on its own: it does every job, and waits for no one."""
