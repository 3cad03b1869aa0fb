"""What is bit-identical and what only equal to a tolerance, on the shipped MNIST UNet and its
reward classifier (README, Reproducibility).

* Same seeds, same batch composition and chunking (``max_batch``), same device: bit-identical
  final samples, rewards, NFEs and traces.
* A seed alone vs inside a larger batch (or chunked differently): the noise is bit-identical (one
  generator per sample), but the float32 network and classifier outputs change in the last bits
  with the batch size, so the sample, the rewards and the trace scores are equal only to a
  tolerance (measured on CPU: x0 up to 4e-5 apart, scores 5e-5 relative), and every discrete
  decision (fresh draw ``I``, pivot move ``J``, knobs, NFEs) is the same here; a decision can
  flip only where two candidates' scores tie to within that noise.

The exact mixture is batch-invariant by construction, so there the batch independence is
bit-exact (``test_search_behaviour.py``); these tests are the ones that see the real model.
"""

from __future__ import annotations

import math
from functools import cache
from typing import Any

import pytest
import torch

from adaptive_tts.sampling import initial_noise, make_generators, make_sampler
from adaptive_tts.search import METHODS
from adaptive_tts.tasks import Task, build_task
from adaptive_tts.types import SearchResult
from experiments.make_golden import task as golden_task

KW: dict[str, dict[str, Any]] = {
    "eps-greedy": {"n": 2, "k": 2, "eps": 0.4},
    "best-of-n": {"n": 3},
}
SEEDS, TARGETS = [1, 7, 2], [0, 3, 9]
X0_ATOL, REL = 1e-3, 1e-3  # 25x the differences measured with the batch size


@cache
def mnist(device: str) -> Task:
    """The task on ``device`` (on the CPU the golden test's cached copy: loaded once)."""
    return golden_task("mnist-target") if device == "cpu" else build_task("mnist-target", device)


def run(
    method: str, seeds: list[int], targets: list[int], device: str = "cpu", **kw: Any
) -> tuple[torch.Tensor, SearchResult]:
    """``(x_T, result)`` of ``method`` on ``mnist-target`` (Euler, 4 steps), one generator per
    seed on ``device``."""
    t = mnist(device)
    s = make_sampler("euler", 4)
    gens = make_generators(seeds, device=device)
    x = initial_noise(t.sample_shape, gens, s.sigma(0), device=device)
    cond = torch.tensor(targets, device=device)
    res = METHODS[method](
        t.denoiser, s, x, cond=cond, reward=t.reward, generator=gens, **{**KW[method], **kw}
    )
    return x, res


def split(obj: Any) -> tuple[Any, list[float]]:
    """A trace's skeleton (every float replaced by ``None``) and its floats, in order."""
    floats: list[float] = []

    def walk(o: Any) -> Any:
        if isinstance(o, float):
            floats.append(o)
            return None
        if isinstance(o, dict):
            return {k: walk(v) for k, v in o.items() if k != "seconds"}
        if isinstance(o, list):
            return [walk(v) for v in o]
        return o

    return walk(obj), floats


def assert_close_traces(a: dict[str, Any], b: dict[str, Any]) -> None:
    """Discrete fields (decisions, knobs, NFEs) equal; floats within :data:`REL` relative."""
    (sk_a, fl_a), (sk_b, fl_b) = split(a["steps"]), split(b["steps"])
    assert sk_a == sk_b, "a discrete trace field differs"
    bad = [(x, y) for x, y in zip(fl_a, fl_b) if not math.isclose(x, y, rel_tol=REL, abs_tol=0)]
    assert len(fl_a) == len(fl_b) and not bad, f"trace floats differ: {bad[:3]}"


DEVICES = [
    "cpu",
    pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="GPU")),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", sorted(KW))
def test_same_seeds_same_batch_bit_identical(method: str, device: str) -> None:
    """Same seeds, same batch, same chunking, same device: bit-identical, chunked or not."""
    for kw in ({}, {"max_batch": 4}):
        _, a = run(method, SEEDS, TARGETS, device, **kw)
        _, b = run(method, SEEDS, TARGETS, device, **kw)
        assert torch.equal(a.x0, b.x0) and torch.equal(a.reward, b.reward)
        assert torch.equal(a.nfe, b.nfe)
        assert [split(t["steps"]) for t in a.traces] == [split(t["steps"]) for t in b.traces]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("method", sorted(KW))
def test_seed_alone_vs_in_a_batch_equal_to_tolerance(method: str, device: str) -> None:
    """Seed 7 alone, inside a batch of three, and with the batch chunked into network calls of
    at most 4 rows: identical noise and decisions, samples and scores within tolerance."""
    x_alone, alone = run(method, [7], [3], device)
    x_batch, batch = run(method, SEEDS, TARGETS, device)
    _, chunked = run(method, SEEDS, TARGETS, device, max_batch=4)
    assert torch.equal(x_alone[0], x_batch[1])  # the seed's own noise, bit for bit
    for got, j, ref, i in ((batch, 1, alone, 0), (chunked, 1, alone, 0), (chunked, 0, batch, 0)):
        assert torch.allclose(got.x0[j], ref.x0[i], atol=X0_ATOL, rtol=0)
        assert math.isclose(float(got.reward[j]), float(ref.reward[i]), rel_tol=REL)
        assert int(got.nfe[j]) == int(ref.nfe[i])
        assert_close_traces(got.traces[j], ref.traces[i])
