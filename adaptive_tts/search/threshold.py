"""Verifier-threshold search (arXiv 2512.08985): a sample advances to the next step only once
a candidate's verifier score (the reward of its one-step x0 prediction) clears the step's
threshold; until then it draws and scores ``n`` fresh candidates at a time, up to ``max_tries``
per step (then its best candidate of the step continues). Each sample decides for itself, so a
batch advances unevenly: samples that cleared leave the network calls of later rounds.

The threshold is a schedule over sigma: a constant, a callable ``sigma -> threshold``, or
``(sigma, threshold)`` points interpolated linearly in ``log sigma`` (held constant beyond the
first and last point). An optional hard ``budget`` (NFEs per sample) caps every step at what is
left after reserving the calls the rest of the trajectory needs.

Counted NFEs: ``C0 + c * sum_t (m_t - 1)`` (``C0`` a plain trajectory, ``c`` NFEs per call,
``m_t`` in ``[1, max_tries]`` the candidates evaluated at step ``t``), at most ``budget``.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler
from adaptive_tts.search.common import SearchContext, StepCallback, check_positive
from adaptive_tts.search.loop import Choice, StepContext
from adaptive_tts.search.rounds import candidate_rounds, check_budget, owed_calls
from adaptive_tts.types import Reward, SearchResult

Threshold = float | Sequence[Sequence[float]] | Callable[[float], float]


def threshold_schedule(threshold: Threshold) -> Callable[[float], float]:
    """``sigma -> threshold`` from a constant, a callable or ``(sigma, threshold)`` points
    (sigma > 0, distinct; interpolated in log sigma, constant outside the points)."""
    if callable(threshold):
        return threshold
    if isinstance(threshold, int | float):
        if math.isnan(threshold):
            raise ValueError("threshold must be a number (not NaN), points or a callable")
        value = float(threshold)
        return lambda sigma: value
    try:
        pts = sorted((float(s), float(t)) for s, t in threshold)
    except (TypeError, ValueError) as err:
        raise ValueError(
            "threshold must be a number, a callable or a list of (sigma, threshold) pairs"
        ) from err
    if not pts or any(not (s > 0 and math.isfinite(s) and math.isfinite(t)) for s, t in pts):
        raise ValueError(
            f"threshold points need sigma in (0, inf) and a finite threshold, got {pts}"
        )
    if len({s for s, _ in pts}) != len(pts):
        raise ValueError(f"threshold points must have distinct sigmas, got {pts}")
    logs = [math.log(s) for s, _ in pts]
    vals = [t for _, t in pts]

    def at(sigma: float) -> float:
        u = math.log(max(sigma, 1e-30))
        if u <= logs[0]:
            return vals[0]
        if u >= logs[-1]:
            return vals[-1]
        j = bisect.bisect_right(logs, u)
        w = (u - logs[j - 1]) / (logs[j] - logs[j - 1])
        return vals[j - 1] + w * (vals[j] - vals[j - 1])

    return at


def threshold_search(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    threshold: Threshold = 0.5,
    n: int = 4,
    max_tries: int = 16,
    budget: int | None = None,
    max_batch: int | None = None,
    callback: StepCallback | None = None,
) -> SearchResult:
    """Verifier-threshold search over a batch ``x_T`` ``(B, *S)``.

    Args:
        threshold: score a candidate must reach (``>=``) at a step; see the module docstring.
        n: candidates per round (per sample). max_tries: candidates per step at most (>= 1).
        budget: hard cap on NFEs per sample (``None``: none; else >= a plain trajectory's).
        callback: after each searchable step, ``{"i", "sigma", "x" (B, *S), "score" (B,)}``.
    Returns:
        :class:`SearchResult`; each searchable step's trace entry holds the threshold, the
        candidates tried, whether the threshold was cleared and the chosen score.
    """
    check_positive("n", n)
    check_positive("max_tries", max_tries)
    sched = threshold_schedule(threshold)
    shown: Any = threshold
    if callable(threshold):
        shown = repr(threshold)
    elif not isinstance(threshold, int | float):
        shown = [[float(s), float(t)] for s, t in threshold]
    params: dict[str, Any] = {"threshold": shown, "n": n, "max_tries": max_tries, "budget": budget}
    sc = SearchContext(
        "threshold", denoiser, sampler, x_T, cond, reward, generator, params, max_batch
    )
    npc = sc.ledger.nfe_per_call
    check_budget("budget", budget, sampler.trajectory_calls(0) * npc)
    last: dict[str, Tensor] = {}

    def choose(ctx: StepContext) -> Choice:
        thr = float(sched(ctx.sigma))
        allow = torch.full((sc.b,), max_tries, dtype=torch.long)
        if budget is not None:
            spare = (budget - sc.ledger.per_sample - owed_calls(sampler, ctx.i) * npc) // npc
            allow = torch.minimum(allow, spare.clamp_min(1))
        res = candidate_rounds(sc, ctx, allow, n, torch.full((sc.b,), thr), strict=False)
        for j, tr in enumerate(sc.traces):
            tr["steps"].append(
                {
                    "i": ctx.i,
                    "sigma": ctx.sigma,
                    "sigma_hat": ctx.sigma_hat,
                    "searchable": True,
                    "threshold": thr,
                    "allowance": int(allow[j]),
                    "tried": int(res.tried[j]),
                    "cleared": bool(res.hit[j]),
                    "one_step_reward": float(res.score[j]),
                }
            )
        last["score"] = res.score
        return Choice(res.xi, x0_hat=res.x0_hat)

    def after(i: int, x: Tensor, ctx: StepContext | None) -> None:
        if ctx is None:
            for tr in sc.traces:
                tr["steps"].append({"i": i, "sigma": sampler.sigma(i), "searchable": False})
        elif callback is not None:
            callback({"i": i, "sigma": ctx.sigma, "x": x, "score": last["score"]})

    x, _ = sc.denoise(x_T, sc.rows(), choose, after=after)
    return sc.finish(x, sc.score(x, *sc.rows()))
