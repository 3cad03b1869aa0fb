"""Gain controller: spend iterations where calibration says they buy the most.

For each step t and iteration k, the mean one-step gain of the pivot score ``g(t, k)``
(``E[score_k - score_{k-1}]``, diminishing in k) is weighted by how well the one-step reward at t
predicts the final reward (``w(t)`` = rank agreement of ``r_hat_t`` with ``r_0``, clipped at 0;
``w = 1`` when the calibration's final rewards have no spread, e.g. all saturated at 1).
Iterations are granted greedily by value ``w(t) g(t, k)`` until the mean ``K_t`` reaches
``k_mean``; so ``K_t = #{k : w(t) g(t, k) >= threshold}``. Steps whose value is never above the
threshold get ``K_t = 0`` (their single pivot draw is the plain step).
"""

from __future__ import annotations

import numpy as np

from controllers.binomial import _meta
from controllers.schedule import ScheduleController
from controllers.stats import StepStats


def fit_gain(
    stats: StepStats, k_mean: float = 1.5, eps: float | None = None, weight: str = "rank"
) -> ScheduleController:
    """Fit the gain controller for a target mean ``K_t`` (``0 < k_mean <= K``)."""
    params = stats.meta.get("params", {})
    k_cal = int(params.get("k", int(stats.k.max())))
    if not 0 < k_mean <= k_cal:
        raise ValueError(f"k_mean must lie in (0, {k_cal}], got {k_mean}")
    if weight not in ("rank", "none"):
        raise ValueError(f"weight must be 'rank' or 'none', got {weight!r}")
    g = np.clip(stats.gains.mean(0), 0, None)[:, :k_cal]  # (S, K)
    g = np.minimum.accumulate(g, axis=1)  # enforce diminishing returns
    if weight == "rank" and np.ptp(stats.final) > 0:
        w = np.clip(stats.rank_agreement(), 0, None)
    else:  # no weight asked for, or final rewards without spread (saturated): rank is undefined
        w = np.ones(len(stats.sigma))
    value = w[:, None] * g
    s = len(stats.sigma)
    n_grant = int(round(k_mean * s))
    flat = np.sort(value.ravel())[::-1]
    threshold = flat[min(n_grant, flat.size) - 1] if n_grant > 0 else np.inf
    threshold = max(threshold, 1e-12)
    ks = (value >= threshold).sum(1)
    e = float(params.get("eps", 0.4)) if eps is None else eps
    steps = [
        {"i": int(i), "sigma": float(sig), "k": int(k), "eps": e, "value": float(value[j, 0])}
        for j, (i, sig, k) in enumerate(zip(stats.index, stats.sigma, ks))
    ]
    diag = {
        "sigma": stats.sigma.tolist(),
        "gain_k1": g[:, 0].tolist(),
        "weight": w.tolist(),
        "threshold": float(threshold),
        "k_mean_target": k_mean,
    }
    return ScheduleController(
        steps=steps,
        n=int(params.get("n", stats.n)),
        lam=float(params.get("lam", 0.15)),
        k_max=k_cal,
        kind="gain",
        meta=_meta(stats),
        diagnostics=diag,
    )
