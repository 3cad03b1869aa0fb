"""Paired, clustered intervals and matched-budget verdicts of the frontier evaluation."""

from __future__ import annotations

import numpy as np
import pytest

from experiments.frontier_stats import paired, summarise


def _rec(reward: list[float], nfe: float, family: str) -> dict:
    n = len(reward)
    return {"reward": reward, "eval": [1.0] * n, "nfe": [nfe] * n, "reward_calls": [1.0] * n,
            "seconds": 1.0, "family": family}  # fmt: skip


def test_identical_arms_have_zero_width_and_a_shift_is_exact() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=64)
    same = paired(a, a.copy(), list(range(64)))
    assert same["value"] == same["lo"] == same["hi"] == 0.0 and same["verdict"] == "tie"
    shift = paired(a + 0.25, a, list(range(64)))
    assert shift["lo"] == pytest.approx(0.25) and shift["hi"] == pytest.approx(0.25)
    assert shift["verdict"] == "better"


def test_clusters_widen_the_interval() -> None:
    """Pairs that share noise are not independent: duplicating each pair and clustering the
    copies gives the interval of the original pairs, not a narrower one."""
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=40), rng.normal(size=40)
    dup_a, dup_b = np.repeat(a, 5), np.repeat(b, 5)
    naive = paired(dup_a, dup_b, list(range(200)))
    clustered = paired(dup_a, dup_b, np.repeat(np.arange(40), 5).tolist())
    assert (clustered["hi"] - clustered["lo"]) > 1.8 * (naive["hi"] - naive["lo"])


def test_bad_input_is_an_error() -> None:
    with pytest.raises(ValueError, match="same pairs"):
        paired(np.zeros(3), np.zeros(4), [0, 1, 2])


def test_matched_budget_picks_the_best_fixed_arm_within_budget() -> None:
    rng = np.random.default_rng(2)
    base = rng.uniform(size=50)
    records = {
        "eps-greedy(4,20)": _rec(list(base + 0.5), 1000.0, "reference"),
        "fixed cheap": _rec(list(base), 50.0, "fixed"),
        "fixed dear": _rec(list(base + 0.3), 200.0, "fixed"),
        "adaptive": _rec(list(base + 0.1), 60.0, "adaptive"),
    }
    res = summarise(records, list(range(50)), [100.0, 300.0], [2.0, 6.0])
    at = {(m["budget_multiple"], m["arm"]): m for m in res["matched"]}
    assert at[(2.0, "adaptive")]["best_fixed"] == "fixed cheap"
    assert at[(2.0, "adaptive")]["reward_diff"]["verdict"] == "better"
    assert at[(6.0, "adaptive")]["best_fixed"] == "fixed dear"
    assert at[(6.0, "adaptive")]["reward_diff"]["verdict"] == "worse"
    assert "adaptive" in res["table"]


def test_fixed_k_comparison_leaves_out_baselines_and_resummarise_round_trips(tmp_path) -> None:
    """``best_vs_fixed_k`` compares against fixed-K arms only (a strong baseline such as beam
    search is left out); ``resummarise`` rebuilds the same summaries from per-pair records."""
    import json

    from experiments.frontier_stats import resummarise, write_outputs

    rng = np.random.default_rng(3)
    base = rng.uniform(size=40)
    records = {
        "eps-greedy(4,20)": _rec(list(base + 0.5), 1000.0, "reference"),
        "fixed": _rec(list(base), 90.0, "fixed"),
        "beam": _rec(list(base + 0.4), 90.0, "baseline"),
        "adaptive": _rec(list(base + 0.2), 80.0, "adaptive"),
    }
    pairs = [(0, s) for s in range(40)]
    res = summarise(records, [s for _, s in pairs], [100.0], [2.0])
    assert res["best_at_budget"][0]["best_fixed"] == "beam"
    assert res["best_at_budget"][0]["reward_diff"]["verdict"] == "worse"
    assert res["best_vs_fixed_k"][0]["best_fixed"] == "fixed"
    assert res["best_vs_fixed_k"][0]["reward_diff"]["verdict"] == "better"
    result = {**res, "pairs": pairs, "budgets_nfe": [100.0], "budget_multiples": [2.0],
              "naive_nfe": 50.0, "heldout_pairs": 40}  # fmt: skip
    write_outputs(result, records, tmp_path, "toy")
    path = tmp_path / "frontier_toy.json"
    before = json.loads(path.read_text())
    after = resummarise(path)
    assert after["best_vs_fixed_k"] == before["best_vs_fixed_k"]
    assert after["arms"] == before["arms"]
