# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""atomic_write_file and atomic_write_path: a target is either replaced whole or left as it was, never half-written,
even after a power cut; the temporary file is new, short-named and never a planted link; and the clean-up of the
temporary files that killed processes leave behind."""

import os
import re
import stat
import subprocess
import sys
import time

import pytest

from diffusers_dit4sr import file_utils
from diffusers_dit4sr.file_utils import (
    atomic_write_file,
    atomic_write_path,
    flush_to_disk,
    remove_stale_temporary_files,
    temporary_path,
)


def test_replaces_the_target_and_creates_its_folder(tmp_path):
    target = tmp_path / "new" / "out.json"
    with atomic_write_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".out.")
        assert temporary.name.endswith(f".json.{os.getpid()}.tmp") and temporary.read_bytes() == b""
        temporary.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert os.listdir(target.parent) == ["out.json"]

    with atomic_write_file(target) as file:
        file.write(b"again")
        assert os.listdir(target.parent) != ["out.json"] and target.read_text() == "done"
    assert target.read_text() == "again" and os.listdir(target.parent) == ["out.json"]


@pytest.mark.parametrize("writer", [atomic_write_path, atomic_write_file])
def test_failure_keeps_the_old_file_and_leaves_nothing_behind(tmp_path, writer):
    target = tmp_path / "out.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), writer(target) as written:
        if isinstance(written, os.PathLike):
            written.write_text("half")
        else:
            written.write(b"half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.png"]


@pytest.mark.parametrize("writer", [atomic_write_path, atomic_write_file])
def test_permissions_are_those_of_any_new_file(tmp_path, writer):
    (tmp_path / "plain").write_text("x")
    with writer(tmp_path / "atomic"):
        pass
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


def test_temporary_names_are_fresh_hidden_and_short(tmp_path):
    long_name = "é" * 120 + ".png"  # 244 bytes in UTF-8
    names = {temporary_path(tmp_path / long_name).name for _ in range(20)}
    assert len(names) == 20  # random: nobody can plant a file at the next one
    for name in names:
        assert name.startswith(".") and name.endswith(f".png.{os.getpid()}.tmp") and len(os.fsencode(name)) <= 80
    assert temporary_path(tmp_path / "a.png", pid=42).name.endswith(".png.42.tmp")
    odd = temporary_path(tmp_path / ("a." + "x" * 400)).name  # an extension too long to keep: the stem is cut
    assert re.fullmatch(rf"\.a\.x{{30}}\.[0-9a-f]{{8}}\.{os.getpid()}\.tmp", odd)


@pytest.mark.parametrize("writer", [atomic_write_path, atomic_write_file])
def test_a_252_byte_name_is_written(tmp_path, writer):
    target = tmp_path / ("a" * 248 + ".png")  # its old temporary name, ".{name}.{pid}.tmp", was over 255 bytes
    with writer(target) as written:
        if isinstance(written, os.PathLike):
            written.write_bytes(b"image")
        else:
            written.write(b"image")
    assert target.read_bytes() == b"image" and os.listdir(tmp_path) == [target.name]


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")
@pytest.mark.parametrize("writer", [atomic_write_path, atomic_write_file])
def test_a_link_planted_at_the_temporary_name_is_not_followed(tmp_path, monkeypatch, writer):
    # The first temporary name is known in advance (then random again, as a writer finding it taken tries another).
    token_hex = file_utils.secrets.token_hex
    tokens = iter(["00000000"])
    monkeypatch.setattr(file_utils.secrets, "token_hex", lambda size: next(tokens, None) or token_hex(size))
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file")
    target = tmp_path / "out" / "photo.png"
    target.parent.mkdir()
    planted = [
        target.with_name(f".photo.00000000.png.{os.getpid()}.tmp"),
        target.with_name(f".{target.name}.{os.getpid()}.tmp"),  # the name of earlier versions
    ]
    for link in planted:
        link.symlink_to(victim)

    with writer(target) as written:
        if isinstance(written, os.PathLike):
            assert not written.is_symlink()
            written.write_bytes(b"PNG bytes")
        else:
            written.write(b"PNG bytes")
    assert victim.read_text() == "someone else's file"
    assert stat.S_ISREG(os.lstat(target).st_mode) and target.read_bytes() == b"PNG bytes"
    assert all(link.is_symlink() for link in planted)  # left alone, and not renamed over the target


@pytest.mark.skipif(sys.platform == "win32", reason="symbolic links need privileges on Windows")
def test_a_temporary_file_swapped_for_a_link_does_not_replace_the_target(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old")
    with pytest.raises(OSError, match="was replaced while it was written"), atomic_write_path(target) as temporary:
        temporary.unlink()
        temporary.symlink_to(tmp_path / "elsewhere")
    assert target.read_text() == "old" and not target.is_symlink()


@pytest.mark.skipif(not hasattr(os, "O_DIRECTORY"), reason="folders are flushed where they can be opened")
@pytest.mark.parametrize("writer", [atomic_write_path, atomic_write_file])
def test_the_file_then_its_folder_reach_the_disk_around_the_rename(tmp_path, monkeypatch, writer):
    events = []
    fsync, replace = os.fsync, os.replace

    def recording_fsync(descriptor):
        events.append(("fsync", "folder" if stat.S_ISDIR(os.fstat(descriptor).st_mode) else "file"))
        fsync(descriptor)

    def recording_replace(source, destination):
        events.append(("replace", os.path.basename(destination)))
        replace(source, destination)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    monkeypatch.setattr(os, "replace", recording_replace)
    with writer(tmp_path / "out.png"):
        pass
    assert events == [("fsync", "file"), ("replace", "out.png"), ("fsync", "folder")]


def test_flush_to_disk_takes_files_and_folders(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("x")
    kinds = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (kinds.append(stat.S_ISDIR(os.fstat(fd).st_mode)), fsync(fd)))
    flush_to_disk(tmp_path / "file")
    flush_to_disk(tmp_path)
    assert kinds == ([False, True] if hasattr(os, "O_DIRECTORY") else [False])


# --- Stale temporary files -------------------------------------------------------------------------------------


def dead_pid() -> int:
    """The id of a process that has ended (pids are reused only after the system has gone through the others)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


