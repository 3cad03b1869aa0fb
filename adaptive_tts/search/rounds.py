"""Shared plumbing of the sequential peers (rollover budget forcing, verifier-threshold search,
diffusion tree sampling): noise from each row owner's generator, the calls a step still owes
after its candidates, and rounds of candidates drawn and scored a batch at a time with a
per-sample stopping test."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler
from adaptive_tts.search.common import SearchContext
from adaptive_tts.search.loop import StepContext


def owner_noise(
    gens: list[torch.Generator], counts: list[int], shape: tuple[int, ...], like: Tensor
) -> Tensor:
    """``(sum(counts), *shape)`` standard normals: ``counts[b]`` rows from ``gens[b]`` in
    sample order (samples with count 0 draw nothing), on ``like``'s device and dtype."""
    parts = [
        torch.randn((c, *shape), generator=g, device=g.device)
        for g, c in zip(gens, counts)
        if c > 0
    ]
    if not parts:
        return like.new_zeros((0, *shape))
    return torch.cat(parts).to(device=like.device, dtype=like.dtype)


def uniform_rows(gens: list[torch.Generator], n: int) -> Tensor:
    """``(B, n)`` uniforms on the CPU, row ``b`` from ``gens[b]`` (one copy to the host)."""
    return torch.stack([torch.rand(n, generator=g, device=g.device) for g in gens]).cpu()


def owed_calls(sampler: Sampler, i: int) -> int:
    """Network calls a searched step ``i`` still makes after its candidates (the corrector),
    plus those of every later plain step: what must stay reserved under a hard budget."""
    rest = sum(sampler.calls_per_step(j) for j in range(i + 1, sampler.num_steps))
    return sampler.corrector_calls(i) + rest


def check_budget(name: str, budget: int | None, minimum: int) -> None:
    """``budget`` (NFEs per sample) must be ``None`` or an integer >= ``minimum``."""
    if budget is None:
        return
    if not isinstance(budget, int) or isinstance(budget, bool) or budget < minimum:
        raise ValueError(
            f"{name} must be None or an integer >= {minimum} (one plain trajectory's NFEs), "
            f"got {budget!r}"
        )


@dataclass
class Rounds:
    """Outcome of :func:`candidate_rounds` for the ``B`` samples of a step.

    Attributes:
        xi: each sample's best candidate noise ``(B, *S)``; x0_hat: its network output.
        score: its score ``(B,)`` (CPU); tried: candidates each sample evaluated ``(B,)`` long;
        hit: whether the sample's stopping test passed ``(B,)`` bool.
    """

    xi: Tensor
    x0_hat: Tensor
    score: Tensor
    tried: Tensor
    hit: Tensor


def candidate_rounds(
    sc: SearchContext, ctx: StepContext, allow: Tensor, n: int, target: Tensor, strict: bool
) -> Rounds:
    """Draw and score candidates ``n`` per sample at a time (the last round may be smaller)
    until a sample's round holds one scoring above ``target`` (``>`` if ``strict``, else
    ``>=``) or it has tried ``allow`` candidates; all samples still going share one network
    call per round. Each sample keeps its best candidate of the step.

    Args:
        allow: ``(B,)`` long, >= 1: candidates each sample may evaluate at this step.
        target: ``(B,)`` float (CPU) score to beat.
    """
    b, shape = sc.b, tuple(ctx.x_det.shape[1:])
    best_sc = torch.full((b,), -torch.inf)
    best_xi = torch.zeros_like(ctx.x_det)
    best_x0 = torch.zeros_like(ctx.x_det)
    tried = torch.zeros(b, dtype=torch.long)
    hit = torch.zeros(b, dtype=torch.bool)
    while True:
        live = (~hit) & (tried < allow)
        if not bool(live.any()):
            break
        counts = torch.where(live, (allow - tried).clamp(max=n), 0)
        act = torch.nonzero(live).flatten()
        m = counts[act]
        owner = torch.repeat_interleave(act, m)
        xi = owner_noise(sc.gens, counts.tolist(), shape, ctx.x_det)
        dev_owner = owner.to(ctx.x_det.device)
        c = None if sc.cond is None else sc.cond[dev_owner]
        x0 = sc.ledger(ctx.x_det[dev_owner] + ctx.scale * xi, ctx.sigma_hat, c, owner, "score")
        s = sc.score(x0, c, owner)
        offsets = torch.cumsum(m, 0) - m
        local = torch.repeat_interleave(torch.arange(len(act)), m)
        grid = torch.full((len(act), n), -torch.inf)
        grid[local, torch.arange(len(s)) - offsets[local]] = s
        top, arg = grid.max(1)
        rows = offsets + arg
        better = top > best_sc[act]
        upd, src = act[better], rows[better]
        best_sc[upd] = top[better]
        dev_upd, dev_src = upd.to(x0.device), src.to(x0.device)
        best_xi[dev_upd] = xi[dev_src]
        best_x0[dev_upd] = x0[dev_src]
        tried[act] += m
        hit[act] = top > target[act] if strict else top >= target[act]
    return Rounds(best_xi, best_x0, best_sc, tried, hit)
