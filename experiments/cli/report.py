"""``adaptive-tts report RUN_DIR``: the table and the reward-vs-NFE plot of a finished run
(``results.json`` of ``adaptive-tts bench`` / ``demo``), re-rendered without re-running."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

from experiments.cli.common import check_out_file
from experiments.cli.errors import UsageError

ROW_KEYS = ("label", "reward", "ci95", "nfe", "eval_rate", "seconds_per_sample")
"""What every row of ``results.json`` needs for the table and the plot."""
PLOT = "reward_vs_nfe.png"
STEPS_PLOT = "nfe_per_step"  # the per-step plot beside the main one, same suffix


def add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="re-render a run's table and plot from its results.json")
    p.add_argument("run_dir", type=Path, metavar="RUN_DIR", help="a bench / demo run directory")
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help=f"the plot's path (default: RUN_DIR/{PLOT}); the NFEs-per-step plot beside it",
    )
    p.add_argument("--no-plot", action="store_true", help="print the table only")


def load_results(run_dir: Path) -> dict[str, Any]:
    """``RUN_DIR/results.json``, checked to hold rows the table and plot can show."""
    path = run_dir / "results.json"
    if not run_dir.is_dir():
        raise UsageError(f"RUN_DIR {run_dir}: directory not found")
    if not path.is_file():
        raise UsageError(
            f"RUN_DIR {run_dir} holds no results.json",
            None,
            "allowed: a run directory written by `adaptive-tts bench` or `adaptive-tts demo`",
        )
    try:
        result = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise UsageError(f"{path}: not readable JSON ({err})") from None
    rows = result.get("rows") if isinstance(result, dict) else None
    if not isinstance(rows, list) or not rows:
        raise UsageError(f"{path}: no 'rows' (a list of method summaries)")
    for i, row in enumerate(rows):
        missing = [k for k in ROW_KEYS if not isinstance(row, dict) or k not in row]
        if missing:
            raise UsageError(f"{path}: row {i} lacks {', '.join(missing)}")
        bad = [k for k in ROW_KEYS[1:] if not _finite(row[k])]
        if bad:
            raise UsageError(f"{path}: row {i} ({row['label']}): {', '.join(bad)} not finite")
    return result


def _finite(value: object) -> bool:
    number = isinstance(value, int | float) and not isinstance(value, bool)
    return number and math.isfinite(float(value))  # type: ignore[arg-type]


def title(result: dict[str, Any]) -> str:
    """The plot title ``run_experiment`` gives: ``NAME: TASK``."""
    cfg = result.get("config") if isinstance(result.get("config"), dict) else {}
    task = cfg.get("task", "")
    return f"{cfg.get('name', 'run')}: {task if isinstance(task, str) else task.get('name', '')}"


def cmd_report(args: argparse.Namespace) -> int:
    from experiments.run import table

    result = load_results(args.run_dir)
    plot = args.out if args.out is not None else args.run_dir / PLOT
    # beside the plot: RUN_DIR/nfe_per_step.png as bench writes it, or NAME_nfe_per_step.SUFFIX
    beside = plot.with_name(
        STEPS_PLOT + plot.suffix if args.out is None else f"{plot.stem}_{STEPS_PLOT}{plot.suffix}"
    )
    if not args.no_plot:
        check_out_file(plot, "--out", (".png", ".pdf", ".svg"))
        check_out_file(beside, "--out", (".png", ".pdf", ".svg"))
    print(table(result["rows"]))
    if not args.no_plot:
        from experiments.plots import plot_nfe_per_step, plot_reward_vs_nfe

        plot_reward_vs_nfe(result["rows"], plot, title(result))
        print(f"plot: {plot}")
        steps = plot_nfe_per_step(result["rows"], beside, title(result))
        if steps is not None:
            print(f"plot: {steps}")
    return 0
