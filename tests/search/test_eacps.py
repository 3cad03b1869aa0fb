"""EACPS on the exact mixture: exact NFE counts, one batch per stage, elites and children,
Gaussian-preserving mixing, seed+delta semantics, determinism, quality, bad input."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.models.gmm import GaussianMixture
from adaptive_tts.rewards import Composite
from adaptive_tts.sampling import Sampler, initial_noise, make_generators, make_sampler
from adaptive_tts.search import METHODS, eacps, naive
from adaptive_tts.search.seed_space import gaussian_mix

T = 8


def samplers() -> dict[str, Sampler]:
    return {
        "heun": make_sampler("heun", T),
        "euler": make_sampler("euler", T),
        "heun-window": make_sampler("heun", T, s_min=0.05, s_max=10.0),
        "ancestral": make_sampler("ancestral", T),
    }


def traj(s: Sampler) -> int:
    """Closed-form NFEs of one plain trajectory (independent of the package's helpers)."""
    if s.needs_x0:
        return 1 + sum(s.sigma(i + 1) > 0 for i in range(s.num_steps))
    heun = s.name == "edm-heun"
    return sum(1 + int(heun and s.sigma(i + 1) > 0) for i in range(s.num_steps))


class Recorder:
    """Wraps a denoiser; records every batched call's ``(x rows, sigma rows)``."""

    def __init__(self, inner: GaussianMixture):
        self.inner, self.nfe_per_call, self.calls = inner, 1, []

    def __call__(self, x, sigma, cond=None):
        self.calls.append((x.clone(), torch.as_tensor(sigma).reshape(-1).expand(x.shape[0])))
        return self.inner(x, sigma, cond)


def run(gmm, reward, seeds, sname="euler", steps=T, denoiser=None, **kw):
    s = make_sampler(sname, steps)
    gens = make_generators(seeds)
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    return eacps(denoiser or gmm, s, x, cond=None, reward=reward, generator=gens, **kw)


@pytest.mark.parametrize("sname", ["heun", "euler", "heun-window", "ancestral"])
@pytest.mark.parametrize("cfg", [(8, 3, 4), (4, 2, 2)])
@pytest.mark.parametrize("locality", ["noise", "seed"])
def test_counted_nfe_is_candidates_times_trajectory(gmm, target_reward, sname, cfg, locality):
    s = samplers()[sname]
    k, m, kl = cfg
    gens = make_generators([0, 1, 2])
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    rec = Recorder(gmm)
    res = eacps(
        rec, s, x, cond=None, reward=target_reward, generator=gens,
        k_global=k, elites=m, k_local=kl, locality=locality,
    )  # fmt: skip
    assert res.nfe.tolist() == [(k + m * kl) * traj(s)] * 3
    assert res.reward_calls.tolist() == [k + m * kl] * 3
    # one batch per stage: every network call carries all samples x all candidates of a stage
    sizes = {int(c[0].shape[0]) for c in rec.calls}
    assert sizes == {3 * k, 3 * m * kl}
    tr = res.traces[0]
    assert len(tr["global"]["rewards"]) == k and len(tr["local"]["rewards"]) == m * kl
    assert tr["nfe"]["total"] == res.nfe[0].item()


def test_defaults_are_8_3_4(gmm, target_reward) -> None:
    res = run(gmm, target_reward, [0])
    assert res.params["candidates"] == 20 and res.nfe.item() == 20 * T


def test_elites_are_top_m_and_answer_is_argmax(gmm, target_reward) -> None:
    res = run(gmm, target_reward, list(range(6)))
    for b, tr in enumerate(res.traces):
        g, loc = torch.tensor(tr["global"]["rewards"]), tr["local"]["rewards"]
        assert tr["global"]["elites"] == g.topk(3).indices.tolist()
        assert tr["local"]["parents"] == [e for e in tr["global"]["elites"] for _ in range(4)]
        everything = g.tolist() + loc
        assert res.reward[b].item() == max(everything)
        best = tr["best"]
        idx = best["index"] + (0 if best["stage"] == "global" else 8)
        assert everything[idx] == max(everything)
        assert res.reward[b].item() == pytest.approx(target_reward(res.x0[b : b + 1]).item())


def test_beta_zero_children_reproduce_their_elite(gmm, target_reward) -> None:
    """beta = 0: every noise of a child is its elite's (initial and per step) -> same output."""
    res = run(gmm, target_reward, [3, 4], sname="heun", beta=0.0)
    for tr in res.traces:
        g = tr["global"]["rewards"]
        assert tr["local"]["rewards"] == [g[p] for p in tr["local"]["parents"]]


def test_gaussian_mix_keeps_standard_normal() -> None:
    """sqrt(1-b^2) xi + b eta ~ N(0, 1): n = 400k draws, mean within 6 se, variance within 0.015
    (its se is sqrt(2/n) = 0.0022); the wrong forms xi + b eta (var 1.09) or (1-b) xi + b eta
    (var 0.58) fail by far. The child keeps correlation sqrt(1-b^2) with its parent."""
    g = torch.Generator().manual_seed(0)
    n, beta = 400_000, 0.3
    xi, eta = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g)
    out = gaussian_mix(xi, eta.double(), beta)
    assert abs(float(out.mean())) < 6 / n**0.5
    assert abs(float(out.var()) - 1.0) < 0.015
    corr = float(torch.corrcoef(torch.stack([out, xi]))[0, 1])
    assert abs(corr - (1 - beta**2) ** 0.5) < 0.005
    assert abs(float((xi + beta * eta).var()) - 1.0) > 0.05  # the test can tell
    assert torch.equal(gaussian_mix(xi, eta.double(), 0.0), xi)


