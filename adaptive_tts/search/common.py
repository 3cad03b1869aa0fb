"""Shared plumbing of the search methods: input checks, scoring through the ledger, plain
trajectories (for naive, best-of-N, rollouts), result assembly, and :class:`SearchContext`, the
set-up every search repeats. The step loop itself is :mod:`adaptive_tts.search.loop`."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, overload

import torch
from torch import Tensor

from adaptive_tts.nfe import Ledger, Purpose
from adaptive_tts.rewards.base import check_finite, reward_name
from adaptive_tts.sampling import Sampler
from adaptive_tts.search.loop import (
    AfterHook,
    NoiseHook,
    Rows,
    denoise,
    deterministic_step,
    evaluator,
    fresh_noise,
)
from adaptive_tts.types import TRACE_SCHEMA, Reward, SearchResult

StepCallback = Callable[[dict[str, Any]], None]
__all__ = [
    "Rows",
    "Scorer",
    "SearchContext",
    "StepCallback",
    "base_trace",
    "check_inputs",
    "check_positive",
    "deterministic_step",
    "evaluator",
    "finish",
    "rep",
    "sqrt2d",
    "trajectory",
    "unit_directions",
]


def check_inputs(
    x_T: Tensor, cond: Tensor | None, generator: list[torch.Generator] | torch.Generator | None
) -> list[torch.Generator]:
    """Validate the leading arguments; return one generator per sample."""
    if x_T.dim() < 2:
        raise ValueError(f"x_T must have shape (B, *S), got {tuple(x_T.shape)}")
    b = x_T.shape[0]
    if not bool(torch.isfinite(x_T).all()):
        bad = int((~torch.isfinite(x_T)).sum())
        raise ValueError(
            f"x_T holds {bad} non-finite value(s) (NaN/inf), allowed: finite initial noise"
        )
    if cond is not None and cond.shape != (b,):
        raise ValueError(f"cond must have shape ({b},) to match x_T, got {tuple(cond.shape)}")
    if generator is None:
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        return [torch.Generator().manual_seed(seed + i) for i in range(b)]
    if isinstance(generator, torch.Generator):
        generator = [generator] if b == 1 else None  # type: ignore[assignment]
        if generator is None:
            raise ValueError("generator must be a list of B per-sample generators when B > 1")
    if len(generator) != b:
        raise ValueError(
            f"generator must hold one generator per sample ({b}), got {len(generator)}"
        )
    return list(generator)


def check_positive(name: str, value: int, minimum: int = 1) -> None:
    if not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


class Scorer:
    """Reward evaluation charged to the ledger, with a finiteness check naming the reward.

    ``scorer(x0, cond, owner)`` returns CPU scores ``(M,)`` checked at once;
    ``scorer(..., defer=True)`` keeps them on ``x0``'s device and only tallies non-finite values
    there, so a GPU search loop never waits on the host; :meth:`check` raises for the tally.
    """

    def __init__(self, reward: Callable[[Tensor, Tensor | None], Tensor], ledger: Ledger):
        self.reward = reward
        self.ledger = ledger
        self.name = reward_name(reward)
        self._bad: Tensor | None = None

    def __call__(
        self, x0: Tensor, cond: Tensor | None, owner: Tensor, defer: bool = False
    ) -> Tensor:
        with torch.no_grad():
            r = self.reward(x0, cond)
        if r.shape != (x0.shape[0],):
            raise ValueError(
                f"reward {self.name!r} must return shape ({x0.shape[0]},), got {tuple(r.shape)}"
            )
        self.ledger.charge_reward(owner)
        if defer:  # on x0's device, whatever device the reward computed on
            r = r.float().to(x0.device)
            bad = (~torch.isfinite(r)).sum()
            self._bad = bad if self._bad is None else self._bad + bad
            return r
        return check_finite(r.float(), self.name).cpu()

    def check(self) -> None:
        """Raise ``ValueError`` naming the reward if a deferred score was NaN or inf."""
        if self._bad is not None:
            bad, self._bad = int(self._bad), None
            if bad:
                raise ValueError(
                    f"reward {self.name!r} returned {bad} non-finite value(s) (NaN/inf)"
                )


@overload
def rep(t: Tensor, n: int) -> Tensor: ...
@overload
def rep(t: None, n: int) -> None: ...
@overload
def rep(t: Tensor | None, n: int) -> Tensor | None: ...
def rep(t: Tensor | None, n: int) -> Tensor | None:
    """Repeat each row ``n`` times (sample-major): ``(B, ...) -> (B*n, ...)`` (a broadcast, so
    the output size never has to be read back from the GPU)."""
    if t is None:
        return None
    return t.unsqueeze(1).expand(t.shape[0], n, *t.shape[1:]).reshape(-1, *t.shape[1:])


def trajectory(
    ledger: Ledger,
    sampler: Sampler,
    x: Tensor,
    cond: Tensor | None,
    owner: Tensor,
    gens: list[torch.Generator],
    per: int = 1,
    start: int = 0,
    x0: Tensor | None = None,
    purpose: Purpose = "step",
) -> Tensor:
    """Run plain stochastic sampling from step ``start`` to the end.

    ``x`` holds ``len(gens) * per`` rows, sample-major; rows of sample ``b`` draw from ``gens[b]``.
    Returns the final samples (same shape as ``x``).
    """
    rows = Rows(cond, owner)
    return denoise(
        ledger, sampler, x, rows, fresh_noise(gens, per), start=start, x0=x0, purpose=purpose
    )[0]


def base_trace(method: str, sampler: Sampler, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "schema": TRACE_SCHEMA,
        "method": method,
        "sampler": sampler.describe(),
        "params": params,
        "steps": [],
    }


def finish(
    method: str,
    params: dict[str, Any],
    x0: Tensor,
    reward: Tensor,
    ledger: Ledger,
    traces: list[dict[str, Any]],
    cond: Tensor | None,
    t0: float,
) -> SearchResult:
    """Assemble a :class:`SearchResult`, closing each trace with its final reward and NFEs."""
    summary = ledger.summary()
    for b, tr in enumerate(traces):
        tr["final_reward"] = float(reward[b])
        tr["cond"] = None if cond is None else int(cond[b])
        tr["nfe"] = {k: v[b] for k, v in summary.items()}
    return SearchResult(
        x0=x0,
        reward=reward,
        nfe=ledger.per_sample.clone(),
        nfe_by_purpose={k: v for k, v in summary.items() if k != "reward_calls"},
        reward_calls=ledger.reward_calls.clone(),
        traces=traces,
        method=method,
        params=params,
        seconds=time.perf_counter() - t0,
    )


def unit_directions(g: Tensor) -> Tensor:
    """Normalise each row of ``g`` ``(M, *S)`` to unit Euclidean norm."""
    flat = g.flatten(1)
    return (flat / flat.norm(dim=1, keepdim=True).clamp_min(1e-12)).reshape(g.shape)


def sqrt2d(x: Tensor) -> float:
    """``sqrt(2 d)``, the typical distance between two ``N(0, I_d)`` draws."""
    return math.sqrt(2.0 * x[0].numel())


class SearchContext:
    """The set-up every search repeats: input checks and one generator per sample, the ledger,
    the scorer, the timer, the params and one base trace per sample; :meth:`finish` assembles
    the :class:`SearchResult`.

    Args:
        method: the method's name (traces, result). sampler: its steps.
        x_T: ``(B, *S)``; cond: ``(B,)`` or ``None``; generator: as :func:`check_inputs`.
        params: the method's settings (kept by reference in every trace).
    """

    def __init__(
        self,
        method: str,
        denoiser: Any,
        sampler: Sampler,
        x_T: Tensor,
        cond: Tensor | None,
        reward: Reward,
        generator: list[torch.Generator] | torch.Generator | None,
        params: dict[str, Any],
        max_batch: int | None = None,
    ) -> None:
        self.gens = check_inputs(x_T, cond, generator)
        self.method, self.sampler, self.cond, self.params = method, sampler, cond, params
        self.b, self.shape = x_T.shape[0], tuple(x_T.shape[1:])
        self.t0 = time.perf_counter()
        self.ledger = Ledger(denoiser, self.b, max_batch)
        self.score = Scorer(reward, self.ledger)
        self.traces = [base_trace(method, sampler, params) for _ in range(self.b)]

    def rows(self, per: int = 1) -> Rows:
        """Owner/cond of ``B * per`` rows, sample-major (``per`` rows per sample)."""
        owner = rep(torch.arange(self.b), per)
        return Rows(rep(self.cond, per), owner)

    def denoise(
        self,
        x: Tensor,
        rows: Rows,
        choose: NoiseHook | None = None,
        *,
        per: int = 1,
        start: int = 0,
        x0: Tensor | None = None,
        purpose: Purpose = "step",
        after: AfterHook | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """:func:`~adaptive_tts.search.loop.denoise` with this search's ledger and sampler;
        ``choose=None``: fresh noise from the samples' generators (``per`` rows each)."""
        hook = fresh_noise(self.gens, per) if choose is None else choose
        return denoise(
            self.ledger, self.sampler, x, rows, hook, start=start, x0=x0, purpose=purpose,
            after=after,
        )  # fmt: skip

    def finish(self, x0: Tensor, reward: Tensor) -> SearchResult:
        """The result: best ``x0`` ``(B, *S)`` and its reward ``(B,)``; closes the traces."""
        return finish(
            self.method, self.params, x0, reward, self.ledger, self.traces, self.cond, self.t0
        )
