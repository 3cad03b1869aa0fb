"""The one denoising loop every search (and the model-quality script) runs.

:func:`denoise` iterates the sampler's steps from ``start``. A step whose noise scale is zero is
not searchable: it runs as one plain update (:func:`deterministic_step`). A noised step runs
``pre`` (fetching ``x0 = D(x, sigma_i)`` first if the sampler needs it and the previous step did
not leave it), then asks the **noise hook** which standardized noise ``xi`` to inject, evaluates
``x0_hat = D(x_det + scale xi, sigma_hat)`` unless the hook already did, and runs ``post``. The
**after hook**, if given, sees every step (plain ones too) once it is done.

The noise hook contract (k-diffusion's uniform per-step callback, with a return value)::

    choose(ctx: StepContext) -> Tensor | Choice

- ``ctx`` holds ``i``, ``sigma`` (``sigma_i``), ``sigma_hat`` (the noised point's level),
  ``scale`` (> 0), ``x`` (the incoming state ``(R, *S)``), ``x_det`` (the deterministic part
  ``(R, *S)``) and ``rows`` (``owner`` ``(R,)`` sample of each row, ``cond`` ``(R,)`` or
  ``None``). The hook may spend network calls (through the ledger, charged to ``rows.owner``),
  score candidates and write trace entries.
- Return the chosen noise ``xi`` ``(R, *S)`` (a plain step draws ``N(0, I)``), or a
  :class:`Choice` with ``xi`` and optionally ``x0_hat``: the chosen point's network output
  already computed (the step reuses it, no call), ``parents`` ``(R,)``: the ``x_det`` row each
  chosen noise continues (beam search keeps candidates of other rows), or ``next``: the step's
  result ``(x_next, x0_next)`` when the hook finished the step itself (MCTS posts every child
  to roll it out).

Eps-greedy's step as a hook (sketch)::

    def choose(ctx):
        pivot = randn_like_rows(ctx.x_det, gens)
        pivot_x0 = ledger(ctx.x_det + ctx.scale * pivot, ctx.sigma_hat, *ctx.rows, "step")
        ...  # score, controller.decide, K iterations moving the pivot, trace entry
        return Choice(pivot, x0_hat=pivot_x0)

    def after(i, x, ctx):  # plain steps get their trace entry; searched ones the callback
        if ctx is None:
            pending.add(i, sampler.sigma(i))
        elif callback is not None:
            callback({"i": i, "sigma": ctx.sigma, "x": x, "pivot_score": ...})

    x, _ = search.denoise(x_T, search.rows(), choose, after=after)

The loop evaluates nothing for a :class:`Choice` with ``x0_hat``: ``x_hat = x_det + scale xi``
and ``post(i, x_hat, x0_hat, ...)`` exactly as eps-greedy does today.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

from adaptive_tts.nfe import Ledger, Purpose
from adaptive_tts.sampling import Evaluate, Sampler, randn_like_rows


class Rows(NamedTuple):
    """Who the rows of a state belong to: ``owner`` ``(R,)`` sample index, ``cond`` ``(R,)``."""

    cond: Tensor | None
    owner: Tensor


@dataclass
class StepContext:
    """What the noise hook sees at a noised step ``i`` (states ``(R, *S)``)."""

    i: int
    sigma: float
    sigma_hat: float
    scale: float
    x: Tensor
    x_det: Tensor
    rows: Rows
    purpose: Purpose = "step"


@dataclass
class Choice:
    """A noise hook's answer (see the module docstring).

    Attributes:
        xi: chosen standardized noise ``(R, *S)``.
        x0_hat: ``D(x_det[parents] + scale xi, sigma_hat)`` if the hook computed it.
        parents: ``(R,)`` row of ``x_det`` each chosen noise continues (``None``: row ``r``).
        next: ``(x_next, x0_next)`` if the hook already finished the step.
    """

    xi: Tensor
    x0_hat: Tensor | None = None
    parents: Tensor | None = None
    next: tuple[Tensor, Tensor | None] | None = None


NoiseHook = Callable[[StepContext], Tensor | Choice]
AfterHook = Callable[[int, Tensor, StepContext | None], None]
"""``after(i, x_next, ctx)``: ``ctx`` is ``None`` for a plain (zero-noise) step."""
StepObserver = Callable[[int, Ledger, bool], None]
"""``observer(i, ledger, done)``: see :func:`observe_steps`."""
_OBSERVER: ContextVar[StepObserver | None] = ContextVar("adaptive_tts_steps", default=None)


def evaluator(ledger: Ledger, cond: Tensor | None, owner: Tensor, purpose: Purpose) -> Evaluate:
    """``evaluate(x, sigma)`` closure for a sampler's ``post`` phase."""
    return lambda x, s: ledger(x, s, cond, owner, purpose)


