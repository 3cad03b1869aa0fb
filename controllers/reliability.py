"""Learned reliability of the one-step reward: ``P(final reward >= q | pivot score s, sigma)``.

Fitted on *budget-varied* calibration traces (eps-greedy at several K per pair, K = 0 included,
so final rewards do not saturate). Every searchable step of every trace gives observations
``(s, log sigma_hat) -> r_0``: the pivot's score before the step's search and after each of its
iterations. The success level is derived from a user target, never hand-set:
``q = r_base + target (r_full - r_base)`` with ``r_base`` the calibration's mean final reward
without search (K = 0) and ``r_full`` that of its largest budget ("hold 99% of what the full
search adds").

Two models of the same probability (both deploy as a threshold ``tau(log sigma)`` on the score,
tabulated on a grid over the calibrated ``log sigma`` range, so they are functions of sigma and
port across step counts and models with an overlapping sigma range):

* ``logistic``: a varying-coefficient logistic regression (scikit-learn),
  ``logit P = a(u) + b(u) z`` with cubic ``a``, ``b`` in ``u`` (``log sigma_hat`` scaled to
  [-1, 1]) and ``z`` the transformed score (``logit`` for rewards in [0, 1], else standardised).
* ``gp``: a GP regression of ``r_0`` on ``(z, u)`` (BoTorch ``SingleTaskGP``, Kumaraswamy input
  warping on ``u``: non-stationary in log sigma; Matern-5/2, float64), with
  ``P = 1 - Phi((q - m) / sqrt(v + noise))``.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from torch import Tensor

from adaptive_tts.control import check_float
from adaptive_tts.fileio import atomic_write_bytes

ModelKind = Literal["logistic", "gp"]
GRID_U = 65  # log-sigma grid points of the deployed threshold table
GRID_Z = 257  # score grid points searched for the threshold


@dataclass
class Observations:
    """Calibration observations: score ``s`` ``(M,)``, ``log sigma_hat`` ``(M,)``, final reward
    ``r0`` ``(M,)``, the trace each came from ``(M,)`` and per-trace budget ``k`` ``(T,)``."""

    score: Tensor
    log_sigma: Tensor
    r0: Tensor
    trace: Tensor
    k: Tensor
    final: Tensor  # (T,) final reward per trace


def observations(traces: list[dict[str, Any]]) -> Observations:
    """Collect ``(s, log sigma_hat, r_0)`` from eps-greedy traces (see module docstring)."""
    from controllers.stats import one_setting

    traces = one_setting(traces, vary=("k",))  # budget-varied: only k may differ
    s, ls, r0, tr, ks, fin = [], [], [], [], [], []
    for t, trace in enumerate(traces):
        final = float(trace["final_reward"])
        fin.append(final)
        k_here = 0
        for st in trace["steps"]:
            if not st.get("searchable"):
                continue
            k_here = max(k_here, int(st["knobs"]["k"]))
            scores = [st["initial_score"]] + [it["score"] for it in st["iters"]]
            s += scores
            ls += [math.log(st["sigma_hat"])] * len(scores)
            r0 += [final] * len(scores)
            tr += [t] * len(scores)
        ks.append(k_here)
    if not s:
        raise ValueError("traces: no searchable steps to fit a reliability model on")
    f64 = torch.float64
    return Observations(
        torch.tensor(s, dtype=f64),
        torch.tensor(ls, dtype=f64),
        torch.tensor(r0, dtype=f64),
        torch.tensor(tr),
        torch.tensor(ks),
        torch.tensor(fin, dtype=f64),
    )


def success_level(
    obs: Observations, target: float, reference: list[dict[str, Any]] | None = None
) -> tuple[float, dict[str, float]]:
    """``q = r_base + target (r_full - r_base)``: ``r_base`` from the calibration's K = 0 runs,
    ``r_full`` from ``reference`` (traces of the full search on the same pairs, e.g.
    eps-greedy(4,20)) or else from the calibration's largest-K runs."""
    if not 0.0 < target <= 1.0:
        raise ValueError(f"target must lie in (0, 1], got {target}")
    kmax = int(obs.k.max())
    base_mask = obs.k == 0
    if not bool(base_mask.any()) or kmax == 0:
        raise ValueError(
            "calibration needs runs without search (K = 0) and with search (K > 0): "
            f"got budgets {sorted(set(obs.k.tolist()))}"
        )
    r_base = float(obs.final[base_mask].mean())
    r_full = float(obs.final[obs.k == kmax].mean())
    if reference:
        r_full = sum(float(t["final_reward"]) for t in reference) / len(reference)
        kmax = max(int(st["knobs"]["k"]) for st in reference[0]["steps"] if st.get("searchable"))
    q = r_base + target * (r_full - r_base)
    return q, {"r_base": r_base, "r_full": r_full, "k_full": kmax, "q": q}


