"""(N, S)-MCTS over per-step noise: at each step the current node gets ``N`` children (noise
candidates); ``S`` simulations pick a child by UCB (``c = sqrt(2)``), roll it out to x0 with
plain stochastic sampling, score the rollout by the reward and back up the mean; the search
then moves to the child with the best mean."""

from __future__ import annotations

import math
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
    deterministic_step,
    evaluator,
    finish,
    rep,
    trajectory,
)
from adaptive_tts.types import Reward, SearchResult


def ucb_select(total: Tensor, visits: Tensor, c: float) -> Tensor:
    """Child index per sample: unvisited first, else max ``mean + c sqrt(ln N / n)``.

    ``total``, ``visits``: ``(B, N)``. Returns ``(B,)`` long."""
    parent = visits.sum(1, keepdim=True).clamp_min(1).float()
    mean = total / visits.clamp_min(1)
    ucb = mean + c * torch.sqrt(parent.log() / visits.clamp_min(1))
    ucb = torch.where(visits == 0, torch.full_like(ucb, math.inf), ucb)
    return ucb.argmax(1)


def mcts(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    n: int = 4,
    sims: int = 8,
    c: float = math.sqrt(2.0),
    max_batch: int | None = None,
) -> SearchResult:
    """MCTS with rollouts; every simulation advances all samples of the batch together.

    NFEs per searchable step ``i``: ``n`` expansions (+ ``n`` Heun calls) plus ``sims`` rollouts
    of the remaining ``T - i - 1`` steps (counted under ``rollout``).
    """
    check_positive("n", n)
    check_positive("sims", sims)
    gens = check_inputs(x_T, cond, generator)
    b = x_T.shape[0]
    t0 = time.perf_counter()
    ledger = Ledger(denoiser, b, max_batch)
    score = Scorer(reward, ledger)
    params = {"n": n, "sims": sims, "c": c}
    traces = [base_trace("mcts", sampler, params) for _ in range(b)]
    owner, owner_n = torch.arange(b), rep(torch.arange(b), n)
    assert owner_n is not None
    cond_n = rep(cond, n)
    ar = torch.arange(b)
    x, x0 = x_T, None
    for i in range(sampler.num_steps):
        if sampler.noise_scale(i) == 0.0:
            x, x0 = deterministic_step(ledger, sampler, i, x, x0, cond, owner)
            continue
        if sampler.needs_x0 and x0 is None:
            x0 = ledger(x, sampler.sigma(i), cond, owner, "step")
        x_det, sh, scale = sampler.pre(i, x, x0)
        x_hat = rep(x_det, n) + scale * randn_like_rows(x_det, gens, n)  # type: ignore[operator]
        x0_hat = ledger(x_hat, sh, cond_n, owner_n, "score")
        kids, kids_x0 = sampler.post(i, x_hat, x0_hat, evaluator(ledger, cond_n, owner_n, "score"))
        kids = kids.view(b, n, *x.shape[1:])
        total = torch.zeros(b, n)
        visits = torch.zeros(b, n)
        for _ in range(sims):
            pick = ucb_select(total, visits, c)
            rows = ar * n + pick
            start = kids.reshape(b * n, *x.shape[1:])[rows]
            start_x0 = None if kids_x0 is None else kids_x0[rows]
            final = trajectory(
                ledger,
                sampler,
                start,
                cond,
                owner,
                gens,
                start=i + 1,
                x0=start_x0,
                purpose="rollout",
            )
            r = score(final, cond, owner)
            total[ar, pick] += r
            visits[ar, pick] += 1
        means = torch.where(
            visits > 0, total / visits.clamp_min(1), torch.full_like(total, -math.inf)
        )
        move = means.argmax(1)
        for j in range(b):
            traces[j]["steps"].append(
                {
                    "i": i,
                    "sigma": sampler.sigma(i),
                    "searchable": True,
                    "child_means": means[j].tolist(),
                    "visits": visits[j].tolist(),
                }
            )
        x = kids[ar, move]
        x0 = None if kids_x0 is None else kids_x0[ar * n + move]
    final_r = score(x, cond, owner)
    return finish("mcts", params, x, final_r, ledger, traces, cond, t0)
