"""atomic_write_path: a target is either replaced whole or left as it was, never half-written."""

import os

import pytest

from diffusers_dit4sr.file_utils import atomic_write_path


def test_replaces_the_target_and_creates_its_folder(tmp_path):
    target = tmp_path / "new" / "out.json"
    with atomic_write_path(target) as temporary:
        assert temporary.parent == target.parent and temporary.name.startswith(".out.json.")
        assert temporary.suffix == ".tmp"
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