@dataclass
class ScoreTransform:
    """``z = logit(clip(s))`` for scores in [0, 1] (``kind="logit"``), else ``(s - mu) / sd``."""

    kind: Literal["logit", "standard"]
    mu: float = 0.0
    sd: float = 1.0
    clip: float = 1e-6

    @classmethod
    def fit(cls, s: Tensor) -> ScoreTransform:
        if float(s.min()) >= 0.0 and float(s.max()) <= 1.0:
            return cls("logit")
        return cls("standard", float(s.mean()), max(float(s.std()), 1e-12))

    def __call__(self, s: Tensor) -> Tensor:
        if self.kind == "logit":
            p = s.clamp(self.clip, 1 - self.clip)
            return torch.log(p) - torch.log1p(-p)
        return (s - self.mu) / self.sd

    def inverse(self, z: Tensor) -> Tensor:
        return torch.sigmoid(z) if self.kind == "logit" else z * self.sd + self.mu


@dataclass
class ReliabilityModel:
    """``P(r_0 >= q | s, sigma)`` tabulated for deployment.

    Attributes:
        kind: ``logistic`` or ``gp``; ``q``: success level; ``target``/``levels``: how it was
            derived; ``transform``: score transform; ``u_lo``/``u_hi``: calibrated
            ``log sigma_hat`` range; ``z_grid`` ``(GRID_Z,)`` and ``p_grid`` ``(GRID_U, GRID_Z)``:
            the fitted probability on the grid; ``params``: the fitted parameters (logistic
            coefficients, GP hyper-parameters); ``metrics``: held-out fit quality.
    """

    kind: ModelKind
    q: float
    target: float
    levels: dict[str, float]
    transform: ScoreTransform
    u_lo: float
    u_hi: float
    z_grid: Tensor
    p_grid: Tensor
    params: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    data: dict[str, Tensor] = field(default_factory=dict, repr=False)

    def scaled(self, log_sigma: float | Tensor) -> Any:
        """``log sigma`` -> ``u`` in [-1, 1] over the calibrated range."""
        mid, half = (self.u_hi + self.u_lo) / 2, max((self.u_hi - self.u_lo) / 2, 1e-12)
        return (log_sigma - mid) / half

    def covers(self, sigma: float, tol: float = 0.05) -> bool:
        """Whether ``sigma`` lies in the calibrated range (``tol`` in log sigma)."""
        ls = math.log(sigma)
        return self.u_lo - tol <= ls <= self.u_hi + tol

    def prob(self, score: Tensor, log_sigma: float) -> Tensor:
        """``P(r_0 >= q)`` for scores ``(M,)`` at one ``log sigma`` (grid interpolation)."""
        row = self._row(log_sigma)
        z = self.transform(score.double().cpu())
        zg = self.z_grid
        pos = ((z - zg[0]) / (zg[1] - zg[0])).clamp(0, len(zg) - 1)
        lo = pos.floor().long().clamp(max=len(zg) - 2)
        w = pos - lo
        return row[lo] * (1 - w) + row[lo + 1] * w

    def threshold(self, log_sigma: float, confidence: float, relative: bool = True) -> float:
        """Smallest score ``s`` with ``P(r_0 >= q | s', sigma) >= level`` for every ``s' >= s``.

        ``level = confidence`` (``relative=False``: ``inf`` where no score reaches it) or
        ``confidence * max_s P(r_0 >= q | s, sigma)`` (``relative=True``): stop once the score
        holds that share of the best success probability any score reaches at this sigma, so
        where the score carries no information (``P`` flat in ``s``) nothing is searched."""
        row = self._row(log_sigma)
        level = confidence * float(row.max()) if relative else confidence
        ok = row >= level
        if not bool(ok[-1]):
            return math.inf
        bad = torch.nonzero(~ok).flatten()
        if len(bad) == 0:
            return -math.inf
        return float(self.transform.inverse(self.z_grid[int(bad[-1]) + 1 :][:1])[0])

    def _row(self, log_sigma: float) -> Tensor:
        u = float(self.scaled(log_sigma))
        pos = min(max((u + 1) / 2 * (GRID_U - 1), 0.0), GRID_U - 1)
        lo = min(int(pos), GRID_U - 2)
        w = pos - lo
        return self.p_grid[lo] * (1 - w) + self.p_grid[lo + 1] * w

    def to_dict(self) -> dict[str, Any]:
        t = self.transform
        return {
            "kind": self.kind,
            "q": self.q,
            "target": self.target,
            "levels": self.levels,
            "transform": {"kind": t.kind, "mu": t.mu, "sd": t.sd, "clip": t.clip},
            "log_sigma_range": [self.u_lo, self.u_hi],
            "z_grid": self.z_grid.tolist(),
            "p_grid": self.p_grid.tolist(),
            "params": self.params,
            "metrics": self.metrics,
        }

    def save_data(self, path: str | os.PathLike[str]) -> Path | None:
        """The calibration observations it was fitted on, as safetensors (atomic write)."""
        if not self.data:
            return None
        from safetensors.torch import save

        blob = save({k: v.contiguous() for k, v in self.data.items()})
        return atomic_write_bytes(path, blob)  # a unique temp name, then rename

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ReliabilityModel:
        p = torch.tensor(d["p_grid"], dtype=torch.float64)
        z = torch.tensor(d["z_grid"], dtype=torch.float64)
        if p.shape != (GRID_U, len(z)) or len(z) < 2:
            raise ValueError(f"reliability model grid has shape {tuple(p.shape)}")
        if not (bool(torch.isfinite(p).all()) and bool(torch.isfinite(z).all())):
            raise ValueError(
                "key 'model': z_grid and p_grid must be finite (NaN or infinity found)"
            )
        for key in ("q", "target"):
            check_float(d[key], f"model.{key}")
        return cls(
            kind=d["kind"],
            q=float(d["q"]),
            target=float(d["target"]),
            levels=dict(d["levels"]),
            transform=ScoreTransform(**d["transform"]),
            u_lo=float(d["log_sigma_range"][0]),
            u_hi=float(d["log_sigma_range"][1]),
            z_grid=z,
            p_grid=p,
            params=dict(d.get("params", {})),
            metrics=dict(d.get("metrics", {})),
        )


