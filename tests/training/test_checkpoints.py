# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Training checkpoints (`training.checkpoints`): whole or absent after a crash at any point of a save, old ones
removed only after the new one is in place, and `latest` picking the newest whole one and saying why it passed over
the others. A small model on accelerate's CPU state, interrupted in-process at every stage, and killed for real."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from accelerate import Accelerator

from diffusers_dit4sr.file_utils import atomic_write_folder
from diffusers_dit4sr.training import checkpoints
from diffusers_dit4sr.training.checkpoints import (
    CHECKPOINT_MANIFEST,
    check_checkpoint,
    latest_checkpoint,
    list_checkpoints,
    save_checkpoint,
)


class Killed(BaseException):
    """A crash at a chosen point: nothing catches it, as nothing runs after a `kill -9`."""


@pytest.fixture
def training():
    """An accelerator with a prepared model and optimizer; `step()` changes the weights (a training step)."""
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1)
    model, optimizer = accelerator.prepare(model, optimizer)

    def step():
        loss = model(torch.randn(2, 4)).square().mean()
        accelerator.backward(loss)
        optimizer.step()
        optimizer.zero_grad()

    return accelerator, model, step


def weights(model) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


def names(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir())


def test_a_checkpoint_is_whole_listed_and_restores_the_state(training, tmp_path):
    accelerator, model, step = training
    step()
    saved = save_checkpoint(accelerator, tmp_path, 1)
    at_one = weights(model)

    assert saved.path == tmp_path / "checkpoint-1" and saved.removed == []
    assert names(tmp_path) == ["checkpoint-1"]
    manifest = json.loads((saved.path / CHECKPOINT_MANIFEST).read_text())
    assert manifest["step"] == 1 and {"model.safetensors", "optimizer.bin", "random_states_0.pkl"} <= set(
        manifest["files"]
    )
    assert manifest["files"]["model.safetensors"] == (saved.path / "model.safetensors").stat().st_size
    assert check_checkpoint(saved.path) is None
    assert latest_checkpoint(tmp_path).path == saved.path and latest_checkpoint(tmp_path).step == 1

    step()
    accelerator.load_state(str(saved.path))
    for name, tensor in weights(model).items():
        torch.testing.assert_close(tensor, at_one[name], rtol=0, atol=0)


def test_the_limit_removes_old_checkpoints_only_after_the_new_one_is_whole(training, tmp_path):
    accelerator, model, step = training
    for number in (1, 2, 3):
        step()
        saved = save_checkpoint(accelerator, tmp_path, number, total_limit=2)
    assert saved.removed == [tmp_path / "checkpoint-1"]
    assert names(tmp_path) == ["checkpoint-2", "checkpoint-3"]
    with pytest.raises(ValueError, match="total_limit must be a positive number"):
        save_checkpoint(accelerator, tmp_path, 4, total_limit=0)


def interrupt_during_save_state(monkeypatch, accelerator):
    """The process dies while `save_state` writes: the weights half-written, nothing else yet."""

    def half_save(output_dir, **kwargs):
        (Path(output_dir) / "model.safetensors").write_bytes(b"\0" * 10)
        raise Killed

    monkeypatch.setattr(accelerator, "save_state", half_save)


def interrupt_before_the_manifest(monkeypatch, accelerator):
    monkeypatch.setattr(checkpoints, "_write_manifest", lambda *args: (_ for _ in ()).throw(Killed()))


def interrupt_before_the_rename(monkeypatch, accelerator):
    monkeypatch.setattr(checkpoints, "replace_folder", lambda *args: (_ for _ in ()).throw(Killed()))


def interrupt_while_pruning(monkeypatch, accelerator):
    def rmtree(path, *args, **kwargs):
        raise Killed

    monkeypatch.setattr(checkpoints.shutil, "rmtree", rmtree)