@pytest.fixture
def live_pid():
    """The id of another process that runs while the test does."""
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    yield process.pid
    process.kill()
    process.wait()


@pytest.mark.skipif(sys.platform == "win32", reason="processes are looked up by pid on POSIX only")
def test_temporary_files_of_dead_processes_are_removed_and_those_of_live_ones_kept(tmp_path, live_pid):
    stale = temporary_path(tmp_path / "a.png", pid=dead_pid())
    live = temporary_path(tmp_path / "b.png", pid=live_pid)
    own = temporary_path(tmp_path / "c.png")  # this process: possibly a write in flight
    others = [tmp_path / "a.png", tmp_path / ".notes.tmp", tmp_path / ".a.png.x12.tmp", tmp_path / ".a.png.12.tmp.bak"]
    for path in [stale, live, own, *others]:
        path.write_bytes(b"x")

    assert remove_stale_temporary_files(tmp_path) == [stale]
    assert sorted(os.listdir(tmp_path)) == sorted(path.name for path in [live, own, *others])
    assert remove_stale_temporary_files(tmp_path / "missing") == []


@pytest.mark.skipif(sys.platform == "win32", reason="processes are looked up by pid on POSIX only")
def test_the_suffixes_limit_the_clean_up(tmp_path):
    pid = dead_pid()
    image, other = temporary_path(tmp_path / "a.PNG", pid=pid), temporary_path(tmp_path / "a.json", pid=pid)
    image.write_bytes(b"x")
    other.write_bytes(b"x")

    assert remove_stale_temporary_files(tmp_path, suffixes=(".png", ".txt")) == [image]
    assert os.listdir(tmp_path) == [other.name]


@pytest.mark.skipif(not os.path.exists(f"/proc/{os.getpid()}/stat"), reason="process start times come from /proc")
def test_a_reused_pid_does_not_protect_an_older_file(tmp_path, live_pid):
    # The live process started after the file was last written: it cannot be the writer (the pid was reused).
    older = temporary_path(tmp_path / "a.png", pid=live_pid)
    newer = temporary_path(tmp_path / "b.png", pid=live_pid)
    older.write_bytes(b"x")
    newer.write_bytes(b"x")
    os.utime(older, (time.time() - 3600, time.time() - 3600))

    assert remove_stale_temporary_files(tmp_path) == [older]
    assert os.listdir(tmp_path) == [newer.name]
