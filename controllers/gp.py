"""GP reliability controller: a Gaussian process over ``x = log sigma_t`` (scaled to [0, 1]) of
how far the one-step reward of the chosen noise is from the final reward, ``|r_hat_t - r_0|``.

The kernel is non-stationary through input warping (BoTorch's Kumaraswamy ``Warp``) on a
Matern-5/2 kernel; a stationary RBF is the comparison (:func:`kernel_comparison`). Fit in double
precision with ``fit_gpytorch_mll``. The controller spends large ``K_t`` and small ``eps_t`` only
where the posterior says the one-step reward is reliable *and* certain:
``rel(t) = clip(1 - (m(t) + z s(t)) / g_ref, 0, 1)`` with ``g_ref`` the largest posterior mean gap,
``K_t = max(k_min, round(K rel(t)))``, ``eps_t = eps_hi - (eps_hi - eps_lo) rel(t)``.
"""

from __future__ import annotations

import math
from typing import Any, Literal

import numpy as np
import torch

from controllers.schedule import ScheduleController
from controllers.stats import StepStats

Kernel = Literal["warp", "rbf"]


def make_gp(x: torch.Tensor, y: torch.Tensor, kernel: Kernel = "warp") -> Any:
    """A fitted SingleTaskGP on ``x`` ``(n, 1)`` in [0, 1], ``y`` ``(n, 1)`` (float64)."""
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms import Standardize
    from botorch.models.transforms.input import Warp
    from gpytorch.kernels import MaternKernel, RBFKernel, ScaleKernel
    from gpytorch.mlls import ExactMarginalLogLikelihood

    if kernel not in ("warp", "rbf"):
        raise ValueError(f"kernel must be 'warp' or 'rbf', got {kernel!r}")
    x, y = x.double(), y.double()
    if kernel == "warp":
        model = SingleTaskGP(
            x,
            y,
            covar_module=ScaleKernel(MaternKernel(nu=2.5)),
            outcome_transform=Standardize(m=1),
            input_transform=Warp(
                d=1, indices=[0], bounds=torch.tensor([[0.0], [1.0]], dtype=x.dtype)
            ),
        )
    else:
        model = SingleTaskGP(
            x, y, covar_module=ScaleKernel(RBFKernel()), outcome_transform=Standardize(m=1)
        )
    torch.manual_seed(0)
    fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    model.eval()
    return model


def predict(model: Any, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Posterior mean and standard deviation of the latent function at ``x`` ``(m, 1)``."""
    with torch.no_grad():
        post = model.posterior(x.double())
    return post.mean.detach().squeeze(-1), post.variance.detach().clamp_min(0).sqrt().squeeze(-1)


def heldout_loglik(model: Any, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean predictive log density of held-out ``y`` (observation noise included)."""
    with torch.no_grad():
        post = model.posterior(x.double(), observation_noise=True)
    m, v = post.mean.detach().squeeze(-1), post.variance.detach().squeeze(-1)
    yy = y.double().squeeze(-1)
    return float((-0.5 * ((yy - m) ** 2 / v + v.log() + math.log(2 * math.pi))).mean())


def synthetic_nonstationary(
    n: int = 120, noise: float = 0.05, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """``f(x) = sin(3 / (x + 0.15))``: fast wiggles near 0, flat near 1; noisy draws on [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 1, generator=g, dtype=torch.float64)
    f = torch.sin(3.0 / (x + 0.15))
    return x, f + noise * torch.randn(n, 1, generator=g, dtype=torch.float64)


def kernel_comparison(n_train: int = 80, n_test: int = 200, seeds: int = 3) -> dict[str, float]:
    """Held-out log-likelihood of the warped vs stationary RBF GP on the synthetic truth."""
    out = {"warp": 0.0, "rbf": 0.0}
    for s in range(seeds):
        x, y = synthetic_nonstationary(n_train + n_test, seed=s)
        for k in out:
            m = make_gp(x[:n_train], y[:n_train], k)  # type: ignore[arg-type]
            out[k] += heldout_loglik(m, x[n_train:], y[n_train:]) / seeds
    return out


def reliability_data(
    stats: StepStats, group: int = 4
) -> tuple[torch.Tensor, torch.Tensor, tuple[float, float]]:
    """Observations ``(x, y)``: per step, the mean ``|r_hat_t - r_0|`` over groups of
    ``group`` trajectories; ``x`` = log sigma scaled to [0, 1]. Returns also the scaling."""
    ls = np.log(stats.sigma)
    lo, hi = float(ls.min()), float(ls.max())
    span = max(hi - lo, 1e-9)
    gap = np.abs(stats.gap)
    r = gap.shape[0]
    xs, ys = [], []
    for g0 in range(0, r - group + 1, group):
        xs.append((ls - lo) / span)
        ys.append(gap[g0 : g0 + group].mean(0))
    if not xs:
        raise ValueError(f"need at least group={group} calibration trajectories, got {r}")
    x = torch.tensor(np.concatenate(xs), dtype=torch.float64)[:, None]
    y = torch.tensor(np.concatenate(ys), dtype=torch.float64)[:, None]
    return x, y, (lo, span)


def fit_gp_controller(
    stats: StepStats,
    kernel: Kernel = "warp",
    z: float = 1.0,
    k_min: int = 1,
    eps_lo: float = 0.1,
    eps_hi: float | None = None,
    group: int = 4,
) -> ScheduleController:
    """Fit the reliability GP and map its posterior to a per-step schedule."""
    params = stats.meta.get("params", {})
    k_cal = int(params.get("k", int(stats.k.max())))
    eps_hi = float(params.get("eps", 0.4)) if eps_hi is None else eps_hi
    if not 0 <= eps_lo <= eps_hi <= 1:
        raise ValueError(
            f"eps_lo={eps_lo!r} with eps_hi={eps_hi!r} is invalid, allowed: "
            "0 <= eps_lo <= eps_hi <= 1"
        )
    x, y, (lo, span) = reliability_data(stats, group)
    model = make_gp(x, y, kernel)
    xq = torch.tensor((np.log(stats.sigma) - lo) / span, dtype=torch.float64)[:, None]
    m, s = predict(model, xq)
    g_ref = float(m.max().clamp_min(1e-9))
    rel = (1.0 - (m + z * s) / g_ref).clamp(0.0, 1.0)
    steps = []
    for j, (i, sig) in enumerate(zip(stats.index, stats.sigma)):
        k = max(k_min, int(round(k_cal * float(rel[j]))))
        e = eps_hi - (eps_hi - eps_lo) * float(rel[j])
        steps.append(
            {
                "i": int(i),
                "sigma": float(sig),
                "k": min(k, k_cal),
                "eps": e,
                "reliability": float(rel[j]),
            }
        )
    diag = {
        "sigma": stats.sigma.tolist(),
        "gap_mean": m.tolist(),
        "gap_sd": s.tolist(),
        "reliability": rel.tolist(),
        "kernel": kernel,
        "z": z,
        "obs_x": x.squeeze(-1).tolist(),
        "obs_y": y.squeeze(-1).tolist(),
        "x_scale": [lo, span],
    }
    from controllers.binomial import _meta

    return ScheduleController(
        steps=steps,
        n=int(params.get("n", stats.n)),
        lam=float(params.get("lam", 0.15)),
        k_max=k_cal,
        kind=f"gp-{kernel}",
        meta=_meta(stats),
        diagnostics=diag,
    )