@pytest.mark.parametrize(
    "interrupt, newest",
    [
        (interrupt_during_save_state, 1),
        (interrupt_before_the_manifest, 1),
        (interrupt_before_the_rename, 1),
        (interrupt_while_pruning, 2),
    ],
)
def test_a_save_interrupted_at_any_stage_keeps_the_last_whole_checkpoint(
    training, tmp_path, monkeypatch, interrupt, newest
):
    # The case that lost every step trained so far: a limit of 1 and a crash at the start of the next save.
    accelerator, model, step = training
    step()
    save_checkpoint(accelerator, tmp_path, 1, total_limit=1)
    at = {1: weights(model)}
    step()
    at[2] = weights(model)
    with pytest.MonkeyPatch.context() as patch:
        interrupt(patch, accelerator)
        with pytest.raises(Killed):
            save_checkpoint(accelerator, tmp_path, 2, total_limit=1)

    latest = latest_checkpoint(tmp_path)
    assert latest.path == tmp_path / f"checkpoint-{newest}" and latest.skipped == []
    step()
    accelerator.load_state(str(latest.path))
    for name, tensor in weights(model).items():
        torch.testing.assert_close(tensor, at[newest][name], rtol=0, atol=0)

    # The next save goes through and clears what the interrupted one left.
    step()
    save_checkpoint(accelerator, tmp_path, 3, total_limit=1)
    assert names(tmp_path) == ["checkpoint-3"]


def test_a_crash_while_replacing_a_checkpoint_of_the_same_step_keeps_one(training, tmp_path, monkeypatch):
    accelerator, model, step = training
    step()
    save_checkpoint(accelerator, tmp_path, 1)
    step()
    save_checkpoint(accelerator, tmp_path, 2)
    replace = os.replace

    def replace_then_die(source, destination):  # dies once the earlier checkpoint-2 is set aside
        replace(source, destination)
        if str(destination).endswith(".replaced.incomplete"):
            raise Killed

    monkeypatch.setattr(os, "replace", replace_then_die)
    with pytest.raises(Killed):
        save_checkpoint(accelerator, tmp_path, 2)  # e.g. resumed from checkpoint-1, reaching step 2 again
    monkeypatch.undo()

    assert latest_checkpoint(tmp_path).path == tmp_path / "checkpoint-1"
    save_checkpoint(accelerator, tmp_path, 2)
    assert names(tmp_path) == ["checkpoint-1", "checkpoint-2"]


def test_latest_passes_over_broken_checkpoints_and_says_why(training, tmp_path):
    accelerator, model, step = training
    for number in (1, 2):
        step()
        save_checkpoint(accelerator, tmp_path, number)
    weights_file = tmp_path / "checkpoint-2" / "model.safetensors"
    weights_file.write_bytes(weights_file.read_bytes()[:-7])  # a file cut short after the save
    (tmp_path / "checkpoint-3").mkdir()  # an older script's save, killed at its start
    (tmp_path / "checkpoint-4").mkdir()
    (tmp_path / "checkpoint-4" / CHECKPOINT_MANIFEST).write_text("{ half")
    (tmp_path / "checkpoint-5").mkdir()
    (tmp_path / "checkpoint-5" / CHECKPOINT_MANIFEST).write_text(json.dumps({"step": 5, "files": {"a.bin": 3}}))
    (tmp_path / "checkpoint-10.incomplete").mkdir()  # this module's interrupted save: not a checkpoint
    (tmp_path / "checkpoint-x").mkdir()

    latest = latest_checkpoint(tmp_path)

    assert latest.path == tmp_path / "checkpoint-1"
    reasons = {path.name: reason for path, reason in latest.skipped}
    assert list(reasons) == ["checkpoint-5", "checkpoint-4", "checkpoint-3", "checkpoint-2"]
    assert reasons["checkpoint-5"] == "a.bin is missing"
    assert reasons["checkpoint-4"].startswith(f"its {CHECKPOINT_MANIFEST} cannot be read")
    assert reasons["checkpoint-3"].startswith(f"it has no {CHECKPOINT_MANIFEST}: its save was interrupted")
    size = weights_file.stat().st_size
    assert reasons["checkpoint-2"] == f"model.safetensors is {size} bytes, not the {size + 7} it was saved with"
    assert [path.name for path in list_checkpoints(tmp_path)] == [f"checkpoint-{n}" for n in (1, 2, 3, 4, 5)]
    assert latest_checkpoint(tmp_path / "missing").path is None


