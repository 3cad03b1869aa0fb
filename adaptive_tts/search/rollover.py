"""Rollover budget forcing (arXiv 2503.19385): a total NFE budget per sample, split evenly over
the searchable steps; at a step, candidates ``xi ~ N(0, I)`` are drawn and scored (the reward of
the one-step x0 prediction) ``n`` at a time until a round holds one that beats the current best
score (the score of the sample's current particle, ``-inf`` before the first step); the round's
best then continues the trajectory and the step's unused NFEs roll over to the next step. If
no candidate beats it, the step's best candidate is kept.

Budget arithmetic (per sample, in NFEs; ``c`` = the denoiser's NFEs per call): a plain
trajectory costs ``C0``; the ``E = (budget - C0) // c`` extra candidates are split evenly over
the ``S`` searchable steps (cumulative quota ``Q_j = floor((j + 1) E / S)`` through the ``j``-th),
so step ``j`` may evaluate ``1 + Q_j - (extra candidates used before)``. Counted NFEs:
``C0 + c * sum_t (m_t - 1)`` with ``m_t`` the candidates evaluated at step ``t``; never above
``budget`` (the last step may use all that rolled over).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler
from adaptive_tts.search.common import SearchContext, StepCallback, check_positive
from adaptive_tts.search.loop import Choice, StepContext
from adaptive_tts.search.rounds import candidate_rounds, check_budget
from adaptive_tts.types import Reward, SearchResult


def step_quotas(extra: int, steps: int) -> list[int]:
    """Cumulative extra-candidate quota after each of ``steps`` searchable steps (even split)."""
    return [(j + 1) * extra // steps for j in range(steps)]


def rollover(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    budget: int | None = None,
    n: int = 4,
    max_batch: int | None = None,
    callback: StepCallback | None = None,
) -> SearchResult:
    """Rollover budget forcing over a batch ``x_T`` ``(B, *S)``.

    Args:
        budget: total NFEs per sample (>= one plain trajectory's; ``None``: 4 trajectories).
        n: candidates drawn and scored per round (per sample; all samples' rounds share a call).
        callback: after each searchable step, ``{"i", "sigma", "x" (B, *S), "score" (B,)}``.
    Returns:
        :class:`SearchResult`; each searchable step's trace entry records the candidates it
        could and did evaluate (``allowance``, ``tried``), whether one beat the best
        (``beat``), the score to beat and the chosen candidate's score.
    """
    check_positive("n", n)
    params: dict[str, Any] = {"budget": budget, "n": n}
    sc = SearchContext(
        "rollover", denoiser, sampler, x_T, cond, reward, generator, params, max_batch
    )
    npc = sc.ledger.nfe_per_call
    c0 = sampler.trajectory_calls(0) * npc
    budget = 4 * c0 if budget is None else budget
    check_budget("budget", budget, c0)
    params["budget"] = budget
    srch = [i for i in range(sampler.num_steps) if sampler.searchable(i)]
    quota = step_quotas((budget - c0) // npc, max(len(srch), 1))
    used = torch.zeros(sc.b, dtype=torch.long)  # extra candidates used so far
    best = torch.full((sc.b,), -torch.inf)

    def choose(ctx: StepContext) -> Choice:
        nonlocal used, best
        allow = 1 + quota[srch.index(ctx.i)] - used
        res = candidate_rounds(sc, ctx, allow, n, best, strict=True)
        used = used + res.tried - 1
        for j, tr in enumerate(sc.traces):
            tr["steps"].append(
                {
                    "i": ctx.i,
                    "sigma": ctx.sigma,
                    "sigma_hat": ctx.sigma_hat,
                    "searchable": True,
                    "allowance": int(allow[j]),
                    "tried": int(res.tried[j]),
                    "beat": bool(res.hit[j]),
                    "best_before": float(best[j]) if bool(best[j].isfinite()) else None,
                    "one_step_reward": float(res.score[j]),
                }
            )
        best = res.score
        return Choice(res.xi, x0_hat=res.x0_hat)

    def after(i: int, x: Tensor, ctx: StepContext | None) -> None:
        if ctx is None:
            for tr in sc.traces:
                tr["steps"].append({"i": i, "sigma": sampler.sigma(i), "searchable": False})
        elif callback is not None:
            callback({"i": i, "sigma": ctx.sigma, "x": x, "score": best})

    x, _ = sc.denoise(x_T, sc.rows(), choose, after=after)
    return sc.finish(x, sc.score(x, *sc.rows()))
