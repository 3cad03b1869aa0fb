"""Command line: ``adaptive-tts sample | demo | calibrate | fit | bench | report``.

Methods, tasks, samplers and controller kinds come from their registries
(:mod:`adaptive_tts.registry`, :mod:`adaptive_tts.tasks`, :mod:`controllers.registry`)."""

from __future__ import annotations

import argparse
import os
import sys

from adaptive_tts.quiet import install_import_hook
from experiments.cli.bench import add_bench, add_demo, cmd_bench, cmd_demo
from experiments.cli.calibrate import add_calibrate, add_fit, cmd_calibrate, cmd_fit
from experiments.cli.errors import UsageError, one_line
from experiments.cli.report import add_report, cmd_report
from experiments.cli.sample import add_sample, cmd_sample

__all__ = ["main"]


def main(argv: list[str] | None = None) -> int:
    install_import_hook()  # gpytorch / BoTorch import without torch's jit.script notice
    parser = argparse.ArgumentParser(prog="adaptive-tts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    add_sample(sub)
    add_demo(sub)
    add_calibrate(sub)
    add_fit(sub)
    add_bench(sub)
    add_report(sub)
    parser.add_argument(
        "--debug", action="store_true", help="show tracebacks (also ADAPTIVE_TTS_DEBUG=1)"
    )
    args = parser.parse_args(argv)
    commands = {
        "bench": cmd_bench,
        "calibrate": cmd_calibrate,
        "fit": cmd_fit,
        "sample": cmd_sample,
        "demo": cmd_demo,
        "report": cmd_report,
    }
    debug = args.debug or os.environ.get("ADAPTIVE_TTS_DEBUG", "") not in ("", "0")
    try:
        return commands[args.command](args)
    except (UsageError, ValueError, TypeError, FileNotFoundError) as err:
        # expected errors name their option, file or key: one line, exit code 2
        if debug:
            raise
        print(one_line(err), file=sys.stderr)
        return 2
