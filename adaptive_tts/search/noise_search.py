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

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.nfe import Ledger
from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import (
    Scorer,
    SearchContext,
    StepCallback,
    rep,
    sqrt2d,
    unit_directions,
)
from adaptive_tts.search.loop import Choice, StepContext
from adaptive_tts.search.noise_trace import TraceQueue
from adaptive_tts.search.step_draws import Draws, StepDraws
from adaptive_tts.types import Controller, IterInfo, Knobs, Reward, SearchResult, StepInfo


def _to_device(t: Tensor, device: torch.device) -> Tensor:
    """Host tensor to ``device`` without the host waiting for the GPU (a plain copy from
    pageable memory would synchronise the stream): pinned + non-blocking on CUDA."""
    if device.type != "cuda" or t.device.type != "cpu":
        return t.to(device)
    return t.pin_memory().to(device, non_blocking=True)


def _candidates_noise(
    draws: Draws,
    knobs: Knobs,
    radius: float,
    kmax: int,
    device: torch.device,
    dtype: torch.dtype,
) -> tuple[Tensor, Tensor, Tensor, Tensor | None]:
    """The step's stacked draws (:class:`~adaptive_tts.search.step_draws.StepDraws`, padded to
    ``kmax`` iterations) as ``explore`` ``(B, K, n)``
    bool, ``fresh`` ``(B, K, n, *S)``, neighbour offsets ``(B, K, n, *S)`` and the pivot's
    weight in a neighbour (``None``: 1). Neighbours are ``weight * pivot + offset`` with the
    pivot current at that iteration: ``move="additive"`` gives ``pivot + u sqrt(2d) g / |g|``
    (``u ~ U(0, lam)``), ``move="gaussian"`` gives ``sqrt(1 - b^2) pivot + b g`` with
    ``b = min(1, u sqrt(2))``, so a neighbour of an ``N(0, I)`` pivot is again ``N(0, I)``."""

    explore_u, fresh, direction, u = (_to_device(t, device) for t in draws)
    b, _, n = explore_u.shape
    trailing = [1] * (fresh.dim() - 3)
    explore = explore_u < _to_device(knobs.eps.to(explore_u.dtype), device).view(b, 1, 1)
    if knobs.move == "gaussian":
        beta = (u * (knobs.lam * 2**0.5)).clamp(max=1.0)
        weight = (1 - beta * beta).sqrt().view(b, kmax, n, *trailing)
        return explore, fresh.to(dtype), (beta.view(weight.shape) * direction).to(dtype), weight
    unit = unit_directions(direction.reshape(b * kmax * n, *direction.shape[3:]))
    offset = ((u * knobs.lam) * radius).view(b, kmax, n, *trailing) * unit.view(direction.shape)
    return explore, fresh.to(dtype), offset.to(dtype), None


def _search_step(
    ledger: Ledger,
    score: Scorer,
    info: StepInfo,
    knobs: Knobs,
    gens: list[torch.Generator],
    radius: float,
    x_det: Tensor,
    scale: float,
    pivot: Tensor,
    pivot_x0: Tensor,
    pivot_score: Tensor,
    stop: Callable[[IterInfo], Tensor] | None = None,
    drawer: StepDraws | None = None,
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...], Tensor | None]:
    """The ``K_t`` iterations of one step (``drawer``: the search's :class:`StepDraws`, which
    replays the draws from a CUDA graph once it has seen the same caps twice; default eager).

    ``pivot``/``pivot_x0`` ``(B, *S)`` and ``pivot_score`` ``(B,)`` are the step's starting pivot;
    returns the final ones, the history ``(I, J, score, n_explore)``, each ``(K_max, B)`` on the
    device (rows past a sample's last iteration stay zero), and with ``stop`` the iterations
    each sample ran ``(B,)`` (host). Without ``stop`` nothing waits on the GPU; with it, the
    samples still searching are read back once per iteration (before the first one too), and
    those that stopped leave the network calls."""
    dev, b, n = x_det.device, x_det.shape[0], knobs.n
    sh, cond = info.sigma_hat, info.cond
    shape = tuple(x_det.shape[1:])
    kmax = int(knobs.k.max()) if b else 0
    hist_i = torch.zeros(kmax, b, dtype=torch.bool, device=dev)
    hist_j = torch.zeros(kmax, b, dtype=torch.bool, device=dev)
    hist_s = torch.zeros(kmax, b, device=dev)
    hist_e = torch.zeros(kmax, b, dtype=torch.long, device=dev)
    hist = (hist_i, hist_j, hist_s, hist_e)
    done = None if stop is None else torch.zeros(b, dtype=torch.long)
    if kmax == 0:
        return pivot, pivot_x0, pivot_score, hist, done
    ks = [int(v) for v in knobs.k]
    if stop is not None:  # who searches at all: only they draw (a sample's own decision)
        start = pivot_score.clone()
        acts: list[Tensor] = []
        acts_dev: list[Tensor] = []
        full: list[bool] = []
        live = _closed_loop_active(stop, info, knobs, 0, torch.arange(b), start[:, None], ledger)
        searching = set(live.tolist())
        ks = [ks[j] if j in searching else 0 for j in range(b)]
        kmax = max(ks)
        if kmax == 0:
            return pivot, pivot_x0, pivot_score, hist, done
    draws = (drawer or StepDraws(gens))(ks, n, shape)
    explore, fresh, offset, weight = _candidates_noise(draws, knobs, radius, kmax, dev, x_det.dtype)
    if stop is None:  # active rows per iteration from the caps alone: one host-to-device copy
        acts = [torch.nonzero(knobs.k > it).flatten() for it in range(kmax)]
        full = [len(a) == b for a in acts]
        acts_dev = (
            acts
            if all(full)
            else list(_to_device(torch.cat(acts), dev).split([len(a) for a in acts]))
        )
    trailing = [1] * len(shape)
    for it in range(kmax):
        if stop is not None:
            if len(live) == 0:
                break
            acts.append(live)
            acts_dev.append(_to_device(live, dev))
            full.append(len(live) == b)
        act, a_dev = acts[it], acts_dev[it]
        if len(act) == 0:
            break

        def sel(t: Tensor, it: int = it, a_dev: Tensor = a_dev) -> Tensor:
            return t if full[it] else t[a_dev]

        m = len(act)
        ex = sel(explore[:, it])  # (A, n)
        near = sel(pivot)[:, None] + sel(offset[:, it])
        if weight is not None:
            near = sel(weight[:, it]) * sel(pivot)[:, None] + sel(offset[:, it])
        cand = torch.where(ex.view(m, n, *trailing), sel(fresh[:, it]), near).reshape(m * n, *shape)
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
            for h, v in zip(hist, rec):
                h[it] = v
        else:
            for t, v in zip((pivot, pivot_x0, pivot_score), new):
                t[a_dev] = v
            for h, v in zip(hist, rec):
                h[it, a_dev] = v
        if stop is not None and done is not None:
            done[act] += 1
            history = torch.cat([start[a_dev, None], hist_s[: it + 1, a_dev].T], 1)
            live = _closed_loop_active(stop, info, knobs, it + 1, act, history, ledger)
    return pivot, pivot_x0, pivot_score, hist, done


