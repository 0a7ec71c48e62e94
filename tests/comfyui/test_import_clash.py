# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""A transformers that does not fit (another node pack installed its own, say) must not keep ComfyUI from registering
the nodes: the pack imports neither Diffusers nor transformers, and the loader says what clashes when it runs.

In a subprocess, with ComfyUI on the path, the pack is imported as ComfyUI imports a custom-node folder, and a
stand-in `transformers` package (a version without the names Diffusers imports) comes first on the path."""

import json
import subprocess
import sys
import textwrap

import pytest

from .server import REPOSITORY

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import asyncio, importlib.util, json, sys

    clash, comfyui, pack = sys.argv[1:4]
    sys.path[:0] = [clash, comfyui]
    import comfy.cli_args

    comfy.cli_args.args.cpu = True  # as `main.py --cpu`: no CUDA here
    spec = importlib.util.spec_from_file_location("dit4sr_pack", pack + "/__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dit4sr_pack"] = module
    spec.loader.exec_module(module)
    imported = sorted(name for name in ("diffusers", "transformers") if name in sys.modules)
    nodes = asyncio.run(asyncio.run(module.comfy_entrypoint()).get_node_list())
    loader = next(node for node in nodes if node.GET_SCHEMA().node_id == "DiT4SRLoader")
    try:
        loader.execute(model="acceptee/DiT4SR (released)", variant="q", dtype="auto", quantization="none", offload="auto")
        error = None
    except Exception as exception:
        error = [type(exception).__name__, str(exception)]
    print(json.dumps({"nodes": [node.GET_SCHEMA().node_id for node in nodes], "imported": imported, "error": error}))
    """
)


def test_the_nodes_register_despite_a_clashing_transformers_and_the_loader_names_it(comfyui_dir, tmp_path):
    clash = tmp_path / "clash" / "transformers"
    clash.mkdir(parents=True)
    (clash / "__init__.py").write_text('__version__ = "4.0.0"  # a stand-in without the names Diffusers imports\n')

    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(clash.parent), str(comfyui_dir), str(REPOSITORY / "comfyui")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["nodes"] == ["DiT4SRLoader", "DiT4SRUpscale"]
    assert report["imported"] == []  # nothing imported Diffusers or transformers before a node ran
    kind, message = report["error"]
    assert kind == "RuntimeError" and "\n" not in message
    # The ImportError itself, not the RuntimeErrors Diffusers' lazy imports wrap it in.
    assert message.startswith("DiT4SR cannot import its libraries (ImportError: cannot import name ")
    assert "from 'transformers'" in message and "installed: diffusers-dit4sr " in message
    assert message.endswith(
        "`pip install -U diffusers-dit4sr` installs the versions it needs (`pip check` lists the packages that clash)"
    )
