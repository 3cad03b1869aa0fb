"""Summaries of search results: means with 95% intervals, and plain-text tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor


def mean_ci(values: Tensor | Sequence[float], z: float = 1.96) -> tuple[float, float]:
    """Mean and half-width of a normal-approximation 95% interval."""
    v = torch.as_tensor(values, dtype=torch.float64).flatten()
    if v.numel() == 0:
        raise ValueError("values must not be empty")
    half = z * float(v.std(unbiased=True)) / math.sqrt(v.numel()) if v.numel() > 1 else 0.0
    return float(v.mean()), half


def format_table(rows: list[dict[str, Any]], columns: list[str]) -> str:
    """Left-aligned text table of ``rows`` (dicts) restricted to ``columns``."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(columns)]
    line = "  ".join(c.ljust(w) for c, w in zip(columns, widths))
    out = [line, "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in cells]
    return "\n".join(out)
