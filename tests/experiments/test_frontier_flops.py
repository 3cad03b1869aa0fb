"""FLOPs-matched comparison: every arm priced per pair, the reward's calls included."""

from __future__ import annotations

import numpy as np
import pytest

from adaptive_tts.compute import FlopPrices
from adaptive_tts.sampling import make_sampler
from experiments.frontier_flops import flops_view, markdown
from experiments.frontier_stats import summarise

SAMPLER = make_sampler("heun", 10)  # 19 NFEs a plain trajectory
PRICES = FlopPrices(network=1.0, reward=1.0)  # plain sampling: 19 + 1 = 20 FLOPs


def _rec(reward: np.ndarray, nfe: float, calls: float, family: str) -> dict:
    n = len(reward)
    return {"reward": list(reward), "eval": list(reward), "nfe": [nfe] * n,
            "reward_calls": [calls] * n, "seconds": 1.0, "family": family}  # fmt: skip


def _result(records: dict, n: int) -> dict:
    res = summarise(records, list(range(n)), [76.0, 152.0], [4.0, 8.0])
    res |= {"pairs": [(0, s) for s in range(n)], "task": "toy", "naive_nfe": 19.0,
            "budget_multiples": [4.0, 8.0], "sampler": SAMPLER.describe()}  # fmt: skip
    res["per_pair"] = {k: {f: v[f] for f in ("reward", "eval", "nfe", "reward_calls")}
                       for k, v in records.items()}  # fmt: skip
    return res


def test_reward_calls_move_arms_out_of_a_flops_budget() -> None:
    rng = np.random.default_rng(0)
    n = 48
    base = rng.uniform(size=n)
    records = {
        "eps-greedy(4,20)": _rec(base + 0.9, 1475.0, 1460.0, "reference"),
        "naive": _rec(base, 19.0, 1.0, "baseline"),
        "best-of-4": _rec(base + 0.2, 76.0, 4.0, "baseline"),
        "fixed": _rec(base + 0.3, 70.0, 60.0, "fixed"),
        "adaptive": _rec(base + 0.4, 60.0, 50.0, "adaptive"),
    }
    res = _result(records, n)
    assert [x["budget_multiple"] for x in res["best_at_budget"]] == [4.0, 8.0]  # NFE view
    view = flops_view(res, PRICES)
    cost = {a["arm"]: a["cost_flops"] for a in view["arms"]}
    assert cost["naive"] == pytest.approx(1.0)
    assert cost["best-of-4"] == pytest.approx(80 / 20)
    assert cost["adaptive"] == pytest.approx(110 / 20)
    assert view["naive_flops"] == 20.0 and view["reward_share_of_naive"] == 0.05
    (only,) = view["best_at_budget"]  # 5.5x: out of the 4x FLOPs budget, in at 8x
    assert only["budget_multiple"] == 8.0 and only["best_fixed"] == "fixed"
    at4 = [x for x in view["nfe_view"] if x["budget_multiple"] == 4.0]
    assert at4[0]["best_fixed"] == "fixed"  # in NFEs "fixed" (3.7x) fits 4x
    text = markdown([view])
    assert "| toy | 4x | adaptive (3.16x) vs fixed (3.68x)" in text
    assert "no adaptive arm within the budget" in text


def test_recorded_prices_win_over_pricing_here() -> None:
    """A run that enforced FLOPs budgets records its prices (its device's FLOP counts); the
    FLOPs view prices every arm with them, not with a CPU measurement."""
    from experiments.frontier_flops import task_prices

    n = 8
    records = {
        "eps-greedy(4,20)": _rec(np.ones(n), 1475.0, 1460.0, "reference"),
        "naive": _rec(np.zeros(n), 19.0, 1.0, "baseline"),
    }
    res = _result(records, n)
    res["prices"] = {"device": "cuda", **FlopPrices(network=2.0, reward=3.0).to_dict()}
    prices, where = task_prices("toy", res)  # "toy" is no task: nothing is measured here
    assert (prices.network, prices.reward, where) == (2.0, 3.0, "recorded by the run (cuda)")
    view = flops_view(res, prices, where)
    assert view["naive_flops"] == 19 * 2.0 + 3.0 and view["prices_from"] == where
