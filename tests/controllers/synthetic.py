"""Hand-made calibration traces with a known truth, for controller tests."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from adaptive_tts.sampling import make_sampler
from adaptive_tts.types import TRACE_SCHEMA


def p_true(sigma: float) -> float:
    """Exploration-win probability, logistic in log sigma: high when noisy, low when clean."""
    return 1.0 / (1.0 + math.exp(-(math.log(sigma) - 0.0) * 1.2))


def make_traces(r: int = 200, k: int = 20, steps: int = 10, seed: int = 0) -> list[dict[str, Any]]:
    """Eps-greedy-like traces: I_k ~ Bernoulli(p_true), J_k ~ Bernoulli(0.6 / k) at noisy steps,
    one-step reward close to the final reward only when sigma is small."""
    rng = np.random.default_rng(seed)
    sampler = make_sampler("heun", steps)
    out = []
    for _ in range(r):
        final = float(rng.random())
        st_list = []
        for i in range(steps):
            sig = sampler.sigma(i)
            score = float(rng.random() * 0.2)
            score0 = score
            iters = []
            for kk in range(1, k + 1):
                win = rng.random() < p_true(sig)
                improved = win or rng.random() < (0.6 / kk if sig > 0.5 else 0.02)
                if improved:
                    score += 0.01 / kk
                iters.append({"I": int(win), "J": int(improved), "score": score, "n_explore": 2})
            noise = min(sig, 5.0) * 0.1
            st_list.append(
                {
                    "i": i,
                    "sigma": sig,
                    "sigma_hat": sig,
                    "searchable": True,
                    "knobs": {"n": 4, "k": k, "eps": 0.4, "lam": 0.15},
                    "initial_score": score0,
                    "iters": iters,
                    "one_step_reward": final + float(rng.normal(0, noise)),
                }
            )
        out.append(
            {
                "schema": TRACE_SCHEMA,
                "method": "eps-greedy",
                "sampler": sampler.describe(),
                "params": {"n": 4, "k": k, "eps": 0.4, "lam": 0.15},
                "steps": st_list,
                "final_reward": final,
                "task": "synthetic",
                "model": "synthetic",
            }
        )
    return out
