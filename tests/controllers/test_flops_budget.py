"""Budgets in FLOPs with the reward's compute included: the stopping and budget controllers
keep every sample's priced cost (NFEs x network FLOPs + reward calls x reward FLOPs) within the
budget, round-trip through JSON, and ``sample --budget-flops`` prices a real model once."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

from adaptive_tts.compute import ComputeMeter, FlopPrices, measure_prices
from adaptive_tts.sampling import initial_noise, make_generators, make_sampler
from adaptive_tts.search import eps_greedy
from controllers.budget import BudgetController, flops_budget, minimum_budget, with_flops_budget
from controllers.closed_loop import StoppingController
from controllers.fixed import FixedController
from controllers.registry import load_budget
from controllers.reliability import fit_reliability
from controllers.schedule import ScheduleController

SAMPLER = make_sampler("heun", 10)
PRICES = FlopPrices(network=10.0, reward=4.0)
CHEAP = FlopPrices(network=10.0, reward=0.0)


def search(gmm: Any, reward: Any, seeds: list[int], **kw: Any) -> Any:
    gens = make_generators(seeds)
    x_T = initial_noise(gmm.sample_shape, gens, SAMPLER.sigma(0))
    return eps_greedy(gmm, SAMPLER, x_T, cond=None, reward=reward, generator=gens, **kw)


def priced(res: Any, prices: FlopPrices) -> torch.Tensor:
    return prices.cost(res.nfe.double(), res.reward_calls.double())  # type: ignore[return-value]


@pytest.fixture(scope="module")
def stopping(gmm: Any, target_reward: Any) -> StoppingController:
    traces: list[dict[str, Any]] = []
    for k in (0, 1, 3):
        ctrl = FixedController(n=2, k=k, eps=1.0)
        traces += search(gmm, target_reward, list(range(100, 124)), controller=ctrl).traces
    return StoppingController(fit_reliability(traces, target=0.9), 0.99, n=2, k_max=8)


def test_minimum_is_plain_sampling_with_scored_pivots(gmm: Any, target_reward: Any) -> None:
    res = search(gmm, target_reward, [0, 1], controller=FixedController(n=2, k=0))
    assert minimum_budget(SAMPLER, PRICES) == pytest.approx(float(priced(res, PRICES)[0]))
    assert minimum_budget(SAMPLER) == float(res.nfe[0])


@pytest.mark.parametrize("mode", ["prompt", "batch"])
def test_stopping_keeps_the_priced_budget(
    gmm: Any, target_reward: Any, stopping: StoppingController, mode: str
) -> None:
    low = minimum_budget(SAMPLER, PRICES)
    for extra in (0.0, 100.0, 700.0):
        ctrl = with_flops_budget(stopping, low + extra, PRICES, SAMPLER)
        ctrl.budget_mode = mode
        ctrl.search_uncertifiable = True
        res = search(gmm, target_reward, list(range(16)), controller=ctrl)
        cost = priced(res, PRICES)
        if mode == "prompt":
            assert float(cost.max()) <= low + extra
        else:
            assert float(cost.sum()) <= (low + extra) * 16
        if extra == 0.0:
            assert int(res.nfe_by_purpose["score"][0]) == 0  # nothing left to search with
        if extra == 700.0:
            assert float(cost.max()) > low + 400.0  # most of a large pool is spent


def test_the_reward_compute_is_charged(
    gmm: Any, target_reward: Any, stopping: StoppingController
) -> None:
    """At one FLOPs budget, a costly reward leaves fewer NFEs than a free one."""
    kw = {"search_uncertifiable": True}
    budget = minimum_budget(SAMPLER, PRICES) + 600.0
    free = with_flops_budget(stopping, budget, CHEAP, SAMPLER)
    costly = with_flops_budget(stopping, budget, PRICES, SAMPLER)
    for c in (free, costly):
        c.search_uncertifiable = kw["search_uncertifiable"]
    seeds = list(range(12))
    n_free = search(gmm, target_reward, seeds, controller=free).nfe.sum()
    n_costly = search(gmm, target_reward, seeds, controller=costly).nfe.sum()
    assert int(n_costly) < int(n_free)


def test_budget_controller_in_flops(gmm: Any, target_reward: Any) -> None:
    steps = [
        {"i": i, "sigma": SAMPLER.sigma(i), "k": 2, "eps": 1.0} for i in range(SAMPLER.num_steps)
    ]
    base = ScheduleController(steps, n=2, kind="fixed", meta={})
    budget = minimum_budget(SAMPLER, PRICES) + 300.0
    ctrl = BudgetController(base, budget, SAMPLER, prices=PRICES)
    res = search(gmm, target_reward, list(range(8)), controller=ctrl)
    assert float(priced(res, PRICES).sum()) <= budget * 8
    assert int(res.nfe_by_purpose["score"][0]) > 0
    again = load_budget(json.loads(json.dumps(ctrl.to_dict())), SAMPLER)
    assert again.prices == PRICES and again.budget == budget
    with pytest.raises(ValueError, match=r"FLOPs per sample \(plain sampling"):
        BudgetController(base, 10.0, SAMPLER, prices=PRICES)


def test_stopping_round_trip_and_errors(stopping: StoppingController) -> None:
    ctrl = with_flops_budget(stopping, "3x", PRICES, SAMPLER)
    assert ctrl.budget == pytest.approx(3 * PRICES.naive(SAMPLER))
    d = json.loads(json.dumps(ctrl.to_dict()))
    assert d["budget_unit"] == "flops"
    back = StoppingController.from_dict(d, sampler=SAMPLER)
    assert back.prices == PRICES and back.budget == ctrl.budget
    d["budget_unit"] = "joules"
    with pytest.raises(ValueError, match="'unit' must be 'nfe' or 'flops'"):
        StoppingController.from_dict(d, sampler=SAMPLER)
    with pytest.raises(ValueError, match="FLOPs per sample"):
        with_flops_budget(stopping, 1.0, PRICES, SAMPLER)
    with pytest.raises(ValueError, match="budget_flops='lots' is invalid"):
        flops_budget("lots", PRICES, SAMPLER)
    with pytest.raises(ValueError, match="needs a budgeted controller"):
        with_flops_budget(FixedController(k=2), 1e9, PRICES, SAMPLER)
    with pytest.raises(ValueError, match="both cost 0"):
        FlopPrices(0.0, 0.0)


def test_prices_match_the_meter_on_the_mnist_unet() -> None:
    """Priced cost of a run = the meter's FLOPs (linear in rows), network and reward > 0."""
    from adaptive_tts.tasks import build_task
    from experiments.runner import run_method

    task = build_task("mnist-target")
    sampler = task.make_sampler(None, 4)
    prices = measure_prices(task, sampler)
    assert prices.network > 0 and prices.reward > 0
    with ComputeMeter(flops=True) as meter:
        res = run_method(
            meter.instrument(task),
            "eps-greedy",
            sampler,
            [0, 1, 2],
            task.prompts([0, 1, 2], 3),
            n=2,
            k=1,
        )
    total = meter.summary()["flops_total"]
    assert total == pytest.approx(float(priced(res, prices).sum()), rel=1e-6)


def test_sample_budget_flops_cli(stopping: StoppingController, tmp_path: Any, capsys) -> None:
    from experiments.cli import main

    path = tmp_path / "stop.json"
    stopping.save(path)
    base = ["sample", "--task", "mnist-target", "--model", "mnist", "--steps", "10"]
    args = [*base, "--batch", "2", "--schedule", str(path), "--budget-flops", "3x", "--json"]
    assert main(args) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    prices = FlopPrices.from_dict(row["prices"])
    assert row["budget_flops"] == pytest.approx(3 * prices.naive(make_sampler("heun", 10)))
    assert row["compute"]["flops_total"] <= row["budget_flops"] * 2
    assert row["compute"]["reward"]["flops"] > 0
    gmm = ["sample", "--task", "gmm-target", "--steps", "10", "--schedule", str(path)]
    assert main([*gmm, "--budget-flops", "3x"]) == 2
    assert "saw no FLOPs in the network" in capsys.readouterr().err
    assert main([*gmm, "--budget-flops", "-1"]) == 2
    assert "--budget-flops" in capsys.readouterr().err
    assert main([*base, "--budget-flops", "4x"]) == 2
    assert "give --schedule FILE" in capsys.readouterr().err
