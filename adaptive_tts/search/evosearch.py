"""EvoSearch: evolutionary search along the denoising trajectory (seed 002, arXiv 2505.17618).

Rounds, for an evolution schedule ``t_0 = 0 < t_1 < ... < t_{G-1}`` (step indices, 0 = ``x_T``)
and population sizes ``P_0, ..., P_{G-1}``:

* **Initial round.** ``P_0`` trajectories: member 0 starts at ``x_T``, the others at
  ``sigma_max N(0, I)`` from the sample's generator. Each is denoised to its final ``x0`` (fitness
  is the reward of that fully denoised ``x0``, never a one-step estimate) and the states it passes
  at the later scheduled steps ``t_1 .. t_{G-1}`` are cached.
* **Generation g at ``t_g``** (g = 0 .. G-1). From the current population (the previous round's
  members): the top ``elites`` (m) by fitness survive *unmutated*: they keep their state, cache,
  final ``x0`` and fitness and are not denoised again. The other ``P_g - m`` members are children:
  a parent is picked by tournament selection (``tournament`` contestants drawn uniformly with
  replacement from the population with the sample's generator, the fittest wins), and its state
  at ``t_g`` is mutated:

  - at ``t_g = 0`` (``x_T``): Gaussian-preserving, ``x' = sqrt(1 - beta^2) x + beta sigma_max eps``
    (i.e. ``xi' = sqrt(1 - beta^2) xi + beta eps`` on the standardized noise, which stays
    ``N(0, I)``);
  - at ``t_g > 0``: ``x' = x + s_t eps`` with ``s_t = sampler.noise_scale(t_g)``, the noise the
    sampler's own SDE step injects at ``t_g`` (EDM: churn ``sqrt(sigma_hat^2 - sigma^2)``;
    ancestral: ``sigma_up``). A scheduled step with zero noise scale is rejected: the mutation
    would be the identity.

  Children are denoised from ``t_g`` to ``x0`` (caching their states at the scheduled steps after
  ``t_g``) and scored. The population moves forward: the next generation mutates states at
  ``t_{g+1}``, all of which are cached, so no state is ever denoised twice.

The result is the best final ``x0`` over every member of every round.

NFEs (counted by the ledger; tests compare with this formula)::

    N = P_0 C(0) + sum_g (P_g - m) C(t_g)

with ``C(t)`` the NFEs of one plain trajectory from step ``t`` with nothing known
(:func:`trajectory_nfe`: Euler ``T - t``; Heun ``sum_{i >= t} (1 + [sigma_{i+1} > 0])``; ancestral
``1 + sum_{i >= t} [sigma_{i+1} > 0]``), times ``nfe_per_call``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import SearchContext, check_positive
from adaptive_tts.search.loop import StepContext
from adaptive_tts.search.seed_space import check_beta, gaussian_mix
from adaptive_tts.types import Reward, SearchResult


def trajectory_nfe(sampler: Sampler, start: int = 0, nfe_per_call: int = 1) -> int:
    """Closed-form NFEs of one plain trajectory from step ``start`` (no ``x0`` known)."""
    return sampler.trajectory_calls(start) * nfe_per_call


def evosearch_nfe(
    sampler: Sampler,
    schedule: Sequence[int],
    population: Sequence[int],
    elites: int,
    nfe_per_call: int = 1,
) -> int:
    """Closed-form per-sample NFEs: ``P_0 C(0) + sum_g (P_g - m) C(t_g)``."""
    total = population[0] * trajectory_nfe(sampler, 0)
    total += sum((p - elites) * trajectory_nfe(sampler, t) for t, p in zip(schedule, population))
    return total * nfe_per_call


def check_evo_settings(
    sampler: Sampler,
    schedule: Sequence[int],
    population: Sequence[int],
    elites: int,
    tournament: int,
    beta: float,
) -> None:
    """Validate EvoSearch settings; raise ``ValueError`` naming the offending parameter."""
    sched, pops = list(schedule), list(population)
    if not sched:
        raise ValueError("schedule must hold at least one step index (the first must be 0)")
    if any(not isinstance(t, int) for t in sched):
        raise ValueError(f"schedule must hold integer step indices, got {sched}")
    if sched[0] != 0:
        raise ValueError(f"schedule must start at 0 (x_T), got {sched}")
    if any(b <= a for a, b in zip(sched, sched[1:])):
        raise ValueError(f"schedule must be strictly increasing, got {sched}")
    if sched[-1] > sampler.num_steps - 1:
        raise ValueError(
            f"schedule steps must lie in [0, {sampler.num_steps - 1}] (sampler steps), got {sched}"
        )
    for t in sched[1:]:
        if sampler.noise_scale(t) == 0.0:
            raise ValueError(
                f"schedule step {t} has zero noise scale (sigma={sampler.sigma(t):.4g}): "
                "mutation there is the identity; schedule only steps with noise"
            )
    if len(pops) != len(sched):
        raise ValueError(
            f"population must give one size per schedule step ({len(sched)}), got {len(pops)}"
        )
    check_positive("elites", elites, minimum=0)
    check_positive("tournament", tournament)
    for p in pops:
        if not isinstance(p, int) or p < max(elites, 1):
            raise ValueError(
                f"population sizes must be integers >= max(elites={elites}, 1), got {pops}"
            )
    check_beta(beta)


def _tournament(fit: Tensor, n: int, size: int, gens: list[torch.Generator]) -> Tensor:
    """Parents ``(B, n)``: per sample, the fittest of ``size`` uniform draws from ``fit`` ``(B, P)``
    (ties: first drawn), drawn with the sample's generator."""
    p = fit.shape[1]
    draws = torch.stack(
        [torch.randint(0, p, (n, size), generator=g, device=g.device).cpu() for g in gens]
    )
    rows = torch.arange(fit.shape[0])[:, None, None]
    win = fit[rows, draws].argmax(-1, keepdim=True)  # (B, n, 1)
    return draws.gather(-1, win).squeeze(-1)


