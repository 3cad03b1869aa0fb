"""Adaptive per-prompt budgets: a total NFE budget for a batch of prompts is split so that
harder prompts get more search, and the ledger's total never exceeds it.

At each searchable step the controller sees every sample's NFEs so far and the one-step reward of
its first (pivot) draw (the cheap probe). It reserves the NFEs that the rest of sampling needs in
any case (one call per remaining step, plus Heun corrections), gives this step a share of the
remaining pool proportional to the base schedule's ``K_t`` over the ``K`` still to come, and
splits that share over the prompts in proportion to their deficit ``max(score) - score`` (plus a
floor), capped at ``cap * K_t``. Since no step spends more than the pool, the total stays within
the budget.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from adaptive_tts.control import check_float
from adaptive_tts.sampling import Sampler
from adaptive_tts.types import Knobs, StepInfo
from controllers.schedule import ScheduleController


def plain_cost(sampler: Sampler) -> list[int]:
    """Network calls of each plain step without search (``(T,)``), as the sampler counts them
    (:meth:`~adaptive_tts.sampling.Sampler.plain_cost`: the step's own evaluation, a Heun
    correction where there is one, none for a reused ``D(x, sigma_i)``)."""
    return [int(c) for c in sampler.plain_cost()]


@dataclass
class BudgetController:
    """Wrap a base :class:`ScheduleController` with a per-batch NFE budget.

    Args:
        base: the per-step profile of ``K_t`` and ``eps_t``.
        budget: NFEs per sample on average (the batch may spend ``budget * B`` in total).
        sampler: the sampler it will run with (to reserve the plain steps' calls).
        cap: a prompt gets at most ``cap * K_t`` iterations at a step.
        floor: share of the mean deficit every prompt gets, so easy prompts are not starved.
    """

    base: ScheduleController
    budget: float
    sampler: Sampler
    cap: float = 3.0
    floor: float = 0.25

    def __post_init__(self) -> None:
        need = sum(plain_cost(self.sampler))
        # NaN, infinity, <= 0 and below plain sampling's calls are refused (NaN fails no `<`)
        self.budget = check_float(self.budget, "budget (NFEs per sample)", 0.0, lo_open=True)
        if self.budget < need:
            raise ValueError(
                f"budget={self.budget!r} is invalid, allowed: a finite number >= {need} NFEs "
                "per sample (plain sampling with this sampler)"
            )
        self.cap = check_float(self.cap, "cap", 1.0)
        self.floor = check_float(self.floor, "floor", 0.0)
        self.cost = plain_cost(self.sampler)
        # the base's K_t at each searchable step of this sampler (a function of sigma: the
        # table's own k at the fitted sampler, interpolated at another step count)
        self.base_k = {
            i: int(self.base.at(self.sampler.sigma(i), i)["k"])
            for i in range(self.sampler.num_steps)
            if self.sampler.searchable(i)
        }
        self.n = self.base.n

    def decide(self, step: StepInfo) -> Knobs:
        base = self.base.decide(step)
        b = step.batch
        i = step.index
        # this step's pivot call is already in step.nfe; reserve its Heun call and later steps
        reserve = (self.cost[i] - 1) + sum(self.cost[i + 1 :])
        pool = self.budget * b - float(step.nfe.sum()) - reserve * b
        k_here = sum(int(v) for v in base.k.tolist()) / max(b, 1)
        k_later = sum(v for j, v in self.base_k.items() if j > i)
        share = k_here / max(k_here + k_later, 1e-9)
        iters = int(max(pool, 0.0) * share // self.n)
        scores = step.scores.float().cpu()  # the one controller that reads the values
        deficit = (scores.max() - scores).clamp_min(0)
        w = deficit + self.floor * (deficit.mean() + 1e-6)
        alloc = w / w.sum() * iters
        cap = torch.ceil(base.k.float() * self.cap)
        k = torch.minimum(alloc.floor(), cap)
        rest = iters - int(k.sum())
        order = torch.argsort(-(alloc - alloc.floor()))
        for j in order.tolist():  # hand out the remainder, largest fractions first
            if rest <= 0:
                break
            if k[j] < cap[j]:
                k[j] += 1
                rest -= 1
        return Knobs(self.n, k.long(), base.eps, base.lam)

    def to_dict(self) -> dict[str, Any]:
        d = self.base.to_dict()
        d["kind"] = f"budget({self.base.kind})"
        d["budget"] = {"per_sample": self.budget, "cap": self.cap, "floor": self.floor}
        return d

    def save(self, path: str) -> None:
        from controllers.schedule import write_json

        write_json(self.to_dict(), path)
