"""(N, B)-beam search over per-step noise: keep ``B`` partial trajectories, expand each with
``N`` noise candidates, keep the ``B`` best by the one-step x0 reward, return the best final."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import SearchContext, check_positive, rep
from adaptive_tts.search.loop import Choice, StepContext
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
    params = {"n": n, "width": width}
    sc = SearchContext("beam", denoiser, sampler, x_T, cond, reward, generator, params, max_batch)
    b, shape = sc.b, x_T.shape[1:]
    rows_w, rows_c = sc.rows(width), sc.rows(width * n)

    def expand(ctx: StepContext) -> Choice:
        """Score ``width * n`` candidates per sample; keep the ``width`` best (any parent)."""
        xi = randn_like_rows(ctx.x_det, sc.gens, width * n)
        x0_hat = sc.ledger(rep(ctx.x_det, n) + ctx.scale * xi, ctx.sigma_hat, *rows_c, "score")
        r = sc.score(x0_hat, *rows_c).view(b, width * n)
        keep = r.topk(width, dim=1).indices  # (b, width)
        rows = (torch.arange(b)[:, None] * width * n + keep).flatten()
        for j, tr in enumerate(sc.traces):
            tr["steps"].append(
                {
                    "i": ctx.i,
                    "sigma": ctx.sigma,
                    "searchable": True,
                    "beam_scores": r[j, keep[j]].tolist(),
                }
            )
        return Choice(xi[rows], x0_hat=x0_hat[rows], parents=rows // n)

    x, _ = sc.denoise(rep(x_T, width), rows_w, expand)
    r = sc.score(x, *rows_w).view(b, width)
    best = r.argmax(1)
    pick = torch.arange(b) * width + best
    return sc.finish(x[pick].reshape(b, *shape), r[torch.arange(b), best])