def _design(z: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Varying-coefficient features: ``[u, u^2, u^3, z, z u, z u^2, z u^3]``."""
    us = np.stack([u, u**2, u**3], 1)
    return np.concatenate([us, z[:, None], z[:, None] * us], 1)


def _fit_logistic(z: np.ndarray, u: np.ndarray, y: np.ndarray) -> tuple[Any, dict[str, Any]]:
    from sklearn.linear_model import LogisticRegression

    if y.min() == y.max():
        raise ValueError(
            "every calibration outcome is the same (all reach q or none does): vary the "
            "calibration budgets (include K = 0) so the outcomes do not saturate"
        )
    clf = LogisticRegression(C=10.0, max_iter=2000)
    clf.fit(_design(z, u), y)

    def prob(zq: np.ndarray, uq: np.ndarray) -> np.ndarray:
        return clf.predict_proba(_design(zq, uq))[:, 1]

    params = {"coef": clf.coef_[0].tolist(), "intercept": float(clf.intercept_[0])}
    return prob, params


def _fit_gp(
    z: np.ndarray, u: np.ndarray, r0: np.ndarray, q: float, max_points: int, seed: int
) -> tuple[Any, dict[str, Any]]:
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Normalize, Standardize
    from botorch.models.transforms.input import ChainedInputTransform, Warp
    from gpytorch.kernels import MaternKernel, ScaleKernel
    from gpytorch.mlls import ExactMarginalLogLikelihood

    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(z))[:max_points]
    x = torch.tensor(np.stack([z[idx], u[idx]], 1), dtype=torch.float64)
    y = torch.tensor(r0[idx], dtype=torch.float64)[:, None]
    bounds = torch.stack([x.min(0).values, x.max(0).values])
    tf = ChainedInputTransform(
        norm=Normalize(d=2, bounds=bounds),
        warp=Warp(d=2, indices=[1], bounds=torch.tensor([[0.0, 0.0], [1.0, 1.0]]).double()),
    )
    gp = SingleTaskGP(
        x,
        y,
        covar_module=ScaleKernel(MaternKernel(nu=2.5, ard_num_dims=2)),
        outcome_transform=Standardize(m=1),
        input_transform=tf,
    )
    torch.manual_seed(seed)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(gp.likelihood, gp))
    gp.eval()

    def prob(zq: np.ndarray, uq: np.ndarray) -> np.ndarray:
        xq = torch.tensor(np.stack([zq, uq], 1), dtype=torch.float64)
        with torch.no_grad():
            post = gp.posterior(xq, observation_noise=True)
            m, sd = post.mean[:, 0], post.variance[:, 0].clamp_min(1e-12).sqrt()
        return (1 - torch.distributions.Normal(m, sd).cdf(torch.full_like(m, q))).numpy()

    params = {
        "points": len(idx),
        "lengthscale": gp.covar_module.base_kernel.lengthscale.detach().flatten().tolist(),
        "noise": float(gp.likelihood.noise.detach().flatten()[0]),
    }
    return prob, params


def fit_reliability(
    traces: list[dict[str, Any]],
    target: float = 0.99,
    kind: ModelKind = "logistic",
    max_points: int = 1500,
    seed: int = 0,
    reference: list[dict[str, Any]] | None = None,
) -> ReliabilityModel:
    """Fit ``P(r_0 >= q | s, sigma)`` on budget-varied calibration traces.

    Args:
        traces: eps-greedy traces at several budgets per pair (K = 0 included).
        target: share of the full search's gain over no search that a success must hold.
        kind: ``logistic`` (scikit-learn) or ``gp`` (BoTorch, warped Matern).
        max_points: GP training points (a random subset; the logistic uses every point).
        reference: traces of the full search (the reward a success must hold a share of);
            default: the calibration's largest budget.
    Returns:
        the tabulated model, with held-out (every 5th trace) log loss and Brier score.
    """
    if kind not in ("logistic", "gp"):
        raise ValueError(f"kind must be 'logistic' or 'gp', got {kind!r}")
    obs = observations(traces)
    q, levels = success_level(obs, target, reference)
    tf = ScoreTransform.fit(obs.score)
    z = tf(obs.score).numpy()
    u_lo, u_hi = float(obs.log_sigma.min()), float(obs.log_sigma.max())
    half = max((u_hi - u_lo) / 2, 1e-12)
    u = ((obs.log_sigma.numpy() - (u_hi + u_lo) / 2) / half).clip(-1, 1)
    y = (obs.r0.numpy() >= q).astype(np.float64)
    held = (obs.trace.numpy() % 5) == 4
    metrics: dict[str, float] = {"observations": float(len(y)), "success_rate": float(y.mean())}
    for part in ("held-out", "final"):
        train = ~held if part == "held-out" else np.ones_like(held)
        if kind == "logistic":
            prob, params = _fit_logistic(z[train], u[train], y[train])
        else:
            prob, params = _fit_gp(z[train], u[train], obs.r0.numpy()[train], q, max_points, seed)
        if part == "held-out" and held.any():
            p = np.clip(prob(z[held], u[held]), 1e-6, 1 - 1e-6)
            metrics["heldout_log_loss"] = float(
                -np.mean(y[held] * np.log(p) + (1 - y[held]) * np.log(1 - p))
            )
            metrics["heldout_brier"] = float(np.mean((p - y[held]) ** 2))
    zg = np.linspace(float(np.quantile(z, 0.001)), float(np.quantile(z, 0.999)), GRID_Z)
    ug = np.linspace(-1, 1, GRID_U)
    uu, zz = np.meshgrid(ug, zg, indexing="ij")
    p_grid = prob(zz.ravel(), uu.ravel()).reshape(GRID_U, GRID_Z)
    return ReliabilityModel(
        kind=kind,
        q=q,
        target=target,
        levels=levels,
        transform=tf,
        u_lo=u_lo,
        u_hi=u_hi,
        z_grid=torch.tensor(zg, dtype=torch.float64),
        p_grid=torch.tensor(p_grid, dtype=torch.float64),
        params=params,
        metrics=metrics,
        data={
            "score": obs.score,
            "log_sigma": obs.log_sigma,
            "r0": obs.r0,
            "success": torch.tensor(y),
        },
    )
