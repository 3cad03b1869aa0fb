"""The adaptive peers (Feynman-Kac steering, rollover budget forcing, verifier-threshold search,
diffusion tree sampling) on the exact Gaussian mixture: FK's weighted particles match the
closed-form reward-tilted mixture (and a weight update that forgets skipped steps does not),
counted NFEs equal closed-form counts, budgets hold, a sample's result ignores its batch, bad
options are named."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import Tensor

from adaptive_tts.models.gmm import GaussianMixture
from adaptive_tts.rewards import GaussianLogDensity
from adaptive_tts.sampling import Sampler, initial_noise, make_generators, make_sampler
from adaptive_tts.search import METHODS, fk
from adaptive_tts.search.common import SearchContext
from adaptive_tts.search.rollover import step_quotas
from adaptive_tts.search.threshold import threshold_schedule
from adaptive_tts.traces import TraceRecord
from adaptive_tts.types import SearchResult

PEERS = ("fk", "rollover", "threshold", "dts")
SAMPLERS = {
    "heun": make_sampler("heun", 8),
    "ancestral": make_sampler("ancestral", 8),
    "heun-window": make_sampler("heun", 8, s_min=0.05, s_max=10.0),
}


def run(
    gmm: GaussianMixture, method: str, s: Sampler, seeds: list[int], reward: Any, **kw: Any
) -> SearchResult:
    gens = make_generators(seeds)
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    return METHODS[method](gmm, s, x, cond=None, reward=reward, generator=gens, **kw)


def searchable(s: Sampler) -> list[int]:
    return [i for i in range(s.num_steps) if s.searchable(i)]


class Constant:
    """The same score for every candidate: nothing ever beats the best."""

    def __call__(self, x0: Tensor, cond: Tensor | None) -> Tensor:
        return torch.zeros(x0.shape[0])


class Counter:
    """Strictly increasing scores over calls: every candidate beats every earlier one."""

    def __init__(self) -> None:
        self.n = 0

    def __call__(self, x0: Tensor, cond: Tensor | None) -> Tensor:
        out = torch.arange(self.n, self.n + x0.shape[0], dtype=torch.float32)
        self.n += x0.shape[0]
        return out


# ------------------------------------------------------------------ FK: the exact tilted target
def tilted_moments(gmm: GaussianMixture, reward: GaussianLogDensity, lam: float):
    """Mean and covariance of ``p(x) exp(lam r(x))`` for ``r`` the dimension-averaged log
    density ``(1/d) sum_i log N(x_i; m_i, v_i)``: ``exp(lam r) ~ N(x; m, v d / lam)``, so each
    component ``N(mu_j, V_j)`` times it is ``N(mu'_j, V'_j)`` (``1/V' = 1/V_j + lam/(d v)``,
    ``mu' = V' (mu_j/V_j + lam m/(d v))``) with weight ``w_j N(mu_j; m, V_j + d v/lam)``."""
    m, vr = reward.mean, reward.var * gmm.dim / lam
    var = 1 / (1 / gmm.variances + 1 / vr)
    mu = var * (gmm.means / gmm.variances + m / vr)
    tot = gmm.variances + vr
    log_n = -0.5 * (((gmm.means - m) ** 2) / tot + tot.log() + math.log(2 * math.pi)).sum(1)
    w = (gmm.log_w + log_n).softmax(0)
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (torch.diag_embed(var) + mu[:, :, None] * mu[:, None, :])).sum(0)
    return mean, second - mean[:, None] * mean[None], w


def fk_moment_errors(gmm, reward, lam: float, resample: str) -> tuple[float, float, list]:
    """Relative errors of FK's weighted particle moments (4 samples x 1024 particles)."""
    s = make_sampler("heun", 18)
    gens = make_generators([0, 1, 2, 3])
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    sc = SearchContext("fk", gmm, s, x, None, reward, gens, {}, None)
    steps = fk.potential_steps(s, 1, 0, None)
    xs, log_w, _ = fk.smc(
        sc, x, k=1024, potential="difference", lam=lam, steps=steps, ess_frac=0.8,
        resample=resample,
    )  # fmt: skip
    w, xs = torch.softmax(log_w, 1), xs.double()
    mean = torch.einsum("bk,bkd->bd", w, xs).mean(0)
    cov = torch.einsum("bk,bkd,bke->bde", w, xs, xs).mean(0) - mean[:, None] * mean[None]
    t_mean, t_cov, _ = tilted_moments(gmm, reward, lam)
    flags = [st["resampled"] for st in sc.traces[0]["steps"] if st.get("potential")]
    return (
        float((mean - t_mean).norm() / t_cov.trace().sqrt()),
        float((cov - t_cov).norm() / t_cov.norm()),
        flags,
    )