def test_seed_mode_candidate0_is_naive_of_that_seed(gmm, target_reward) -> None:
    """seed_base = the run's seed: candidate 0 replays naive sampling of that seed exactly;
    children are elite seed + delta."""
    for sname in ("heun", "ancestral"):
        s = make_sampler(sname, T)
        gens = make_generators([7])
        x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
        nv = naive(gmm, s, x, cond=None, reward=target_reward, generator=gens)
        res = run(gmm, target_reward, [7], sname=sname, locality="seed", seed_base=7)
        tr = res.traces[0]
        assert tr["global"]["rewards"][0] == nv.reward.item()
        assert tr["global"]["seeds"] == [7 + j * 5 for j in range(8)]
        seeds = tr["global"]["seeds"]
        want = [seeds[p] + d for p in tr["global"]["elites"] for d in range(1, 5)]
        assert tr["local"]["seeds"] == want


def test_neighbouring_seeds_give_independent_noise() -> None:
    """Why seed+delta is no local search with torch's PRNG: corr(noise(s), noise(s+1)) ~ 0."""
    d = 200_000
    for s in (0, 1234, 2**31 - 7):
        a = torch.randn(d, generator=torch.Generator().manual_seed(s))
        b = torch.randn(d, generator=torch.Generator().manual_seed(s + 1))
        assert abs(float(torch.corrcoef(torch.stack([a, b]))[0, 1])) < 0.015  # 6.7 se


@pytest.mark.parametrize("locality", ["noise", "seed"])
def test_same_seed_bit_identical_and_batch_independent(gmm, target_reward, locality) -> None:
    kw = {"locality": locality, "k_global": 4, "elites": 2, "k_local": 2}
    a = run(gmm, target_reward, [11, 12, 13], **kw)
    b = run(gmm, target_reward, [11, 12, 13], **kw)
    assert torch.equal(a.x0, b.x0) and torch.equal(a.reward, b.reward)
    alone = run(gmm, target_reward, [12], **kw)
    other = run(gmm, target_reward, [99, 12], max_batch=3, **kw)
    assert torch.equal(alone.x0[0], a.x0[1]) and torch.equal(other.x0[1], a.x0[1])
    assert alone.traces[0]["global"] == a.traces[1]["global"]
    assert alone.traces[0]["local"] == a.traces[1]["local"]


