# Copyright 2026 The diffusers-dit4sr authors. Licensed under the Apache License, Version 2.0.
"""Writing files so that no reader ever sees half of one: write next to the target, then rename over it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def atomic_write_path(path: str | os.PathLike) -> Iterator[Path]:
    """
    Yields a temporary path next to `path` to write to; when the block ends without error, it replaces `path`.

    The temporary name (`.{name}.{pid}.tmp`) is hidden and never ends like the target, so readers that look for
    finished files skip it; a failed or interrupted write removes it. The folder is created if needed, and the file gets
    the permissions `open()` gives any new file.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        yield temporary
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
