"""Quiet output: the default ``sample`` commands print no third-party warning or progress bar
(in a fresh interpreter, with every warning shown), and the lazy import hook keeps gpytorch /
BoTorch's import quiet."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(args: list[str]) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONWARNINGS": "default", "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, *args], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300
    )


def test_default_mnist_sample_is_quiet() -> None:
    argv = ["--model", "mnist", "--method", "naive", "--steps", "2", "--batch", "1"]
    out = run(["-m", "experiments.cli", "sample", *argv])
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""  # no warnings, no progress bars (stderr is not a terminal)
    assert out.stdout.startswith("naive on mnist-cond: reward ")


def test_default_gmm_sample_and_the_gp_stack_are_quiet() -> None:
    """``--json --quiet``: stdout is the JSON line alone; then gpytorch / BoTorch import in
    the same process through the hook the command line installed, without the notice."""
    code = (
        "import json\n"
        "from experiments.cli import main\n"
        "assert main(['sample', '--k', '1', '--steps', '3', '--batch', '2', '--json',"
        " '--quiet']) == 0\n"
        "import botorch, gpytorch, linear_operator\n"
        "print(type(linear_operator.__spec__.loader).__name__)\n"
    )
    out = run(["-c", code])
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    line, loader = out.stdout.strip().splitlines()
    assert json.loads(line)["task"] == "gmm-target" and loader == "_QuietLoader"