def evosearch(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    schedule: Sequence[int] = (0, 6, 12),
    population: Sequence[int] = (8, 4, 4),
    elites: int = 2,
    tournament: int = 2,
    beta: float = 0.3,
    max_batch: int | None = None,
) -> SearchResult:
    """EvoSearch over a batch of ``B`` samples (see the module docstring for the algorithm and
    the NFE formula).

    Args:
        denoiser: ``D(x, sigma, cond)``. sampler: steps with explicit noise.
        x_T: initial noise ``(B, *S)`` (``sigma_max`` scale). cond: ``(B,)`` or ``None``.
        reward: ``r(x0, cond) -> (B,)`` on model-space x0.
        generator: one CPU generator per sample (all draws; batch-independent results).
        schedule: strictly increasing step indices, first 0, all ``< sampler.num_steps``.
        population: size per scheduled step (``P_g >= max(elites, 1)``); ``P_0`` also sizes the
            initial round.
        elites: m, members kept unmutated per generation (>= 0).
        tournament: tournament size (>= 1; 1 = uniform parent choice).
        beta: Gaussian-preserving mutation strength at ``x_T``, in [0, 1].
        max_batch: cap on rows per network call.
    Returns:
        :class:`SearchResult`; each trace's ``rounds`` lists per round the ``step``, the
        population's member ``ids`` and ``rewards`` after the round, and for generations the
        ``elite_ids``, ``parent_ids`` and ``child_ids`` (``best_id``: the returned member).
    """
    check_evo_settings(sampler, schedule, population, elites, tournament, beta)
    sched, pops, m = list(schedule), list(population), elites
    params: dict[str, Any] = {
        "schedule": sched,
        "population": pops,
        "elites": m,
        "tournament": tournament,
        "beta": beta,
    }
    sc = SearchContext(
        "evosearch", denoiser, sampler, x_T, cond, reward, generator, params, max_batch
    )
    gens, b, shape = sc.gens, sc.b, sc.shape
    sigma0 = sampler.sigma(0)
    rows = torch.arange(b)[:, None]

    def denoise(start: Tensor, t: int) -> tuple[Tensor, Tensor, dict[int, Tensor]]:
        """Denoise states ``(B, P, *S)`` at step ``t``: finals ``(B, P, *S)``, rewards ``(B, P)``,
        cached states ``{s: (B, P, *S)}`` for the scheduled steps ``s > t`` (all noised)."""
        per = start.shape[1]
        later, saved = {s for s in sched if s > t}, {}

        def draw(ctx: StepContext) -> Tensor:
            if ctx.i in later:
                saved[ctx.i] = ctx.x.clone()
            return randn_like_rows(ctx.x, gens, per)

        r = sc.rows(per)
        final, _ = sc.denoise(start.reshape(b * per, *shape), r, draw, start=t)
        cache = {s: v.view(b, per, *shape) for s, v in saved.items()}
        return final.view(b, per, *shape), sc.score(final, *r).view(b, per), cache

    # Initial round: member 0 at x_T, the others fresh.
    p0 = pops[0]
    start = x_T.unsqueeze(1).repeat(1, p0, *([1] * len(shape)))
    if p0 > 1:
        start[:, 1:] = (randn_like_rows(x_T, gens, p0 - 1) * sigma0).view(b, p0 - 1, *shape)
    pop_x0, pop_fit, pop_cache = denoise(start, 0)
    pop_cache[0] = start
    pop_ids = torch.arange(p0).expand(b, p0)
    next_id = p0
    for j, tr in enumerate(sc.traces):
        tr["rounds"] = [
            {
                "step": 0,
                "kind": "initial",
                "ids": pop_ids[j].tolist(),
                "rewards": pop_fit[j].tolist(),
            }
        ]
    best_fit, best_idx = pop_fit.max(1)
    best_x0, best_id = pop_x0[torch.arange(b), best_idx], pop_ids[torch.arange(b), best_idx]

    for t, p in zip(sched, pops):
        nc = p - m
        keep = pop_fit.topk(m, dim=1).indices  # (B, m), best first
        parents = _tournament(pop_fit, nc, tournament, gens)  # (B, nc)
        parent_x = pop_cache[t][rows, parents]  # (B, nc, *S)
        if nc > 0:
            eps = randn_like_rows(x_T, gens, nc).view(b, nc, *shape)
            if t == 0:
                child = gaussian_mix(parent_x, sigma0 * eps, beta)
            else:
                child = parent_x + sampler.noise_scale(t) * eps
            c_x0, c_fit, c_cache = denoise(child, t)
        else:
            c_x0, c_fit, c_cache = pop_x0[:, :0], pop_fit[:, :0], {}
        c_ids = torch.arange(next_id, next_id + nc).expand(b, nc)
        next_id += nc
        later = [s for s in sched if s > t]
        parent_ids, elite_ids = pop_ids[rows, parents], pop_ids[rows, keep]
        pop_x0 = torch.cat([pop_x0[rows, keep], c_x0], 1)
        pop_fit = torch.cat([pop_fit[rows, keep], c_fit], 1)
        pop_cache = {
            s: torch.cat([pop_cache[s][rows, keep], c_cache.get(s, pop_x0[:, :0])], 1)
            for s in later
        }
        pop_ids = torch.cat([elite_ids, c_ids], 1)
        for j, tr in enumerate(sc.traces):
            tr["rounds"].append(
                {
                    "step": t,
                    "kind": "generation",
                    "mutation": "gaussian" if t == 0 else "sde",
                    "mutation_scale": beta if t == 0 else sampler.noise_scale(t),
                    "elite_ids": elite_ids[j].tolist(),
                    "parent_ids": parent_ids[j].tolist(),
                    "child_ids": c_ids[j].tolist(),
                    "ids": pop_ids[j].tolist(),
                    "rewards": pop_fit[j].tolist(),
                }
            )
        if nc > 0:
            cf, ci = c_fit.max(1)
            better = cf > best_fit
            best_fit = torch.where(better, cf, best_fit)
            mask = better.to(best_x0.device).view(-1, *([1] * len(shape)))
            best_x0 = torch.where(mask, c_x0[torch.arange(b), ci], best_x0)
            best_id = torch.where(better, c_ids[torch.arange(b), ci], best_id)

    for j, tr in enumerate(sc.traces):
        tr["best_id"] = int(best_id[j])
        tr["members"] = next_id
    return sc.finish(best_x0, best_fit)
