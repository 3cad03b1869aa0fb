"""Naive sampling and best-of-N."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import SearchContext, check_positive, rep
from adaptive_tts.types import Reward, SearchResult


def naive(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    max_batch: int | None = None,
) -> SearchResult:
    """One stochastic trajectory per sample (``x_T`` ``(B, *S)``); the reward is only reported."""
    return best_of_n(
        denoiser,
        sampler,
        x_T,
        cond=cond,
        reward=reward,
        generator=generator,
        n=1,
        max_batch=max_batch,
        method="naive",
    )


def best_of_n(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    n: int = 4,
    max_batch: int | None = None,
    method: str = "best-of-n",
) -> SearchResult:
    """``n`` independent trajectories per sample, all in one batch; keep the best final reward.

    Trajectory 0 starts at ``x_T``; the others at ``sigma_max * N(0, I)`` from the sample's
    generator. NFEs: ``n`` times a trajectory's.
    """
    check_positive("n", n)
    params = {"n": n}
    sc = SearchContext(method, denoiser, sampler, x_T, cond, reward, generator, params, max_batch)
    b = sc.b
    starts = rep(x_T, n)
    if n > 1:
        extra = randn_like_rows(x_T, sc.gens, n - 1) * sampler.sigma(0)
        starts = starts.view(b, n, *x_T.shape[1:]).clone()
        starts[:, 1:] = extra.view(b, n - 1, *x_T.shape[1:])
        starts = starts.view(b * n, *x_T.shape[1:])
    rows = sc.rows(n)
    final, _ = sc.denoise(starts, rows, per=n)
    r = sc.score(final, *rows).view(b, n)
    best = r.argmax(1)
    pick = torch.arange(b) * n + best
    for j, tr in enumerate(sc.traces):
        tr["candidate_rewards"] = r[j].tolist()
    return sc.finish(final[pick], r[torch.arange(b), best])
