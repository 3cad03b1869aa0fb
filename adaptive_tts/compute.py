"""The complete compute ledger: what a run spent beyond the NFE counts, split by purpose.

While a :class:`ComputeMeter` is active (``with ComputeMeter() as meter:``), every
:class:`~adaptive_tts.nfe.Ledger` call reports to it: rows sent to the network, NFEs (a
classifier-free-guided row counts ``nfe_per_call`` = 2), batched invocations and wall-clock, by
purpose (``step``, ``score``, ``rollout``) and by noise level (one level per step, plus EDM's
churned level and Heun's corrector level); reward calls are reported too. A task instrumented
with :meth:`ComputeMeter.instrument` also reports reward wall-clock and the growth of the task's
counters (VAE decodes). With ``flops=True`` the network's (and the reward's) FLOPs are measured
once per (model, batch shape) with :class:`torch.utils.flop_counter.FlopCounterMode` and
multiplied out over the calls. Nothing here changes what a search computes or its NFE counts.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import torch
from torch import Tensor

_ACTIVE: ContextVar[ComputeMeter | None] = ContextVar("adaptive_tts_compute_meter", default=None)
_PURPOSES = ("step", "score", "rollout")

__all__ = [
    "ComputeMeter",
    "FlopPrices",
    "active_meter",
    "compute_summary",
    "count_flops",
    "measure_prices",
]


def active_meter() -> ComputeMeter | None:
    """The meter of the innermost ``with ComputeMeter()`` block (``None``: no accounting)."""
    return _ACTIVE.get()


def count_flops(fn: Callable[..., Any], *args: Any) -> tuple[Any, int]:
    """``(fn(*args), FLOPs counted by torch's FlopCounterMode)`` (0 for work torch cannot see:
    a CUDA-graph replay (pass :func:`eager` of the wrapper), PIL, numpy)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        out = fn(*args)
    return out, int(counter.get_total_flops())


def eager(fn: Any) -> Any:
    """The function a CUDA-graph wrapper replays (FLOPs are counted on it: a replay is
    invisible to torch's counter); any other callable as it is."""
    from adaptive_tts.cuda_graphs import CUDAGraphed

    return fn.fn if isinstance(fn, CUDAGraphed) else fn


@dataclasses.dataclass(frozen=True)
class FlopPrices:
    """What one unit of search costs in FLOPs, for budgets set in FLOPs (the reward's compute
    included): ``network`` FLOPs per NFE (a classifier-free-guided row is ``nfe_per_call``
    NFEs), ``reward`` FLOPs per reward call. ``rows``/``shape``: the probe they were measured
    on (:func:`measure_prices`)."""

    network: float
    reward: float
    nfe_per_call: int = 1
    rows: int = 0
    shape: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        for name in ("network", "reward"):
            v = getattr(self, name)
            if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
                raise ValueError(f"FlopPrices.{name} must be a finite number >= 0, got {v!r}")
        if self.network + self.reward <= 0:
            raise ValueError("FlopPrices: the network and the reward both cost 0 FLOPs")

    def cost(self, nfe: Tensor | float, reward_calls: Tensor | float) -> Tensor | float:
        """FLOPs of ``nfe`` NFEs and ``reward_calls`` reward calls (tensors: per sample)."""
        return nfe * self.network + reward_calls * self.reward

    def naive(self, sampler: Any) -> float:
        """FLOPs of one plain trajectory scored once (what a budget multiple ``Mx`` is of)."""
        return float(self.cost(sampler.trajectory_calls(0) * self.nfe_per_call, 1))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FlopPrices:
        d = dict(d)
        d["shape"] = tuple(d.get("shape", ()))
        return cls(**d)


