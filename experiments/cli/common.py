"""Options and checks shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

from experiments.cli.errors import UsageError, usage


def _add_gpu_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--generator-device",
        choices=["cpu", "cuda"],
        default=None,
        help="where per-sample noise is drawn (cpu: bit-reproducible anywhere; cuda: faster)",
    )
    p.add_argument(
        "--cuda-graphs", action="store_true", help="replay the denoiser and reward from CUDA graphs"
    )


def check_int(option: str, value: object, lo: int, hi: int) -> int:
    """``value`` if it is an integer in ``[lo, hi]``, else a :class:`UsageError` naming it."""
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise usage(option, value, f"an integer in [{lo}, {hi}]")
    return value


def check_float(option: str, value: object, lo: float, hi: float) -> float:
    """``value`` if it is a finite number in ``[lo, hi]``, else a :class:`UsageError`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if not ok or not math.isfinite(float(value)) or not lo <= float(value) <= hi:  # type: ignore[arg-type]
        raise usage(option, value, f"a finite number in [{lo:g}, {hi:g}]")
    return float(value)  # type: ignore[arg-type]


def _writable_ancestor(path: Path, option: str) -> None:
    """The nearest existing ancestor of ``path`` must be a writable directory."""
    parent = path.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise UsageError(f"{option} {path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: directory {parent} is not writable")


def check_out_file(path: Path, option: str, suffixes: tuple[str, ...]) -> Path:
    """Check, before any work, that ``path`` can be written as a file (it is not a directory,
    its suffix is one of ``suffixes``, its directory exists or can be made and is writable)."""
    if path.is_dir():
        raise UsageError(f"{option} {path} is a directory", None, "allowed: a file path")
    if path.suffix.lower() not in suffixes:
        raise UsageError(
            f"{option} {path} has suffix {path.suffix!r}", None, f"allowed: {', '.join(suffixes)}"
        )
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{option} {path} is not writable")
    _writable_ancestor(path, option)
    return path


def check_generator_device(device: str | None, option: str = "--generator-device") -> None:
    """A CUDA generator needs a CUDA device here."""
    if device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"{option}=cuda needs a CUDA device", None, "allowed here: cpu")
