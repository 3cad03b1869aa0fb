"""Ledger: chunks halve on ``torch.cuda.OutOfMemoryError`` and results do not depend on chunking."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.nfe import Ledger
from adaptive_tts.rewards import GaussianLogDensity
from adaptive_tts.sampling import initial_noise, make_generators, make_sampler
from adaptive_tts.search import eps_greedy


class OOMAbove:
    """Wraps a denoiser; raises ``OutOfMemoryError`` on calls with more than ``limit`` rows."""

    def __init__(self, inner, limit: int, nfe_per_call: int = 1) -> None:
        self.inner, self.limit, self.nfe_per_call = inner, limit, nfe_per_call
        self.sizes: list[int] = []
        self.failures = 0

    def __call__(self, x, sigma, cond):
        if x.shape[0] > self.limit:
            self.failures += 1
            raise torch.cuda.OutOfMemoryError(f"fake OOM for {x.shape[0]} rows")
        self.sizes.append(x.shape[0])
        return self.inner(x, sigma, cond)


def rowwise(x, sigma, cond):
    """A denoiser whose row ``j`` depends on ``x[j]``, ``sigma[j]`` and ``cond[j]`` only."""
    return torch.tanh(x) * sigma.view(-1, 1) + cond.view(-1, 1).float()


def test_halves_on_oom_and_keeps_results_and_counts() -> None:
    x = torch.randn(13, 5)
    sig = torch.linspace(0.1, 2.0, 13)
    cond = torch.arange(13) % 3
    owner = torch.arange(13) % 4
    ref = Ledger(rowwise, 4)
    want = ref(x, sig, cond, owner, "score")
    fake = OOMAbove(rowwise, limit=3, nfe_per_call=2)
    led = Ledger(fake, 4)
    got = led(x, sig, cond, owner, "score")
    assert torch.equal(got, want)
    assert sum(fake.sizes) == 13 and max(fake.sizes) <= 3
    assert fake.failures == 2  # 13 -> 6 -> 3 rows
    assert led.counts["score"].tolist() == [8, 6, 6, 6]  # 2 NFEs per row, per owner
    assert led.network_calls == len(fake.sizes)  # only successful calls count
    # the learnt cap sticks: no new failures on the next call
    fails = fake.failures
    assert torch.equal(led(x, sig, cond, owner, "step"), want)
    assert fake.failures == fails and max(fake.sizes) <= 3


def test_respects_max_batch_and_reraises_at_one_row() -> None:
    x, sig, owner = torch.randn(6, 2), torch.ones(6), torch.zeros(6, dtype=torch.long)
    fake = OOMAbove(rowwise, limit=4)
    led = Ledger(fake, 1, max_batch=2)
    led(x, sig, torch.zeros(6, dtype=torch.long), owner, "step")
    assert fake.failures == 0 and fake.sizes == [2, 2, 2]
    never = Ledger(OOMAbove(rowwise, limit=0), 1)
    with pytest.raises(torch.cuda.OutOfMemoryError):
        never(x, sig, torch.zeros(6, dtype=torch.long), owner, "step")


def test_search_identical_under_oom(gmm) -> None:
    reward = GaussianLogDensity(gmm.means[0], gmm.variances[0])
    s = make_sampler("heun", 6)

    def run(model):
        gens = make_generators([3, 4, 5])
        x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
        return eps_greedy(model, s, x, cond=None, reward=reward, generator=gens, n=4, k=2, eps=0.5)

    a = run(gmm)
    fake = OOMAbove(gmm, limit=5)
    b = run(fake)
    assert fake.failures > 0
    assert torch.equal(a.x0, b.x0) and torch.equal(a.reward, b.reward)
    assert torch.equal(a.nfe, b.nfe)
    assert a.nfe_by_purpose == b.nfe_by_purpose
