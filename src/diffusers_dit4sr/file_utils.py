# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Writing files so that no reader ever sees half of one, and a power cut loses none: write a temporary file next to
the target, flush it to the disk, rename it over the target, flush the folder. Whole folders (saved models) the same
way: `atomic_write_folder`, `replace_folder`.

The temporary file is created exclusively under a random name (never an existing file, never through a link someone
planted), and its name stays short whatever the target's, so that a target of 255 bytes still has one. A process
killed in the middle of a write (`kill -9`, a power cut) cannot clean up after itself and leaves its temporary file
behind; `remove_stale_temporary_files` removes such leftovers, and only those of dead processes.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

__all__ = [
    "INCOMPLETE_SUFFIX",
    "atomic_write_file",
    "atomic_write_folder",
    "atomic_write_path",
    "flush_to_disk",
    "remove_stale_temporary_files",
    "replace_folder",
    "temporary_path",
]

_TEMPORARY_NAME = re.compile(r"^\.(?P<name>.+)\.(?P<pid>[0-9]+)\.tmp$")
STALE_AGE_WITHOUT_PID_CHECK = 24 * 3600.0
"""Where a process cannot be looked up by its id (Windows), a temporary file this old (seconds) is stale."""
_CLOCK_SLACK = 2.0
"""Seconds of slack when comparing a file's time with a process's start time (the boot time is whole seconds)."""
_KEPT_STEM_BYTES = 32
_KEPT_SUFFIX_BYTES = 16
"""How much of the target's stem and extension a temporary name keeps: at most about 80 bytes in all."""
INCOMPLETE_SUFFIX = ".incomplete"
"""The suffix of a folder being written (`atomic_write_folder`): whatever holds it is not to be read."""
_NEW_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)


def temporary_path(path: str | os.PathLike, pid: int | None = None) -> Path:
    """A fresh temporary name for `path` in its folder: `.{stem}.{random}{extension}.{pid}.tmp`, hidden, never ending
    like the target (readers looking for finished files skip it), with the stem and extension cut short enough that
    the name fits any file system; `pid` is the writing process (by default this one)."""
    path = Path(path)
    suffix = path.suffix if len(os.fsencode(path.suffix)) <= _KEPT_SUFFIX_BYTES else ""
    stem = _cut(path.name[: len(path.name) - len(suffix)], _KEPT_STEM_BYTES)
    return path.with_name(f".{stem}.{secrets.token_hex(4)}{suffix}.{os.getpid() if pid is None else pid}.tmp")


def _cut(text: str, max_bytes: int) -> str:
    """`text` cut to at most `max_bytes` bytes in the file system's encoding, at a character boundary."""
    while len(os.fsencode(text)) > max_bytes:
        text = text[:-1]
    return text


@contextmanager
def atomic_write_file(path: str | os.PathLike) -> Iterator[BinaryIO]:
    """
    Yields a new temporary file next to `path`, open for writing in binary; when the block ends without error, the
    file is flushed to the disk and replaces `path` (and the folder is flushed too), so that after a crash or power
    cut `path` holds either its old content or the whole new one.

    The temporary file is created exclusively (`O_EXCL`, and `O_NOFOLLOW` where the system has it) and written
    through that very file descriptor, so a link planted in the folder is never followed. A failed or interrupted
    write removes it. The folder is created if needed, and the file gets the permissions `open()` gives any new file.
    """
    path = Path(path)
    temporary, descriptor = _create_temporary(path)
    try:
        with os.fdopen(descriptor, "wb") as file:
            yield file
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
        _flush_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


@contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """
    Yields the path of a new, empty temporary file next to `path` to write to, for writers that take a path; when the
    block ends without error, it is flushed to the disk and replaces `path`, as `atomic_write_file` does (prefer that
    one: writing through the path opens the file a second time).

    The temporary file is created exclusively under a random name; if a link or anything but a regular file is
    found there when the block ends, nothing replaces `path` and an `OSError` says so. A failed or interrupted write
    removes it.
    """
    path = Path(path)
    temporary, descriptor = _create_temporary(path)
    os.close(descriptor)
    try:
        yield temporary
        # Writers may replace the file (safetensors does), but a link in its place is never renamed over `path`.
        if not stat.S_ISREG(os.lstat(temporary).st_mode):
            raise OSError(f"{temporary} was replaced while it was written: {path} is left as it was")
        flush_to_disk(temporary)
        os.replace(temporary, path)
        _flush_folder(path.parent)
    finally:
        temporary.unlink(missing_ok=True)


