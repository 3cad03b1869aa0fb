"""Naive sampling and best-of-N."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.nfe import Ledger
from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import (
    Scorer,
    base_trace,
    check_inputs,
    check_positive,
    finish,
    rep,
    trajectory,
)
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
    gens = check_inputs(x_T, cond, generator)
    b = x_T.shape[0]
    t0 = time.perf_counter()
    ledger = Ledger(denoiser, b, max_batch)
    score = Scorer(reward, ledger)
    starts = rep(x_T, n)
    assert starts is not None
    if n > 1:
        extra = randn_like_rows(x_T, gens, n - 1) * sampler.sigma(0)
        starts = starts.view(b, n, *x_T.shape[1:]).clone()
        starts[:, 1:] = extra.view(b, n - 1, *x_T.shape[1:])
        starts = starts.view(b * n, *x_T.shape[1:])
    owner = rep(torch.arange(b), n)
    assert owner is not None
    c = rep(cond, n)
    final = trajectory(ledger, sampler, starts, c, owner, gens, per=n)
    r = score(final, c, owner).view(b, n)
    best = r.argmax(1)
    pick = torch.arange(b) * n + best
    params = {"n": n}
    traces = [base_trace(method, sampler, params) for _ in range(b)]
    for j, tr in enumerate(traces):
        tr["candidate_rewards"] = r[j].tolist()
    return finish(method, params, final[pick], r[torch.arange(b), best], ledger, traces, cond, t0)
