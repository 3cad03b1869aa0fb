"""(N, B)-beam search over per-step noise: keep ``B`` partial trajectories, expand each with
``N`` noise candidates, keep the ``B`` best by the one-step x0 reward, return the best final."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.nfe import Ledger
from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import (
    Scorer,
    base_trace,
    check_inputs,
    check_positive,
    deterministic_step,
    evaluator,
    finish,
    rep,
)
from adaptive_tts.types import Reward, SearchResult


def beam(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    n: int = 4,
    width: int = 2,
    max_batch: int | None = None,
) -> SearchResult:
    """Beam search; all ``B_samples * width * n`` candidates of a step go in one network call.

    NFEs per searchable step: ``width * n`` scoring calls (+ ``width`` for Heun).
    """
    check_positive("n", n)
    check_positive("width", width)
    gens = check_inputs(x_T, cond, generator)
    b, shape = x_T.shape[0], x_T.shape[1:]
    t0 = time.perf_counter()
    ledger = Ledger(denoiser, b, max_batch)
    score = Scorer(reward, ledger)
    params = {"n": n, "width": width}
    traces = [base_trace("beam", sampler, params) for _ in range(b)]
    owner_w = rep(torch.arange(b), width)
    owner_c = rep(torch.arange(b), width * n)
    assert owner_w is not None and owner_c is not None
    cond_w, cond_c = rep(cond, width), rep(cond, width * n)
    x, x0 = rep(x_T, width), None
    assert x is not None
    for i in range(sampler.num_steps):
        if sampler.noise_scale(i) == 0.0:
            x, x0 = deterministic_step(ledger, sampler, i, x, x0, cond_w, owner_w)
            continue
        if sampler.needs_x0 and x0 is None:
            x0 = ledger(x, sampler.sigma(i), cond_w, owner_w, "step")
        x_det, sh, scale = sampler.pre(i, x, x0)
        x_hat = rep(x_det, n) + scale * randn_like_rows(x_det, gens, width * n)  # type: ignore[operator]
        x0_hat = ledger(x_hat, sh, cond_c, owner_c, "score")
        sc = score(x0_hat, cond_c, owner_c).view(b, width * n)
        keep = sc.topk(width, dim=1).indices  # (b, width)
        rows = (torch.arange(b)[:, None] * width * n + keep).flatten()
        for j in range(b):
            traces[j]["steps"].append(
                {
                    "i": i,
                    "sigma": sampler.sigma(i),
                    "searchable": True,
                    "beam_scores": sc[j, keep[j]].tolist(),
                }
            )
        x, x0 = sampler.post(
            i, x_hat[rows], x0_hat[rows], evaluator(ledger, cond_w, owner_w, "step")
        )
    r = score(x, cond_w, owner_w).view(b, width)
    best = r.argmax(1)
    pick = torch.arange(b) * width + best
    return finish(
        "beam",
        params,
        x[pick].reshape(b, *shape),
        r[torch.arange(b), best],
        ledger,
        traces,
        cond,
        t0,
    )
