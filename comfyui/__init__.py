# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""DiT4SR for ComfyUI: the nodes `DiT4SRLoader` and `DiT4SRUpscale` (README.md).

ComfyUI imports this folder from `custom_nodes/` and asks `comfy_entrypoint` for the nodes. Only torch-free parts of
diffusers-dit4sr are imported here; Diffusers and transformers are imported when a node runs, so that a version clash
shows as an error on the node instead of an import failure of the whole pack.
"""

from comfy_api.latest import ComfyExtension, io

from .nodes import DiT4SRLoader, DiT4SRUpscale


class DiT4SRExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [DiT4SRLoader, DiT4SRUpscale]


async def comfy_entrypoint() -> DiT4SRExtension:
    return DiT4SRExtension()
