# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Training DiT4SR: the Real-ESRGAN second-order degradation it was trained with and the folder datasets (exported
here), and, imported by name, 🤗 datasets (`hf_datasets`, `hf_streaming`), prepared pairs as a 🤗 dataset
(`prepared_hub`) and crash-safe checkpoints (`checkpoints`)."""

from .config import RESIZE_MODES, DegradationConfig
from .datasets import HRImageDataset, PreparedDataset, collate_samples
from .degradation import RealESRGANDegradation
from .filtering import filter2d, reflect_pad, separable_filter
from .jpeg import jpeg_compress, quantization_tables
from .kernels import (
    KERNEL_TYPES,
    generalized_gaussian_kernels,
    plateau_kernels,
    random_mixed_kernels,
    random_sinc_kernels,
    sinc_kernels,
)
from .noise import gaussian_noise, poisson_noise
from .sharpen import gaussian_kernel_1d, unsharp_mask

__all__ = [
    "KERNEL_TYPES",
    "RESIZE_MODES",
    "DegradationConfig",
    "HRImageDataset",
    "PreparedDataset",
    "RealESRGANDegradation",
    "collate_samples",
    "filter2d",
    "gaussian_kernel_1d",
    "gaussian_noise",
    "generalized_gaussian_kernels",
    "jpeg_compress",
    "plateau_kernels",
    "poisson_noise",
    "quantization_tables",
    "random_mixed_kernels",
    "random_sinc_kernels",
    "reflect_pad",
    "separable_filter",
    "sinc_kernels",
    "unsharp_mask",
]
