"""Prompt lists for text-conditional models: repeated texts, or a file (one prompt a line, or a
CSV column). A sample's ``cond`` is an index into the list; results record the text."""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["read_prompt_file", "resolve_prompts"]


def _clean(prompts: Sequence[str], where: str) -> list[str]:
    out = []
    for i, p in enumerate(prompts):
        if not isinstance(p, str):
            raise TypeError(f"{where}: prompt {i} must be a string, got {type(p).__name__}")
        text = p.strip()
        if not text:
            raise ValueError(f"{where}: prompt {i} is empty (prompts must be non-empty text)")
        out.append(text)
    return out


def read_prompt_file(path: str | os.PathLike[str], column: str | None = None) -> list[str]:
    """Prompts from ``path``: a ``.csv`` file's column ``column`` (default: a column named
    ``prompt`` or ``text``, else the first), or any other file's non-blank lines (lines starting
    with ``#`` are comments).

    Raises:
        FileNotFoundError: no such file. ValueError: no prompts, an unknown column.
    """
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"prompts file not found: {p}")
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        fields = list(rows[0]) if rows else []
        if column is None:
            named = [f for f in fields if f.strip().lower() in ("prompt", "text", "caption")]
            column = named[0] if named else (fields[0] if fields else None)
        if column is None or column not in fields:
            raise ValueError(f"prompts file {p}: no column {column!r}; columns: {fields}")
        prompts = [r[column] or "" for r in rows]
    else:
        lines = (ln.strip() for ln in text.splitlines())
        prompts = [ln for ln in lines if ln and not ln.startswith("#")]
    if not prompts:
        raise ValueError(f"prompts file {p} holds no prompts")
    return _clean(prompts, f"prompts file {p}")


def resolve_prompts(
    texts: Sequence[str] | None = None,
    file: str | os.PathLike[str] | None = None,
    column: str | None = None,
) -> list[str] | None:
    """The prompt list from repeated texts and/or a file (texts first); ``None`` when neither
    is given. Every prompt is stripped and must be non-empty."""
    out = _clean(list(texts or []), "--prompt")
    if file is not None:
        out += read_prompt_file(file, column)
    return out or None
