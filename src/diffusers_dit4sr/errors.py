# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""How the library words a failure for a person, importable without torch: `one_line` turns any exception into one
line, `gated_access_fix` says how to get into a gated Hub repository."""

from __future__ import annotations

__all__ = ["HUB_URL", "gated_access_fix", "one_line"]

HUB_URL = "https://huggingface.co"
"""The Hub's address, where `HF_ENDPOINT` does not name another."""


def one_line(error: BaseException, max_length: int | None = None) -> str:
    """An exception's message on one line (its whitespace and line breaks collapsed), or its type's name when it has
    no message.

    Args:
        error: The exception.
        max_length: Cut the line to this many characters (with "..."), for libraries whose messages can be pages
            long; `None` keeps it whole.
    """
    text = " ".join(str(error).split()) or type(error).__name__
    if max_length is not None and len(text) > max_length:
        text = text[: max(0, max_length - 3)] + "..."
    return text


def gated_access_fix(repo: str, endpoint: str = HUB_URL) -> str:
    """What to do to load a gated Hub repository (`repo`, a repository id): accept its licence, then log in."""
    return f"accept its license on {endpoint}/{repo} while logged in, then `hf auth login` here (or set HF_TOKEN)"
