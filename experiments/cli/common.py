"""Options and checks shared by several subcommands."""

from __future__ import annotations

import argparse
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from experiments.cli.errors import UsageError, usage

GRAPHED_MODELS = ("mnist", "edm")
"""Model schemes whose denoiser replays CUDA graphs by default on a GPU: small, launch-bound
networks (the embedded MNIST UNet, an ``edm:DIR`` UNet). gmm runs on the CPU; text models are
compute-bound (graphs would only cost memory per row bucket)."""
GRAPHED_REWARDS = ("target", "brightness", "classifier")
"""Reward schemes captured by default (no host synchronisation, no CPU work); ``compress``
encodes JPEG on the CPU and plug-ins are unknown, so they run eagerly unless forced."""


@dataclass(frozen=True)
class RunSettings:
    """Where and how a command runs (:func:`run_settings`)."""

    device: str
    generator_device: str | None
    cuda_graphs: bool
    graph_reward: bool
    progress: bool


def add_run_options(
    p: argparse.ArgumentParser, device: str | None = "cpu", quiet: bool = True
) -> None:
    """``--device``, ``--generator-device``, ``--cuda-graphs/--no-cuda-graphs`` and (with
    ``quiet``) ``--quiet``. ``device=None``: no default (``bench``: the config's device unless
    given)."""
    p.add_argument(
        "--device",
        default=device,
        help="cpu, cuda (cuda:LOCAL_RANK per process); cuda also turns on device-side noise "
        "and CUDA graphs where the model and reward allow"
        + ("" if device else " (default: the config's)"),
    )
    p.add_argument(
        "--generator-device",
        choices=["cpu", "cuda"],
        default=None,
        help="where per-sample noise is drawn (cpu: bit-reproducible anywhere; cuda: faster; "
        "default: the --device's kind)",
    )
    p.add_argument(
        "--cuda-graphs",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="replay the denoiser and reward from CUDA graphs (default: on for --device cuda "
        f"with models {', '.join(GRAPHED_MODELS)})",
    )
    if quiet:
        p.add_argument(
            "--quiet", action="store_true", help="no progress bars or summary lines on stderr"
        )


def _schemes(specs: Sequence[str] | None) -> list[str]:
    return [str(s).partition("=")[0].partition(":")[0].strip() for s in specs or []]


def run_settings(
    args: argparse.Namespace, model: str | None, rewards: Sequence[str] | None = None
) -> RunSettings:
    """The settings of ``args`` for ``model`` (a spec or a built-in name) and its ``rewards``.

    ``--device cuda`` implies ``--generator-device cuda`` and CUDA graphs of the denoiser
    (:data:`GRAPHED_MODELS`) and of the reward (all of :data:`GRAPHED_REWARDS`); each opts out
    with ``--generator-device cpu`` / ``--no-cuda-graphs``. An explicit ``--cuda-graphs``
    graphs both. On the CPU nothing changes (CPU generators: bit-exact reproducibility).
    Progress bars are shown only on a terminal and never with ``--quiet``."""
    device = str(args.device or "cpu")
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        if not torch.cuda.is_available():
            raise UsageError(f"--device {device} needs a CUDA device", None, "allowed here: cpu")
    gen = args.generator_device or ("cuda" if cuda else None)
    if args.generator_device is not None:
        check_generator_device(args.generator_device)
    scheme = _schemes([model])[0] if model else ""
    graphs, graph_reward = bool(args.cuda_graphs), bool(args.cuda_graphs)
    if args.cuda_graphs and not cuda:
        raise UsageError(
            f"--cuda-graphs needs a CUDA device (cuda_graphs needs a CUDA device, got device "
            f"{device!r})",
            None,
            "allowed: --device cuda",
        )
    if args.cuda_graphs is None and cuda:
        graphs = scheme in GRAPHED_MODELS
        reward_schemes = _schemes(rewards) or ["target"]
        graph_reward = graphs and all(s in GRAPHED_REWARDS for s in reward_schemes)
    quiet = bool(getattr(args, "quiet", False))
    return RunSettings(device, gen, graphs, graph_reward, not quiet and sys.stderr.isatty())


def task_run_settings(args: argparse.Namespace, task: str) -> RunSettings:
    """:func:`run_settings` for a registered task name (``mnist-target`` ...)."""
    from adaptive_tts.tasks import task_spec

    spec = task_spec(task)[1]
    return run_settings(args, spec.model, [spec.reward])


def apply_run_settings(args: argparse.Namespace, settings: RunSettings) -> RunSettings:
    """Write the resolved ``settings`` back into ``args`` (``generator_device``,
    ``cuda_graphs``) for commands that read them from there; returns ``settings``."""
    args.generator_device = settings.generator_device
    args.cuda_graphs = settings.cuda_graphs
    args.progress = settings.progress
    return settings


def prepare_run(args: argparse.Namespace, task: str) -> tuple[Any, str]:
    """The registered ``task`` built for ``args``'s settings (:func:`task_run_settings`):
    ``(task, device)``, with ``args.generator_device`` / ``args.cuda_graphs`` resolved."""
    from experiments.runner import prepare_task

    s = apply_run_settings(args, task_run_settings(args, task))
    quiet_loaders(s)
    built, device = prepare_task(task, s.device, False)
    return graph(built, s), device


def device_overrides(args: argparse.Namespace) -> list[str]:
    """``bench``: the config overrides (``device=...``, ``generator_device=...``,
    ``cuda_graphs=...``) of ``--device`` / ``--generator-device`` / ``--cuda-graphs``; none
    without ``--device`` (the config's settings stand)."""
    given = args.generator_device is not None or args.cuda_graphs is not None
    if args.device is None:
        if given:
            raise UsageError(
                "--generator-device / --cuda-graphs with bench need --device",
                None,
                "allowed: --device cpu|cuda with them (or set them in the config)",
            )
        return []
    from experiments.config import load_config

    cfg = load_config(args.config, args.overrides)
    task = cfg.get("task")
    if isinstance(task, str):
        s = task_run_settings(args, task)
    else:  # a model: config (or a task mapping): its model and reward specs
        spec = task if isinstance(task, dict) else cfg
        reward = spec.get("reward")
        rewards = [reward] if isinstance(reward, str) else list(reward or [])
        s = run_settings(args, spec.get("model"), [str(r) for r in rewards])
    out = [f"device={s.device}", f"cuda_graphs={str(s.cuda_graphs and s.graph_reward).lower()}"]
    return out + ([f"generator_device={s.generator_device}"] if s.generator_device else [])


def quiet_loaders(settings: RunSettings) -> None:
    """No model-loading progress bars unless ``settings.progress``."""
    if not settings.progress:
        from adaptive_tts.quiet import disable_progress_bars

        disable_progress_bars()


def place(device: str) -> str:
    """``device`` for this process (``cuda`` -> ``cuda:LOCAL_RANK`` under a launcher; a CUDA
    device becomes the current one), as :func:`experiments.runner.prepare_task` places it."""
    from experiments.runner import rank_device

    device = rank_device(str(device))
    if device.startswith("cuda:"):
        import torch

        torch.cuda.set_device(torch.device(device))
    return device


def graph(task: Any, settings: RunSettings) -> Any:
    """``task`` with its denoiser (and reward, if ``settings.graph_reward``) in CUDA graphs
    when ``settings.cuda_graphs``; else ``task`` itself."""
    if not settings.cuda_graphs:
        return task
    from adaptive_tts.cuda_graphs import graph_task

    return graph_task(task, reward=settings.graph_reward)


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
