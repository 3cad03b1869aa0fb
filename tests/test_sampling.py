"""Samplers: schedules, exact marginals on the Gaussian mixture, searchable-step logic."""

from __future__ import annotations

import json
import math

import pytest
import torch

from adaptive_tts.models.gmm import GaussianMixture
from adaptive_tts.nfe import Ledger
from adaptive_tts.sampling import (
    EDMSampler,
    Sampler,
    initial_noise,
    karras_sigmas,
    make_generators,
    make_sampler,
    sampler_from_description,
)
from adaptive_tts.search.common import trajectory


def test_karras_schedule_endpoints() -> None:
    s = karras_sigmas(18, 0.002, 80.0, 7.0)
    assert s.shape == (19,)
    assert s[0].item() == pytest.approx(80.0) and s[17].item() == pytest.approx(0.002)
    assert s[-1].item() == 0.0 and bool((s[:-1] > s[1:]).all())


@pytest.mark.parametrize("bad", [{"steps": 0}, {"sigma_min": 0.0}, {"rho": -1.0}])
def test_karras_bad_input(bad: dict) -> None:
    with pytest.raises(ValueError, match=next(iter(bad))):
        karras_sigmas(**{"steps": 18, "sigma_min": 0.002, "sigma_max": 80.0, "rho": 7.0, **bad})


def test_churn_window_makes_steps_unsearchable() -> None:
    s = make_sampler("heun", 18, s_min=0.05, s_max=50.0)
    flags = [s.searchable(i) for i in range(18)]
    sig = [s.sigma(i) for i in range(18)]
    assert flags == [0.05 <= x <= 50.0 for x in sig]
    assert 0 < sum(flags) < 18
    assert s.noise_scale(0) == 0.0 and s.sigma_hat(0) == s.sigma(0)


def test_gamma_matches_edm() -> None:
    s = EDMSampler(sigmas=karras_sigmas(18), method="euler", s_churn=40.0)
    assert s.gamma(3) == pytest.approx(math.sqrt(2) - 1)
    s2 = EDMSampler(sigmas=karras_sigmas(18), method="euler", s_churn=1.8)
    assert s2.gamma(3) == pytest.approx(0.1)


@pytest.mark.parametrize("name", ["heun", "euler", "ancestral"])
def test_naive_sampling_reproduces_gmm_moments(gmm: GaussianMixture, name: str) -> None:
    """Sample mean within 5 standard errors; covariance within a tight Frobenius tolerance."""
    n = 3000
    sampler = make_sampler(name, 128 if name != "heun" else 32)
    gens = make_generators(list(range(n)))
    x = initial_noise(gmm.sample_shape, gens, sampler.sigma(0))
    ledger = Ledger(gmm, n)
    out = trajectory(ledger, sampler, x, None, torch.arange(n), gens).double()
    mean, cov = gmm.moments()
    se = (cov.diagonal() / n).sqrt()
    assert ((out.mean(0) - mean).abs() < 5 * se).all()
    emp = torch.cov(out.T)
    rel = (emp - cov).norm() / cov.norm()
    assert rel < 0.1, f"covariance relative error {rel:.3f}"
    # the same tolerance rejects a wrong distribution: the class-0 moments are far away
    mean0, cov0 = gmm.moments(cond=0)
    assert not ((out.mean(0) - mean0).abs() < 5 * se).all()
    assert (emp - cov0).norm() / cov0.norm() > 0.5


def test_conditional_sampling_hits_class(gmm: GaussianMixture) -> None:
    n = 200
    sampler = make_sampler("heun", 18)
    gens = make_generators(list(range(n)))
    x = initial_noise(gmm.sample_shape, gens, sampler.sigma(0))
    cond = torch.full((n,), 2)
    out = trajectory(Ledger(gmm, n), sampler, x, cond, torch.arange(n), gens)
    comp = gmm.component_log_prob(out).argmax(1)
    assert (gmm.labels[comp] == 2).float().mean() > 0.97


def test_bad_sampler_name() -> None:
    with pytest.raises(ValueError, match="sampler"):
        make_sampler("ddim", 18)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="eta"):
        make_sampler("ancestral", 18, eta=2.0)


def _all_samplers() -> dict[str, Sampler]:
    from adaptive_tts.models.latent_t2i import ddim_sampler

    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    return {
        "heun": make_sampler("heun", 7),
        "euler": make_sampler("euler", 6, s_churn=10.0, s_noise=1.003),
        "heun-window": make_sampler("heun", 7, s_min=0.05, s_max=10.0),
        "ancestral": make_sampler("ancestral", 6, eta=0.7),
        "ddim": ddim_sampler(torch.cumprod(1 - betas, 0), 5, eta=0.5),
    }


@pytest.mark.parametrize("name", ["heun", "euler", "heun-window", "ancestral", "ddim"])
def test_sampler_rebuilt_from_its_description(name: str) -> None:
    s = _all_samplers()[name]
    d = json.loads(json.dumps(s.describe()))
    r = sampler_from_description(d)
    assert type(r) is type(s) and r.describe() == s.describe()
    assert torch.equal(r.sigmas, s.sigmas)
    assert [r.noise_scale(i) for i in range(r.num_steps)] == [
        s.noise_scale(i) for i in range(s.num_steps)
    ]


def test_unknown_sampler_description() -> None:
    with pytest.raises(ValueError, match="unknown sampler"):
        sampler_from_description({"name": "nope", "sigmas": [1.0, 0.0]})


@pytest.mark.parametrize("name", ["heun", "euler", "heun-window", "ancestral", "ddim"])
@pytest.mark.parametrize("start", [0, 2])
def test_calls_per_step_match_the_ledger(gmm: GaussianMixture, name: str, start: int) -> None:
    """``calls_per_step`` / ``trajectory_calls`` equal the calls a plain trajectory makes."""
    s = _all_samplers()[name]
    gens = make_generators([0, 1])
    x = initial_noise(gmm.sample_shape, gens, s.sigma(start))
    ledger = Ledger(gmm, 2)
    trajectory(ledger, s, x, None, torch.arange(2), gens, start=start)
    assert ledger.per_sample.tolist() == [s.trajectory_calls(start)] * 2
    assert s.trajectory_calls(0) == sum(s.plain_cost())
    heun = name in ("heun", "heun-window")
    assert [s.corrector_calls(i) for i in range(s.num_steps)] == [
        int(heun and s.sigma(i + 1) > 0) for i in range(s.num_steps)
    ]
