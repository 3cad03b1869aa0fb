"""Reward-matched comparison: the cheapest fixed-K arm that reaches an adaptive arm's reward."""

from __future__ import annotations

import numpy as np

from experiments.frontier_reward import reward_matched
from experiments.frontier_stats import summarise


def _rec(reward: np.ndarray, ev: np.ndarray, nfe: float, family: str) -> dict:
    n = len(reward)
    return {"reward": list(reward), "eval": list(ev), "nfe": [nfe] * n,
            "reward_calls": [1.0] * n, "seconds": 1.0, "family": family}  # fmt: skip


def _result(records: dict, n: int) -> dict:
    pairs = [(0, s) for s in range(n)]
    res = summarise(records, list(range(n)), [100.0, 300.0], [2.0, 6.0])
    res["pairs"] = pairs
    res["per_pair"] = {k: {f: v[f] for f in ("reward", "eval", "nfe", "reward_calls")}
                       for k, v in records.items()}  # fmt: skip
    return res


def test_cheapest_fixed_arm_reaching_the_reward_and_the_saving() -> None:
    rng = np.random.default_rng(0)
    n = 64
    base, ev = rng.uniform(size=n), rng.uniform(size=n)
    records = {
        "eps-greedy(4,20)": _rec(base + 0.5, ev, 1000.0, "reference"),
        "fixed low": _rec(base, ev, 50.0, "fixed"),
        "fixed mid": _rec(base + 0.1, ev - 0.2, 150.0, "fixed"),
        "fixed high": _rec(base + 0.3, ev, 400.0, "fixed"),
        "adaptive": _rec(base + 0.1, ev, 90.0, "adaptive"),
    }
    rows = reward_matched(_result(records, n))
    assert [r["arm"] for r in rows] == ["adaptive"]  # one row even though it wins two budgets
    row = rows[0]
    assert row["fixed"] == "fixed mid"  # "fixed low" is below it; "fixed high" is dearer
    assert row["nfe_saving"] == 1.0 - 90.0 / 150.0
    assert row["reward_diff"]["verdict"] == "tie"
    assert row["eval_diff"]["verdict"] == "better"  # +0.2 at the same reward


def test_no_fixed_arm_reaches_the_reward() -> None:
    rng = np.random.default_rng(1)
    n = 32
    base, ev = rng.uniform(size=n), np.ones(n)
    records = {
        "eps-greedy(4,20)": _rec(base + 0.5, ev, 1000.0, "reference"),
        "fixed": _rec(base, ev, 50.0, "fixed"),
        "adaptive": _rec(base + 0.2, ev, 90.0, "adaptive"),
    }
    (row,) = reward_matched(_result(records, n))
    assert row["fixed"] is None
