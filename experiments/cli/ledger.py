"""The compute ledger of one ``sample`` run, per step and per sample: network NFEs and rows
(a classifier-free-guided row is 2 NFEs) by purpose, reward calls, batched invocations, VAE
decodes and wall-clock of every step of the sampler, plus what was spent outside the steps
(the final scoring). A bench run keeps the same per step as totals over its samples
(:class:`StepTotals`, :func:`steps_list`, :func:`outside_steps`). Built on
:func:`adaptive_tts.search.loop.observe_steps` and :class:`adaptive_tts.compute.ComputeMeter`;
nothing here changes what a search computes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from adaptive_tts.compute import ComputeMeter, compute_summary
from adaptive_tts.nfe import PURPOSES, Ledger
from adaptive_tts.search.loop import observe_steps

__all__ = ["StepLedger", "StepTotals", "metered", "outside_steps", "steps_list"]


class StepLedger:
    """``observer(i, ledger, done)`` for :func:`~adaptive_tts.search.loop.observe_steps`:
    diffs the ledger's per-sample counts across each step and sums them by step index (a
    method that runs the loop several times, e.g. EvoSearch generations, adds up per step).

    Args:
        task: read for its counters (:meth:`Task.compute_counters`: ``vae_decodes``).
        sync: synchronise CUDA at step boundaries (exact device wall-clock per step).
    """

    def __init__(self, task: Any, sync: bool = False) -> None:
        self.task, self.sync = task, sync
        self.steps: dict[int, dict[str, Any]] = {}
        self.nfe_per_row = 1
        self._open: dict[str, Any] | None = None

    def _snapshot(self, ledger: Ledger) -> dict[str, Any]:
        if self.sync and torch.cuda.is_available():
            torch.cuda.synchronize()
        return {
            "nfe": {p: ledger.counts[p].clone() for p in PURPOSES},
            "reward_calls": ledger.reward_calls.clone(),
            "invocations": ledger.network_calls,
            "counters": self.task.compute_counters(),
            "t": time.perf_counter(),
        }

    def __call__(self, i: int, ledger: Ledger, done: bool) -> None:
        now = self._snapshot(ledger)
        if not done:
            self._open = now
            return
        was, self._open = self._open, None
        assert was is not None, "a step ended that never started"
        self.nfe_per_row = ledger.nfe_per_call
        step = self.steps.setdefault(i, {"i": i, "seconds": 0.0, "invocations": 0})
        step["seconds"] += now["t"] - was["t"]
        step["invocations"] += now["invocations"] - was["invocations"]
        for p in PURPOSES:
            _add(step.setdefault("nfe", {}), p, self._reduce(now["nfe"][p] - was["nfe"][p]))
        _add(step, "reward_calls", self._reduce(now["reward_calls"] - was["reward_calls"]))
        for k, v in now["counters"].items():
            step[k] = step.get(k, 0) + v - was["counters"].get(k, 0)

    def _reduce(self, delta: torch.Tensor) -> Any:
        """One step's per-sample counts ``(B,)`` as kept: per sample here."""
        return delta

    def summary(self, result: Any) -> dict[str, Any]:
        """JSON-ready: ``nfe_per_row``, ``steps`` (one entry per step index, per-sample lists
        of NFEs and rows by purpose, reward calls; invocations, VAE decodes, seconds) and
        ``outside_steps`` (per-sample NFEs by purpose and reward calls not spent in a step)."""
        steps = []
        inside = {p: torch.zeros(len(result.reward), dtype=torch.long) for p in PURPOSES}
        inside_rewards = torch.zeros(len(result.reward), dtype=torch.long)
        for i in sorted(self.steps):
            s = dict(self.steps[i])
            nfe = s.pop("nfe")
            for p in PURPOSES:
                inside[p] += nfe[p]
            inside_rewards += s["reward_calls"]
            used = {p: v for p, v in nfe.items() if v.any()}
            s["nfe"] = {p: v.tolist() for p, v in used.items()}
            s["rows"] = {p: (v // self.nfe_per_row).tolist() for p, v in used.items()}
            s["reward_calls"] = s["reward_calls"].tolist()
            s["seconds"] = round(s["seconds"], 6)
            steps.append(s)
        outside: dict[str, Any] = {
            p: (torch.as_tensor(result.nfe_by_purpose[p]) - inside[p]).tolist()
            for p in PURPOSES
            if p in result.nfe_by_purpose
        }
        outside["reward_calls"] = (result.reward_calls.cpu() - inside_rewards).tolist()
        return {"nfe_per_row": self.nfe_per_row, "steps": steps, "outside_steps": outside}


class StepTotals(StepLedger):
    """A :class:`StepLedger` summed over samples as it goes, so batches of any size (a bench
    run's batches of pairs) add up: per step, NFEs and rows by purpose, reward calls,
    invocations, VAE decodes and seconds, all totals over every sample seen."""

    def _reduce(self, delta: torch.Tensor) -> Any:
        """One step's per-sample counts ``(B,)`` as kept: their total over the batch."""
        return int(delta.sum())

    def totals(self) -> dict[str, dict[str, Any]]:
        """``{str(step): {nfe: {purpose: n}, rows: {purpose: n}, reward_calls, invocations,
        seconds, vae_decodes?}}``: keyed by step so that :func:`experiments.results.merge_compute`
        adds the totals of several processes step by step (:func:`steps_list` orders them)."""
        out = {}
        for i, s in self.steps.items():
            nfe = {p: n for p, n in s["nfe"].items() if n}
            row = {k: v for k, v in s.items() if k not in ("i", "nfe")}
            row["seconds"] = round(row["seconds"], 6)
            out[str(i)] = {
                **row,
                "nfe": nfe,
                "rows": {p: n // self.nfe_per_row for p, n in nfe.items()},
            }
        return out


def steps_list(totals: dict[str, dict[str, Any]], samples: int) -> list[dict[str, Any]]:
    """:meth:`StepTotals.totals` (merged) as a list in step order, each step with its index
    ``i`` and ``nfe_per_sample`` (all purposes' NFEs over ``samples``)."""
    out = []
    for key in sorted(totals, key=int):
        s = totals[key]
        per = sum(s.get("nfe", {}).values()) / samples if samples else 0.0
        out.append({"i": int(key), **s, "nfe_per_sample": round(per, 6)})
    return out


def outside_steps(steps: list[dict[str, Any]], records: list[dict[str, Any]]) -> dict[str, int]:
    """What a method spent outside its steps (the final scoring; a best-of-N's or DTS's
    trajectories scored at the end): per purpose NFEs (``nfe_<purpose>`` of the per-pair
    ``records``) and reward calls, less the totals of :func:`steps_list`."""
    out: dict[str, int] = {}
    for p in (p for p in PURPOSES if any(f"nfe_{p}" in r for r in records)):
        inside = sum(s.get("nfe", {}).get(p, 0) for s in steps)
        out[p] = sum(int(r.get(f"nfe_{p}", 0)) for r in records) - inside
    inside_calls = sum(s.get("reward_calls", 0) for s in steps)
    out["reward_calls"] = sum(int(r.get("reward_calls", 0)) for r in records) - inside_calls
    return out


def _add(into: dict[str, Any], key: str, delta: Any) -> None:
    into[key] = into[key] + delta if key in into else delta


@contextmanager
def metered(task: Any, sync: bool = False, flops: bool = False) -> Iterator[tuple[Any, Any]]:
    """``with metered(task) as (instrumented_task, ledger_of):`` run a search on
    ``instrumented_task``; ``ledger_of(result)`` is then its complete compute ledger
    (:func:`~adaptive_tts.compute.compute_summary` plus the per-step split of
    :class:`StepLedger`). ``sync``: synchronise CUDA at step boundaries only (exact per-step
    wall-clock for T synchronisations; the per-purpose seconds stay host enqueue time).
    ``flops``: estimate every call's FLOPs (:class:`~adaptive_tts.compute.ComputeMeter`)."""
    steps = StepLedger(task, sync=sync)
    with ComputeMeter(flops=flops) as meter, observe_steps(steps):
        timed = meter.instrument(task)

        def ledger_of(result: Any) -> dict[str, Any]:
            return {**compute_summary(result, meter), **steps.summary(result)}

        yield timed, ledger_of
