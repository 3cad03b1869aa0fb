"""Per-step statistics of eps-greedy calibration traces (the seed's Figure 2 on our model).

For each searchable step t and trajectory r (K iterations of N candidates):
``c(t) = sum_k I_k`` exploration wins, ``k_bar(t) = sum_k (k - 1) I_k``, ``sum_k J_k`` improvements,
the last improving iteration, the one-step reward ``r_hat_t`` of the chosen noise, and its gap
to the final reward ``r_hat_t - r_0``; across trajectories, the Spearman rank agreement between
``r_hat_t`` and ``r_0``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import numpy as np

from adaptive_tts.traces import HASH_KEY, record_key, run_k, strict_dumps


@dataclass
class StepStats:
    """Arrays over R trajectories and S searchable steps (sorted noisiest first)."""

    index: np.ndarray  # (S,) step indices
    sigma: np.ndarray  # (S,)
    k: np.ndarray  # (R, S) iterations run
    n: int  # candidates per iteration
    wins: np.ndarray  # (R, S) c(t)
    kbar: np.ndarray  # (R, S)
    improvements: np.ndarray  # (R, S) sum_k J_k
    last_improve: np.ndarray  # (R, S) last k with J_k = 1 (0: none)
    improve_at: np.ndarray  # (R, S, Kmax) J_k
    one_step: np.ndarray  # (R, S) r_hat_t
    final: np.ndarray  # (R,) r_0
    score_at: np.ndarray  # (R, S, Kmax + 1) pivot score before/after each iteration
    meta: dict[str, Any]

    @property
    def gains(self) -> np.ndarray:
        """One-step score gain of each iteration, ``(R, S, Kmax)``."""
        return np.diff(self.score_at, axis=2)

    @property
    def gap(self) -> np.ndarray:
        """``r_hat_t - r_0``, ``(R, S)``."""
        return self.one_step - self.final[:, None]

    def rank_agreement(self) -> np.ndarray:
        """Spearman correlation of ``r_hat_t`` with ``r_0`` across trajectories, ``(S,)``."""
        return np.array(
            [_spearman(self.one_step[:, s], self.final) for s in range(len(self.index))]
        )

    def summary(self) -> list[dict[str, float]]:
        """One JSON-ready row per step (means over trajectories)."""
        ra = self.rank_agreement()
        return [
            {
                "i": int(self.index[s]),
                "sigma": float(self.sigma[s]),
                "k_mean": float(self.k[:, s].mean()),
                "wins_mean": float(self.wins[:, s].mean()),
                "kbar_mean": float(self.kbar[:, s].mean()),
                "improvements_mean": float(self.improvements[:, s].mean()),
                "last_improve_mean": float(self.last_improve[:, s].mean()),
                "gap_mean": float(self.gap[:, s].mean()),
                "gap_abs_mean": float(np.abs(self.gap[:, s]).mean()),
                "rank_agreement": float(ra[s]),
            }
            for s in range(len(self.index))
        ]


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return 0.0
    ra = np.argsort(np.argsort(a)).astype(float)
    rb = np.argsort(np.argsort(b)).astype(float)
    return float(np.corrcoef(ra, rb)[0, 1])


def trace_setting(trace: dict[str, Any], vary: tuple[str, ...] = ()) -> str:
    """What a trace was calibrated under, as canonical JSON: task, model, method, sampler and
    the method's params (less the keys in ``vary``)."""
    params = {k: v for k, v in dict(trace.get("params") or {}).items() if k not in vary}
    if "k" not in vary:
        params["k"] = run_k(trace)  # what it ran with (a controller's k, not the default)
    keys = ("task", "model", "method", "sampler")
    return strict_dumps({**{k: trace.get(k) for k in keys}, "params": params}, sort_keys=True)


def one_setting(
    traces: list[dict[str, Any]], vary: tuple[str, ...] = (), what: str = "traces"
) -> list[dict[str, Any]]:
    """``traces`` if they share one calibration setting (up to ``vary``, e.g. ``("k",)`` for
    budget-varied runs), each record once (a duplicate, same settings hash, prompt, seed and k,
    is dropped); mixed settings (k=3 with k=4, gmm with MNIST) are a ``ValueError``."""
    if not traces:
        raise ValueError(f"{what} must not be empty")
    groups: dict[str, int] = {}
    hashes: dict[str, set[str]] = {}
    for t in traces:
        key = trace_setting(t, vary)
        groups[key] = groups.get(key, 0) + 1
        hashes.setdefault(key, set()).add(str(t.get(HASH_KEY) or "no hash"))
    if len(groups) > 1:
        seen = "; ".join(
            f"{n} x {_short(json.loads(k))} (settings {', '.join(sorted(hashes[k]))})"
            for k, n in groups.items()
        )
        raise ValueError(
            f"{what} mix {len(groups)} calibration settings ({seen}): fit one at a time "
            "(--settings HASH, or one directory per setting)"
        )
    unique: dict[Any, dict[str, Any]] = {}
    for i, t in enumerate(traces):
        unique.setdefault(record_key(t) if "seed" in t else i, t)
    return list(unique.values())


