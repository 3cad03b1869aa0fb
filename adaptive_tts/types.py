"""Protocols and plain records shared by samplers, searches, controllers and rewards."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import torch
from torch import Tensor

TRACE_SCHEMA = "adaptive_tts.trace/1"


class Denoiser(Protocol):
    """``D(x, sigma, cond) -> x0_hat``: ``x`` ``(B, *S)``, ``sigma`` ``(B,)``, ``cond`` ``(B,)``
    or ``None``; returns ``(B, *S)``.

    Optional attribute read by the ledger (:class:`adaptive_tts.nfe.Ledger`): ``nfe_per_call``
    (network evaluations per row, e.g. 2 with classifier-free guidance; default 1). What a task
    needs besides (sample shape, image view, ``sigma_max``) is declared by
    :class:`adaptive_tts.tasks.Backend`, not read from the denoiser.
    """

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor: ...


Reward = Callable[[Tensor, Tensor | None], Tensor]
"""``r(x0, cond) -> (B,)`` on model-space samples ``x0`` ``(B, *S)``; higher is better."""


@dataclass
class Knobs:
    """How much to search at one step.

    Attributes:
        n: candidates per iteration (same for the whole batch).
        k: iterations per sample, ``(B,)`` long (0: no search at this step).
        eps: exploration probability per sample, ``(B,)`` in [0, 1].
        lam: neighbour radius scale (radius ``u sqrt(2d)``, ``u ~ U(0, lam)``).
        move: how a neighbour is made from the pivot: ``"additive"`` (the paper's
            ``pivot + u sqrt(2d) g/|g|``) or ``"gaussian"`` (``sqrt(1 - b^2) pivot + b g`` with
            ``b = min(1, u sqrt(2))``, which keeps candidates ``N(0, I)``).
    """

    n: int
    k: Tensor
    eps: Tensor
    lam: float
    move: Literal["additive", "gaussian"] = "additive"

    def validate(self, batch: int) -> None:
        """Raise ``ValueError`` naming the knob: ``n`` an integer >= 1, ``k`` an integer tensor
        ``(B,)`` >= 0 (a float ``2.7`` is refused, not truncated), ``eps`` ``(B,)`` in [0, 1]
        (NaN refused), ``lam`` finite and >= 0, ``move`` one of the two moves."""
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ValueError(
                f"n (candidates per iteration) must be an integer >= 1, got {self.n!r}"
            )
        if self.k.shape != (batch,) or self.eps.shape != (batch,):
            raise ValueError(f"knobs k and eps must have shape ({batch},)")
        if self.k.dtype.is_floating_point or self.k.dtype.is_complex or self.k.dtype == torch.bool:
            raise ValueError(f"k (iterations) must be an integer tensor, got dtype {self.k.dtype}")
        if (self.k < 0).any():
            raise ValueError(f"k (iterations) must be >= 0, got {self.k.tolist()}")
        if not ((self.eps >= 0) & (self.eps <= 1)).all():  # NaN fails both comparisons
            raise ValueError(f"eps must lie in [0, 1], got {self.eps.tolist()}")
        if not (isinstance(self.lam, numbers.Real) and math.isfinite(self.lam) and self.lam >= 0):
            raise ValueError(f"lam must be a finite number >= 0, got {self.lam!r}")
        if self.move not in ("additive", "gaussian"):
            raise ValueError(f"move must be 'additive' or 'gaussian', got {self.move!r}")


@dataclass
class StepInfo:
    """What a controller sees before a searchable step.

    Attributes:
        index: step index ``i`` (0 = noisiest); ``num_steps``: T.
        sigma: ``sigma_i``; ``sigma_hat``: the level at which candidates are scored.
        scores: one-step reward of each sample's first (pivot) draw at this step, ``(B,)``,
            on the search's device (a GPU search does not wait for it: controllers that read
            the values move them to the host themselves).
        nfe: NFEs spent so far per sample, ``(B,)``.
        cond: conditioning, ``(B,)`` or ``None``.
        generators: the samples' generators (for controllers that draw, e.g. K_t ~ Bin).
        reward_calls: reward evaluations spent so far per sample, ``(B,)`` (``None``: not
            tracked); ``nfe_per_call``: NFEs of one network row (2 under classifier-free
            guidance), so a candidate costs that many NFEs.
    """

    index: int
    num_steps: int
    sigma: float
    sigma_hat: float
    scores: Tensor
    nfe: Tensor
    cond: Tensor | None = None
    generators: list[torch.Generator] | None = None
    reward_calls: Tensor | None = None
    nfe_per_call: int = 1

    @property
    def batch(self) -> int:
        """``B``, without reading ``scores`` back from the device."""
        return int(self.scores.shape[0])


class Controller(Protocol):
    """Decides the search knobs per step (see :mod:`controllers`)."""

    def decide(self, step: StepInfo) -> Knobs: ...


@dataclass
class IterInfo:
    """What a closed-loop controller sees after each search iteration of a step, for the
    samples that ran it (``A`` of the batch's ``B``).

    Attributes:
        step: the step's :class:`StepInfo` (sigma, sigma_hat, NFEs when the step began).
        iteration: iterations done at this step so far (1-based).
        active: batch indices of these samples, ``(A,)`` long, on the search's device.
        history: their pivot score after 0, 1, ..., ``iteration`` iterations,
            ``(A, iteration + 1)``, on the search's device.
        nfe: NFEs each of them has spent so far (this iteration included), ``(A,)`` long, host.
        knobs: the step's knobs (``knobs.k`` is each sample's iteration cap).
    """

    step: StepInfo
    iteration: int
    active: Tensor
    history: Tensor
    nfe: Tensor
    knobs: Knobs


class ClosedLoopController(Controller, Protocol):
    """A controller that may also stop a sample's search after any iteration of a step."""

    def keep_searching(self, it: IterInfo) -> Tensor:
        """``(A,)`` bool (device or host): True for samples that should run another iteration
        (a sample also stops once it reaches its cap ``knobs.k``)."""
        ...


@dataclass
class SearchResult:
    """Outcome of one search over a batch of B samples.

    Attributes:
        x0: final samples, model space, ``(B, *S)``.
        reward: final reward, ``(B,)``.
        nfe: counted NFEs per sample, ``(B,)`` long.
        nfe_by_purpose: per-sample counts split by purpose (``step``, ``score``, ``rollout``).
        reward_calls: reward evaluations per sample, ``(B,)``.
        traces: one JSON-ready trace per sample (schema :data:`TRACE_SCHEMA`).
        method: method name; ``params``: its settings; ``seconds``: wall time.
    """

    x0: Tensor
    reward: Tensor
    nfe: Tensor
    nfe_by_purpose: dict[str, list[int]]
    reward_calls: Tensor
    traces: list[dict[str, Any]]
    method: str
    params: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        """Batch means, JSON-ready."""
        return {
            "method": self.method,
            "params": self.params,
            "reward": float(self.reward.float().mean()),
            "nfe": float(self.nfe.float().mean()),
            "seconds": self.seconds,
        }


def as_cond(cond: Tensor | int | None, batch: int) -> Tensor | None:
    """Normalise conditioning to ``(B,)`` long (or ``None``), checking the shape."""
    if cond is None:
        return None
    t = torch.as_tensor(cond, dtype=torch.long)
    if t.dim() == 0:
        return t.expand(batch).clone()
    if t.shape != (batch,):
        raise ValueError(f"cond must be a scalar or have shape ({batch},), got {tuple(t.shape)}")
    return t
