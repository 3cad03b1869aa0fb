"""``adaptive-tts demo``: calibrate on a few (target, seed) pairs (budget-varied fresh-draw runs
with K = 0, 1, 2, 4, 8 plus the full eps-greedy(4,20) search), fit the closed-loop stopping
controller, deploy it beside naive, best-of-4, fixed K=2, fixed K=4 and eps-greedy(4,20) on
held-out pairs (each its own noise, none seen in calibration), print a table (reward with 95%
interval, counted NFEs, evaluation-classifier rate, seconds per sample) and write the results,
plots, the fitted controller (JSON, its calibration data, its reliability plot) and a sample grid
into the run directory.

The config ships as package data (``experiments/configs/demo.yaml``) and is read through
:mod:`importlib.resources`, so the installed command never reads the source tree.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from experiments.calibration import check_out_dir
from experiments.config import load_config
from experiments.run import run_experiment


def demo_config_text() -> str:
    """The shipped demo config (YAML text), from the installed package's data."""
    return (resources.files("experiments") / "configs" / "demo.yaml").read_text(encoding="utf-8")


def run_demo(
    out: Path,
    task: str | None = None,
    device: str = "cpu",
    seeds: int | None = None,
    wandb: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the demo config; returns the experiment result (rows, per-pair records). ``out``,
    ``seeds`` and the config are checked before any work."""
    check_out_dir(Path(out), "--out")
    if seeds is not None and (isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1):
        raise ValueError(f"--seeds={seeds!r} is invalid, allowed: an integer >= 1")
    sets = list(overrides or [])
    if task is not None:
        sets.append(f"task={task}")
    if seeds is not None:
        sets.append(f"pairs.seeds=[0, {seeds}]")
    sets += [f"device={device}", f"wandb.enabled={str(wandb).lower()}"]
    with resources.as_file(resources.files("experiments") / "configs" / "demo.yaml") as path:
        cfg = load_config(path, sets)
    return run_experiment(cfg, out, wandb_on=wandb)