@pytest.mark.parametrize("resample", ["systematic", "multinomial"])
def test_fk_matches_the_tilted_mixture_and_a_forgetful_update_does_not(
    gmm, target_reward, monkeypatch, resample
) -> None:
    lam = 0.05  # the tilt keeps several components: weights ~ 0.41, 0.19, 0.19, 0.08, ...
    w = tilted_moments(gmm, target_reward, lam)[2]
    assert (w > 0.05).sum() >= 4
    mean_err, cov_err, flags = fk_moment_errors(gmm, target_reward, lam, resample)
    assert any(flags) and not all(flags)  # it resampled at some steps and skipped others
    assert mean_err < 0.1 and cov_err < 0.15, (mean_err, cov_err)
    # the pitfall: weights reset at steps where resampling was skipped
    monkeypatch.setattr(fk, "_accumulate", lambda log_w, g: g)
    bad_mean, bad_cov, _ = fk_moment_errors(gmm, target_reward, lam, resample)
    assert bad_mean > 0.3 and bad_cov > 0.5, (bad_mean, bad_cov)


def test_resampling_schemes() -> None:
    log_w = torch.tensor([[0.5, 0.25, 0.25, 0.0]]).log()
    for u in (0.01, 0.3, 0.99):  # systematic: exactly k w_j copies when k w_j is an integer
        idx = fk.resample_indices(log_w, torch.tensor([[u]]), "systematic")
        assert torch.bincount(idx[0], minlength=4).tolist() == [2, 1, 1, 0]
    g = torch.Generator().manual_seed(0)
    idx = fk.resample_indices(
        log_w.expand(2000, 4), torch.rand(2000, 4, generator=g), "multinomial"
    )
    freq = torch.bincount(idx.flatten(), minlength=4) / idx.numel()
    assert torch.allclose(freq, torch.tensor([0.5, 0.25, 0.25, 0.0]), atol=0.02)
    assert fk.ess(torch.zeros(3, 5)).tolist() == pytest.approx([5.0] * 3)
    assert float(fk.log_mean_exp(torch.tensor([[0.0, math.log(3.0)]]))) == pytest.approx(
        math.log(2.0)
    )


def test_fk_potentials_use_the_whole_history() -> None:
    scores = [1.0, 3.0, 2.0, 0.5]
    want = {"max": [1, 3, 3, 3], "difference": [1, 2, -1, -1.5], "sum": [1, 4, 6, 6.5]}
    for kind, values in want.items():
        hist = {"r_max": torch.full((1, 1), -math.inf), "r_sum": torch.zeros(1, 1)}
        hist["r_prev"] = torch.zeros(1, 1)
        got = [
            float(fk.log_potential(kind, 2.0, torch.full((1, 1), r), hist, first=t == 0))
            for t, r in enumerate(scores)
        ]
        assert got == [2.0 * v for v in values], kind


@pytest.mark.parametrize("frac, want", [(0.0, "never"), (1.0, "always")])
def test_fk_ess_fraction_decides_resampling(gmm, target_reward, frac, want) -> None:
    s = make_sampler("heun", 8)
    res = run(gmm, "fk", s, [0, 1], target_reward, k=8, lam=1.0, ess_frac=frac, every=2, t_start=1)
    pot = [st for st in res.traces[0]["steps"] if st.get("potential")]
    assert [st["i"] for st in pot] == [1, 3, 5, 7]
    flags = {st["resampled"] for st in pot}
    assert flags == ({False} if want == "never" else {True})


# ------------------------------------------------------------------ closed-form NFE counts
@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_fk_nfe_and_reward_calls(gmm, target_reward, name) -> None:
    s = SAMPLERS[name]
    for kw in ({"k": 3}, {"k": 2, "every": 3, "t_start": 2, "t_end": 6, "potential": "sum"}):
        res = run(gmm, "fk", s, [0, 1], target_reward, **kw)
        pot = fk.potential_steps(s, kw.get("every", 1), kw.get("t_start", 0), kw.get("t_end"))
        assert res.nfe.tolist() == [kw["k"] * s.trajectory_calls()] * 2
        assert res.reward_calls.tolist() == [kw["k"] * (len(pot) + 1)] * 2


