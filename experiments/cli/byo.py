"""Bring-your-own model, reward and prompts on the command line: the shared options and the
task they build (:func:`adaptive_tts.specs.make_task`).

    p = sub.add_parser("sample"); add_model_reward_options(p)
    task = resolve_task(args, device)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from adaptive_tts.prompts import resolve_prompts
from adaptive_tts.specs import MODEL_SPECS, make_task
from adaptive_tts.tasks import Task
from experiments.cli.errors import usage

__all__ = ["add_model_reward_options", "resolve_task"]


def add_model_reward_options(
    parser: argparse.ArgumentParser,
    default_model: str | None = "gmm",
    model_default_help: str | None = None,
) -> None:
    """Add ``--model``, ``--reward`` (repeatable, ``SPEC[=WEIGHT]``), ``--eval-reward``,
    ``--prompt`` (repeatable), ``--prompts FILE`` (``--prompt-column``), ``--guidance``,
    ``--height``, ``--width`` to ``parser``; ``model_default_help`` words a ``None`` default."""
    schemes = " | ".join(f"{s}:DIR" if s not in ("gmm", "mnist") else s for s in MODEL_SPECS)
    parser.add_argument(
        "--model",
        default=default_model,
        metavar="SPEC",
        help=f"{schemes} (default: {model_default_help or default_model})",
    )
    parser.add_argument(
        "--reward",
        dest="rewards",
        action="append",
        default=None,
        metavar="SPEC[=WEIGHT]",
        help="brightness | compress | target | classifier:DIR | clip:DIR | aesthetic:DIR | "
        "an installed plug-in | package.module:callable; repeat for a weighted sum "
        "(default: target for gmm/mnist)",
    )
    parser.add_argument("--eval-reward", default=None, metavar="SPEC", help="held-out judge")
    parser.add_argument(
        "--prompt", dest="prompt_texts", action="append", default=None, metavar="TEXT"
    )
    parser.add_argument("--prompts", dest="prompt_file", type=Path, default=None, metavar="FILE")
    parser.add_argument(
        "--prompt-column", default=None, help="CSV column of --prompts (default: prompt/first)"
    )
    parser.add_argument("--guidance", type=float, default=None, help="CFG scale (text models)")
    parser.add_argument(
        "--height", dest="image_height", type=int, metavar="PIXELS", help="text models"
    )
    parser.add_argument(
        "--width", dest="image_width", type=int, metavar="PIXELS", help="text models"
    )


def resolve_task(args: argparse.Namespace, device: str = "cpu") -> Task:
    """The :class:`Task` of the options added by :func:`add_model_reward_options`."""
    for opt in ("height", "width"):
        value = getattr(args, f"image_{opt}", None)
        if value is not None and (value < 8 or value % 8):
            raise usage(f"--{opt}", value, "a multiple of 8 (pixels), >= 8")
    guidance = getattr(args, "guidance", None)
    if guidance is not None and not guidance >= 0:
        raise usage("--guidance", guidance, "a number >= 0")
    prompts = resolve_prompts(
        getattr(args, "prompt_texts", None),
        getattr(args, "prompt_file", None),
        getattr(args, "prompt_column", None),
    )
    return make_task(
        args.model,
        getattr(args, "rewards", None),
        eval_reward=getattr(args, "eval_reward", None),
        prompts=prompts,
        guidance=guidance,
        height=getattr(args, "image_height", None),
        width=getattr(args, "image_width", None),
        device=device,
    )
