"""Feynman-Kac steering (arXiv 2501.06848): sequential Monte Carlo over ``k`` particles per
sample on the stochastic sampler.

Every particle runs the plain sampler (its noise drawn from the sample's own generator). At the
*potential steps* (every ``every`` searchable steps inside ``[t_start, t_end]``, counted from
``t_start``) each particle's one-step x0 prediction ``x0_hat = D(x_hat, sigma_hat)`` (the call
the step makes anyway) is scored, ``r_t``, and the particle's log weight grows by its log
potential ``g_t``:

- ``"max"``: ``g_t = lam * max(r_s, s <= t)`` (the maximum over the particle's whole history);
- ``"difference"``: ``g_t = lam * (r_t - r_prev)`` (``r_prev = 0`` at the first one);
- ``"sum"``: ``g_t = lam * sum(r_s, s <= t)``.

Weights **accumulate** across potential steps until the sample resamples, which it does only
when its effective sample size ``(sum w)^2 / sum w^2`` falls below ``ess_frac * k``
(multinomial or systematic resampling, uniforms from the sample's generator; weights then
reset to uniform). The product of all potentials along a particle's ancestry is carried with
it, and the final weight is ``exp(lam r(x0)) / prod G``: the weighted particles then target
``p(x0) exp(lam r(x0))`` whatever the potential. ``select="best"`` returns each sample's
particle of highest final reward, ``"sample"`` a draw by the final weights.

NFEs: exactly ``k`` plain trajectories per sample (potentials reuse the step's own call).
Reward calls: ``k`` per potential step plus ``k`` for the final particles.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import Tensor

from adaptive_tts.sampling import Sampler, randn_like_rows
from adaptive_tts.search.common import SearchContext, StepCallback, check_positive, rep
from adaptive_tts.search.loop import Choice, StepContext
from adaptive_tts.search.rounds import uniform_rows
from adaptive_tts.types import Reward, SearchResult

Potential = Literal["max", "difference", "sum"]
POTENTIALS = ("max", "difference", "sum")
RESAMPLERS = ("multinomial", "systematic")
SELECTS = ("best", "sample")


def _accumulate(log_w: Tensor, g: Tensor) -> Tensor:
    """Log weights after a potential step: the new log potential ``g`` adds to what the
    particle accumulated since the last resampling (both ``(B, k)``)."""
    return log_w + g


def log_potential(kind: str, lam: float, r: Tensor, hist: dict[str, Tensor], first: bool) -> Tensor:
    """Log potential ``(B, k)`` of scores ``r`` ``(B, k)``; updates the particles' history
    ``hist`` (``r_max``, ``r_sum``, ``r_prev``, each ``(B, k)``) in place."""
    hist["r_max"] = torch.maximum(hist["r_max"], r)  # over the whole history
    hist["r_sum"] = hist["r_sum"] + r
    prev = torch.zeros_like(r) if first else hist["r_prev"]
    hist["r_prev"] = r
    if kind == "max":
        return lam * hist["r_max"]
    if kind == "sum":
        return lam * hist["r_sum"]
    return lam * (r - prev)


def ess(log_w: Tensor) -> Tensor:
    """Effective sample size ``(sum w)^2 / sum w^2`` per sample: ``(B, k)`` -> ``(B,)``."""
    w = torch.softmax(log_w, dim=1)
    return 1.0 / (w * w).sum(1)


def log_mean_exp(log_w: Tensor) -> Tensor:
    """``log mean exp`` over particles (the mean of the weights, not of their logs): ``(B,)``."""
    return torch.logsumexp(log_w, dim=1) - math.log(log_w.shape[1])


def resample_indices(log_w: Tensor, u: Tensor, scheme: str) -> Tensor:
    """Ancestor of each new particle, ``(B, k)`` long, by inverse CDF of the normalised weights.

    ``u``: ``(B, k)`` uniforms (``"multinomial"``) or ``(B, 1)`` (``"systematic"``: points
    ``(u + j) / k``)."""
    b, k = log_w.shape
    cdf = torch.softmax(log_w.double(), dim=1).cumsum(1)
    cdf[:, -1] = 1.0
    if scheme == "systematic":
        pts = (u.double() + torch.arange(k, dtype=torch.float64)) / k
    else:
        pts = u.double()
    return torch.searchsorted(cdf, pts.contiguous(), right=True).clamp_max(k - 1)


def potential_steps(sampler: Sampler, every: int, t_start: int, t_end: int | None) -> list[int]:
    """Searchable steps in ``[t_start, t_end]`` at which potentials are computed: every
    ``every``-th step counted from ``t_start`` (checks the window)."""
    t_max = sampler.num_steps - 1
    end = t_max if t_end is None else t_end
    if not isinstance(t_start, int) or not 0 <= t_start <= t_max:
        raise ValueError(f"t_start must be an integer step in [0, {t_max}], got {t_start!r}")
    if not isinstance(end, int) or not t_start <= end <= t_max:
        raise ValueError(f"t_end must be an integer step in [t_start={t_start}, {t_max}] or None")
    check_positive("every", every)
    return [i for i in range(t_start, end + 1, every) if sampler.searchable(i)]


def smc(
    sc: SearchContext,
    x_T: Tensor,
    *,
    k: int,
    potential: str,
    lam: float,
    steps: list[int],
    ess_frac: float,
    resample: str,
    callback: StepCallback | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    """Run the particle system; returns the final particles ``(B, k, *S)``, their final log
    weights ``(B, k)`` (unnormalised) and rewards ``(B, k)`` (CPU). Traces are written to
    ``sc.traces``."""
    b, shape, sampler = sc.b, sc.shape, sc.sampler
    rows = sc.rows(k)
    starts = rep(x_T, k).view(b, k, *shape).clone()
    if k > 1:  # particle 0 starts at x_T, the others at fresh sigma_max N(0, I) draws
        starts[:, 1:] = randn_like_rows(x_T, sc.gens, k - 1).view(b, k - 1, *shape) * sampler.sigma(
            0
        )
    zeros = torch.zeros(b, k, dtype=torch.float64)
    st = {"log_w": zeros, "log_prod": zeros, "r_max": zeros, "r_sum": zeros, "r_prev": zeros}
    st["r_max"] = torch.full((b, k), -math.inf, dtype=torch.float64)
    log_z = torch.zeros(b, dtype=torch.float64)
    pot_set, first = set(steps), steps[0] if steps else -1
    base = (torch.arange(b) * k)[:, None]
    last: dict[str, Any] = {}

    def choose(ctx: StepContext) -> Choice:
        xi = randn_like_rows(ctx.x, sc.gens, k)
        x0_hat = sc.ledger(ctx.x_det + ctx.scale * xi, ctx.sigma_hat, *rows, "step")
        entry: dict[str, Any] = {"i": ctx.i, "sigma": ctx.sigma, "searchable": True}
        if ctx.i not in pot_set:
            for tr in sc.traces:
                tr["steps"].append(dict(entry, potential=False))
            return Choice(xi, x0_hat=x0_hat)
        r = sc.score(x0_hat, *rows).double().view(b, k)
        g = log_potential(potential, lam, r, st, first=ctx.i == first)
        st["log_w"] = _accumulate(st["log_w"], g)
        st["log_prod"] = st["log_prod"] + g
        e = ess(st["log_w"])
        do = e < ess_frac * k
        u = uniform_rows(sc.gens, k if resample == "multinomial" else 1)
        keep = torch.arange(k).expand(b, k)
        idx = torch.where(do[:, None], resample_indices(st["log_w"], u, resample), keep)
        log_z.add_(torch.where(do, log_mean_exp(st["log_w"]), 0.0))
        for key in ("log_prod", "r_max", "r_sum", "r_prev"):
            st[key] = st[key].gather(1, idx)
        st["log_w"] = torch.where(do[:, None], 0.0, st["log_w"])
        for j, tr in enumerate(sc.traces):
            tr["steps"].append(
                dict(
                    entry,
                    potential=True,
                    sigma_hat=ctx.sigma_hat,
                    ess=float(e[j]),
                    resampled=bool(do[j]),
                    max_score=float(r[j].max()),
                    mean_score=float(r[j].mean()),
                )
            )
        last["score"] = r.max(1).values
        pick = (base + idx).flatten().to(xi.device)
        return Choice(xi[pick], x0_hat=x0_hat[pick], parents=pick)

    def after(i: int, x: Tensor, ctx: StepContext | None) -> None:
        if ctx is None:
            for tr in sc.traces:
                tr["steps"].append({"i": i, "sigma": sampler.sigma(i), "searchable": False})
        elif callback is not None:
            callback({"i": i, "sigma": ctx.sigma, "x": x, "score": last.get("score")})

    x, _ = sc.denoise(starts.view(b * k, *shape), rows, choose, after=after)
    r = sc.score(x, *rows).double().view(b, k)
    log_w = st["log_w"] + lam * r - st["log_prod"]
    log_z += log_mean_exp(log_w)
    for j, tr in enumerate(sc.traces):
        tr["log_z"] = float(log_z[j])
        tr["final_ess"] = float(ess(log_w)[j])
    return x.view(b, k, *shape), log_w, r


def fk_steering(
    denoiser: Any,
    sampler: Sampler,
    x_T: Tensor,
    *,
    cond: Tensor | None,
    reward: Reward,
    generator: list[torch.Generator] | torch.Generator | None = None,
    k: int = 4,
    potential: Potential = "max",
    lam: float = 10.0,
    every: int = 1,
    t_start: int = 0,
    t_end: int | None = None,
    ess_frac: float = 0.5,
    resample: Literal["multinomial", "systematic"] = "systematic",
    select: Literal["best", "sample"] = "best",
    max_batch: int | None = None,
    callback: StepCallback | None = None,
) -> SearchResult:
    """Feynman-Kac steering over a batch ``x_T`` ``(B, *S)`` (``B * k`` rows per network call).

    Args:
        k: particles per sample (>= 1). potential: ``"max"``, ``"difference"`` or ``"sum"``.
        lam: temperature of the potentials and the target ``p(x) exp(lam r(x))`` (>= 0).
        every, t_start, t_end: potential/resampling steps: every ``every``-th step of
            ``[t_start, t_end]`` (step indices, ``t_end=None``: the last step).
        ess_frac: resample when ESS < ``ess_frac * k`` (in [0, 1]; 0 never, 1 whenever the
            weights are not uniform). resample: ``"multinomial"`` or ``"systematic"``.
        select: ``"best"`` (highest final reward) or ``"sample"`` (draw by final weight).
        callback: after each searchable step, ``{"i", "sigma", "x" (B*k, *S), "score"}``.
    Returns:
        :class:`SearchResult`; each trace records per step the ESS, whether it resampled, the
        particles' best and mean score, plus ``log_z`` (the SMC normaliser estimate) and the
        final ESS. NFEs: ``k * trajectory``.
    """
    check_positive("k", k)
    if potential not in POTENTIALS:
        raise ValueError(f"potential must be one of {POTENTIALS}, got {potential!r}")
    if not (isinstance(lam, int | float) and math.isfinite(lam) and lam >= 0):
        raise ValueError(f"lam must be a finite number >= 0, got {lam!r}")
    if not (isinstance(ess_frac, int | float) and 0.0 <= ess_frac <= 1.0):
        raise ValueError(f"ess_frac must lie in [0, 1], got {ess_frac!r}")
    if resample not in RESAMPLERS:
        raise ValueError(f"resample must be one of {RESAMPLERS}, got {resample!r}")
    if select not in SELECTS:
        raise ValueError(f"select must be one of {SELECTS}, got {select!r}")
    steps = potential_steps(sampler, every, t_start, t_end)
    params: dict[str, Any] = {
        "k": k, "potential": potential, "lam": lam, "every": every, "t_start": t_start,
        "t_end": sampler.num_steps - 1 if t_end is None else t_end, "ess_frac": ess_frac,
        "resample": resample, "select": select,
    }  # fmt: skip
    sc = SearchContext("fk", denoiser, sampler, x_T, cond, reward, generator, params, max_batch)
    x, log_w, r = smc(
        sc, x_T, k=k, potential=potential, lam=lam, steps=steps, ess_frac=ess_frac,
        resample=resample, callback=callback,
    )  # fmt: skip
    if select == "best":
        pick = r.argmax(1)
    else:
        pick = resample_indices(log_w, uniform_rows(sc.gens, 1), "systematic")[:, 0]
    ar = torch.arange(sc.b)
    for j, tr in enumerate(sc.traces):
        tr["particle_rewards"] = r[j].tolist()
        tr["picked"] = int(pick[j])
    return sc.finish(x[ar.to(x.device), pick.to(x.device)], r[ar, pick].float())
