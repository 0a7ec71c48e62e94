# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""A real ComfyUI for the node pack's tests: unpacked from its release tarball, started once per test session on a
free port of 127.0.0.1 with `--cpu` and a base directory of its own (the node pack and a test probe linked into
`custom_nodes/`, the tiny pipeline in `models/diffusers/`), and driven over its HTTP API and websocket.

The tarball is `$DIT4SR_COMFYUI_TARBALL`, else `<repository>/../shared/comfyui/ComfyUI-*.tar.gz`. The server runs in
this test's Python, which needs ComfyUI's requirements besides this project (`.ci/run` installs them, with torch
pinned); without the tarball or the requirements the tests skip and say why. `HF_HUB_OFFLINE=1` is set for the
server: nothing is downloaded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import pytest

from .server import (
    PROBE_NODES,
    REPOSITORY,
    START_TIMEOUT_S,
    TINY_PIPELINE,
    ComfyUI,
    find_tarball,
    free_port,
    missing_requirements,
)


@pytest.fixture(scope="session")
def comfyui_dir(tmp_path_factory) -> Path:
    """ComfyUI unpacked (its `ComfyUI/` folder), or a skip saying what is missing."""
    tarball = find_tarball()
    if tarball is None or not tarball.is_file():
        pytest.skip(
            "needs the ComfyUI release tarball: set DIT4SR_COMFYUI_TARBALL or put ComfyUI-*.tar.gz in "
            f"{REPOSITORY.parent / 'shared' / 'comfyui'}"
        )
    missing = missing_requirements(tarball)
    if missing:
        pytest.skip(
            f"ComfyUI's requirements are not installed in this Python ({', '.join(missing)} missing): CI runs these "
            "tests in its evaluation environment after installing them with torch pinned (.ci/run)"
        )
    folder = tmp_path_factory.mktemp("comfyui-install")
    with tarfile.open(tarball) as archive:
        archive.extractall(folder, filter="data")
    return folder / "ComfyUI"


@pytest.fixture(scope="session")
def comfyui(comfyui_dir, tmp_path_factory) -> ComfyUI:
    """The running server, with the node pack and the test probe in `custom_nodes/` and the tiny pipeline in
    `models/diffusers/dit4sr-tiny`."""
    base = tmp_path_factory.mktemp("comfyui-base")
    (base / "custom_nodes").mkdir()
    (base / "models" / "diffusers").mkdir(parents=True)
    (base / "custom_nodes" / "dit4sr").symlink_to(REPOSITORY / "comfyui", target_is_directory=True)
    (base / "custom_nodes" / "dit4sr_test_probe").symlink_to(PROBE_NODES, target_is_directory=True)
    port = free_port()
    log = base / "comfyui.log"
    command = [
        sys.executable,
        "main.py",
        "--cpu",
        "--listen",
        "127.0.0.1",
        "--port",
        str(port),
        "--base-directory",
        str(base),
        "--database-url",
        "sqlite:///:memory:",
        "--disable-auto-launch",
    ]
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
    with open(log, "wb") as log_file:
        server = subprocess.Popen(command, cwd=comfyui_dir, env=environment, stdout=log_file, stderr=subprocess.STDOUT)
    client = ComfyUI(url=f"http://127.0.0.1:{port}", base=base, log=log)
    try:
        # Written while the server starts: the loader lists the model folders whenever its inputs are asked for.
        from diffusers_dit4sr.tiny import make_tiny_pipeline

        make_tiny_pipeline(seed=0).save_pretrained(base / "models" / "diffusers" / TINY_PIPELINE)
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if server.poll() is not None:
                pytest.fail(f"ComfyUI exited with code {server.returncode} at start:\n{client.log_tail()}")
            try:
                client.get("/system_stats")
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"ComfyUI did not answer within {START_TIMEOUT_S} s:\n{client.log_tail()}")
                time.sleep(0.5)
        yield client
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
