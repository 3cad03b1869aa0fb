"""(N, S)-MCTS over per-step noise: at each step the current node gets ``N`` children (noise
candidates); ``S`` simulations pick a child by UCB (``c = sqrt(2)``), roll it out to x0 with
plain stochastic sampling, score the rollout by the reward and back up the mean; the search
then moves to the child with the best mean."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import SearchContext, check_positive, rep
from adaptive_tts.search.loop import Choice, StepContext, evaluator
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
    params = {"n": n, "sims": sims, "c": c}
    sc = SearchContext("mcts", denoiser, sampler, x_T, cond, reward, generator, params, max_batch)
    b = sc.b
    ar = torch.arange(b)
    rows, rows_n = sc.rows(), sc.rows(n)

    def expand(ctx: StepContext) -> Choice:
        """Post ``n`` children per sample, run ``sims`` UCB-picked rollouts, move to the child
        with the best mean rollout reward."""
        xi = randn_like_rows(ctx.x_det, sc.gens, n)
        x_hat = rep(ctx.x_det, n) + ctx.scale * xi
        x0_hat = sc.ledger(x_hat, ctx.sigma_hat, *rows_n, "score")
        kids, kids_x0 = sampler.post(ctx.i, x_hat, x0_hat, evaluator(sc.ledger, *rows_n, "score"))
        total, visits = torch.zeros(b, n), torch.zeros(b, n)
        for _ in range(sims):
            kid = ucb_select(total, visits, c)
            pick = ar * n + kid
            start_x0 = None if kids_x0 is None else kids_x0[pick]
            final, _ = sc.denoise(kids[pick], rows, start=ctx.i + 1, x0=start_x0, purpose="rollout")
            total[ar, kid] += sc.score(final, *rows)
            visits[ar, kid] += 1
        means = torch.where(
            visits > 0, total / visits.clamp_min(1), torch.full_like(total, -math.inf)
        )
        for j, tr in enumerate(sc.traces):
            tr["steps"].append(
                {
                    "i": ctx.i,
                    "sigma": ctx.sigma,
                    "searchable": True,
                    "child_means": means[j].tolist(),
                    "visits": visits[j].tolist(),
                }
            )
        move = ar * n + means.argmax(1)
        return Choice(xi[move], next=(kids[move], None if kids_x0 is None else kids_x0[move]))

    x, _ = sc.denoise(x_T, rows, expand)
    return sc.finish(x, sc.score(x, *rows))