def measure_prices(task: Any, sampler: Any, rows: int = 2, device: str | None = None) -> FlopPrices:
    """Measure :class:`FlopPrices` on ``task`` once: the denoiser on ``rows`` noisy samples at
    the sampler's first level and the reward on its ``rows`` predictions (FLOPs linear in the
    rows, as convolutions, matmuls and per-row attention are). A network torch's counter sees
    no FLOPs in is an error (a reward may cost 0: PNG size, pixel means)."""
    if rows < 1:
        raise ValueError(f"rows must be >= 1, got {rows}")
    den, rew = eager(task.denoiser), eager(task.reward)
    dev = torch.device(device) if device is not None else _task_device(task)
    g = torch.Generator(device="cpu").manual_seed(0)
    sigma = float(sampler.sigma(0))
    x = (torch.randn((rows, *task.sample_shape), generator=g) * sigma).to(dev)
    sig = torch.full((rows,), sigma, device=dev)
    cond = task.prompts(None if task.prompt_texts else [0], rows) if task.uses_prompt else None
    cond = cond.to(dev) if cond is not None else None
    npc = int(getattr(task.denoiser, "nfe_per_call", 1))
    with torch.no_grad():
        x0, net = count_flops(den, x, sig, cond)
        _, rw = count_flops(rew, x0, cond)
    if net <= 0:
        raise ValueError(
            f"model {task.model!r}: torch's FLOP counter saw no FLOPs in the network, so a "
            "budget in FLOPs cannot be priced"
        )
    return FlopPrices(net / (rows * npc), rw / rows, npc, rows, tuple(task.sample_shape))


def _task_device(task: Any) -> torch.device:
    """The device of the task's network parameters (CPU for parameter-free models)."""
    for obj in (eager(task.denoiser), getattr(eager(task.denoiser), "model", None)):
        params = getattr(obj, "parameters", None)
        if callable(params):
            for p in params():
                return p.device
    return torch.device("cpu")


def _key(fn: Any, x: Tensor) -> tuple[int, tuple[int, ...], str]:
    return (id(fn), tuple(x.shape), str(x.dtype))


