"""EACPS: seed-space search with a global and a local stage (seeds 000/001, ALGORITHMS.md).

Global stage: ``k_global`` candidate trajectories per sample, scored on their final ``x0`` by the
reward (pass a :class:`~adaptive_tts.rewards.Composite` for the weighted potential
``U(x) = sum_k w_k v_k(x)``); the top ``elites`` (M) are kept. Local stage: ``k_local`` children
per elite. The answer is the argmax over all ``k_global + M k_local`` candidates.

A candidate is fully described by its *noise*: the initial state ``x_T = sigma_max xi_0`` and the
standardized noise ``xi_i ~ N(0, I)`` the sampler injects at every step with a non-zero noise
scale. Two locality modes define a child from its elite:

* ``"noise"``: every noise of the child mixes the elite's with fresh noise,
  ``xi_child = sqrt(1 - beta^2) xi_elite + beta eta`` with ``eta ~ N(0, I)`` independent; this map
  sends ``N(0, I)`` to ``N(0, I)`` (variances ``(1 - beta^2) + beta^2 = 1``), so every injected
  noise keeps the law the sampler expects. We mix the per-step noise too (not only ``xi_0``): with
  a stochastic sampler the per-step noise moves the output as much as ``x_T`` does, and fresh
  per-step noise would make a child barely closer to its elite than an independent draw.
  ``beta = 0`` reproduces the elite exactly; ``beta = 1`` is a fresh independent candidate.
* ``"seed"``: the literal write-up. Candidate ``j`` is an integer seed ``s_j``; its whole noise
  comes from ``torch.Generator().manual_seed(s_j)`` (``xi_0`` first, then one draw per noised
  step, the order of :func:`~adaptive_tts.sampling.initial_noise` followed by
  :func:`~adaptive_tts.search.common.trajectory`); children are ``s_elite + delta``,
  ``delta = 1..k_local``. With standard PRNGs (torch's Philox/Mersenne-Twister seeding)
  neighbouring integer seeds give *independent* noise, so this mode is statistically the same as
  best-of-N with ``k_global + M k_local`` draws; it is offered to measure exactly that.

NFEs: exactly ``(k_global + M k_local)`` times one trajectory's count; each stage's candidates of
all samples go through the network as one batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import SearchContext, check_positive
from adaptive_tts.search.seed_space import bank_noise, check_beta, gaussian_mix, noised_steps
from adaptive_tts.seeds import check_seed
from adaptive_tts.types import Reward, SearchResult

Locality = Literal["noise", "seed"]
__all__ = ["Locality", "eacps", "gaussian_mix"]


def _from_seed(seed: int, shape: tuple[int, ...], n: int, sigma0: float) -> tuple[Tensor, Tensor]:
    """A seed's noise: ``(x_start (*S), bank (n, *S))``, drawn in the order of
    :func:`~adaptive_tts.sampling.initial_noise` then one draw per noised step."""
    g = torch.Generator().manual_seed(int(seed))
    start = torch.randn(shape, generator=g) * sigma0
    draws = [torch.randn(shape, generator=g) for _ in range(n)]
    return start, torch.stack(draws) if draws else torch.zeros(0, *shape)


def _seed_noise(
    seeds: Tensor, shape: tuple[int, ...], n: int, sigma0: float, like: Tensor
) -> tuple[Tensor, Tensor]:
    """Starts ``(B, C, *S)`` and banks ``(B, C, n, *S)`` for integer seeds ``(B, C)``."""
    pairs = [_from_seed(int(s), shape, n, sigma0) for s in seeds.flatten().tolist()]
    starts = torch.stack([p[0] for p in pairs]).view(*seeds.shape, *shape)
    banks = torch.stack([p[1] for p in pairs]).view(*seeds.shape, n, *shape)
    return starts.to(like), banks.to(like)


def _seed_bases(seed_base: int | Sequence[int] | None, b: int, span: int) -> list[int] | None:
    """The per-sample seed bases, each checked with the ``span`` seeds ``base .. base + span - 1``
    it uses in :func:`~adaptive_tts.seeds.check_seed`'s range (no aliasing seeds)."""
    if seed_base is None:
        return None
    many = isinstance(seed_base, (list, tuple))
    bases = list(seed_base) if many else [seed_base] * b  # type: ignore[arg-type]
    if len(bases) != b:
        raise ValueError(
            f"seed_base must be None, an integer >= 0 or {b} integers >= 0, got {seed_base!r}"
        )
    return [check_seed(s, "seed_base", span) for s in bases]