def deterministic_step(
    ledger: Ledger,
    sampler: Sampler,
    i: int,
    x: Tensor,
    x0: Tensor | None,
    cond: Tensor | None,
    owner: Tensor,
    purpose: Purpose = "step",
) -> tuple[Tensor, Tensor | None]:
    """A step whose noise scale is zero (nothing to search): one plain update."""
    if sampler.needs_x0 and x0 is None:
        x0 = ledger(x, sampler.sigma(i), cond, owner, purpose)
    x_det, sh, _ = sampler.pre(i, x, x0)
    x0_hat = ledger(x_det, sh, cond, owner, purpose) if sh > 0 else x_det
    return sampler.post(i, x_det, x0_hat, evaluator(ledger, cond, owner, purpose))


def fresh_noise(gens: list[torch.Generator], per: int = 1) -> NoiseHook:
    """The plain hook: ``N(0, I)`` per row, rows of sample ``b`` (``per`` each, sample-major)
    from ``gens[b]``."""
    return lambda ctx: randn_like_rows(ctx.x, gens, per)


def denoise(
    ledger: Ledger,
    sampler: Sampler,
    x: Tensor,
    rows: Rows,
    choose: NoiseHook,
    *,
    start: int = 0,
    x0: Tensor | None = None,
    purpose: Purpose = "step",
    after: AfterHook | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Run the sampler's steps ``start .. T-1`` on states ``x`` ``(R, *S)``.

    Args:
        rows: owner/cond of the rows (network calls are charged to ``rows.owner``).
        choose: the noise hook of noised steps; ``after``: called after every step.
        x0: ``D(x, sigma_start)`` if already known (used by samplers that need it).
        purpose: ledger purpose of the loop's own calls.
    Returns:
        ``(x_final (R, *S), x0)`` with ``x0`` the last known ``D(x_final, 0)`` or ``None``.
    """
    obs = _OBSERVER.get()
    for i in range(start, sampler.num_steps):
        if obs is None:
            x, x0 = _step(ledger, sampler, i, x, x0, rows, choose, purpose, after)
            continue
        token = _OBSERVER.set(None)  # nested loops (rollouts) are part of this step
        obs(i, ledger, False)
        try:
            x, x0 = _step(ledger, sampler, i, x, x0, rows, choose, purpose, after)
        finally:
            _OBSERVER.reset(token)
        obs(i, ledger, True)
    return x, x0


def _step(
    ledger: Ledger,
    sampler: Sampler,
    i: int,
    x: Tensor,
    x0: Tensor | None,
    rows: Rows,
    choose: NoiseHook,
    purpose: Purpose,
    after: AfterHook | None,
) -> tuple[Tensor, Tensor | None]:
    """Step ``i`` of :func:`denoise`."""
    cond, owner = rows
    if sampler.noise_scale(i) == 0.0:
        x, x0 = deterministic_step(ledger, sampler, i, x, x0, cond, owner, purpose)
        if after is not None:
            after(i, x, None)
        return x, x0
    if sampler.needs_x0 and x0 is None:
        x0 = ledger(x, sampler.sigma(i), cond, owner, purpose)
    x_det, sh, scale = sampler.pre(i, x, x0)
    ctx = StepContext(i, sampler.sigma(i), sh, scale, x, x_det, rows, purpose)
    ch = choose(ctx)
    if not isinstance(ch, Choice):
        ch = Choice(ch)
    if ch.next is not None:
        x, x0 = ch.next
    else:
        base = x_det if ch.parents is None else x_det[ch.parents]
        x_hat = base + scale * ch.xi
        x0_hat = ledger(x_hat, sh, cond, owner, purpose) if ch.x0_hat is None else ch.x0_hat
        x, x0 = sampler.post(i, x_hat, x0_hat, evaluator(ledger, cond, owner, purpose))
    if after is not None:
        after(i, x, ctx)
    return x, x0


@contextmanager
def observe_steps(observer: StepObserver) -> Iterator[None]:
    """Within the block, :func:`denoise` calls ``observer(i, ledger, done)`` as each step of
    its outermost loop starts (``done=False``) and ends (``True``): a per-step ledger can diff
    ``ledger`` (NFEs and reward calls per sample) across the step. Loops nested in a step (MCTS
    rollouts) are charged to that step. Nothing the search computes changes."""
    token = _OBSERVER.set(observer)
    try:
        yield
    finally:
        _OBSERVER.reset(token)
