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
from collections import deque
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
    k: int, n: int, g: torch.Generator, shape: tuple[int, ...]
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """All random draws of one sample's ``k`` iterations at a step, in a fixed order, on the
    generator's device: exploration uniforms ``(k, n)``, fresh N(0, I) draws ``(k, n, *S)``,
    neighbour directions (unnormalised, ``(k, n, *S)``) and radius uniforms ``(k, n)``.
    :func:`_candidates_noise` turns the whole batch's draws into candidates in one pass."""
    dev = g.device
    explore_u = torch.rand((k, n), generator=g, device=dev)
    fresh = torch.randn((k, n, *shape), generator=g, device=dev)
    direction = torch.randn((k * n, *shape), generator=g, device=dev)
    u = torch.rand(k * n, generator=g, device=dev)
    return explore_u, fresh, direction.view(k, n, *shape), u.view(k, n)


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """Host tensor to ``device`` without the host waiting for the GPU (a plain copy from
    pageable memory would synchronise the stream): pinned + non-blocking on CUDA."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _candidates_noise(
    draws: list[tuple[Tensor, Tensor, Tensor, Tensor]],
    eps: Tensor,
    lam: float,
    radius: float,
    kmax: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor]:
    """Stack per-sample draws (padded to ``kmax`` iterations) into ``explore`` ``(B, K, n)``
    bool, ``fresh`` ``(B, K, n, *S)`` and neighbour offsets ``u sqrt(2d) g / |g|``
    (``u ~ U(0, lam)``) ``(B, K, n, *S)``; neighbours are ``pivot + offset`` with the pivot
    current at that iteration."""

    def stack(i: int) -> Tensor:
        parts = [d[i] for d in draws]
        if any(p.shape[0] != kmax for p in parts):
            parts = [torch.cat([p, p.new_zeros(kmax - p.shape[0], *p.shape[1:])]) for p in parts]
        return _to_device(torch.stack(parts), device)

    explore_u, fresh, direction, u = (stack(i) for i in range(4))
    b, _, n = explore_u.shape
    trailing = [1] * (fresh.dim() - 3)
    explore = explore_u < _to_device(eps.to(explore_u.dtype), device).view(b, 1, 1)
    unit = unit_directions(direction.reshape(b * kmax * n, *direction.shape[3:]))
    offset = ((u * lam) * radius).view(b, kmax, n, *trailing) * unit.view(direction.shape)
    return explore, fresh.to(dtype), offset.to(dtype)


def _search_step(
    ledger: Ledger,
    score: Scorer,
    knobs: Knobs,
    gens: list[torch.Generator],
    radius: float,
    x_det: Tensor,
    sh: float,
    scale: float,
    cond: Tensor | None,
    pivot: Tensor,
    pivot_x0: Tensor,
    pivot_score: Tensor,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...]]:
    """The ``K_t`` iterations of one step, kept on the device (no host synchronisation).

    ``pivot``/``pivot_x0`` ``(B, *S)`` and ``pivot_score`` ``(B,)`` are the step's starting pivot;
    returns the final ones and the history ``(I, J, score, n_explore)``, each ``(K_max, B)``
    on the device (rows past a sample's ``k_t`` stay zero)."""
    dev, b, n = x_det.device, x_det.shape[0], knobs.n
    shape = tuple(x_det.shape[1:])
    kmax = int(knobs.k.max()) if b else 0
    hist_i = torch.zeros(kmax, b, dtype=torch.bool, device=dev)
    hist_j = torch.zeros(kmax, b, dtype=torch.bool, device=dev)
    hist_s = torch.zeros(kmax, b, device=dev)
    hist_e = torch.zeros(kmax, b, dtype=torch.long, device=dev)
    if kmax == 0:
        return pivot, pivot_x0, pivot_score, (hist_i, hist_j, hist_s, hist_e)
    ks = [int(v) for v in knobs.k]
    draws = [_draw_step(ks[j], n, gens[j], shape) for j in range(b)]
    explore, fresh, offset = _candidates_noise(
        draws, knobs.eps, knobs.lam, radius, kmax, dev, x_det.dtype
    )
    # active rows per iteration: computed on the host, sent to the device in one copy
    acts = [torch.nonzero(knobs.k > it).flatten() for it in range(kmax)]
    full = [len(a) == b for a in acts]
    acts_dev = (
        acts if all(full) else list(_to_device(torch.cat(acts), dev).split([len(a) for a in acts]))
    )
    trailing = [1] * len(shape)
    for it in range(kmax):
        act, a_dev = acts[it], acts_dev[it]

        def sel(t: Tensor, it: int = it, a_dev: Tensor = a_dev) -> Tensor:
            return t if full[it] else t[a_dev]

        m = len(act)
        ex = sel(explore[:, it])  # (A, n)
        cand = torch.where(
            ex.view(m, n, *trailing), sel(fresh[:, it]), sel(pivot)[:, None] + sel(offset[:, it])
        ).reshape(m * n, *shape)
        own = rep(act, n)
        c_act = None if cond is None else rep(sel(cond), n)
        x0c = ledger(rep(sel(x_det), n) + scale * cand, sh, c_act, own, "score")
        best_sc, best = score(x0c, c_act, own, defer=True).view(m, n).max(1)
        cur = sel(pivot_score)
        improved = best_sc > cur  # ties keep the pivot
        rows = torch.arange(m, device=dev) * n + best
        up = improved.view(m, *trailing)
        new = (
            torch.where(up, cand[rows], sel(pivot)),
            torch.where(up, x0c[rows], sel(pivot_x0)),
            torch.where(improved, best_sc, cur),
        )
        rec = (improved & ex.gather(1, best[:, None])[:, 0], improved, new[2], ex.sum(1))
        if full[it]:
            pivot, pivot_x0, pivot_score = new
            for h, v in zip((hist_i, hist_j, hist_s, hist_e), rec):
                h[it] = v
        else:
            for t, v in zip((pivot, pivot_x0, pivot_score), new):
                t[a_dev] = v
            for h, v in zip((hist_i, hist_j, hist_s, hist_e), rec):
                h[it, a_dev] = v
    return pivot, pivot_x0, pivot_score, (hist_i, hist_j, hist_s, hist_e)


class _TraceQueue:
    """Write per-step trace entries in step order as soon as a step's history is on the host.

    On a GPU the history is copied with non-blocking copies and an event, so the host builds
    the entries of finished steps while the GPU runs later ones; on the CPU entries are built
    at once."""

    def __init__(self, traces: list[dict[str, Any]], device: torch.device) -> None:
        self.traces, self.cuda = traces, device.type == "cuda"
        self.queue: deque[tuple[tuple[Any, ...], Any]] = deque()

    def add(self, *args: Any) -> None:
        """``args`` as for :func:`_trace_step` (after ``traces``)."""
        event = None
        if self.cuda and len(args) > 2:
            i, sigma, sh, knobs, start, final, hist = args
            start, final = (t.to("cpu", non_blocking=True) for t in (start, final))
            hist = tuple(h.to("cpu", non_blocking=True) for h in hist)
            args = (i, sigma, sh, knobs, start, final, hist)
            event = torch.cuda.Event()
            event.record()
        self.queue.append((args, event))
        self.drain(block=False)

    def drain(self, block: bool = True) -> None:
        while self.queue:
            args, event = self.queue[0]
            if event is not None and not event.query():
                if not block:
                    return
                event.synchronize()
            self.queue.popleft()
            _trace_step(self.traces, *args)


def _trace_step(
    traces: list[dict[str, Any]],
    i: int,
    sigma: float,
    sh: float | None = None,
    knobs: Knobs | None = None,
    start_scores: Tensor | None = None,
    pivot_score: Tensor | None = None,
    hist: tuple[Tensor, ...] = (),
) -> None:
    """Append one step to each trace: a plain step (``sh is None``) or a searchable one (knobs,
    start score, per-iteration I/J/score); the history moves to the host here."""
    if sh is None or knobs is None or start_scores is None or pivot_score is None:
        for tr in traces:
            tr["steps"].append({"i": i, "sigma": sigma, "searchable": False})
        return
    hi, hj, hs, he = (h.T.tolist() for h in hist)  # (B, K_max) lists
    start, final = start_scores.tolist(), pivot_score.tolist()
    eps, ks = knobs.eps.tolist(), knobs.k.tolist()
    for j, tr in enumerate(traces):
        tr["steps"].append(
            {
                "i": i,
                "sigma": sigma,
                "sigma_hat": sh,
                "searchable": True,
                "knobs": {"n": knobs.n, "k": int(ks[j]), "eps": float(eps[j]), "lam": knobs.lam},
                "initial_score": float(start[j]),
                "iters": [
                    {
                        "I": int(hi[j][t]),
                        "J": int(hj[j][t]),
                        "score": float(hs[j][t]),
                        "n_explore": int(he[j][t]),
                    }
                    for t in range(int(ks[j]))
                ],
                "one_step_reward": float(final[j]),
            }
        )


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
    pending = _TraceQueue(traces, x_T.device)
    for i in range(sampler.num_steps):
        if sampler.noise_scale(i) == 0.0:
            x, x0 = deterministic_step(ledger, sampler, i, x, x0, cond, owner)
            pending.add(i, sampler.sigma(i))
            continue
        if sampler.needs_x0 and x0 is None:
            x0 = ledger(x, sampler.sigma(i), cond, owner, "step")
        x_det, sh, scale = sampler.pre(i, x, x0)
        pivot = randn_like_rows(x, gens)
        pivot_x0 = ledger(x_det + scale * pivot, sh, cond, owner, "step")
        pivot_score = score(pivot_x0, cond, owner, defer=True)
        start_scores = pivot_score.clone()  # the in-place updates must not reach it
        info = StepInfo(
            i,
            sampler.num_steps,
            sampler.sigma(i),
            sh,
            start_scores.clone(),  # controllers may keep it
            ledger.per_sample.clone(),
            cond,
            gens,
        )
        knobs: Knobs = ctrl.decide(info)
        knobs.validate(b)
        pivot, pivot_x0, pivot_score, hist = _search_step(
            ledger, score, knobs, gens, radius, x_det, sh, scale, cond, pivot, pivot_x0, pivot_score
        )
        # reading the history now would stall the GPU: the queue writes it once it has arrived
        pending.add(i, sampler.sigma(i), sh, knobs, start_scores, pivot_score, hist)
        x_hat = x_det + scale * pivot
        x, x0 = sampler.post(i, x_hat, pivot_x0, evaluator(ledger, cond, owner, "step"))
        if callback is not None:
            callback({"i": i, "sigma": sampler.sigma(i), "x": x, "pivot_score": pivot_score})
    score.check()  # deferred finiteness of every candidate's score
    pending.drain()
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
