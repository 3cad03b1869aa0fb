"""Command line: ``adaptive-tts sample | demo | calibrate | fit | bench``.

Methods, tasks, samplers and controller kinds come from their registries
(:mod:`adaptive_tts.registry`, :mod:`adaptive_tts.tasks`, :mod:`controllers.registry`)."""

from __future__ import annotations

import argparse

from experiments.cli.bench import add_bench, add_demo, cmd_bench, cmd_demo
from experiments.cli.calibrate import add_calibrate, add_fit, cmd_calibrate, cmd_fit
from experiments.cli.sample import add_sample, cmd_sample

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptive-tts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_sample(sub)
    add_demo(sub)
    add_calibrate(sub)
    add_fit(sub)
    add_bench(sub)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command == "calibrate":
        return cmd_calibrate(args)
    if args.command == "fit":
        return cmd_fit(args)
    if args.command == "sample":
        return cmd_sample(args)
    if args.command == "demo":
        return cmd_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2