def eacps(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    k_global: int = 8,
    elites: int = 3,
    k_local: int = 4,
    locality: Locality = "noise",
    beta: float = 0.3,
    seed_base: int | Sequence[int] | None = None,
    max_batch: int | None = None,
) -> SearchResult:
    """EACPS over a batch of ``B`` samples (see the module docstring).

    Args:
        denoiser: ``D(x, sigma, cond)``. sampler: steps with explicit noise.
        x_T: initial noise ``(B, *S)`` (``sigma_max`` scale). cond: ``(B,)`` or ``None``.
        reward: ``r(x0, cond) -> (B,)``; a ``Composite`` gives the weighted potential.
        generator: one CPU generator per sample; every draw of sample ``b`` comes from it, so a
            sample's result does not depend on the rest of the batch.
        k_global: global candidates (>= 1). ``"noise"`` mode: candidate 0 starts at ``x_T``,
            the others at ``sigma_max N(0, I)`` from the sample's generator, per-step noise too.
        elites: M, elites kept for the local stage (1 <= M <= k_global).
        k_local: children per elite (>= 0).
        locality: ``"noise"`` (Gaussian-preserving mixing) or ``"seed"`` (seed + delta).
        beta: mixing strength in [0, 1] (``"noise"`` mode only).
        seed_base: ``"seed"`` mode: ``None`` draws the global seeds uniformly from
            ``[0, 2^31)`` with the sample's generator; an integer (or one per sample) ``s`` gives
            seeds ``s + j (k_local + 1)``, so children ``s_j + delta`` never collide with another
            global seed. Candidate 0 of seed ``s`` then starts at exactly the ``x_T`` that
            :func:`~adaptive_tts.runner.run_method` builds for seed ``s`` (and runs naive's
            trajectory). In ``"seed"`` mode ``x_T`` only gives shape, dtype and device.
        max_batch: cap on rows per network call.
    Returns:
        :class:`SearchResult`; each trace holds ``global`` (``rewards`` ``[k_global]``,
        ``elites``: candidate indices, best first, ``seeds`` in seed mode), ``local``
        (``parents``: elite index of each child, ``rewards`` ``[M k_local]``, ``seeds``) and
        ``best`` (``stage``, ``index``).
    """
    check_positive("k_global", k_global)
    check_positive("elites", elites)
    check_positive("k_local", k_local, minimum=0)
    if elites > k_global:
        raise ValueError(f"elites (M) must lie in [1, k_global={k_global}], got {elites}")
    if locality not in ("noise", "seed"):
        raise ValueError(f"locality must be 'noise' or 'seed', got {locality!r}")
    check_beta(beta)
    m, kl = elites, k_local
    params: dict[str, Any] = {
        "k_global": k_global,
        "elites": m,
        "k_local": kl,
        "locality": locality,
        "beta": beta,
        "seed_base": seed_base,
        "candidates": k_global + m * kl,
    }
    sc = SearchContext("eacps", denoiser, sampler, x_T, cond, reward, generator, params, max_batch)
    gens, b, shape = sc.gens, sc.b, sc.shape
    bases = _seed_bases(seed_base, b, k_global * (kl + 1))
    if not (seed_base is None or isinstance(seed_base, int)):
        params["seed_base"] = bases
    steps = noised_steps(sampler)
    n, sigma0 = len(steps), sampler.sigma(0)

    def run(starts: Tensor, banks: Tensor, per: int) -> tuple[Tensor, Tensor]:
        """Run starts ``(B, per, *S)`` with banks ``(B, per, n, *S)``: finals ``(B, per, *S)``
        and rewards ``(B, per)``."""
        rows = sc.rows(per)
        bank = banks.reshape(b * per, n, *shape)
        final, _ = sc.denoise(starts.reshape(b * per, *shape), rows, bank_noise(bank, steps))
        return final.view(b, per, *shape), sc.score(final, *rows).view(b, per)

    # Global stage.
    seeds_g = seeds_l = None
    if locality == "seed":
        if bases is None:
            seeds_g = torch.stack(
                [
                    torch.randint(0, 2**31, (k_global,), generator=g, device=g.device).cpu()
                    for g in gens
                ]
            )
        else:
            seeds_g = torch.tensor(bases)[:, None] + torch.arange(k_global) * (kl + 1)
        starts_g, banks_g = _seed_noise(seeds_g, shape, n, sigma0, x_T)
    else:
        starts_g = x_T.unsqueeze(1).repeat(1, k_global, *([1] * len(shape)))
        if k_global > 1:
            extra = randn_like_rows(x_T, gens, k_global - 1) * sigma0
            starts_g[:, 1:] = extra.view(b, k_global - 1, *shape)
        banks_g = randn_like_rows(x_T, gens, k_global * n).view(b, k_global, n, *shape)
    final_g, r_g = run(starts_g, banks_g, k_global)
    elite = r_g.topk(m, dim=1).indices  # (B, M), best first
    rows = torch.arange(b)[:, None]

    # Local stage: children of elite e are columns e*kl .. e*kl + kl - 1.
    finals, rewards = [final_g], [r_g]
    parents = elite.repeat_interleave(kl, dim=1)  # (B, M kl) global index of each child's elite
    if kl > 0:
        if locality == "seed":
            assert seeds_g is not None
            seeds_l = seeds_g[rows, parents] + torch.arange(1, kl + 1).repeat(m)
            starts_l, banks_l = _seed_noise(seeds_l, shape, n, sigma0, x_T)
        else:
            eta0 = randn_like_rows(x_T, gens, m * kl).view(b, m * kl, *shape)
            eta = randn_like_rows(x_T, gens, m * kl * n).view(b, m * kl, n, *shape)
            starts_l = gaussian_mix(starts_g[rows, parents], sigma0 * eta0, beta)
            banks_l = gaussian_mix(banks_g[rows, parents], eta, beta)
        final_l, r_l = run(starts_l, banks_l, m * kl)
        finals.append(final_l)
        rewards.append(r_l)

    all_x, all_r = torch.cat(finals, 1), torch.cat(rewards, 1)  # (B, K + M kl, ...)
    best = all_r.argmax(1)
    for j, tr in enumerate(sc.traces):
        tr["global"] = {"rewards": r_g[j].tolist(), "elites": elite[j].tolist()}
        tr["local"] = {"parents": parents[j].tolist(), "rewards": rewards[-1][j].tolist()}
        if kl == 0:
            tr["local"]["rewards"] = []
        if seeds_g is not None:
            tr["global"]["seeds"] = seeds_g[j].tolist()
            tr["local"]["seeds"] = [] if seeds_l is None else seeds_l[j].tolist()
        k = int(best[j])
        tr["best"] = (
            {"stage": "global", "index": k}
            if k < k_global
            else {"stage": "local", "index": k - k_global}
        )
    return sc.finish(all_x[torch.arange(b), best], all_r[torch.arange(b), best])
