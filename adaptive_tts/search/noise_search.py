"""Per-step noise search: eps-greedy (arXiv 2506.03164, Algorithm 1) and zero-order search
(the same code path with ``eps = 0``).

At each searchable step: draw a pivot ``xi ~ N(0, I)``; for ``k = 1..K_t`` draw ``N`` candidates,
each a fresh ``N(0, I)`` draw with probability ``eps`` or a neighbour
``pivot + u sqrt(2d) g / |g|`` (``u ~ U(0, lam)``, ``g ~ N(0, I)``); score each candidate by the
reward of the one-step x0 prediction ``D(x_hat(z), sigma_hat)``; the pivot becomes the best of
``{pivot, candidates}`` (ties keep the pivot, so its score never decreases). The chosen pivot's
network output is reused by the step. NFEs per searchable step: ``1 + N K_t`` (+1 for Heun).
"""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.nfe import Ledger
from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import (
    Scorer,
    StepCallback,
    base_trace,
    check_inputs,
    deterministic_step,
    evaluator,
    finish,
    rep,
    sqrt2d,
    unit_directions,
)
from adaptive_tts.types import Controller, Knobs, Reward, SearchResult, StepInfo


def _draw_step(
    k: int,
    n: int,
    eps: float,
    lam: float,
    g: torch.Generator,
    shape: tuple[int, ...],
    radius: float,
) -> tuple[Tensor, Tensor, Tensor]:
    """All random draws of one sample's ``k`` iterations at a step, in a fixed order.

    Returns ``explore`` ``(k, n)`` bool, ``fresh`` ``(k, n, *S)`` N(0, I) draws and ``offset``
    ``(k, n, *S)`` neighbour displacements ``u sqrt(2d) g / |g|`` (``u ~ U(0, lam)``), on the
    generator's device. Neighbours are ``pivot + offset`` with the pivot current at that
    iteration."""
    dev = g.device
    explore = torch.rand((k, n), generator=g, device=dev) < eps
    fresh = torch.randn((k, n, *shape), generator=g, device=dev)
    direction = unit_directions(torch.randn((k * n, *shape), generator=g, device=dev))
    u = torch.rand(k * n, generator=g, device=dev) * lam
    offset = (u * radius).view(-1, *([1] * len(shape))) * direction
    return explore, fresh, offset.view(k, n, *shape)


def _controller(
    controller: Controller | None, n: int, k: int, eps: float, lam: float
) -> Controller:
    if controller is not None:
        return controller
    from controllers.fixed import FixedController

    return FixedController(n=n, k=k, eps=eps, lam=lam)


