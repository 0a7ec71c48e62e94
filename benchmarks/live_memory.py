# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Counting the activation memory of PyTorch code without a GPU: live tensor storages, tensor by tensor.

On the meta device nothing is allocated, yet every operator's outputs have sizes, so the peak of what a forward
holds at once can be counted at full model size in seconds. Used by `memory_plan.py` and by the tests of
`DiT4SRTransformer2DModel.estimate_activation_memory`.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class LiveTensorBytes(TorchDispatchMode):
    """Peak bytes of the tensor storages that operators create inside the context (weights and inputs excluded).

    A storage counts from the operator that creates it until it is freed; views and in-place results share their
    input's storage and add nothing. Memory a kernel allocates internally (workspaces) is not seen.
    """

    def __init__(self):
        super().__init__()
        self.current = self.peak = 0
        self._live = set()

    def _release(self, key: int, nbytes: int) -> None:
        self._live.discard(key)
        self.current -= nbytes

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        outputs = func(*args, **kwargs)
        for tensor in tree_leaves(outputs):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = id(storage)
            if key in inputs or key in self._live:
                continue
            self._live.add(key)
            self.current += storage.nbytes()
            weakref.finalize(storage, self._release, key, storage.nbytes())
        self.peak = max(self.peak, self.current)
        return outputs


def weight_bytes(module: torch.nn.Module) -> int:
    """Bytes of a module's parameters and buffers: what it holds on the device it sits on."""
    return sum(t.numel() * t.element_size() for t in [*module.parameters(), *module.buffers()])


@contextlib.contextmanager
def output_only_attention() -> Iterator[None]:
    """Replaces `F.scaled_dot_product_attention` with a stand-in that only allocates the output.

    That is what flash, cuDNN and memory-efficient kernels hold; on the meta device PyTorch would otherwise take the
    math path, which stores the N x N scores. The outputs are meaningless: for counting only.
    """
    original = F.scaled_dot_product_attention

    def attention(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        return query.new_empty(*query.shape[:-1], value.shape[-1])

    F.scaled_dot_product_attention = attention
    try:
        yield
    finally:
        F.scaled_dot_product_attention = original
