"""CUDA-graph helpers where no GPU is present (the GPU path runs in experiments/bench_gpu.py),
and the deferred finiteness check the graphed search loop relies on."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.cuda_graphs import CUDAGraphed, bucket_rows, capturing
from adaptive_tts.nfe import Ledger
from adaptive_tts.search.common import Scorer


@pytest.mark.parametrize(
    ("m", "bucket"),
    [(1, 16), (16, 16), (17, 32), (64, 64), (65, 128), (256, 256), (257, 320), (300, 320)]
    + [(321, 384), (512, 512), (2049, 2560), (2560, 2560), (4000, 4096)],
)
def test_bucket_is_next_power_of_two_then_quarter_octaves(m: int, bucket: int) -> None:
    assert bucket_rows(m) == bucket
    assert bucket_rows(m, min_bucket=1) >= m


def test_bucket_padding_stays_under_a_quarter_above_256_rows() -> None:
    for m in range(257, 9000):
        b = bucket_rows(m)
        assert m <= b < 1.25 * m, m
    assert len({bucket_rows(m) for m in range(257, 4097)}) == 16  # four buckets per octave


def test_bucket_rejects_empty() -> None:
    with pytest.raises(ValueError, match="m must be >= 1"):
        bucket_rows(0)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU error")
def test_graphed_needs_a_gpu() -> None:
    assert not capturing()
    with pytest.raises(RuntimeError, match="needs a CUDA GPU"):
        CUDAGraphed(lambda x: x)


def _ledger() -> Ledger:
    return Ledger(lambda x, s, c: x, 3)


def test_deferred_scores_stay_on_device_and_check_names_the_reward() -> None:
    def reward(x, cond):
        return x.flatten(1).sum(1)

    reward.name = "sum"  # type: ignore[attr-defined]
    sc = Scorer(reward, _ledger())
    x = torch.ones(3, 2)
    x[1, 0] = float("nan")
    out = sc(x, None, torch.arange(3), defer=True)  # no error yet
    assert out.shape == (3,) and torch.isnan(out[1])
    with pytest.raises(ValueError, match=r"reward 'sum' returned 1 non-finite"):
        sc.check()
    sc.check()  # the tally was consumed
    assert sc.ledger.reward_calls.tolist() == [1, 1, 1]


def test_immediate_scores_raise_at_once() -> None:
    sc = Scorer(lambda x, c: x.sum(1), _ledger())
    with pytest.raises(ValueError, match="non-finite"):
        sc(torch.tensor([[1.0], [float("inf")], [0.0]]), None, torch.arange(3))
