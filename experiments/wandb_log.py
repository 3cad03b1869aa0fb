"""Weights & Biases logging of an experiment: config, per-method metrics, a table of per-pair
results, images of the best samples, the reward-vs-NFE plot; one W&B group per config.

W&B runs offline unless ``WANDB_MODE`` is already set (sync later with ``wandb sync DIR``).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch


def numbers(d: dict[str, Any], prefix: str) -> dict[str, float]:
    """The numeric leaves of a nested dict as ``prefix/key/subkey`` (lists and text skipped)."""
    out: dict[str, float] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out |= numbers(v, f"{prefix}/{k}")
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[f"{prefix}/{k}"] = v
    return out


def log_experiment(
    cfg: dict[str, Any], result: dict[str, Any], out: Path, images: dict[str, torch.Tensor]
) -> str:
    """Log ``result`` to one W&B run in group ``cfg.wandb.group`` (default: the config name);
    returns the local run directory."""
    wcfg = cfg.get("wandb", {})
    mode: Any = wcfg.get("mode") or os.environ.get("WANDB_MODE") or "offline"
    os.environ["WANDB_MODE"] = mode
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    from experiments.plots import plot_reward_vs_nfe

    run = wandb.init(
        project=wcfg.get("project", "adaptive-tts"),
        group=wcfg.get("group") or cfg["name"],
        name=cfg["name"],
        config=cfg,
        dir=str(out),
        mode=mode,
        reinit="finish_previous",
    )
    for i, row in enumerate(result["rows"]):
        run.log({"step": i, **numbers(row, row["label"])})  # the compute ledger's numbers too
    flat = [{k: v for k, v in r.items() if k != "compute"} for r in result["rows"]]
    summary = wandb.Table(columns=list(flat[0]), data=[list(r.values()) for r in flat])
    per_step = wandb.Table(  # the per-step compute ledger, one line per (method, step)
        columns=["label", "step", "nfe_per_sample", "reward_calls", "seconds"],
        data=[
            [r["label"], s["i"], s["nfe_per_sample"], s["reward_calls"], s["seconds"]]
            for r in result["rows"]
            for s in r.get("compute", {}).get("steps", [])
        ],
    )
    per_pair = wandb.Table(
        columns=list(result["records"][0]), data=[list(r.values()) for r in result["records"]]
    )
    plot = out / "reward_vs_nfe.png"
    if not plot.exists():
        plot = plot_reward_vs_nfe(result["rows"], plot, cfg["name"])
    log: dict[str, Any] = {
        "summary": summary,
        "per_pair": per_pair,
        "per_step": per_step,
        "reward_vs_nfe": wandb.Image(str(plot)),
    }
    if (out / "nfe_per_step.png").exists():
        log["nfe_per_step"] = wandb.Image(str(out / "nfe_per_step.png"))
    for label, imgs in images.items():
        if imgs.dim() != 4:  # not image-shaped (e.g. the vector mixture)
            continue
        log[f"best/{label}"] = [wandb.Image(im.permute(1, 2, 0).squeeze(-1).numpy()) for im in imgs]
    run.log(log)
    for png in sorted(out.glob("fit_*.png")) + sorted(out.glob("samples.png")):
        run.log({png.stem: wandb.Image(str(png))})
    run_dir = str(run.dir)
    run.finish()
    return run_dir
