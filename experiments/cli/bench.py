"""``adaptive-tts bench`` (an experiment config) and ``adaptive-tts demo``."""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptive_tts.tasks import TASKS
from experiments.cli.common import add_run_options, device_overrides


def add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run an experiment config (see experiments/configs)")
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-wandb", action="store_true")
    add_run_options(p, device=None)


def cmd_bench(args: argparse.Namespace) -> int:
    from experiments.run import main as run_main

    argv = [str(args.config), "--set", *args.overrides, *device_overrides(args)]
    if args.out is not None:
        argv += ["--out", str(args.out)]
    if args.no_wandb:
        argv.append("--no-wandb")
    return run_main(argv)


def add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="calibrate, fit controllers, compare on held-out pairs")
    p.add_argument("--task", choices=sorted(TASKS), default=None, help="default: mnist-target")
    p.add_argument("--seeds", type=int, default=None, help="held-out seeds per class (default 1)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--wandb", action="store_true", help="also log to W&B (offline by default)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")


def cmd_demo(args: argparse.Namespace) -> int:
    from experiments.demo import run_demo
    from experiments.run import table

    result = run_demo(
        args.out,
        task=args.task,
        device=args.device,
        seeds=args.seeds,
        wandb=args.wandb,
        overrides=args.overrides,
    )
    print(table(result["rows"]))
    print(
        f"run directory: {args.out} (results.json, results.csv, reward_vs_nfe.png, "
        "samples.png, schedule_*.json, fit_*.png)"
    )
    return 0
