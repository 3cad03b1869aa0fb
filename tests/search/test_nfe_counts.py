"""Counted NFEs equal the closed-form count for every method and sampler, including samplers
whose churn window leaves steps unsearchable (searches skip them: no evaluations wasted)."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.models.gmm import GaussianMixture
from adaptive_tts.sampling import Sampler, initial_noise, make_generators, make_sampler
from adaptive_tts.search import METHODS

T = 10


def samplers() -> dict[str, Sampler]:
    return {
        "heun": make_sampler("heun", T),
        "euler": make_sampler("euler", T),
        "heun-window": make_sampler("heun", T, s_min=0.05, s_max=10.0),
        "ancestral": make_sampler("ancestral", T),
    }


def extra(s: Sampler, i: int) -> int:
    """Second (Heun) call at step i."""
    return int(s.name == "edm-heun" and s.sigma(i + 1) > 0)


def step_cost(s: Sampler, i: int) -> int:
    """Calls of one plain step (ancestral: its x0 is reused from the previous noised point)."""
    if getattr(s, "needs_x0", False):
        return (1 if i == 0 else 0) + (1 if s.sigma(i + 1) > 0 else 0)
    return 1 + extra(s, i)


def traj(s: Sampler, start: int = 0) -> int:
    return sum(step_cost(s, i) for i in range(start, s.num_steps))


def expected(method: str, s: Sampler, kw: dict) -> int:
    steps = range(s.num_steps)
    srch = [i for i in steps if s.searchable(i)]
    if method == "naive":
        return traj(s)
    if method == "best-of-n":
        return kw["n"] * traj(s)
    if method in ("eps-greedy", "zero-order"):
        return traj(s) + len(srch) * kw["n"] * kw["k"]
    if method == "beam":
        w, n = kw["width"], kw["n"]
        total = 0
        for i in steps:
            total += w * n + w * extra(s, i) if i in srch else w * step_cost(s, i)
        # ancestral: each path evaluates its own x0 at step 0 before the first search
        return total + (w if getattr(s, "needs_x0", False) else 0)
    if method == "mcts":
        n, sims = kw["n"], kw["sims"]
        total = 0
        for i in steps:
            if i in srch:
                total += n + n * extra(s, i) + sims * traj(s, i + 1)
            else:
                total += step_cost(s, i)
        return total + (1 if getattr(s, "needs_x0", False) else 0)
    raise KeyError(method)


KW = {
    "naive": {},
    "best-of-n": {"n": 3},
    "beam": {"n": 3, "width": 2},
    "mcts": {"n": 2, "sims": 3},
    "zero-order": {"n": 3, "k": 2},
    "eps-greedy": {"n": 3, "k": 2, "eps": 0.5},
}


@pytest.mark.parametrize("sname", ["heun", "euler", "heun-window", "ancestral"])
@pytest.mark.parametrize("method", sorted(KW))
def test_counted_nfe_matches_formula(
    gmm: GaussianMixture, target_reward, method: str, sname: str
) -> None:
    s = samplers()[sname]
    b = 3
    gens = make_generators([0, 1, 2])
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    res = METHODS[method](gmm, s, x, cond=None, reward=target_reward, generator=gens, **KW[method])
    want = expected(method, s, KW[method])
    assert res.nfe.tolist() == [want] * b
    assert sum(res.nfe_by_purpose["total"]) == res.nfe.sum().item()


def test_paper_count_eps_greedy_heun18(gmm: GaussianMixture, target_reward) -> None:
    """NOTES.md: eps-greedy (N=4, K=20) with 18 Heun steps costs 18 * (1 + 80) + 17 = 1475."""
    s = make_sampler("heun", 18)
    gens = make_generators([5])
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    res = METHODS["eps-greedy"](gmm, s, x, cond=None, reward=target_reward, generator=gens)
    assert res.nfe.tolist() == [1475]
    assert res.nfe_by_purpose["score"] == [18 * 80]


def test_windowed_search_spends_nothing_outside_window(gmm: GaussianMixture, target_reward) -> None:
    s = make_sampler("heun", T, s_min=0.05, s_max=10.0)
    gens = make_generators([0])
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    res = METHODS["eps-greedy"](
        gmm, s, x, cond=None, reward=target_reward, generator=gens, n=2, k=3
    )
    steps = res.traces[0]["steps"]
    assert [st["searchable"] for st in steps] == [s.searchable(i) for i in range(T)]
    assert all("iters" not in st for st in steps if not st["searchable"])
    assert torch.equal(res.nfe, torch.tensor([expected("eps-greedy", s, {"n": 2, "k": 3})]))
