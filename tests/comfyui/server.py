# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The helpers of the ComfyUI tests: where ComfyUI's release tarball is, whether its requirements are installed, and
a client of a running server (HTTP API and websocket)."""

from __future__ import annotations

import contextlib
import glob
import importlib.metadata
import io
import json
import os
import re
import socket
import tarfile
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import PIL.Image

REPOSITORY = Path(__file__).resolve().parents[2]
PROBE_NODES = Path(__file__).resolve().parent / "probe_nodes"
TINY_PIPELINE = "dit4sr-tiny"
START_TIMEOUT_S = 180
PROMPT_TIMEOUT_S = 300
"""Generous: a loaded 2-core machine starts ComfyUI in 10 to 20 s and runs a tiny-pipeline prompt in seconds."""


def find_tarball() -> Path | None:
    """`$DIT4SR_COMFYUI_TARBALL`, else the newest `ComfyUI-*.tar.gz` in `<repository>/../shared/comfyui/`."""
    if os.environ.get("DIT4SR_COMFYUI_TARBALL"):
        return Path(os.environ["DIT4SR_COMFYUI_TARBALL"])
    found = sorted(glob.glob(str(REPOSITORY.parent / "shared" / "comfyui" / "ComfyUI-*.tar.gz")))
    return Path(found[-1]) if found else None


def missing_requirements(tarball: Path) -> list[str]:
    """ComfyUI's required distributions (its `requirements.txt`, above the optional ones) not installed here."""
    with tarfile.open(tarball) as archive:
        text = archive.extractfile("ComfyUI/requirements.txt").read().decode()
    required = text.split("#non essential")[0]
    names = [re.split(r"[<>=~!\s\[]", line.strip())[0] for line in required.splitlines()]
    missing = []
    for name in filter(None, names):
        try:
            importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            missing.append(name)
    return missing


@dataclass
class ComfyUI:
    """A running ComfyUI: its URL and base directory, and the HTTP and websocket calls the tests make."""

    url: str
    base: Path
    log: Path
    client_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    def get(self, path: str):
        with urllib.request.urlopen(self.url + path, timeout=60) as response:
            return json.loads(response.read())

    def post(self, path: str, payload: dict | None = None) -> tuple[int, dict]:
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps({} if payload is None else payload).encode(),
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                body = response.read()
                return response.status, json.loads(body) if body.strip() else {}
        except urllib.error.HTTPError as error:
            return error.code, json.loads(error.read() or b"{}")

    def upload(self, image: PIL.Image.Image, name: str) -> str:
        """Uploads `image` as a PNG to ComfyUI's input folder (`POST /upload/image`); returns the name to load."""
        data = io.BytesIO()
        image.save(data, format="PNG")
        boundary = uuid.uuid4().hex
        body = b"".join(
            [
                f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'.encode(),
                b"Content-Type: image/png\r\n\r\n",
                data.getvalue(),
                f'\r\n--{boundary}\r\nContent-Disposition: form-data; name="overwrite"\r\n\r\ntrue'.encode(),
                f"\r\n--{boundary}--\r\n".encode(),
            ]
        )
        request = urllib.request.Request(
            self.url + "/upload/image",
            data=body,
            headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())["name"]

    def queue(self, graph: dict) -> str:
        """Queues an API-format graph; returns its prompt id (fails the test if ComfyUI refuses it)."""
        status, answer = self.post("/prompt", {"prompt": graph, "client_id": self.client_id})
        assert status == 200, answer
        return answer["prompt_id"]

    def wait(self, prompt_id: str, timeout: float = PROMPT_TIMEOUT_S) -> dict:
        """The prompt's history entry once it has finished (successfully or not)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            history = self.get(f"/history/{prompt_id}")
            if prompt_id in history and history[prompt_id].get("status", {}).get("completed") is not None:
                entry = history[prompt_id]
                if entry["status"]["status_str"] in ("success", "error"):
                    return entry
            time.sleep(0.2)
        raise AssertionError(f"prompt {prompt_id} did not finish within {timeout} s; log: {self.log_tail()}")

    def run(self, graph: dict) -> dict:
        return self.wait(self.queue(graph))

    @contextlib.contextmanager
    def websocket(self):
        """A websocket of this client's events (`/ws?clientId=`); yields a function that returns the next JSON
        message (binary preview frames are skipped)."""
        import websocket  # websocket-client, which Selenium (the `test` extra) depends on

        connection = websocket.create_connection(
            f"ws://{self.url.removeprefix('http://')}/ws?clientId={self.client_id}", timeout=PROMPT_TIMEOUT_S
        )

        def receive() -> dict:
            while True:
                frame = connection.recv()
                if isinstance(frame, str):
                    return json.loads(frame)

        try:
            yield receive
        finally:
            connection.close()

    def output_file(self, image: dict) -> Path:
        return self.base / image["type"] / image["subfolder"] / image["filename"]

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])


def error_message(entry: dict) -> str:
    """The `execution_error` message of a failed prompt's history entry."""
    assert entry["status"]["status_str"] == "error", entry["status"]
    errors = [data for event, data in entry["status"]["messages"] if event == "execution_error"]
    assert errors, entry["status"]["messages"]
    return errors[0]["exception_message"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