class ComputeMeter:
    """Collects the compute of every search run inside ``with meter:``.

    Args:
        flops: measure FLOPs per (model, batch shape) once and estimate every call's.
        sync: synchronise CUDA around timed calls (exact device wall-clock; slower). Without it
            GPU timings are the host's enqueue time.
    """

    def __init__(self, flops: bool = False, sync: bool = False) -> None:
        self.flops, self.sync = flops, sync
        zero = dict.fromkeys(_PURPOSES, 0)
        self.rows, self.nfe, self.invocations = dict(zero), dict(zero), dict(zero)
        self.seconds = dict.fromkeys(_PURPOSES, 0.0)
        self.network_flops = dict(zero)
        self.levels: dict[float, dict[str, int]] = {}
        self.reward_rows, self.reward_invocations = 0, 0
        self.reward_seconds, self.reward_flops = 0.0, 0
        self.flops_per_call: dict[tuple[int, tuple[int, ...], str], int] = {}
        self.counters: dict[str, int] = {}
        self._last_flops = 0  # FLOPs of the ledger call in progress
        self._excluded = 0.0  # its seconds spent measuring FLOPs (not charged to a purpose)
        self.flops_measure_seconds = 0.0
        self._reward_excluded = 0.0
        self._tokens: list[Any] = []
        self._t0 = 0.0
        self.wall_seconds = 0.0

    # ------------------------------------------------------------------ context
    def __enter__(self) -> ComputeMeter:
        self._tokens.append(_ACTIVE.set(self))
        self._t0 = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall_seconds += time.perf_counter() - self._t0
        _ACTIVE.reset(self._tokens.pop())

    def _sync(self, x: Tensor) -> None:
        if self.sync and x.is_cuda:
            torch.cuda.synchronize(x.device)

    def clock(self, x: Tensor) -> float:
        """``time.perf_counter()`` (after a CUDA synchronise when :attr:`sync`)."""
        self._sync(x)
        return time.perf_counter()

    # ------------------------------------------------------------------ network (the ledger)
    def call(self, fn: Callable[..., Tensor], x: Tensor, *args: Any) -> Tensor:
        """``fn(x, *args)``, measuring FLOPs the first time this (fn, x shape) is seen."""
        if not self.flops:
            return fn(x, *args)
        key = _key(fn, x)
        if key in self.flops_per_call:
            out = fn(x, *args)
        else:
            t0 = self.clock(x)
            out, self.flops_per_call[key] = count_flops(eager(fn), x, *args)
            self._excluded += self.clock(x) - t0
        self._last_flops += self.flops_per_call[key]
        return out

    def network(
        self, rows: int, nfe: int, purpose: str, sigma: object, seconds: float, invocations: int
    ) -> None:
        """Record one ledger call: ``rows`` rows, ``nfe`` NFEs, at ``sigma`` (a float; a
        per-row tensor is recorded under level ``-1``)."""
        self.rows[purpose] += rows
        self.nfe[purpose] += nfe
        self.invocations[purpose] += invocations
        self.seconds[purpose] += seconds - self._excluded
        self.flops_measure_seconds += self._excluded
        self._excluded = 0.0
        self.network_flops[purpose] += self._last_flops
        self._last_flops = 0
        level = round(float(sigma), 9) if isinstance(sigma, float | int) else -1.0
        per = self.levels.setdefault(level, dict.fromkeys(_PURPOSES, 0))
        per[purpose] += nfe

    def charge_reward(self, rows: int) -> None:
        self.reward_rows += rows

    # ------------------------------------------------------------------ rewards and counters
    def instrument(self, task: Any) -> Any:
        """A copy of ``task`` whose reward reports its wall-clock (and FLOPs) here; the task's
        counters (:meth:`Task.compute_counters`) are read at the end by :meth:`summary`."""
        reward = task.reward
        meter = self

        def timed(x0: Tensor, cond: Tensor | None) -> Tensor:
            t0 = meter.clock(x0)
            out = meter._reward_call(reward, x0, cond)
            meter.reward_seconds += meter.clock(x0) - t0 - meter._reward_excluded
            meter.flops_measure_seconds += meter._reward_excluded
            meter._reward_excluded = 0.0
            meter.reward_invocations += 1
            return out

        timed.name = getattr(reward, "name", type(reward).__name__)  # type: ignore[attr-defined]
        self._task = task
        self._counters0 = task.compute_counters() if hasattr(task, "compute_counters") else {}
        return dataclasses.replace(task, reward=timed)

    def _reward_call(
        self, reward: Callable[..., Tensor], x0: Tensor, cond: Tensor | None
    ) -> Tensor:
        if not self.flops:
            return reward(x0, cond)
        key = _key(reward, x0)
        if key not in self.flops_per_call:
            t0 = self.clock(x0)
            out, self.flops_per_call[key] = count_flops(eager(reward), x0, cond)
            self._reward_excluded += self.clock(x0) - t0
        else:
            out = reward(x0, cond)
        self.reward_flops += self.flops_per_call[key]
        return out

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        """JSON-ready totals: network rows / NFEs / invocations / seconds (and FLOPs) by
        purpose, NFEs by noise level (noisiest first), reward calls and seconds, counter
        growth (``vae_decodes``) and the wall-clock inside the meter."""
        task = getattr(self, "_task", None)
        counters = {}
        if task is not None and hasattr(task, "compute_counters"):
            now = task.compute_counters()
            counters = {k: v - self._counters0.get(k, 0) for k, v in now.items()}
        out: dict[str, Any] = {
            "network": {
                "rows": dict(self.rows),
                "nfe": dict(self.nfe),
                "invocations": dict(self.invocations),
                "seconds": {k: round(v, 6) for k, v in self.seconds.items()},
                "nfe_total": sum(self.nfe.values()),
            },
            "by_level": [
                {"sigma": s, **v} for s, v in sorted(self.levels.items(), key=lambda kv: -kv[0])
            ],
            "reward": {
                "calls": self.reward_rows,
                "invocations": self.reward_invocations,
                "seconds": round(self.reward_seconds, 6),
            },
            **counters,
            "wall_seconds": round(self.wall_seconds, 6),
        }
        if self.flops:
            out["network"]["flops"] = dict(self.network_flops)
            out["reward"]["flops"] = self.reward_flops
            out["flops_total"] = sum(self.network_flops.values()) + self.reward_flops
            out["flops_measure_seconds"] = round(self.flops_measure_seconds, 6)
        return out


def compute_summary(result: Any, meter: ComputeMeter | None = None) -> dict[str, Any]:
    """The ledger of one :class:`~adaptive_tts.types.SearchResult` for ``results.json`` / the
    JSON line: per-sample NFEs by purpose and reward calls, plus the meter's totals."""
    per_sample = {k: list(v) for k, v in result.nfe_by_purpose.items()}
    per_sample["reward_calls"] = [int(r) for r in result.reward_calls.tolist()]
    out: dict[str, Any] = {"per_sample": per_sample, "seconds": result.seconds}
    if meter is not None:
        out.update(meter.summary())
    return out
