"""Adaptive per-prompt budgets: a total NFE budget for a batch of prompts is split so that
harder prompts get more search, and the ledger's total never exceeds it.

At each searchable step the controller sees every sample's NFEs so far and the one-step reward of
its first (pivot) draw (the cheap probe). It reserves the NFEs that the rest of sampling needs in
any case (one call per remaining step, plus Heun corrections), gives this step a share of the
remaining pool proportional to the base schedule's ``K_t`` over the ``K`` still to come, and
splits that share over the prompts in proportion to their deficit ``max(score) - score`` (plus a
floor), capped at ``cap * K_t``. Since no step spends more than the pool, the total stays within
the budget.

Budgets are in NFEs per sample, or in FLOPs per sample with the reward's compute included when
the controller holds :class:`~adaptive_tts.compute.FlopPrices` (:func:`budget_terms` does the
arithmetic for both units and for every budgeted controller).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.compute import FlopPrices
from adaptive_tts.control import check_float
from adaptive_tts.sampling import Sampler
from adaptive_tts.types import Knobs, StepInfo
from controllers.schedule import ScheduleController


def plain_cost(sampler: Sampler) -> list[int]:
    """Network calls of each plain step without search (``(T,)``), as the sampler counts them
    (:meth:`~adaptive_tts.sampling.Sampler.plain_cost`: the step's own evaluation, a Heun
    correction where there is one, none for a reused ``D(x, sigma_i)``)."""
    return [int(c) for c in sampler.plain_cost()]


def minimum_budget(sampler: Sampler, prices: FlopPrices | None = None) -> float:
    """The least budget per sample a searched run can keep: plain sampling with every
    searchable step's pivot scored (in NFEs; with ``prices``, FLOPs: the network's NFEs and
    the reward's calls priced)."""
    if prices is None:
        return float(sum(plain_cost(sampler)))
    scored = sum(1 for i in range(sampler.num_steps) if sampler.searchable(i)) + 1
    nfe = sum(plain_cost(sampler)) * prices.nfe_per_call
    return float(prices.cost(nfe, scored))


def budget_terms(
    sampler: Sampler, step: StepInfo, prices: FlopPrices | None = None
) -> tuple[Tensor, float, float]:
    """``(spent (B,), reserve, per_candidate)`` in the budget's unit at ``step``: what each
    sample has spent, what the rest of plain sampling still needs (this step's corrector and
    every later step's calls, each later searchable step's pivot score and the final score),
    and one more candidate (``nfe_per_call`` NFEs and, in FLOPs, one reward call)."""
    costs = plain_cost(sampler)
    i, npc = step.index, step.nfe_per_call
    calls = max(costs[i] - 1, 0) + sum(costs[i + 1 :])  # this step's pivot call is spent
    if prices is None:
        return step.nfe.double(), float(calls * npc), float(npc)
    if step.reward_calls is None:
        raise ValueError("a budget in FLOPs needs the reward calls spent (StepInfo.reward_calls)")
    scored = sum(1 for j in range(i + 1, sampler.num_steps) if sampler.searchable(j)) + 1
    spent = prices.cost(step.nfe.double(), step.reward_calls.double())
    assert isinstance(spent, Tensor)
    reserve = float(prices.cost(calls * npc, scored))
    return spent, reserve, float(prices.cost(npc, 1))


def check_budget_value(budget: float, sampler: Sampler, prices: FlopPrices | None) -> float:
    """``budget`` as a float if finite and at least :func:`minimum_budget`, else a
    ``ValueError`` naming the unit and the least allowed value."""
    unit = "FLOPs" if prices is not None else "NFEs"
    val = check_float(budget, f"budget ({unit} per sample)", 0.0, lo_open=True)
    need = minimum_budget(sampler, prices)
    if val < need:
        raise ValueError(
            f"budget={budget!r} is invalid, allowed: a finite number >= {need:.6g} {unit} per "
            "sample (plain sampling with this sampler"
            + (", its pivots scored)" if prices is not None else ")")
        )
    return val


def flops_budget(value: float | str, prices: FlopPrices, sampler: Sampler) -> float:
    """A FLOPs budget per sample from ``value``: a number of FLOPs, or ``"Mx"`` (``M`` times
    plain sampling's FLOPs, :meth:`FlopPrices.naive`)."""
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            mult = float(text[:-1]) if text.endswith("x") else float(text)
        except ValueError:
            raise ValueError(
                f"budget_flops={value!r} is invalid, allowed: a number of FLOPs per sample or "
                "'Mx' (M times plain sampling's FLOPs)"
            ) from None
        return mult * prices.naive(sampler) if text.endswith("x") else mult
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"budget_flops={value!r} is invalid, allowed: a number or 'Mx'")
    return float(value)


def with_flops_budget(ctrl: Any, value: float | str, prices: FlopPrices, sampler: Sampler) -> Any:
    """A copy of a budgeted controller (stopping, budget) whose budget is ``value`` in FLOPs
    per sample (:func:`flops_budget`), priced by ``prices``; any other kind is an error."""
    import dataclasses

    if not hasattr(ctrl, "budget") or not dataclasses.is_dataclass(ctrl) or isinstance(ctrl, type):
        kind = getattr(ctrl, "kind", type(ctrl).__name__)
        raise ValueError(
            f"a budget in FLOPs needs a budgeted controller (stopping or budget), got {kind!r}"
        )
    budget = flops_budget(value, prices, sampler)
    copy: Any = dataclasses.replace(ctrl, budget=budget, prices=prices, sampler=sampler)
    return copy


@dataclass
class BudgetController:
    """Wrap a base :class:`ScheduleController` with a per-batch NFE budget.

    Args:
        base: the per-step profile of ``K_t`` and ``eps_t``.
        budget: NFEs per sample on average (the batch may spend ``budget * B`` in total);
            FLOPs per sample when ``prices`` are given.
        sampler: the sampler it will run with (to reserve the plain steps' calls).
        cap: a prompt gets at most ``cap * K_t`` iterations at a step.
        floor: share of the mean deficit every prompt gets, so easy prompts are not starved.
        prices: FLOPs per NFE and per reward call (:func:`adaptive_tts.compute.measure_prices`).
    """

    base: ScheduleController
    budget: float
    sampler: Sampler
    cap: float = 3.0
    floor: float = 0.25
    prices: FlopPrices | None = None

    def __post_init__(self) -> None:
        # NaN, infinity, <= 0 and below plain sampling's cost are refused
        self.budget = check_budget_value(self.budget, self.sampler, self.prices)
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
        spent, reserve, per = budget_terms(self.sampler, step, self.prices)
        pool = self.budget * b - float(spent.sum()) - reserve * b
        k_here = sum(int(v) for v in base.k.tolist()) / max(b, 1)
        k_later = sum(v for j, v in self.base_k.items() if j > i)
        share = k_here / max(k_here + k_later, 1e-9)
        iters = int(max(pool, 0.0) * share // (self.n * per))
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
        if self.prices is not None:
            d["budget"]["unit"] = "flops"
            d["budget"]["prices"] = self.prices.to_dict()
        return d

    def save(self, path: str) -> None:
        from controllers.schedule import write_json

        write_json(self.to_dict(), path)
