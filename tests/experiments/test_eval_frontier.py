"""The frontier evaluation end to end on the mixture (CPU, quick): outputs, independent pairs,
closed-form NFEs of the fixed arms and a budget-specific arm added through the hook."""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import torch

import experiments.eval_frontier as ef
from adaptive_tts.types import Knobs, StepInfo
from experiments.calibration import load_traces

TASK = "gmm-target"
PAIRS, CAL_PAIRS = 6, 4


@dataclass
class GreedyBudget:
    """Toy hard per-sample budget: search N candidates per iteration, as many iterations (up to
    ``k``) as fit in what the budget leaves after the plain steps still to come."""

    budget: float
    rest: list[int]  # plain calls of steps i..T-1
    n: int = 2
    k: int = 8

    def decide(self, step: StepInfo) -> Knobs:
        left = self.budget - step.nfe.double() - self.rest[step.index]
        k = (left // self.n).clamp(0, self.k).long()
        return Knobs(self.n, k, torch.full((step.batch,), 0.4), 0.15)


def toy_builder(
    task: Any, sampler: Any, cal_pairs: list[Any], budgets: list[float], ctx: ef.Context
) -> list[ef.Arm]:
    cost = [int(c) for c in sampler.plain_cost()]
    rest = [sum(cost[i:]) for i in range(len(cost))]
    assert len(cal_pairs) == CAL_PAIRS and ctx.naive_nfe == sum(cost) and ctx.traces
    toy = ef.Arm("probe", "adaptive", "eps-greedy", {"controller": GreedyBudget(70, rest)})
    probe = ctx.run(toy, cal_pairs)
    assert len(probe["nfe"]) == CAL_PAIRS and max(probe["nfe"]) <= 70  # e.g. to pick a setting
    return [
        ef.Arm(
            f"toy {b:g}",
            "adaptive",
            "eps-greedy",
            {"controller": GreedyBudget(b, rest)},
            budget=b,
            calibration_nfe=0.0,
        )
        for b in budgets
    ]


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], Path]:
    out = tmp_path_factory.mktemp("frontier")
    mp = pytest.MonkeyPatch()
    mp.setattr(ef, "ADAPTIVE_ARM_BUILDERS", [toy_builder])
    try:
        args = ["--task", TASK, "--quick", "--pairs", str(PAIRS), "--cal-pairs", str(CAL_PAIRS)]
        args += ["--budgets", "2", "4", "--batch", "4", "--out", str(out), "--no-progress"]
        assert ef.main(args) == 0
    finally:
        mp.undo()
    return json.loads((out / f"frontier_{TASK}.json").read_text()), out


def test_outputs_exist_and_parse(run: tuple[dict[str, Any], Path]) -> None:
    res, out = run
    assert (out / f"frontier_{TASK}.png").stat().st_size > 0
    rows = list(csv.DictReader((out / f"frontier_{TASK}.csv").open()))
    assert [r["arm"] for r in rows] == [a["arm"] for a in res["arms"]]
    labels = {r["arm"] for r in rows}
    assert {"naive", "eps-greedy(4,20)", "sigma window", "best-of-16", "binomial-ceil"} <= labels
    assert {"toy 70", "toy 140", "budget(gain, 70)"} <= labels
    assert not list(out.glob("*.tmp"))
    for label, rec in res["per_pair"].items():
        assert len(rec["reward"]) == len(rec["eval"]) == len(rec["nfe"]) == PAIRS, label
    assert all(r["reward_ratio"]["value"] == pytest.approx(1.0) for r in res["arms"]
               if r["arm"] == "eps-greedy(4,20)")  # fmt: skip


def test_each_pair_its_own_noise_and_calibration_disjoint(run: tuple[dict[str, Any], Path]) -> None:
    res, out = run
    seeds = [s for _, s in res["pairs"]]
    assert len(set(seeds)) == len(seeds) == PAIRS
    assert res["clusters"] == seeds
    assert [p for p, _ in res["pairs"]] == [j % 4 for j in range(PAIRS)]  # the mixture's classes
    cal = load_traces(Path(res["calibration"]["dir"]))
    cal_seeds = {int(t["seed"]) for t in cal}
    assert len(cal_seeds) == CAL_PAIRS and not cal_seeds & set(seeds)
    assert res["calibration"]["nfe"] == sum(t["nfe"]["total"] for t in cal) == CAL_PAIRS * 1475


def test_fixed_arms_spend_the_closed_form_nfes(run: tuple[dict[str, Any], Path]) -> None:
    """Heun with 18 steps: a plain trajectory costs 35 calls (17 Heun steps of 2, the last an
    Euler step of 1); eps-greedy scores N candidates with one call each per iteration at each
    searchable step, and every step of the mixture's sampler injects noise (searchable), so a
    fixed (N, K) costs 35 + 18 N K (eps-greedy(4,20): 1475)."""
    res, _ = run
    nfe = {k: v["nfe"] for k, v in res["per_pair"].items()}
    assert res["naive_nfe"] == 35.0 and set(nfe["naive"]) == {35.0}
    assert set(nfe["eps-greedy(4,20)"]) == {35.0 + 18 * 4 * 20}
    fixed = [k for k in nfe if k.startswith("fixed N=")]
    assert len(fixed) == 6
    for label in fixed:
        n, k = (int(t.split("=")[1]) for t in label.split()[1:])
        assert set(nfe[label]) == {35.0 + 18 * n * k}, label
    for n in (2, 4, 8, 16):
        assert set(nfe[f"best-of-{n}"]) == {35.0 * n}


def test_budget_specific_arms_stay_within_budget(run: tuple[dict[str, Any], Path]) -> None:
    res, _ = run
    for b in (70, 140):
        nfe = res["per_pair"][f"toy {b}"]["nfe"]
        assert max(nfe) <= b and min(nfe) > 35  # searched, within the hard budget
        assert res["budget_checks"][f"toy {b}"] == {
            "budget": b, "mode": "sample", "worst": max(nfe), "ok": True,
        }  # fmt: skip
        check = res["budget_checks"][f"budget(gain, {b})"]
        assert check["mode"] == "batch" and check["ok"]
    matched = {(x["budget_multiple"], x["arm"]) for x in res["matched"]}
    assert (2.0, "toy 70") in matched and (4.0, "toy 140") in matched
    for x in res["matched"]:
        assert x["nfe"] <= x["budget_nfe"] and x["best_fixed_nfe"] <= x["budget_nfe"]
        assert x["reward_diff"]["verdict"] in ("better", "worse", "tie")


def test_arm_validation() -> None:
    with pytest.raises(ValueError, match="family"):
        ef.Arm("x", "magic", "naive")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="budget_mode"):
        ef.Arm("x", "adaptive", "naive", budget=1.0, budget_mode="prompt")  # type: ignore[arg-type]
