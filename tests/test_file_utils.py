"""atomic_write_path: a target is either replaced whole or left as it was, never half-written; and the clean-up of
the temporary files that killed processes leave behind."""

import os
import subprocess
import sys
import time

import pytest

from diffusers_dit4sr.file_utils import atomic_write_path, remove_stale_temporary_files, temporary_path


def test_replaces_the_target_and_creates_its_folder(tmp_path):
    target = tmp_path / "new" / "out.json"
    with atomic_write_path(target) as temporary:
        assert temporary == target.parent / f".out.json.{os.getpid()}.tmp" == temporary_path(target)
        temporary.write_text("done")
        assert not target.exists()
    assert target.read_text() == "done"
    assert os.listdir(target.parent) == ["out.json"]


def test_failure_keeps_the_old_file_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.png"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_write_path(target) as temporary:
        temporary.write_text("half")
        raise RuntimeError("interrupted")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.png"]


def test_permissions_are_those_of_any_new_file(tmp_path):
    (tmp_path / "plain").write_text("x")
    with atomic_write_path(tmp_path / "atomic") as temporary:
        temporary.write_text("x")
    assert (tmp_path / "atomic").stat().st_mode == (tmp_path / "plain").stat().st_mode


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
