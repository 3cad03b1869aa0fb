"""Atomic, strict file writes shared by every writer in the package and the workflow.

``atomic_write_text(path, text)`` writes to a unique temporary file in the same directory
(``tempfile.mkstemp``: two concurrent writers never share a temp name), flushes it to disk and
renames it over ``path``: a reader sees the old file or the new one, never half of one, and a
failure leaves nothing behind. ``dumps_json`` refuses NaN and infinity (strict JSON).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (unique temp file + rename); return the path."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; return the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def dumps_json(obj: Any, **kwargs: Any) -> str:
    """``json.dumps`` that refuses NaN / infinity with a ``ValueError`` naming the problem."""
    try:
        return json.dumps(obj, allow_nan=False, **kwargs)
    except ValueError as err:
        raise ValueError(f"refusing to write non-finite JSON (NaN or infinity): {err}") from None


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 1) -> Path:
    """Strict JSON (:func:`dumps_json`) written atomically to ``path``."""
    return atomic_write_text(path, dumps_json(obj, indent=indent) + "\n")