def _closed_loop_active(
    stop: Callable[[IterInfo], Tensor],
    info: StepInfo,
    knobs: Knobs,
    iteration: int,
    act: Tensor,
    history: Tensor,
    ledger: Ledger,
) -> Tensor:
    """Host indices of the samples in ``act`` that run iteration ``iteration + 1``: below their
    cap and kept by the controller (the one read-back per iteration of a closed-loop search)."""
    under = knobs.k[act] > iteration
    if not bool(under.any()):
        return act[:0]
    act_dev = _to_device(act, history.device)
    it = IterInfo(info, iteration, act_dev, history, ledger.per_sample[act], knobs)
    keep = torch.as_tensor(stop(it)).to("cpu", torch.bool)
    if keep.shape != act.shape:
        raise ValueError(f"keep_searching must return shape ({len(act)},), got {tuple(keep.shape)}")
    return act[keep & under]


def _controller(
    controller: Controller | None, n: int, k: int, eps: float, lam: float
) -> Controller:
    if controller is not None:
        return controller
    from adaptive_tts.control import FixedController

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
    params: dict[str, Any] = {"n": n, "k": k, "eps": eps, "lam": lam}
    sc = SearchContext(method, denoiser, sampler, x_T, cond, reward, generator, params, max_batch)
    ctrl = _controller(controller, n, k, eps, lam)
    params["controller"] = type(ctrl).__name__
    stop = getattr(ctrl, "keep_searching", None)  # closed-loop: per-iteration decisions
    rows, radius = sc.rows(), sqrt2d(x_T)
    pending = TraceQueue(sc.traces, x_T.device)
    drawer = StepDraws(sc.gens)  # CUDA generators: the step's draws replayed from one graph
    last: dict[str, Tensor] = {}

    def choose(ctx: StepContext) -> Choice:
        pivot = randn_like_rows(ctx.x, sc.gens)
        pivot_x0 = sc.ledger(ctx.x_det + ctx.scale * pivot, ctx.sigma_hat, *rows, "step")
        pivot_score = sc.score(pivot_x0, *rows, defer=True)
        start_scores = pivot_score.clone()  # the in-place updates must not reach it
        info = StepInfo(
            ctx.i,
            sampler.num_steps,
            ctx.sigma,
            ctx.sigma_hat,
            start_scores.clone(),  # controllers may keep it
            sc.ledger.per_sample.clone(),
            cond,
            sc.gens,
            sc.ledger.reward_calls.clone(),
            sc.ledger.nfe_per_call,
        )
        knobs: Knobs = ctrl.decide(info)
        knobs.validate(sc.b)
        pivot, pivot_x0, pivot_score, hist, done = _search_step(
            sc.ledger, sc.score, info, knobs, sc.gens, radius, ctx.x_det, ctx.scale,
            pivot, pivot_x0, pivot_score, stop, drawer,
        )  # fmt: skip
        # reading the history now would stall the GPU: the queue writes it once it has arrived
        extra = () if done is None else (done,)
        pending.add(ctx.i, ctx.sigma, ctx.sigma_hat, knobs, start_scores, pivot_score, hist, *extra)
        last["score"] = pivot_score
        return Choice(pivot, x0_hat=pivot_x0)

    def after(i: int, x: Tensor, ctx: StepContext | None) -> None:
        if ctx is None:
            pending.add(i, sampler.sigma(i))
        elif callback is not None:
            callback({"i": i, "sigma": ctx.sigma, "x": x, "pivot_score": last["score"]})

    x, _ = sc.denoise(x_T, rows, choose, after=after)
    sc.score.check()  # deferred finiteness of every candidate's score
    pending.drain()
    return sc.finish(x, sc.score(x, *rows))


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
