# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Which attention each released DiT4SR checkpoint needs, and how to tell the checkpoints apart.

The authors publish their transformers in `acceptee/DiT4SR`, one per folder `dit4sr_{variant}/transformer`, each with
a plain `SD3Transformer2DModel` config: nothing in the files says how the LR tokens' attention keys are formed. The
first releases, `dit4sr_q` and `dit4sr_f`, were trained with the LR keys taken from the noise stream
(`lr_key_source="noise"`); the revised `dit4sr_r1` with the LR stream's own keys, as in the paper (`"lr"`). Loading
either with the other's attention runs without error and gives wrong images, so a checkpoint without
`lr_key_source` in its config is attributed by its folder name, and never guessed.
"""

from __future__ import annotations

import os
import re

from ..constants import RELEASED_LR_KEY_SOURCES

__all__ = ["RELEASED_LR_KEY_SOURCES", "describe_location", "released_variant_in_path"]


_RELEASED_FOLDER = re.compile(r"dit4sr[_-](q|f|r1)", re.IGNORECASE)


def released_variant_in_path(path: str | os.PathLike, subfolder: str | None = None) -> str | None:
    """
    The released variant (`"q"`, `"f"` or `"r1"`) that a checkpoint location names, or `None` if it names none.

    A location names a variant when one of its folders (of the local path or Hub id, then of `subfolder`) is called
    `dit4sr_{variant}` (case and `_`/`-` do not matter), as the released layout `dit4sr_r1/transformer` and copies of
    it keep. Names that merely contain such a word (`my_dit4sr_r1_copy`) name nothing.

    Args:
        path: A local path or Hub id.
        subfolder: The subfolder within it, as `from_pretrained` takes it.

    Raises:
        ValueError: when the location names two different variants, e.g. `dit4sr_q/dit4sr_r1/transformer`.
    """
    parts = re.split(r"[\\/]+", os.fspath(path)) + re.split(r"[\\/]+", subfolder or "")
    named = {match.group(1).lower() for part in parts if (match := _RELEASED_FOLDER.fullmatch(part))}
    if len(named) > 1:
        raise ValueError(
            f"{describe_location(path, subfolder)} names the released DiT4SR variants {sorted(named)}: it cannot tell which attention the "
            "checkpoint needs. Pass `lr_key_source=` explicitly."
        )
    return next(iter(named), None)


def describe_location(path: str | os.PathLike, subfolder: str | None = None) -> str:
    """A checkpoint location for messages: `'acceptee/DiT4SR' (subfolder 'dit4sr_r1/transformer')`."""
    return repr(os.fspath(path)) + (f" (subfolder {subfolder!r})" if subfolder else "")