def rollover_expected(s: Sampler, budget: int, n: int, beats: bool) -> int:
    """Counted NFEs of rollover budget forcing: ``beats`` (every candidate beats the best) ->
    one round per step; else (nothing beats after the first step) every allowance is spent."""
    srch = searchable(s)
    quota = step_quotas(budget - s.trajectory_calls(), len(srch))
    used = 0
    for j in range(len(srch)):
        allow = 1 + quota[j] - used
        tried = min(n, allow) if (beats or j == 0) else allow
        used += tried - 1
    return s.trajectory_calls() + used


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_rollover_nfe_closed_form_and_cap(gmm, target_reward, name) -> None:
    s = SAMPLERS[name]
    c0 = s.trajectory_calls()
    for budget, n in ((c0, 3), (c0 + 5, 2), (3 * c0 + 1, 4)):
        flat = run(gmm, "rollover", s, [0, 1], Constant(), budget=budget, n=n)
        assert flat.nfe.tolist() == [rollover_expected(s, budget, n, False)] * 2 == [budget] * 2
        up = run(gmm, "rollover", s, [0, 1], Counter(), budget=budget, n=n)
        assert up.nfe.tolist() == [rollover_expected(s, budget, n, True)] * 2
        real = run(gmm, "rollover", s, [0, 1, 2], target_reward, budget=budget, n=n)
        assert (real.nfe <= budget).all()
        for tr, nfe in zip(real.traces, real.nfe.tolist()):
            st = [x for x in tr["steps"] if x["searchable"]]
            assert all(1 <= x["tried"] <= x["allowance"] for x in st)
            assert c0 + sum(x["tried"] - 1 for x in st) == nfe
            assert all(x["beat"] or x["tried"] == x["allowance"] for x in st)  # else spends all
        assert real.reward_calls.tolist() == [v - c0 + len(searchable(s)) + 1 for v in real.nfe]


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_threshold_nfe_closed_form_and_budget(gmm, target_reward, name) -> None:
    s = SAMPLERS[name]
    c0, n_s = s.trajectory_calls(), len(searchable(s))
    easy = run(gmm, "threshold", s, [0, 1], target_reward, threshold=-math.inf, n=3, max_tries=5)
    assert easy.nfe.tolist() == [c0 + n_s * 2] * 2  # one round of 3 candidates per step
    hard = run(gmm, "threshold", s, [0, 1], target_reward, threshold=math.inf, n=3, max_tries=5)
    assert hard.nfe.tolist() == [c0 + n_s * 4] * 2  # the cap: 5 candidates per step
    for budget in (c0, c0 + 7, c0 + 3 * n_s):
        capped = run(
            gmm, "threshold", s, [0, 1], target_reward, threshold=math.inf, n=3, max_tries=5,
            budget=budget,
        )  # fmt: skip
        assert capped.nfe.tolist() == [min(c0 + n_s * 4, budget)] * 2


def test_threshold_batch_advances_unevenly(gmm, target_reward) -> None:
    s = make_sampler("heun", 8)
    sched = [(0.01, 0.0), (80.0, -20.0)]  # demanding at low sigma, lenient at high sigma
    res = run(gmm, "threshold", s, [0, 1, 2, 3], target_reward, threshold=sched, max_tries=12)
    tried = torch.tensor([[x["tried"] for x in tr["steps"]] for tr in res.traces])
    assert (tried.min(0).values != tried.max(0).values).any()  # samples differ within a step
    for tr in res.traces:
        for st in tr["steps"]:
            assert st["cleared"] == (st["one_step_reward"] >= st["threshold"])
            assert st["cleared"] or st["tried"] == 12
    assert (res.nfe == s.trajectory_calls() + (tried - 1).sum(1)).all()


def test_threshold_schedule_interpolates_in_log_sigma() -> None:
    at = threshold_schedule([(10.0, 1.0), (0.1, 0.0)])
    assert at(1.0) == pytest.approx(0.5) and at(0.01) == 0.0 and at(100.0) == 1.0
    assert threshold_schedule(0.3)(5.0) == 0.3
    assert threshold_schedule(lambda sig: 2 * sig)(2.0) == 4.0


@pytest.mark.parametrize("name", sorted(SAMPLERS))
def test_dts_nfe_closed_form_and_budget(gmm, target_reward, name) -> None:
    s = SAMPLERS[name]
    c0 = s.trajectory_calls()
    one = run(gmm, "dts", s, [0, 1], target_reward, budget=c0)
    assert one.nfe.tolist() == [c0] * 2 and one.reward_calls.tolist() == [1, 1]
    for budget in (2 * c0 + 3, 5 * c0):
        res = run(gmm, "dts", s, [0, 1, 2], target_reward, budget=budget, children=2)
        for tr, nfe, calls in zip(res.traces, res.nfe.tolist(), res.reward_calls.tolist()):
            starts = [r["start"] for r in tr["rollouts"]]
            assert starts[0] == 0 and len(starts) == calls
            assert nfe == sum(s.trajectory_calls(d) for d in starts) <= budget
            assert max(r["reward"] for r in tr["rollouts"]) == pytest.approx(tr["final_reward"])
            assert sum(st["expansions"] for st in tr["steps"]) == len(starts)
        if budget == 5 * c0:  # branches off earlier rollouts (each cheaper than a restart)
            assert all(any(r["start"] > 0 for r in tr["rollouts"]) for tr in res.traces)
            assert (res.reward_calls >= 5).all()