def _short(s: dict[str, Any]) -> str:
    sampler = s.get("sampler") or {}
    steps = sampler.get("steps") if isinstance(sampler, dict) else None
    return f"{s.get('task')}/{s.get('model')} {s.get('method')} {s['params']} steps={steps}"


def step_stats(traces: list[dict[str, Any]]) -> StepStats:
    """Collect :class:`StepStats` from eps-greedy / zero-order traces of one setting
    (:func:`one_setting`: mixed settings are an error, duplicates count once)."""
    traces = one_setting(traces)
    ref = traces[0]
    if ref.get("method") not in ("eps-greedy", "zero-order"):
        raise ValueError(f"calibration traces must come from eps-greedy, got {ref.get('method')!r}")
    idx = [st["i"] for st in ref["steps"] if st.get("searchable") and "iters" in st]
    sig = {st["i"]: st["sigma"] for st in ref["steps"]}
    r, s = len(traces), len(idx)
    kmax = max(int(st["knobs"]["k"]) for tr in traces for st in tr["steps"] if "knobs" in st)
    arr = {
        name: np.zeros((r, s))
        for name in ("k", "wins", "kbar", "improvements", "last_improve", "one_step")
    }
    improve_at = np.zeros((r, s, max(kmax, 1)))
    score_at = np.zeros((r, s, max(kmax, 1) + 1))
    final = np.zeros(r)
    n = int(ref["steps"][idx[0]]["knobs"]["n"]) if idx else 0
    for a, tr in enumerate(traces):
        if tr["sampler"] != ref["sampler"]:
            raise ValueError("traces mix samplers or step counts; calibrate them separately")
        by_i = {st["i"]: st for st in tr["steps"]}
        final[a] = tr["final_reward"]
        for b, i in enumerate(idx):
            st = by_i[i]
            its = st["iters"]
            I = np.array([it["I"] for it in its], dtype=float)
            J = np.array([it["J"] for it in its], dtype=float)
            arr["k"][a, b] = len(its)
            arr["wins"][a, b] = I.sum()
            arr["kbar"][a, b] = float((np.arange(len(its)) * I).sum())
            arr["improvements"][a, b] = J.sum()
            arr["last_improve"][a, b] = float(np.flatnonzero(J).max() + 1) if J.any() else 0.0
            improve_at[a, b, : len(J)] = J
            path = [st["initial_score"]] + [it["score"] for it in its]
            score_at[a, b, : len(path)] = path
            score_at[a, b, len(path) :] = path[-1]  # no iteration: the score stays
            arr["one_step"][a, b] = st["one_step_reward"]
    return StepStats(
        index=np.array(idx),
        sigma=np.array([sig[i] for i in idx]),
        n=n,
        improve_at=improve_at,
        final=final,
        score_at=score_at,
        meta={
            "task": ref.get("task"),
            "model": ref.get("model"),
            "sampler": ref["sampler"],
            "params": ref.get("params", {}),
            "trajectories": r,
        },
        **arr,
    )


def plot_stats(stats: StepStats, path: str) -> None:
    """Four panels against sigma_t: k_bar, c(t)/K, improvements, reliability (gap, rank)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptive_tts.viz import save_figure

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.6))
    x = stats.sigma
    for a, (y, title) in zip(
        ax[:3],
        [
            (stats.kbar, "k_bar(t) = sum (k-1) I_k"),
            (stats.wins / np.maximum(stats.k, 1), "c(t) / K"),
            (stats.improvements, "improvements sum J_k"),
        ],
    ):
        m, sd = y.mean(0), y.std(0)
        a.plot(x, m, "o-")
        a.fill_between(x, m - sd, m + sd, alpha=0.25)
        a.set_title(title)
    g = stats.gap
    ax[3].plot(x, g.mean(0), "o-", label="gap r_hat_t - r_0")
    ax[3].fill_between(x, g.mean(0) - g.std(0), g.mean(0) + g.std(0), alpha=0.25)
    ax[3].plot(x, stats.rank_agreement(), "s--", label="rank agreement")
    ax[3].legend(fontsize=8)
    ax[3].set_title("one-step reward reliability")
    for a in ax:
        a.set_xscale("log")
        a.set_xlabel("sigma_t")
        a.invert_xaxis()
    fig.suptitle(f"{stats.meta.get('task')}: {stats.meta['trajectories']} calibration trajectories")
    fig.tight_layout()
    save_figure(fig, path)
