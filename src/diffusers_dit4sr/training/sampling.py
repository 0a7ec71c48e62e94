# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Random draws from an explicit `torch.Generator`.

Every random decision of the degradation goes through these helpers, so one generator seeded by the caller
reproduces a whole batch, and the global generators (torch, numpy, `random`) are never read or advanced.
Draws are made on the generator's device and then moved to the requested one: a CUDA generator keeps the
large noise draws on the GPU, a CPU generator draws the same numbers whatever device the images are on.
"""

from collections.abc import Sequence

import torch

__all__ = ["categorical", "resolve_generator", "uniform", "uniform_scalar"]


def resolve_generator(generator: torch.Generator | None, device: torch.device) -> torch.Generator:
    """Return `generator`, or a fresh one on `device` seeded from OS entropy when it is `None`."""
    if generator is None:
        generator = torch.Generator(device=device)
        generator.seed()
        return generator
    if not isinstance(generator, torch.Generator):
        raise TypeError(f"`generator` must be a torch.Generator or None, got {type(generator).__name__}.")
    return generator


def uniform(
    generator: torch.Generator,
    size: Sequence[int],
    low: float,
    high: float,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Float32 samples of U[low, high), with `size`, on `device` (default: the generator's device)."""
    u = torch.rand(tuple(size), generator=generator, device=generator.device, dtype=torch.float32)
    return (low + (high - low) * u).to(device or generator.device)


def uniform_scalar(generator: torch.Generator, low: float, high: float) -> float:
    """One sample of U[low, high) as a Python float, for decisions shared by the whole batch."""
    return float(uniform(generator, (), low, high))


def categorical(
    generator: torch.Generator,
    probs: Sequence[float],
    size: Sequence[int],
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Indices into `probs` drawn with those probabilities (inverse CDF of one uniform draw per sample)."""
    u = torch.rand(tuple(size), generator=generator, device=generator.device, dtype=torch.float32)
    cdf = torch.tensor(probs, dtype=torch.float32, device=generator.device).cumsum(0)
    index = torch.searchsorted(cdf, u, right=True).clamp_(max=len(probs) - 1)
    return index.to(device or generator.device)