def test_dts_sample_mode_returns_a_leaf(gmm, target_reward) -> None:
    s = make_sampler("heun", 6)
    res = run(gmm, "dts", s, [0, 1], target_reward, budget=60, select="sample", lam=0.5)
    for tr in res.traces:
        assert any(r["reward"] == pytest.approx(tr["final_reward"]) for r in tr["rollouts"])
    torch.testing.assert_close(target_reward(res.x0, None), res.reward)


# ------------------------------------------------------------------ common contract
KW: dict[str, dict[str, Any]] = {
    "fk": {"k": 4, "lam": 1.0},
    "rollover": {"budget": 60},
    "threshold": {"threshold": -0.5, "max_tries": 6},
    "dts": {"budget": 60},
}


@pytest.mark.parametrize("method", PEERS)
def test_a_sample_ignores_its_batch(gmm, target_reward, method) -> None:
    s = make_sampler("heun", 8)
    batch = run(gmm, method, s, [3, 4, 5, 6], target_reward, **KW[method])
    alone = run(gmm, method, s, [5], target_reward, **KW[method])
    torch.testing.assert_close(batch.x0[2:3], alone.x0, rtol=0, atol=0)
    assert batch.reward[2] == alone.reward[0] and batch.nfe[2] == alone.nfe[0]
    assert batch.traces[2]["steps"] == alone.traces[0]["steps"]
    again = run(gmm, method, s, [3, 4, 5, 6], target_reward, **KW[method])
    assert torch.equal(again.x0, batch.x0)
    for tr in batch.traces:  # the common trace schema
        rec = TraceRecord.from_dict(tr)
        assert rec.to_dict() == tr and tr["method"] == method


def test_peers_beat_naive_on_the_mixture(gmm, target_reward) -> None:
    s = make_sampler("heun", 8)
    seeds = list(range(8))
    naive = run(gmm, "naive", s, seeds, target_reward).reward.mean()
    for method in PEERS:
        assert run(gmm, method, s, seeds, target_reward, **KW[method]).reward.mean() > naive


@pytest.mark.parametrize(
    "method, kw, match",
    [
        ("fk", {"k": 0}, "k must be an integer >= 1"),
        ("fk", {"potential": "min"}, "potential must be one of"),
        ("fk", {"lam": -1.0}, "lam must be a finite number >= 0"),
        ("fk", {"ess_frac": 1.5}, r"ess_frac must lie in \[0, 1\]"),
        ("fk", {"resample": "stratified"}, "resample must be one of"),
        ("fk", {"select": "worst"}, "select must be one of"),
        ("fk", {"t_start": 8}, r"t_start must be an integer step in \[0, 7\]"),
        ("fk", {"t_start": 4, "t_end": 2}, r"t_end must be an integer step in \[t_start=4, 7\]"),
        ("fk", {"every": 0}, "every must be an integer >= 1"),
        ("rollover", {"budget": 10}, "budget must be None or an integer >= 15"),
        ("rollover", {"n": 0}, "n must be an integer >= 1"),
        ("threshold", {"max_tries": 0}, "max_tries must be an integer >= 1"),
        ("threshold", {"threshold": [(0.0, 1.0)]}, r"sigma in \(0, inf\)"),
        ("threshold", {"threshold": [(1.0, 1.0), (1.0, 2.0)]}, "distinct sigmas"),
        ("threshold", {"threshold": "high"}, "list of \\(sigma, threshold\\) pairs"),
        ("threshold", {"budget": 3}, "budget must be None or an integer >= 15"),
        ("dts", {"lam": 0.0}, "lam must be a finite number > 0"),
        ("dts", {"children": 1}, "children must be an integer >= 2"),
        ("dts", {"budget": 14}, "budget must be None or an integer >= 15"),
        ("dts", {"select": "any"}, "select must be one of"),
    ],
)
def test_bad_options_are_named(gmm, target_reward, method, kw, match) -> None:
    with pytest.raises(ValueError, match=match):
        run(gmm, method, make_sampler("heun", 8), [0], target_reward, **kw)
