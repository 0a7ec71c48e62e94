# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Writing files so that no reader ever sees half of one: write next to the target, then rename over it.

A process killed in the middle of a write (`kill -9`, a power cut) cannot clean up after itself and leaves its
temporary file behind; `remove_stale_temporary_files` removes such leftovers, and only those of dead processes.
"""

from __future__ import annotations

import os
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["atomic_write_path", "remove_stale_temporary_files", "temporary_path"]

_TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.tmp$")
STALE_AGE_WITHOUT_PID_CHECK = 24 * 3600.0
"""Where a process cannot be looked up by its id (Windows), a temporary file this old (seconds) is stale."""
_CLOCK_SLACK = 2.0
"""Seconds of slack when comparing a file's time with a process's start time (the boot time is whole seconds)."""


def temporary_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    """The temporary file `atomic_write_path` writes `path` through: `.{name}.{pid}.tmp` in the same folder."""
    path = Path(path)
    return path.with_name(f".{path.name}.{os.getpid() if pid is None else pid}.tmp")


@contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """
    Yields a temporary path next to `path` to write to; when the block ends without error, it replaces `path`.

    The temporary name (`.{name}.{pid}.tmp`) is hidden and never ends like the target, so readers that look for
    finished files skip it; a failed or interrupted write removes it. The folder is created if needed, and the file gets
    the permissions `open()` gives any new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = temporary_path(path)
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def remove_stale_temporary_files(folder: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """
    Removes the temporary files of `atomic_write_path` in `folder` that a killed process left behind; returns them.

    A temporary file is stale when the process named by its pid no longer runs, or (Linux) when the process now
    holding that pid started after the file was last written: pids are reused, and that process cannot have written
    it. The file of a live writer is never touched. Where processes cannot be looked up (Windows), only files older
    than `STALE_AGE_WITHOUT_PID_CHECK` go. `suffixes` (lowercase, with the dot) limits the clean-up to temporaries of
    targets with these extensions. A missing or unreadable folder, or a file that cannot be removed, is left alone.
    """
    removed = []
    try:
        entries = sorted(Path(folder).iterdir())
    except OSError:
        return removed
    for entry in entries:
        match = _TEMPORARY_NAME.match(entry.name)
        if match is None or (suffixes is not None and Path(match["name"]).suffix.lower() not in suffixes):
            continue
        try:
            if not entry.is_file() or not _is_stale(entry, int(match["pid"])):
                continue
            entry.unlink()
        except OSError:
            continue
        removed.append(entry)
    return removed


def _is_stale(path: Path, pid: int) -> bool:
    modified = path.stat().st_mtime
    if sys.platform == "win32":  # os.kill(pid, 0) would terminate the process there
        return time.time() - modified > STALE_AGE_WITHOUT_PID_CHECK
    if pid == os.getpid():
        return False  # possibly a write of this very process, in flight
    if not _process_exists(pid):
        return True
    started = _process_start_time(pid)
    return started is not None and modified < started - _CLOCK_SLACK


def _process_exists(pid: int) -> bool:
    if pid <= 0:
        return False  # not a process id: 0 and negative numbers signal process groups
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # it exists, owned by another user
    except (OverflowError, OSError):
        return False  # no such process id on this system
    return True


def _process_start_time(pid: int) -> float | None:
    """When process `pid` started (seconds since the epoch), where `/proc` tells (Linux); else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        boot_line = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        # Field 22 (starttime, in clock ticks since boot); the fields after the parenthesized command name start at 3.
        start_ticks = int(stat[stat.rindex(")") + 2 :].split()[19])
        return int(boot_line.split()[1]) + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None