def eps_greedy(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    controller: Controller | None = None,
    n: int = 4,
    k: int = 20,
    eps: float = 0.4,
    lam: float = 0.15,
    max_batch: int | None = None,
    callback: StepCallback | None = None,
    method: str = "eps-greedy",
) -> SearchResult:
    """Eps-greedy noise search over a batch.

    Args:
        denoiser: ``D(x, sigma, cond)``. sampler: steps with explicit noise.
        x_T: initial noise ``(B, *S)`` (``sigma_max`` scale). cond: ``(B,)`` or ``None``.
        reward: ``r(x0, cond) -> (B,)`` on model-space x0.
        generator: one CPU generator per sample.
        controller: decides ``(n, k_t, eps_t, lam)`` per step; default: fixed knobs from
            ``n, k, eps, lam``.
        max_batch: cap on rows per network call.
    Returns:
        :class:`SearchResult` with per-step traces (I_k, J_k, pivot scores).
    """
    gens = check_inputs(x_T, cond, generator)
    ctrl = _controller(controller, n, k, eps, lam)
    b = x_T.shape[0]
    t0 = time.perf_counter()
    ledger = Ledger(denoiser, b, max_batch)
    score = Scorer(reward, ledger)
    params = {"n": n, "k": k, "eps": eps, "lam": lam, "controller": type(ctrl).__name__}
    traces = [base_trace(method, sampler, params) for _ in range(b)]
    owner = torch.arange(b)
    radius = sqrt2d(x_T)
    x, x0 = x_T, None
    for i in range(sampler.num_steps):
        if sampler.noise_scale(i) == 0.0:
            x, x0 = deterministic_step(ledger, sampler, i, x, x0, cond, owner)
            for tr in traces:
                tr["steps"].append({"i": i, "sigma": sampler.sigma(i), "searchable": False})
            continue
        if sampler.needs_x0 and x0 is None:
            x0 = ledger(x, sampler.sigma(i), cond, owner, "step")
        x_det, sh, scale = sampler.pre(i, x, x0)
        pivot = randn_like_rows(x, gens)
        pivot_x0 = ledger(x_det + scale * pivot, sh, cond, owner, "step")
        pivot_score = score(pivot_x0, cond, owner)
        info = StepInfo(
            i,
            sampler.num_steps,
            sampler.sigma(i),
            sh,
            pivot_score.clone(),
            ledger.per_sample.clone(),
            cond,
            gens,
        )
        knobs: Knobs = ctrl.decide(info)
        knobs.validate(b)
        steps = [
            {
                "i": i,
                "sigma": sampler.sigma(i),
                "sigma_hat": sh,
                "searchable": True,
                "knobs": {
                    "n": knobs.n,
                    "k": int(knobs.k[j]),
                    "eps": float(knobs.eps[j]),
                    "lam": knobs.lam,
                },
                "initial_score": float(pivot_score[j]),
                "iters": [],
            }
            for j in range(b)
        ]
        kmax = int(knobs.k.max()) if b else 0
        shape = tuple(x.shape[1:])
        hist_i = torch.zeros(kmax, b, dtype=torch.bool)
        hist_j = torch.zeros(kmax, b, dtype=torch.bool)
        hist_s = torch.zeros(kmax, b)
        hist_e = torch.zeros(kmax, b, dtype=torch.long)
        if kmax > 0:
            draws = [
                _draw_step(
                    int(knobs.k[j]), knobs.n, float(knobs.eps[j]), knobs.lam, gens[j], shape, radius
                )
                for j in range(b)
            ]

            def pad(t: Tensor, kmax: int = kmax) -> Tensor:
                return torch.cat([t, t.new_zeros(kmax - t.shape[0], *t.shape[1:])])

            explore = torch.stack([pad(d[0]) for d in draws]).to(x.device)  # (B, K, n)
            fresh = torch.stack([pad(d[1]) for d in draws]).to(x.device, x.dtype)
            offset = torch.stack([pad(d[2]) for d in draws]).to(x.device, x.dtype)
        for it in range(kmax):
            act = torch.nonzero(knobs.k > it).flatten()
            a_dev = act.to(x.device)
            ex = explore[a_dev, it]  # (A, n)
            mask = ex.view(*ex.shape, *([1] * len(shape)))
            cand = torch.where(mask, fresh[a_dev, it], pivot[a_dev, None] + offset[a_dev, it])
            cand = cand.reshape(-1, *shape)  # (A * n, *S)
            own = rep(act, knobs.n)
            c_act = None if cond is None else cond[a_dev]
            x0c = ledger(
                rep(x_det[a_dev], knobs.n) + scale * cand, sh, rep(c_act, knobs.n), own, "score"
            )
            sc = score(x0c, rep(c_act, knobs.n), own).view(len(act), knobs.n)
            best_sc, best = sc.max(1)
            improved = best_sc > pivot_score[act]
            win = improved & ex.cpu()[torch.arange(len(act)), best]
            up, rows = act[improved], (torch.arange(len(act)) * knobs.n + best)[improved]
            if len(up):
                pivot[up.to(x.device)] = cand[rows.to(x.device)]
                pivot_x0[up.to(x.device)] = x0c[rows.to(x.device)]
                pivot_score[up] = best_sc[improved]
            hist_i[it, act], hist_j[it, act] = win, improved
            hist_s[it, act] = pivot_score[act]
            hist_e[it, act] = ex.sum(1).cpu()
        for j in range(b):
            steps[j]["iters"] = [
                {
                    "I": int(hist_i[t, j]),
                    "J": int(hist_j[t, j]),
                    "score": float(hist_s[t, j]),
                    "n_explore": int(hist_e[t, j]),
                }
                for t in range(int(knobs.k[j]))
            ]
            steps[j]["one_step_reward"] = float(pivot_score[j])
            traces[j]["steps"].append(steps[j])
        x_hat = x_det + scale * pivot
        x, x0 = sampler.post(i, x_hat, pivot_x0, evaluator(ledger, cond, owner, "step"))
        if callback is not None:
            callback({"i": i, "sigma": sampler.sigma(i), "x": x, "pivot_score": pivot_score})
    final = score(x, cond, owner)
    return finish(method, params, x, final, ledger, traces, cond, t0)


def zero_order(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    n: int = 4,
    k: int = 20,
    lam: float = 0.15,
    max_batch: int | None = None,
    callback: StepCallback | None = None,
) -> SearchResult:
    """Zero-order search: :func:`eps_greedy` with ``eps = 0`` (neighbours of the pivot only)."""
    return eps_greedy(
        denoiser,
        sampler,
        x_T,
        cond=cond,
        reward=reward,
        generator=generator,
        n=n,
        k=k,
        eps=0.0,
        lam=lam,
        max_batch=max_batch,
        callback=callback,
        method="zero-order",
    )
