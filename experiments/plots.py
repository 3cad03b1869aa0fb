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


def plot_nfe_per_step(rows: list[dict[str, Any]], path: Path, title: str) -> Path | None:
    """Counted NFEs per sample at each sampler step (the per-step compute ledger,
    ``row["compute"]["steps"]``), one line per method: where each search spends its budget.
    ``None`` (nothing written) when no row carries a per-step ledger."""
    have = [r for r in rows if r.get("compute", {}).get("steps")]
    if not have:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptive_tts.viz import save_figure

    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    for r in have:
        steps = r["compute"]["steps"]
        ax.plot(
            [s["i"] for s in steps],
            [s["nfe_per_sample"] for s in steps],
            marker=".",
            label=f"{r.get('label', r.get('method'))} ({r['nfe']:.0f})",
        )
    ax.set_yscale("log")
    ax.set_xlabel("sampler step (noisiest first)")
    ax.set_ylabel("counted NFEs per sample in the step")
    ax.set_title(title)
    ax.legend(fontsize=7, title="method (NFEs per sample)", title_fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


def plot_gpu_speed(bench: dict[str, Any], scaling: dict[str, Any] | None, path: Path) -> Path:
    """Seconds per image by variant (naive, eps-greedy (4, 20), learned schedules) from
    ``experiments/bench_gpu.py``'s JSON, and counted NFE/s against GPUs from
    ``experiments/bench_calibration_scaling.py``'s, side by side."""
    import matplotlib.pyplot as plt

    from adaptive_tts.viz import save_figure

    fig, axes = plt.subplots(1, 2 if scaling else 1, figsize=(11 if scaling else 6, 3.8))
    ax = axes[0] if scaling else axes
    rows = bench["rows"]
    keys = ["naive", "eps_greedy_4_20"] + [k for k in rows[0] if k.startswith("learned:")]
    width = 0.8 / len(rows)
    for j, row in enumerate(rows):
        vals = [row[k]["seconds_per_image"] for k in keys]
        ax.bar([i + j * width for i in range(len(keys))], vals, width, label=row["variant"])
    ax.axhline(0.05, color="k", ls="--", lw=1, label="target 0.05 s")
    ax.set_xticks([i + width * (len(rows) - 1) / 2 for i in range(len(keys))])
    names = [k.replace("eps_greedy_4_20", "eps-greedy\n(4, 20)").replace(":", "\n") for k in keys]
    ax.set_xticklabels(names, fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("seconds per image")
    ax.set_title(f"{rows[0]['gpu']}, {bench['images']} images, Heun 18", fontsize=9)
    ax.legend(fontsize=7)
    if scaling:
        runs = scaling["runs"]
        g = [r["gpus"] for r in runs]
        axes[1].plot(g, [r["steady_nfe_per_s"] for r in runs], "o-", label="after warm-up")
        axes[1].plot(g, [r["whole_run_nfe_per_s"] for r in runs], "s:", label="whole run")
        axes[1].plot(g, [runs[0]["steady_nfe_per_s"] * x for x in g], "k--", lw=1, label="linear")
        axes[1].set_xticks(g)
        axes[1].set_xlabel("GPUs")
        axes[1].set_ylabel("counted NFE/s")
        axes[1].set_title(f"calibration run, {scaling['gpu']}", fontsize=9)
        axes[1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


if __name__ == "__main__":  # python -m experiments.plots: redraw the GPU speed figure
    import json

    res = Path("experiments/results")
    sc = res / "calibration_scaling.json"
    plot_gpu_speed(
        json.loads((res / "gpu_bench.json").read_text()),
        json.loads(sc.read_text()) if sc.exists() else None,
        res / "gpu_speed.png",
    )
