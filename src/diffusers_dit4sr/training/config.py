# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Parameters of the Real-ESRGAN second-order degradation, with the values DiT4SR's released model used.

Field names follow Real-ESRGAN's option keys (a suffix `2` marks the second stage), so SeeSR / Real-ESRGAN
YAML option files map onto this class key by key. Defaults are SeeSR's parameters (DiT4SR spec, section 6).
"""

import json
import math
import os
import typing
from dataclasses import asdict, dataclass, fields
from typing import Any

from .kernels import KERNEL_TYPES

__all__ = ["RESIZE_MODES", "DegradationConfig"]

RESIZE_MODES = ("area", "bilinear", "bicubic", "nearest")
"""Interpolation modes allowed in `DegradationConfig.resize_modes` (names of `torch.nn.functional.interpolate`)."""

_PROB_TOLERANCE = 1e-6


@dataclass(frozen=True)
class DegradationConfig:
    """All parameters of :class:`RealESRGANDegradation`; validated on construction, immutable.

    Kernel sizes: each blur kernel gets a random odd support in [`min_kernel_size`, `blur_kernel_size`] (resp.
    `blur_kernel_size2`, `final_sinc_kernel_size`), zero-padded to that maximum. Resize probabilities are
    (up, down, keep); the first stage scales the HR size by a factor from `resize_range`, the second scales the
    final LR size by a factor from `resize_range2`. Noise sigmas are in 8-bit levels. Ranges are (min, max).
    """

    scale: int = 4
    """Super-resolution factor: the LR is exactly HR / scale."""
    no_degradation_prob: float = 0.01
    """Per image, probability of using the plain bicubic downscale of the (sharpened) HR as LR."""
    resize_modes: tuple[str, ...] = ("area", "bilinear", "bicubic")
    """Interpolation modes, one drawn uniformly for every resize."""
    min_kernel_size: int = 7
    """Smallest odd support of the random blur and sinc kernels."""

    usm_weight: float = 0.5
    """Unsharp-masking strength applied to the HR target (0 disables sharpening)."""
    usm_radius: int = 50
    """Unsharp-masking Gaussian size (an even value is bumped to the next odd one)."""
    usm_threshold: float = 10.0
    """Unsharp-masking threshold in 8-bit levels."""

    blur_kernel_size: int = 21
    kernel_list: tuple[str, ...] = KERNEL_TYPES
    kernel_prob: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob: float = 0.1
    blur_sigma: tuple[float, float] = (0.2, 3.0)
    betag_range: tuple[float, float] = (0.5, 4.0)
    betap_range: tuple[float, float] = (1.0, 2.0)
    resize_prob: tuple[float, float, float] = (0.2, 0.7, 0.1)
    resize_range: tuple[float, float] = (0.15, 1.5)
    gaussian_noise_prob: float = 0.5
    noise_range: tuple[float, float] = (1.0, 30.0)
    poisson_scale_range: tuple[float, float] = (0.05, 3.0)
    gray_noise_prob: float = 0.4
    jpeg_range: tuple[float, float] = (30.0, 95.0)

    second_blur_prob: float = 0.8
    blur_kernel_size2: int = 11
    kernel_list2: tuple[str, ...] = KERNEL_TYPES
    kernel_prob2: tuple[float, ...] = (0.45, 0.25, 0.12, 0.03, 0.12, 0.03)
    sinc_prob2: float = 0.1
    blur_sigma2: tuple[float, float] = (0.2, 1.5)
    betag_range2: tuple[float, float] = (0.5, 4.0)
    betap_range2: tuple[float, float] = (1.0, 2.0)
    resize_prob2: tuple[float, float, float] = (0.3, 0.4, 0.3)
    resize_range2: tuple[float, float] = (0.3, 1.2)
    gaussian_noise_prob2: float = 0.5
    noise_range2: tuple[float, float] = (1.0, 25.0)
    poisson_scale_range2: tuple[float, float] = (0.05, 2.5)
    gray_noise_prob2: float = 0.4
    jpeg_range2: tuple[float, float] = (30.0, 95.0)

    final_sinc_prob: float = 0.8
    final_sinc_kernel_size: int = 21
    final_sinc_first_prob: float = 0.5
    """Probability of [resize + sinc] before the last JPEG rather than after it."""

    def __post_init__(self) -> None:
        hints = typing.get_type_hints(type(self))
        for field in fields(self):
            object.__setattr__(self, field.name, _coerce(field.name, hints[field.name], getattr(self, field.name)))
        self._validate()

    def _validate(self) -> None:
        _require(self.scale >= 1, "scale", "must be >= 1")
        _require(self.usm_radius >= 1, "usm_radius", "must be >= 1")
        _require(self.usm_weight >= 0, "usm_weight", "must be >= 0")
        _require(self.usm_threshold >= 0, "usm_threshold", "must be >= 0")
        _require(self.min_kernel_size % 2 == 1 and self.min_kernel_size >= 1, "min_kernel_size", "must be odd")
        for name in ("blur_kernel_size", "blur_kernel_size2", "final_sinc_kernel_size"):
            size = getattr(self, name)
            _require(size % 2 == 1, name, "must be odd")
            _require(size >= self.min_kernel_size, name, f"must be >= min_kernel_size ({self.min_kernel_size})")
        _require(bool(self.resize_modes), "resize_modes", "must not be empty")
        unknown = sorted(set(self.resize_modes) - set(RESIZE_MODES))
        _require(not unknown, "resize_modes", f"has unknown modes {unknown}; choose from {RESIZE_MODES}")
        for name in ("kernel_list", "kernel_list2"):
            kernel_list = getattr(self, name)
            unknown = sorted(set(kernel_list) - set(KERNEL_TYPES))
            _require(bool(kernel_list), name, "must not be empty")
            _require(not unknown, name, f"has unknown kernel types {unknown}; choose from {KERNEL_TYPES}")
        for list_name, prob_name in (("kernel_list", "kernel_prob"), ("kernel_list2", "kernel_prob2")):
            _require(
                len(getattr(self, prob_name)) == len(getattr(self, list_name)),
                prob_name,
                f"must have one probability per entry of {list_name}",
            )
        for name in ("kernel_prob", "kernel_prob2", "resize_prob", "resize_prob2"):
            probs = getattr(self, name)
            _require(all(0 <= p <= 1 for p in probs), name, f"must hold probabilities in [0, 1], got {probs}")
            _require(abs(math.fsum(probs) - 1) <= _PROB_TOLERANCE, name, f"must sum to 1, got {math.fsum(probs)}")
        for name in (
            "no_degradation_prob",
            "sinc_prob",
            "gaussian_noise_prob",
            "gray_noise_prob",
            "second_blur_prob",
            "sinc_prob2",
            "gaussian_noise_prob2",
            "gray_noise_prob2",
            "final_sinc_prob",
            "final_sinc_first_prob",
        ):
            _require(0 <= getattr(self, name) <= 1, name, f"must lie in [0, 1], got {getattr(self, name)}")
        for name, low, high in (
            ("blur_sigma", 0, math.inf),
            ("blur_sigma2", 0, math.inf),
            ("betag_range", 0, math.inf),
            ("betag_range2", 0, math.inf),
            ("betap_range", 0, math.inf),
            ("betap_range2", 0, math.inf),
            ("resize_range", 0, math.inf),
            ("resize_range2", 0, math.inf),
            ("noise_range", 0, math.inf),
            ("noise_range2", 0, math.inf),
            ("poisson_scale_range", 0, math.inf),
            ("poisson_scale_range2", 0, math.inf),
            ("jpeg_range", 1, 100),
            ("jpeg_range2", 1, 100),
        ):
            lo, hi = getattr(self, name)
            _require(lo <= hi, name, f"must be (min, max) with min <= max, got {(lo, hi)}")
            _require(low <= lo and hi <= high, name, f"must lie within [{low}, {high}], got {(lo, hi)}")
        for name in ("blur_sigma", "blur_sigma2", "betag_range", "betag_range2", "betap_range", "betap_range2"):
            _require(getattr(self, name)[0] > 0, name, "must be positive")
        for name in ("resize_range", "resize_range2"):
            lo, hi = getattr(self, name)
            _require(0 < lo <= 1 <= hi, name, f"must satisfy 0 < min <= 1 <= max, got {(lo, hi)}")

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON/YAML-serializable dict (tuples become lists)."""
        return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "DegradationConfig":
        """Build from a dict such as :meth:`to_dict` returns; missing keys keep their defaults."""
        if not isinstance(data, dict):
            raise TypeError(f"`data` must be a dict, got {type(data).__name__}.")
        unknown = sorted(set(data) - {field.name for field in fields(cls)})
        if unknown:
            raise ValueError(f"Unknown DegradationConfig fields: {unknown}.")
        return cls(**data)

    def save(self, path: str | os.PathLike) -> None:
        """Write the config to a `.json`, `.yaml` or `.yml` file."""
        path = os.fspath(path)
        data = self.to_dict()
        if _suffix(path) == "json":
            text = json.dumps(data, indent=2) + "\n"
        else:
            text = _yaml().safe_dump(data, sort_keys=False)
        with open(path, "w", encoding="utf-8") as file:
            file.write(text)

    @classmethod
    def load(cls, path: str | os.PathLike) -> "DegradationConfig":
        """Read a config written by :meth:`save` (or any `.json` / `.yaml` / `.yml` mapping of its fields)."""
        path = os.fspath(path)
        with open(path, encoding="utf-8") as file:
            text = file.read()
        data = json.loads(text) if _suffix(path) == "json" else _yaml().safe_load(text)
        if not isinstance(data, dict):
            raise ValueError(f"{path} must contain a mapping of DegradationConfig fields.")
        return cls.from_dict(data)


