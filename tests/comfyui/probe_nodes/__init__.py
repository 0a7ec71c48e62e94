# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""A node pack for the tests only (never shipped): `DiT4SRTestProbe`, an output node that reports what HTTP does not
show: the global torch RNG state, ComfyUI's device and loaded models, a DiT4SR pipeline's device and dtype. Its
`unload_models` does what ComfyUI does when another node needs the GPU's room: it unloads every model."""

import hashlib
import json

import comfy.model_management
import torch
from comfy_api.latest import ComfyExtension, io


class DiT4SRTestProbe(io.ComfyNode):
    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="DiT4SRTestProbe",
            category="testing",
            is_output_node=True,
            inputs=[
                io.Boolean.Input("unload_models", default=False),
                io.Custom("DIT4SR_PIPELINE").Input("pipeline", optional=True),
                io.Image.Input("image", optional=True),
            ],
            outputs=[io.Image.Output("passed_image")],
        )

    @classmethod
    def fingerprint_inputs(cls, **kwargs) -> float:
        return float("nan")  # never equal to itself: the probe runs in every prompt

    @classmethod
    def execute(cls, unload_models: bool, pipeline=None, image=None) -> io.NodeOutput:
        if unload_models:
            comfy.model_management.unload_all_models()
        loaded = comfy.model_management.loaded_models()
        report = {
            "rng": hashlib.sha256(torch.random.get_rng_state().numpy().tobytes()).hexdigest(),
            "device": str(comfy.model_management.get_torch_device()),
            "loaded_models": [type(patcher.model).__name__ for patcher in loaded],
        }
        if pipeline is not None:
            report["pipeline"] = {
                "name": pipeline.name,
                "device": str(pipeline.device),
                "transformer_device": str(pipeline.pipe.transformer.device),
                "dtype": str(pipeline.pipe.transformer.dtype),
                "offload": pipeline.offload,
                "registered": any(patcher is pipeline.patcher for patcher in loaded),
                "repr": repr(pipeline),
            }
        return io.NodeOutput(image, ui={"text": [json.dumps(report)]})


class ProbeExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [DiT4SRTestProbe]


async def comfy_entrypoint() -> ProbeExtension:
    return ProbeExtension()
