"""Summaries of search results: means with 95% intervals, paired and clustered bootstrap
intervals (:func:`paired_diff`, :func:`ratio_ci`, :func:`cluster_mean_ci`), and plain-text
tables."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
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


# --- paired and clustered intervals --------------------------------------------------------------
#
# Pairs (prompt, seed) that share initial noise are not independent draws: they share a
# cluster id, and the bootstrap below resamples whole clusters (pairs of a cluster enter or
# leave a resample together). Two arms run on the same pairs are compared *paired*: one
# resample of clusters serves both arms. The resampling scheme (``numpy.random.default_rng(
# seed)``, ``integers(0, C, C)`` per resample over the sorted unique cluster ids, percentile
# interval) is the one :mod:`experiments.frontier_stats` uses, so both give the same numbers.

ArrayLike = Tensor | Sequence[float] | np.ndarray

_CHUNK = 1 << 22  # resampled cluster sums held at once (float64 entries)


def _vector(name: str, values: ArrayLike) -> np.ndarray:
    """``values`` as a finite, non-empty 1-D float64 array (``ValueError`` naming ``name``)."""
    if isinstance(values, Tensor):
        values = values.detach().to("cpu", torch.float64).numpy()
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 1:
        raise ValueError(f"{name} must be one value per pair (1-D), got shape {v.shape}")
    if v.size == 0:
        raise ValueError(f"{name} must not be empty")
    if not np.isfinite(v).all():
        raise ValueError(f"{name} has non-finite values")
    return v


def _cluster_index(clusters: ArrayLike | Sequence[int] | None, n: int) -> np.ndarray:
    """Each pair's cluster as an index ``0..C-1`` into the sorted unique ids."""
    if clusters is None:
        return np.arange(n)
    if isinstance(clusters, Tensor):
        clusters = clusters.detach().cpu().numpy()
    ids = np.asarray(clusters)
    if ids.ndim != 1 or ids.size != n:
        raise ValueError(f"clusters must hold one id per pair: {n} pairs, {ids.size} ids")
    return np.unique(ids, return_inverse=True)[1].reshape(-1)


def _resampled_sums(
    columns: list[np.ndarray], index: np.ndarray, n_boot: int, seed: int
) -> list[np.ndarray]:
    """Per resample of clusters, the sum of each column over the pairs drawn, ``(n_boot,)``."""
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    c = int(index.max()) + 1
    sums = np.stack([np.bincount(index, weights=col, minlength=c) for col in columns], axis=1)
    rng = np.random.default_rng(seed)
    out = np.empty((n_boot, len(columns)))
    step = max(1, _CHUNK // (c * len(columns)))
    for start in range(0, n_boot, step):
        b = min(step, n_boot - start)
        draws = rng.integers(0, c, (b, c))  # the same stream as b successive size-c draws
        out[start : start + b] = sums[draws].sum(axis=1)
    return [out[:, j] for j in range(len(columns))]


def _interval(point: float, draws: np.ndarray, level: float) -> dict[str, float]:
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must lie in (0, 1), got {level}")
    tail = 50.0 * (1.0 - level)
    finite = draws[np.isfinite(draws)]
    if finite.size == 0:
        return {"mean": point, "lo": math.nan, "hi": math.nan}
    lo, hi = np.percentile(finite, [tail, 100.0 - tail])
    return {"mean": point, "lo": float(lo), "hi": float(hi)}


def cluster_mean_ci(
    values: ArrayLike,
    clusters: ArrayLike | Sequence[int] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """Mean of per-pair ``values`` with a cluster-bootstrap interval.

    Args:
        values: one value per pair.
        clusters: one id per pair; pairs with the same id (e.g. the same initial noise) are
            resampled together. ``None``: every pair is its own cluster.
        n_boot: bootstrap resamples; seed: their random stream (the result is deterministic).
        level: coverage of the percentile interval.
    Returns:
        ``{"mean", "lo", "hi"}``; ``mean`` is the mean over all pairs.
    Raises:
        ValueError: empty or non-finite ``values``, ``clusters`` of another length, ``n_boot``
            < 1 or ``level`` outside (0, 1) (the message names the argument).
    """
    v = _vector("values", values)
    index = _cluster_index(clusters, v.size)
    total, count = _resampled_sums([v, np.ones_like(v)], index, n_boot, seed)
    return _interval(float(v.mean()), total / count, level)


def _two_arms(a: ArrayLike, b: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    x, y = _vector("a", a), _vector("b", b)
    if x.size != y.size:
        raise ValueError(f"a and b must hold the same pairs: a has {x.size}, b has {y.size}")
    return x, y


def paired_diff(
    a: ArrayLike,
    b: ArrayLike,
    clusters: ArrayLike | Sequence[int] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """``mean(a - b)`` of two arms on the same pairs (``a[i]``, ``b[i]``: pair ``i``) with a
    paired cluster-bootstrap interval (arguments as in :func:`cluster_mean_ci`).

    Identical arms give ``{0, 0, 0}``; ``a = b + c`` gives ``c`` with zero width."""
    x, y = _two_arms(a, b)
    d = x - y
    index = _cluster_index(clusters, d.size)
    total, count = _resampled_sums([d, np.ones_like(d)], index, n_boot, seed)
    return _interval(float(d.mean()), total / count, level)


def ratio_ci(
    a: ArrayLike,
    b: ArrayLike,
    clusters: ArrayLike | Sequence[int] | None = None,
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, float]:
    """``mean(a) / mean(b)`` of two arms on the same pairs with a paired cluster-bootstrap
    interval (arguments as in :func:`cluster_mean_ci`). A resample whose ``b`` sums to 0 is
    left out of the interval; ``mean`` is NaN when ``mean(b) == 0``."""
    x, y = _two_arms(a, b)
    index = _cluster_index(clusters, x.size)
    sa, sb = _resampled_sums([x, y], index, n_boot, seed)
    with np.errstate(divide="ignore", invalid="ignore"):
        draws = np.where(sb != 0, sa / np.where(sb != 0, sb, 1.0), np.nan)
    point = float(x.sum() / y.sum()) if y.sum() != 0 else math.nan
    return _interval(point, draws, level)


def verdict(diff: dict[str, float]) -> str:
    """``"better"`` when a difference's interval lies above 0, ``"worse"`` below, else
    ``"tie"``."""
    return "better" if diff["lo"] > 0 else "worse" if diff["hi"] < 0 else "tie"
