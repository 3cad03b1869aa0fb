"""Binomial controller: exploration wins ``c(t) ~ Bin(K, p(t))`` with ``p(t)`` smooth in
``log sigma_t`` (binomial GLM on spline features, bootstrap bands), and the seed's mappings:

* ``eps``: ``eps(t) = p(t)``, ``K_t = K`` (explore where exploration wins);
* ``ceil``: ``K_t = max(k_min, ceil(K p(t)))``; ``draw``: ``K_t = max(k_min, X)`` with
  ``X ~ Bin(K, p(t))`` drawn per sample;
* ``improve``: stop iterating where iterations stop improving the pivot: a GLM of
  ``P(J_k = 1 | t, k)`` and ``K_t = max{k : P(J_k = 1 | t) >= tau}``; ``K_t = 0`` where even the
  first iteration improves the pivot with probability below ``tau_useless``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np

from controllers.schedule import ScheduleController
from controllers.stats import StepStats

Mapping = Literal["eps", "ceil", "draw", "improve"]


def _features(
    log_sigma: np.ndarray, knots: np.ndarray, extra: np.ndarray | None = None
) -> np.ndarray:
    """Cubic truncated-power spline basis of ``log sigma`` (optionally times ``extra``)."""
    x = log_sigma[:, None]
    base = [x, x**2, x**3] + [np.clip(x - k, 0, None) ** 3 for k in knots]
    f = np.concatenate(base, axis=1)
    if extra is not None:
        f = np.concatenate([f, extra[:, None], f * extra[:, None]], axis=1)
    return f


class _BinomialGLM:
    """Logistic regression on aggregated (successes, trials) with standardised features."""

    def __init__(self, c: float = 1.0):
        self.c = c
        self.const: float | None = None

    def fit(self, feats: np.ndarray, succ: np.ndarray, trials: np.ndarray) -> _BinomialGLM:
        from sklearn.linear_model import LogisticRegression

        self.mu, self.sd = feats.mean(0), feats.std(0) + 1e-9
        z = (feats - self.mu) / self.sd
        X = np.concatenate([z, z])
        y = np.concatenate([np.ones(len(z)), np.zeros(len(z))])
        w = np.concatenate([succ, trials - succ])
        keep = w > 0
        if len(np.unique(y[keep])) < 2:  # all successes or all failures
            self.const = float(y[keep][0]) if keep.any() else 0.0
            return self
        self.const = None
        self.model = LogisticRegression(C=self.c, max_iter=2000).fit(
            X[keep], y[keep], sample_weight=w[keep]
        )
        return self

    def predict(self, feats: np.ndarray) -> np.ndarray:
        if self.const is not None:
            return np.full(len(feats), self.const)
        return self.model.predict_proba((feats - self.mu) / self.sd)[:, 1]


def fit_p(
    stats: StepStats, bootstrap: int = 100, c: float = 1.0, seed: int = 0
) -> dict[str, np.ndarray]:
    """Fit ``p(t)`` from exploration wins. Returns ``p``, ``lo``, ``hi`` (95% bootstrap band) and
    the raw per-step rate, each ``(S,)``."""
    ls = np.log(stats.sigma)
    knots = np.quantile(ls, [0.25, 0.5, 0.75])
    feats = _features(ls, knots)

    def fit(rows: np.ndarray) -> np.ndarray:
        succ, trials = stats.wins[rows].sum(0), stats.k[rows].sum(0)
        return _BinomialGLM(c).fit(feats, succ, trials).predict(feats)

    all_rows = np.arange(stats.wins.shape[0])
    p = fit(all_rows)
    rng = np.random.default_rng(seed)
    boots = (
        np.stack([fit(rng.choice(all_rows, len(all_rows))) for _ in range(bootstrap)])
        if bootstrap
        else p[None]
    )
    raw = stats.wins.sum(0) / np.maximum(stats.k.sum(0), 1)
    return {
        "p": p,
        "lo": np.quantile(boots, 0.025, 0),
        "hi": np.quantile(boots, 0.975, 0),
        "raw": raw,
    }


def fit_improve(stats: StepStats, c: float = 1.0) -> np.ndarray:
    """``P(J_k = 1 | t, k)`` for ``k = 1..K``: ``(S, K)``, a GLM in spline(log sigma) x log k."""
    s, kmax = stats.improve_at.shape[1:]
    ls = np.log(stats.sigma)
    knots = np.quantile(ls, [0.25, 0.5, 0.75])
    grid_ls = np.repeat(ls, kmax)
    grid_k = np.tile(np.log(np.arange(1, kmax + 1)), s)
    feats = _features(grid_ls, knots, grid_k)
    ran = (np.arange(kmax)[None, None, :] < stats.k[:, :, None]).sum(0).reshape(-1)
    succ = stats.improve_at.sum(0).reshape(-1)
    return _BinomialGLM(c).fit(feats, succ, ran.astype(float)).predict(feats).reshape(s, kmax)


def fit_binomial(
    stats: StepStats,
    mapping: Mapping = "ceil",
    eps: float | None = None,
    tau: float = 0.1,
    tau_useless: float = 0.02,
    k_min: int = 1,
    bootstrap: int = 100,
) -> ScheduleController:
    """Fit the Binomial controller and map it to a per-step schedule.

    Args:
        mapping: ``eps``, ``ceil``, ``draw`` or ``improve`` (see module docstring).
        eps: exploration rate where the mapping does not set it (default: calibration's).
        tau: ``improve`` keeps iterating while ``P(J_k = 1) >= tau``.
        k_min: the least ``K_t`` at a searchable step (unless the fit says search is useless);
            for ``draw`` each sample's drawn ``K_t`` is lifted to it.
    """
    if mapping not in ("eps", "ceil", "draw", "improve"):
        raise ValueError(f"mapping must be one of eps, ceil, draw, improve; got {mapping!r}")
    if not 0 < tau < 1:
        raise ValueError(f"tau must lie in (0, 1), got {tau}")
    params = stats.meta.get("params", {})
    k_cal = int(params.get("k", int(stats.k.max())))
    eps_cal = float(params.get("eps", 0.4)) if eps is None else eps
    fit = fit_p(stats, bootstrap=bootstrap)
    p = fit["p"]
    q = fit_improve(stats)
    steps: list[dict[str, Any]] = []
    for s, (i, sig) in enumerate(zip(stats.index, stats.sigma)):
        k, e = k_cal, eps_cal
        if mapping == "eps":
            e = float(np.clip(p[s], 0.0, 1.0))
        elif mapping in ("ceil", "draw"):
            k = max(k_min, math.ceil(k_cal * p[s] - 1e-9))
        else:
            hits = np.flatnonzero(q[s] >= tau)
            k = int(hits.max() + 1) if hits.size else 0
            k = 0 if q[s, 0] < tau_useless else max(k, k_min)
        steps.append(
            {
                "i": int(i),
                "sigma": float(sig),
                "k": int(min(k, k_cal)),
                "eps": float(e),
                "p": float(np.clip(p[s], 0, 1)),
            }
        )
    diag = {
        "sigma": stats.sigma.tolist(),
        "p": p.tolist(),
        "p_lo": fit["lo"].tolist(),
        "p_hi": fit["hi"].tolist(),
        "p_raw": fit["raw"].tolist(),
        "improve_prob_k1": q[:, 0].tolist(),
        "tau": tau,
    }
    return ScheduleController(
        steps=steps,
        n=int(params.get("n", stats.n)),
        lam=float(params.get("lam", 0.15)),
        mode="draw" if mapping == "draw" else "table",
        k_max=k_cal,
        k_min=min(k_min, k_cal) if mapping == "draw" else 0,
        kind=f"binomial-{mapping}",
        meta=_meta(stats),
        diagnostics=diag,
    )


def _meta(stats: StepStats) -> dict[str, Any]:
    return {
        "model": stats.meta.get("model"),
        "task": stats.meta.get("task"),
        "sampler": stats.meta["sampler"],
        "calibration": stats.meta.get("params", {}),
        "trajectories": stats.meta["trajectories"],
    }