def test_composite_potential_and_registry(gmm, target_reward) -> None:
    pot = Composite([(1.0, target_reward), (4.0, target_reward)])
    res = run(gmm, pot, [0, 1], k_global=4, elites=2, k_local=2)
    plain = run(gmm, target_reward, [0, 1], k_global=4, elites=2, k_local=2)
    assert torch.equal(res.x0, plain.x0)  # argmax invariant to a positive scale
    assert torch.allclose(res.reward, 5 * plain.reward)
    assert METHODS["eacps"] is eacps


def test_no_network_input_is_evaluated_twice(gmm, target_reward) -> None:
    rec = Recorder(gmm)
    run(gmm, target_reward, [0, 1, 2], sname="ancestral", denoiser=rec)
    rows = torch.cat([torch.cat([x.flatten(1), s[:, None].float()], 1) for x, s in rec.calls])
    assert torch.unique(rows, dim=0).shape[0] == rows.shape[0]


def _stage_rewards(res) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Global rewards ``(B, K)``, children's rewards ``(B, M k_local)`` and each child's elite
    (a global index, ``(B, M k_local)``) from the traces."""
    rg = torch.tensor([tr["global"]["rewards"] for tr in res.traces], dtype=torch.float64)
    rl = torch.tensor([tr["local"]["rewards"] for tr in res.traces], dtype=torch.float64)
    parents = torch.tensor([tr["local"]["parents"] for tr in res.traces])
    return rg, rl, parents


def test_local_stage_refines_the_elites_at_the_defaults(gmm, target_reward) -> None:
    """EACPS's mechanism at its defaults (8, 3, 4), beta = 0.3, on the common target over 256
    seeds: the elites are the top M of the global stage (best first); a child's reward stays
    near its elite's (median gap < 1/4 of the gap to another global candidate, measured ~1.3 vs
    ~11.5); children score higher than the global stage on average (beyond 3 standard errors,
    measured +10.3 with se 0.34); the answer is the best of all candidates. This does not claim
    that EACPS beats best-of-N at equal NFEs: on this mixture it does not at these defaults
    (README, seed-space search). Each assertion fails on a broken copy: elites taken from the
    bottom, children drawn without their elite, an answer from the global stage only."""
    res = run(gmm, target_reward, list(range(256)))
    rg, rl, parents = _stage_rewards(res)
    elites = torch.tensor([tr["global"]["elites"] for tr in res.traces])
    assert torch.equal(elites, rg.topk(3, dim=1).indices)
    assert torch.equal(parents, elites.repeat_interleave(4, dim=1))
    near = (rl - rg.gather(1, parents)).abs().median()
    shift = torch.randint(1, 8, parents.shape, generator=torch.Generator().manual_seed(0))
    far = (rl - rg.gather(1, (parents + shift) % 8)).abs().median()
    assert near < far / 4, f"child-elite gap {near:.3f} vs {far:.3f}"
    gain = rl.mean(1) - rg.mean(1)
    assert gain.mean() > 3 * gain.std() / len(gain) ** 0.5, f"{gain.mean():.3f}"
    best = torch.cat([rg, rl], 1).max(1).values
    assert torch.allclose(res.reward.double(), best, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kw, name",
    [
        ({"k_global": 0}, "k_global"),
        ({"k_global": 2, "elites": 3}, "elites"),
        ({"elites": 0}, "elites"),
        ({"k_local": -1}, "k_local"),
        ({"beta": 1.5}, "beta"),
        ({"beta": -0.1}, "beta"),
        ({"beta": float("nan")}, "beta"),
        ({"locality": "pixel"}, "locality"),
        ({"locality": "seed", "seed_base": -1}, "seed_base"),
        ({"locality": "seed", "seed_base": [1, 2, 3]}, "seed_base"),
    ],
)
def test_bad_input_raises_naming_the_parameter(gmm, target_reward, kw, name) -> None:
    with pytest.raises(ValueError, match=name):
        run(gmm, target_reward, [0], **kw)
