# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""The node pack's use of ComfyUI's model management where a CPU-only machine cannot show it through the server: which
GPUs get model offload, what `ready()` asks ComfyUI for (against the real signatures of `load_models_gpu` and
`free_memory`), and the one line an out-of-memory failure becomes.

In a subprocess, with ComfyUI on the path (`--cpu`) and the pack imported as ComfyUI imports it; ComfyUI's memory
state and GPU queries are replaced there by stand-ins for a CUDA machine."""

import json
import subprocess
import sys
import textwrap

import pytest

from .server import REPOSITORY, TINY_PIPELINE

pytestmark = pytest.mark.slow

SCRIPT = textwrap.dedent(
    """
    import importlib.util, inspect, json, sys
    from pathlib import Path
    from types import SimpleNamespace

    comfyui, pack, tiny = sys.argv[1:4]
    sys.path.insert(0, comfyui)
    import comfy.cli_args

    comfy.cli_args.args.cpu = True
    import comfy.model_management as mm
    import comfy.model_patcher
    import torch

    spec = importlib.util.spec_from_file_location("dit4sr_pack", pack + "/__init__.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["dit4sr_pack"] = module
    spec.loader.exec_module(module)
    loading, upscaling = sys.modules["dit4sr_pack.loading"], sys.modules["dit4sr_pack.upscaling"]
    from dit4sr_pack.model_folders import ModelSource

    report = {}
    cuda, GiB, weights = torch.device("cuda"), 2**30, int(15.4 * 2**30)  # SD3.5-medium's in bf16
    report["signatures"] = [
        str(inspect.signature(mm.load_models_gpu).bind([None], memory_required=1, force_full_load=True)),
        str(inspect.signature(mm.free_memory).bind(1, cuda)),
    ]

    def offload(choice, total_gib, state, device=cuda):
        mm.vram_state = state
        mm.get_total_memory = lambda dev=None, torch_total_too=False: total_gib * GiB
        return loading._model_offload(choice, device, weights)

    normal, low, none = mm.VRAMState.NORMAL_VRAM, mm.VRAMState.LOW_VRAM, mm.VRAMState.NO_VRAM
    report["offload"] = {
        "auto 24 GB": offload("auto", 24, normal),
        "auto 16 GB": offload("auto", 16, normal),
        "auto 24 GB --lowvram": offload("auto", 24, low),
        "auto 80 GB --novram": offload("auto", 80, none),
        "auto cpu": offload("auto", 16, normal, torch.device("cpu")),
        "none 16 GB": offload("none", 16, normal),
        "model 80 GB": offload("model", 80, normal),
    }

    calls = []
    mm.load_models_gpu = lambda models, **options: calls.append(["load_models_gpu", len(models), options])
    mm.free_memory = lambda memory, device, keep_loaded=(): calls.append(["free_memory", memory, str(device)])
    pipe = SimpleNamespace(components={"a": torch.nn.Linear(256, 256), "b": torch.nn.Linear(64, 64), "c": "tokenizer"})
    models = loading.PipelineModels(pipe)
    patcher = comfy.model_patcher.ModelPatcher(models, load_device=cuda, offload_device=torch.device("cpu"))
    loading.LoadedPipeline(pipe, "x", cuda, offload=False, patcher=patcher).ready(1000)
    loading.LoadedPipeline(pipe, "x", cuda, offload=True, patcher=None).ready(1000)
    report["ready"] = list(calls)
    report["largest"] = mm.module_size(pipe.components["a"])

    # The last out-of-memory error, once the pipeline cannot halve its tile batch any more.
    source = ModelSource("tiny", folder=Path(tiny))
    loaded = loading.load_pipeline(source, variant="q", dtype="auto", quantization="none", offload="auto")
    def out_of_memory(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
    loaded.pipe.transformer.forward = out_of_memory
    settings = upscaling.UpscaleSettings("", 2.0, 1, 0, 8.0, "adain", 512, 1.2)
    try:
        upscaling.upscale(loaded, torch.rand(1, 32, 32, 3), settings)
    except torch.OutOfMemoryError as error:
        report["out_of_memory"] = str(error)
    print(json.dumps(report))
    """
)


def test_offload_choice_memory_requests_and_out_of_memory_message(comfyui_dir, comfyui):
    tiny = comfyui.base / "models" / "diffusers" / TINY_PIPELINE
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(comfyui_dir), str(REPOSITORY / "comfyui"), str(tiny)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])

    assert report["offload"] == {
        "auto 24 GB": False,  # the weights fit beside ComfyUI's inference reserve: ComfyUI manages them
        "auto 16 GB": True,
        "auto 24 GB --lowvram": True,
        "auto 80 GB --novram": True,
        "auto cpu": False,
        "none 16 GB": False,
        "model 80 GB": True,
    }
    # Without offload ComfyUI loads the models whole (never partly: they have no ComfyUI casting layers) and frees
    # room for the activations; with offload it frees room for the largest model and the activations.
    assert report["ready"] == [
        ["load_models_gpu", 1, {"memory_required": 1000, "force_full_load": True}],
        ["free_memory", report["largest"] + 1000, "cuda"],
    ]
    assert report["out_of_memory"] == (
        "DiT4SR ran out of GPU memory (CUDA out of memory. Tried to allocate 2.00 GiB). Denoising tiles that do not "
        "fit are retried in smaller batches, down to one at a time; beyond that, lower tile_size, or load the pipeline "
        "with offload 'model' or a quantization preset"
    )
