"""``adaptive-tts demo``: calibrate on a few (class, seed) pairs, fit the controllers, deploy
them against naive, best-of-N, fixed eps-greedy and the sigma window on held-out pairs, print a
table and write plots and a sample grid into the run directory (``experiments/configs/demo.yaml``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

CONFIG = Path(__file__).resolve().parents[1] / "experiments" / "configs" / "demo.yaml"


def run_demo(
    out: Path,
    task: str | None = None,
    device: str = "cpu",
    seeds: int | None = None,
    wandb: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the demo config; returns the experiment result (rows, per-pair records)."""
    from importlib import resources

    from experiments.config import load_config
    from experiments.run import run_experiment

    path = (
        CONFIG
        if CONFIG.is_file()
        else Path(str(resources.files("experiments") / "configs" / "demo.yaml"))
    )
    sets = list(overrides or [])
    if task is not None:
        sets.append(f"task={task}")
    if seeds is not None:
        sets.append(f"pairs.seeds=[0, {seeds}]")
    sets += [f"device={device}", f"wandb.enabled={str(wandb).lower()}"]
    cfg = load_config(path, sets)
    return run_experiment(cfg, out, wandb_on=wandb)
