"""Plots shared by the experiment scripts."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_reward_vs_nfe(rows: list[dict[str, Any]], path: Path, title: str) -> Path:
    """Mean reward (95% CI) against counted NFEs, one point per method, log-x."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptive_tts.viz import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in rows:
        ax.errorbar(r["nfe"], r["reward"], yerr=r["ci95"], fmt="o", capsize=3)
        ax.annotate(
            str(r.get("label", r.get("method"))),
            (r["nfe"], r["reward"]),
            fontsize=7,
            xytext=(4, 2),
            textcoords="offset points",
        )
    ax.set_xscale("log")
    ax.set_xlabel("counted NFEs per sample")
    ax.set_ylabel("mean final reward (95% CI)")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)
