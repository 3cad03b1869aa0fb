"""Learned controllers on traces with a known truth: statistics, fits, mappings, save/load."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from adaptive_tts.sampling import make_generators, make_sampler
from adaptive_tts.types import StepInfo
from controllers.binomial import fit_binomial, fit_p
from controllers.budget import BudgetController, plain_cost
from controllers.gain import fit_gain
from controllers.gp import fit_gp_controller, kernel_comparison
from controllers.io import load_controller
from controllers.schedule import ScheduleController
from controllers.stats import step_stats
from tests.controllers.synthetic import make_traces, p_true


@pytest.fixture(scope="module")
def stats():
    return step_stats(make_traces())


def test_step_stats_counts() -> None:
    tr = make_traces(r=2, k=5, steps=3, seed=1)
    st = step_stats(tr)
    its = tr[1]["steps"][2]["iters"]
    assert st.wins[1, 2] == sum(it["I"] for it in its)
    assert st.kbar[1, 2] == sum((k) * it["I"] for k, it in enumerate(its))
    assert st.improvements[1, 2] == sum(it["J"] for it in its)
    assert st.gap[1, 2] == pytest.approx(
        tr[1]["steps"][2]["one_step_reward"] - tr[1]["final_reward"]
    )
    assert len(st.summary()) == 3
    with pytest.raises(ValueError, match="eps-greedy"):
        step_stats([{**tr[0], "method": "beam"}])


def test_binomial_fit_recovers_truth_with_covering_bands(stats) -> None:
    fit = fit_p(stats, bootstrap=40)
    truth = np.array([p_true(s) for s in stats.sigma])
    assert np.abs(fit["p"] - truth).max() < 0.05
    assert ((fit["lo"] <= truth + 0.02) & (truth - 0.02 <= fit["hi"])).mean() >= 0.8
    assert (fit["lo"] <= fit["p"] + 1e-9).all() and (fit["p"] <= fit["hi"] + 1e-9).all()


def test_mappings(stats) -> None:
    p = fit_p(stats, bootstrap=0)["p"]
    ceil = fit_binomial(stats, mapping="ceil", bootstrap=0)
    assert [s["k"] for s in ceil.steps] == [max(1, math.ceil(20 * x - 1e-9)) for x in p]
    eps = fit_binomial(stats, mapping="eps", bootstrap=0)
    assert [s["k"] for s in eps.steps] == [20] * len(p)
    assert np.allclose([s["eps"] for s in eps.steps], p)
    imp = fit_binomial(stats, mapping="improve", bootstrap=0)
    ks = [s["k"] for s in imp.steps]
    # improvements come from exploration wins and early iterations at noisy steps only
    assert ks[0] > ks[-1] and all(0 <= k <= 20 for k in ks)
    with pytest.raises(ValueError, match="mapping"):
        fit_binomial(stats, mapping="bogus")  # type: ignore[arg-type]


def test_draw_mode_is_per_sample_and_seeded(stats) -> None:
    ctrl = fit_binomial(stats, mapping="draw", bootstrap=0)
    s0 = ctrl.steps[3]

    def decide(seeds):
        info = StepInfo(
            s0["i"],
            10,
            s0["sigma"],
            s0["sigma"],
            torch.zeros(len(seeds)),
            torch.zeros(len(seeds), dtype=torch.long),
            None,
            make_generators(seeds),
        )
        return ctrl.decide(info).k

    a, b = decide([1, 2, 3]), decide([1, 2, 3])
    assert torch.equal(a, b) and torch.equal(decide([2])[0:1], a[1:2])
    many = decide(list(range(400))).float()
    assert abs(many.mean().item() - 20 * s0["p"]) < 4 * math.sqrt(
        20 * s0["p"] * (1 - s0["p"]) / 400
    )


def test_gp_warped_kernel_beats_stationary_rbf() -> None:
    ll = kernel_comparison(n_train=60, n_test=100, seeds=1)
    assert ll["warp"] > ll["rbf"] + 0.2


def test_gp_controller_searches_where_reliable(stats) -> None:
    ctrl = fit_gp_controller(stats, group=10)
    ks = [s["k"] for s in ctrl.steps]
    assert ks[-1] > ks[0] and ks[-1] >= 15 and ks[0] <= 3
    eps = [s["eps"] for s in ctrl.steps]
    assert eps[-1] < eps[0]


def test_gain_controller_hits_target_mean(stats) -> None:
    ctrl = fit_gain(stats, k_mean=2.0)
    ks = [s["k"] for s in ctrl.steps]
    assert abs(sum(ks) / len(ks) - 2.0) <= 0.3
    with pytest.raises(ValueError, match="k_mean"):
        fit_gain(stats, k_mean=0.0)


def test_budget_never_exceeds_and_favours_hard_prompts(stats) -> None:
    from adaptive_tts.models.gmm import make_gmm
    from adaptive_tts.sampling import initial_noise
    from adaptive_tts.search import eps_greedy

    sampler = make_sampler("heun", 10)
    base = fit_gain(stats, k_mean=3.0)
    gmm = make_gmm(dim=4, spread=0.7, std=0.5)

    def reward(x, cond=None):
        lp = gmm.component_log_prob(x) + gmm.log_w
        return (lp[:, 0] - lp.logsumexp(1)).exp().float()

    for budget in (sum(plain_cost(sampler)), 60.0, 90.0):
        ctrl = BudgetController(base, budget, sampler)
        gens = make_generators(list(range(6)))
        x = initial_noise(gmm.sample_shape, gens, sampler.sigma(0))
        res = eps_greedy(gmm, sampler, x, cond=None, reward=reward, generator=gens, controller=ctrl)
        assert res.nfe.sum().item() <= budget * 6
    info = StepInfo(
        base.steps[0]["i"],
        10,
        base.steps[0]["sigma"],
        1.0,
        torch.tensor([0.9, 0.1, 0.5]),
        torch.ones(3, dtype=torch.long),
    )
    k = BudgetController(base, 200.0, sampler).decide(info).k
    assert k[1] >= k[2] >= k[0] and k[1] > k[0]
    with pytest.raises(ValueError, match="budget"):
        BudgetController(base, 5.0, sampler)


def test_save_load_roundtrip_and_checks(stats, tmp_path) -> None:
    sampler = make_sampler("heun", 10)
    ctrl = fit_binomial(stats, mapping="ceil", bootstrap=0)
    path = ctrl.save(tmp_path / "s.json")
    back = load_controller(path, sampler=sampler, model="synthetic")
    assert isinstance(back, ScheduleController) and back.steps == ctrl.steps
    # a function of sigma: another step count or sampler loads (its sigmas are checked when it
    # runs, see test_schedule_sigma_range), another model does not
    for other in (make_sampler("heun", 12), make_sampler("ancestral", 10)):
        assert isinstance(load_controller(path, sampler=other), ScheduleController)
    with pytest.raises(ValueError, match="model"):
        load_controller(path, sampler=sampler, model="mnist")
    (tmp_path / "bad.json").write_text(path.read_text()[:50])
    with pytest.raises(ValueError, match="corrupt"):
        load_controller(tmp_path / "bad.json")
    d = json.loads(path.read_text())
    del d["steps"]
    (tmp_path / "nokey.json").write_text(json.dumps(d))
    with pytest.raises(ValueError, match="steps"):
        load_controller(tmp_path / "nokey.json")
    bud = BudgetController(ctrl, 100.0, sampler)
    bud.save(str(tmp_path / "b.json"))
    b2 = load_controller(tmp_path / "b.json", sampler=sampler)
    assert isinstance(b2, BudgetController) and b2.budget == 100.0


def test_schedule_sigma_range(stats) -> None:
    ctrl = fit_binomial(stats, mapping="ceil", bootstrap=0)
    lo, hi = ctrl.sigma_range()

    def info(sigma: float, i: int = 0) -> StepInfo:
        return StepInfo(i, 10, sigma, sigma, torch.zeros(1), torch.zeros(1, dtype=torch.long))

    # at a fitted point: exactly the table's knobs, whatever the step index
    for st in ctrl.steps:
        kn = ctrl.decide(info(st["sigma"], 99))
        assert int(kn.k[0]) == st["k"] and float(kn.eps[0]) == pytest.approx(st["eps"])
    # between two points: k interpolated in log sigma and rounded
    a, b = sorted(ctrl.steps, key=lambda st: st["sigma"])[-2:]
    mid = math.sqrt(a["sigma"] * b["sigma"])
    assert int(ctrl.decide(info(mid)).k[0]) == math.floor((a["k"] + b["k"]) / 2 + 0.5)
    # within 5% (in log sigma) beyond the ends: the end's knobs; farther out: an error
    assert int(ctrl.decide(info(hi * 1.04)).k[0]) == b["k"]
    for bad in (hi * 1.1, lo / 1.1):
        with pytest.raises(ValueError, match=r"outside the range \[") as err:
            ctrl.decide(info(bad))
        assert f"{bad:.4g}" in str(err.value) and f"{hi:.4g}" in str(err.value)


def test_draw_mode_respects_k_min(stats) -> None:
    ctrl = fit_binomial(stats, mapping="draw", bootstrap=0, k_min=3)
    assert ctrl.k_min == 3
    st = min(ctrl.steps, key=lambda s: s["p"])  # p small: plain draws are often below 3
    seeds = list(range(300))

    def info() -> StepInfo:
        b = len(seeds)
        return StepInfo(
            st["i"], 10, st["sigma"], st["sigma"], torch.zeros(b),
            torch.zeros(b, dtype=torch.long), None, make_generators(seeds),
        )  # fmt: skip

    k = ctrl.decide(info()).k
    raw = ScheduleController.from_dict({**ctrl.to_dict(), "k_min": 0}).decide(info()).k
    assert (raw < 3).any() and int(k.min()) >= 3
    assert torch.equal(k, raw.clamp_min(3))  # the same draws, lifted to k_min
    assert (
        ctrl.expected_k()
        >= ScheduleController.from_dict({**ctrl.to_dict(), "k_min": 0}).expected_k()
    )
    back = ScheduleController.from_dict(json.loads(json.dumps(ctrl.to_dict())))
    assert back.k_min == 3 and torch.equal(back.decide(info()).k, k)


def test_budget_uses_the_samplers_call_counts(stats) -> None:
    base = fit_gain(stats, k_mean=3.0)
    heun = make_sampler("heun", 10)
    assert plain_cost(heun) == [2] * 9 + [1]  # identical to the Heun rule it replaces
    anc = make_sampler("ancestral", 10)
    assert plain_cost(anc) == anc.plain_cost()
    with pytest.raises(ValueError, match=f">= {sum(anc.plain_cost())} NFEs"):
        BudgetController(base, sum(anc.plain_cost()) - 1.0, anc)
