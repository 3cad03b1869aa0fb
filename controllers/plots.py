"""Plots of fitted controllers: p(t) with bootstrap bands, R(t) with GP bands, and K_t."""

from __future__ import annotations

from typing import Any

import numpy as np

from controllers.budget import BudgetController
from controllers.schedule import ScheduleController


def plot_controller(
    ctrl: ScheduleController | BudgetController, traces: list[dict[str, Any]] | None, path: str
) -> None:
    """Two panels against sigma_t: the fitted curve with its band, and the deployed K_t/eps_t."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptive_tts.viz import save_figure

    base = ctrl.base if isinstance(ctrl, BudgetController) else ctrl
    d = base.diagnostics
    sig = np.array(d.get("sigma", [s["sigma"] for s in base.steps]))
    fig, ax = plt.subplots(1, 2, figsize=(10, 3.6))
    if "p" in d:
        ax[0].plot(sig, d["p"], "o-", label="p(t) (binomial GLM)")
        ax[0].fill_between(sig, d["p_lo"], d["p_hi"], alpha=0.3, label="95% bootstrap band")
        ax[0].plot(sig, d["p_raw"], "x", label="raw win rate c(t)/K")
        ax[0].plot(sig, d["improve_prob_k1"], "s--", label="P(J_1 = 1)")
        ax[0].set_title("exploration-win probability p(t)")
    elif "gap_mean" in d:
        m, s = np.array(d["gap_mean"]), np.array(d["gap_sd"])
        lo, span = d["x_scale"]
        ax[0].plot(
            np.exp(lo + span * np.array(d["obs_x"])),
            d["obs_y"],
            ".",
            alpha=0.4,
            label="|r_hat_t - r_0| (groups)",
        )
        ax[0].plot(sig, m, "o-", label=f"GP mean ({d['kernel']})")
        ax[0].fill_between(sig, m - 2 * s, m + 2 * s, alpha=0.3, label="+-2 sd")
        ax[0].plot(sig, d["reliability"], "s--", label="reliability rel(t)")
        ax[0].set_title("one-step reward reliability R(t)")
    elif "gain_k1" in d:
        ax[0].plot(sig, d["gain_k1"], "o-", label="mean one-step gain of iteration 1")
        ax[0].plot(sig, d["weight"], "s--", label="weight w(t) (rank agreement)")
        ax[0].set_yscale("symlog", linthresh=1e-3)
        ax[0].set_title("gain controller inputs")
    if ax[0].get_legend_handles_labels()[0]:
        ax[0].legend(fontsize=7)
    ks = [s["k"] for s in base.steps]
    ax[1].bar(range(len(ks)), ks, color="tab:blue", label="K_t")
    ax2 = ax[1].twinx()
    ax2.plot(range(len(ks)), [s["eps"] for s in base.steps], "r.-", label="eps_t")
    ax2.set_ylim(0, 1)
    ax[1].set_xticks(
        range(len(ks)), [f"{s['sigma']:.2g}" for s in base.steps], rotation=90, fontsize=6
    )
    ax[1].set_title(f"{base.kind}: K_t (bars), eps_t (red); mean K_t = {base.expected_k():.2f}")
    ax[1].set_xlabel("sigma_t")
    ax[0].set_xscale("log")
    ax[0].invert_xaxis()
    ax[0].set_xlabel("sigma_t")
    fig.tight_layout()
    save_figure(fig, path)