def _create_temporary(path: Path) -> tuple[Path, int]:
    """A new temporary file for `path` (its folder created if needed) and its open descriptor."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        temporary = temporary_path(path)
        try:
            return temporary, os.open(temporary, _NEW_FILE_FLAGS, 0o666)
        except FileExistsError:  # 2**32 random names: someone planted this one
            continue


@contextmanager
def atomic_write_folder(path: str | os.PathLike) -> Iterator[Path]:
    """
    Yields a new, empty folder `{path}.incomplete` next to `path` to fill; when the block ends without error, it
    replaces `path` as `replace_folder` does, so that `path` is never a half-written folder, even after a power cut.

    A failed block removes the folder; a killed one leaves it (its name says what it is), and the next call for the
    same `path` removes it.
    """
    path = Path(path)
    incomplete = path.with_name(path.name + INCOMPLETE_SUFFIX)
    if incomplete.exists():
        shutil.rmtree(incomplete)
    incomplete.mkdir(parents=True)
    try:
        yield incomplete
        replace_folder(incomplete, path)
    finally:
        shutil.rmtree(incomplete, ignore_errors=True)


def replace_folder(source: str | os.PathLike, destination: str | os.PathLike) -> None:
    """
    Flushes every file and folder under `source` to the disk, then renames `source` to `destination` and flushes
    their parent. An existing `destination` is first set aside as `{destination}.replaced.incomplete` and removed once
    `source` is in its place: a crash in between leaves both, never neither.

    Args:
        source: The folder written, whole.
        destination: Where it goes, in the same file system.
    """
    source, destination = Path(source), Path(destination)
    for path in sorted(source.rglob("*"), reverse=True):  # files before the folders that hold them
        flush_to_disk(path)
    flush_to_disk(source)
    if destination.exists():
        replaced = destination.with_name(destination.name + ".replaced" + INCOMPLETE_SUFFIX)
        shutil.rmtree(replaced, ignore_errors=True)
        os.replace(destination, replaced)
        os.replace(source, destination)
        shutil.rmtree(replaced)
    else:
        os.replace(source, destination)
    _flush_folder(destination.parent)


def flush_to_disk(path: str | os.PathLike) -> None:
    """Waits until the file or folder at `path` (a folder: its list of names) is on the disk (`fsync`), so that it
    survives a power cut. Folders cannot be opened for that on Windows: there it does nothing for them."""
    if os.path.isdir(path):
        _flush_folder(Path(path))
        return
    descriptor = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _flush_folder(folder: Path) -> None:
    if not hasattr(os, "O_DIRECTORY"):  # Windows: NTFS journals renames itself
        return
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def remove_stale_temporary_files(folder: str | os.PathLike, suffixes: tuple[str, ...] | None = None) -> list[Path]:
    """
    Removes the temporary files of `atomic_write_file` and `atomic_write_path` in `folder` that a killed process left
    behind; returns them.

    A temporary file is stale when the process named by its pid no longer runs, or (Linux) when the process now
    holding that pid started after the file was last written: pids are reused, and that process cannot have written
    it. The file of a live writer is never touched. Where processes cannot be looked up (Windows), only files older
    than `STALE_AGE_WITHOUT_PID_CHECK` go. A missing or unreadable folder, or a file that cannot be removed, is left
    alone.

    Args:
        folder: Where to look (not its subfolders).
        suffixes: Only the temporaries of targets with these extensions (lowercase, with the dot); `None`: all.
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
        stat_line = Path(f"/proc/{pid}/stat").read_text()
        boot_line = next(line for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime "))
        # Field 22 (starttime, in clock ticks since boot); the fields after the parenthesized command name start at 3.
        start_ticks = int(stat_line[stat_line.rindex(")") + 2 :].split()[19])
        return int(boot_line.split()[1]) + start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, StopIteration, ValueError, IndexError):
        return None