def test_atomic_write_folder_replaces_a_folder_whole(tmp_path):
    target = tmp_path / "transformer"
    with atomic_write_folder(target) as folder:
        (folder / "config.json").write_text("{}")
        assert folder.name == "transformer.incomplete" and not target.exists()
    assert names(target) == ["config.json"]
    with pytest.raises(RuntimeError), atomic_write_folder(target) as folder:
        (folder / "weights").write_text("half")
        raise RuntimeError("interrupted")
    assert names(target) == ["config.json"] and names(tmp_path) == ["transformer"]
    (tmp_path / "transformer.incomplete").mkdir()  # what a killed write left
    with atomic_write_folder(target) as folder:
        (folder / "weights").write_text("new")
    assert names(target) == ["weights"] and names(tmp_path) == ["transformer"]


KILLED_SAVE = textwrap.dedent(
    """
    import os, signal, sys
    import torch
    from accelerate import Accelerator
    from diffusers_dit4sr.training.checkpoints import save_checkpoint

    output_dir, kill_rank = sys.argv[1], int(sys.argv[2])
    torch.manual_seed(0)
    accelerator = Accelerator(cpu=True)
    model = torch.nn.Linear(4, 3)
    model, optimizer = accelerator.prepare(model, torch.optim.SGD(model.parameters(), lr=0.1))
    save_checkpoint(accelerator, output_dir, 1, total_limit=1)
    save_state = accelerator.save_state

    def dying_save_state(folder, **kwargs):  # the kill comes once this process has written its part
        save_state(folder, **kwargs)
        if accelerator.process_index == kill_rank:
            os.kill(os.getpid(), signal.SIGKILL)

    accelerator.save_state = dying_save_state
    save_checkpoint(accelerator, output_dir, 2, total_limit=1)
    """
)


def run_killed_save(tmp_path: Path, processes: int, kill_rank: int) -> subprocess.CompletedProcess:
    script = tmp_path / "killed_save.py"
    script.write_text(KILLED_SAVE)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_USE_CPU": "true"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    launcher = [sys.executable]
    if processes > 1:
        launcher += ["-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    command = [*launcher, str(script), str(tmp_path / "out"), str(kill_rank)]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.skipif(sys.platform == "win32", reason="SIGKILL is POSIX")
def test_a_process_killed_during_a_save_leaves_the_previous_checkpoint(tmp_path):
    completed = run_killed_save(tmp_path, processes=1, kill_rank=0)
    assert completed.returncode == -9, completed.stderr[-2000:]
    output = tmp_path / "out"
    assert names(output) == ["checkpoint-1", "checkpoint-2.incomplete"]
    assert latest_checkpoint(output).path == output / "checkpoint-1"


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="torchrun's CPU launch is tested on POSIX")
def test_two_processes_write_their_parts_and_a_kill_of_either_keeps_the_last_whole_checkpoint(tmp_path):
    for kill_rank in (0, 1):
        run = tmp_path / f"killed{kill_rank}"
        run.mkdir()
        completed = run_killed_save(run, processes=2, kill_rank=kill_rank)
        assert completed.returncode != 0
        output = run / "out"
        latest = latest_checkpoint(output)
        assert latest.path == output / "checkpoint-1", completed.stderr[-2000:]
        files = json.loads((latest.path / CHECKPOINT_MANIFEST).read_text())["files"]
        assert {"random_states_0.pkl", "random_states_1.pkl"} <= set(files)  # each process's part
        assert "checkpoint-2" not in names(output)
