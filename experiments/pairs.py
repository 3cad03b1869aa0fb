"""The one evaluation loop: (prompt, seed) pairs -> batches -> a search method -> a mean with a
95% interval. Calibration, :mod:`experiments.run`, :mod:`experiments.eval_controllers` and
:mod:`experiments.compare_seed_search` all run their searches through :func:`run_pairs`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.report import mean_ci
from adaptive_tts.sampling import Sampler
from adaptive_tts.tasks import Task
from adaptive_tts.types import SearchResult
from experiments.runner import run_method

Pair = tuple[int, int]


@dataclass
class Batch:
    """One search call of the loop: its ``pairs``, ``prompts`` ``(b,)``, the ``result``, the
    wall ``seconds`` of the call (the result is on the host: the GPU work is done) and the
    held-out evaluation (``{}`` when not evaluated)."""

    start: int
    pairs: list[Pair]
    prompts: Tensor
    result: SearchResult
    seconds: float
    eval: dict[str, Tensor]


@dataclass
class PairResults:
    """Per-pair outcomes of one method over all pairs, in pair order (host tensors)."""

    pairs: list[Pair]
    reward: Tensor
    nfe: Tensor
    eval_score: Tensor | None
    seconds: float
    x0: Tensor | None = None
    batches: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Mean reward with its 95% interval, mean counted NFEs and evaluation rate."""
        m, ci = mean_ci(self.reward)
        out = {"reward": m, "ci95": ci, "nfe": float(self.nfe.float().mean())}
        if self.eval_score is not None:
            out["eval_rate"] = float(self.eval_score.float().mean())
        return out


def eval_score(ev: dict[str, Tensor], n: int) -> Tensor:
    """The per-sample evaluation shown in tables: the hit when there is a target, else the
    evaluation classifier's confidence, else zeros ``(n,)``."""
    return ev.get("eval_hit", ev.get("eval_confidence", torch.zeros(n)))


def run_pairs(
    task: Task,
    method: str,
    sampler: Sampler,
    pairs: list[Pair],
    *,
    batch: int,
    device: str = "cpu",
    evaluate: bool = True,
    keep_x0: bool = False,
    batch_options: Callable[[list[Pair]], dict[str, Any]] | None = None,
    on_batch: Callable[[Batch], None] | None = None,
    **options: Any,
) -> PairResults:
    """Run ``method`` on ``pairs`` in batches of ``batch`` pairs.

    Args:
        pairs: ``(prompt, seed)`` per sample (prompt ``-1`` where the task uses none).
        evaluate: run the task's held-out evaluation on each batch's samples.
        keep_x0: keep the final samples (``(P, *S)`` on the host) in the result.
        batch_options: extra method options computed from a batch's pairs.
        on_batch: called after each batch (records, traces, timing).
        options: method options for :func:`~experiments.runner.run_method`.
    """
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rewards, nfes, scores, x0s = [], [], [], []
    seconds = 0.0
    for start in range(0, len(pairs), batch):
        chunk = pairs[start : start + batch]
        prompts = torch.tensor([p for p, _ in chunk], dtype=torch.long)
        extra = batch_options(chunk) if batch_options is not None else {}
        t0 = time.perf_counter()
        res = run_method(
            task, method, sampler, [s for _, s in chunk], prompts, device=device, **options, **extra
        )
        took = time.perf_counter() - t0
        seconds += took
        ev = task.evaluate(res.x0, prompts) if evaluate else {}
        rewards.append(res.reward.cpu())
        nfes.append(res.nfe.cpu())
        if evaluate:
            scores.append(eval_score(ev, len(chunk)).cpu())
        if keep_x0:
            x0s.append(res.x0.cpu())
        if on_batch is not None:
            on_batch(Batch(start, chunk, prompts, res, took, ev))
    empty = torch.zeros(0)
    return PairResults(
        pairs=list(pairs),
        reward=torch.cat(rewards) if rewards else empty,
        nfe=torch.cat(nfes) if nfes else empty.long(),
        eval_score=torch.cat(scores) if scores else None,
        seconds=seconds,
        x0=torch.cat(x0s) if x0s else None,
        batches=len(rewards),
    )