def _require(condition: bool, name: str, message: str) -> None:
    if not condition:
        raise ValueError(f"DegradationConfig.{name} {message}.")


def _coerce(name: str, hint: Any, value: Any) -> Any:
    """Check `value` against the field's type and normalize it (lists to tuples, ints to floats)."""
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"DegradationConfig.{name} must be an int, got {value!r}.")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"DegradationConfig.{name} must be a number, got {value!r}.")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise TypeError(f"DegradationConfig.{name} must be a string, got {value!r}.")
        return value
    args = typing.get_args(hint)
    if not isinstance(value, (list, tuple)):
        raise TypeError(f"DegradationConfig.{name} must be a list or tuple, got {value!r}.")
    if args[-1] is Ellipsis:
        return tuple(_coerce(name, args[0], item) for item in value)
    if len(value) != len(args):
        raise ValueError(f"DegradationConfig.{name} must have {len(args)} values, got {len(value)}.")
    return tuple(_coerce(name, arg, item) for arg, item in zip(args, value, strict=True))


def _suffix(path: str) -> str:
    suffix = os.path.splitext(path)[1].lower().lstrip(".")
    if suffix not in ("json", "yaml", "yml"):
        raise ValueError(f"`path` must end in .json, .yaml or .yml, got {path!r}.")
    return suffix


def _yaml():
    try:
        import yaml
    except ImportError as error:
        raise ImportError(
            "Reading or writing YAML configs needs PyYAML: `pip install 'diffusers-dit4sr[train]'`."
        ) from error
    return yaml
