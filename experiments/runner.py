"""Run a registered search method on a task for given seeds and prompts (shared by the CLI,
calibration, the evaluation drivers and benchmarks), and place a process in a launch."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import torch

from adaptive_tts.registry import METHODS, RESERVED, check_method_options
from adaptive_tts.sampling import Sampler, initial_noise, make_generators
from adaptive_tts.tasks import Task, build_task
from adaptive_tts.types import SearchResult

__all__ = [
    "RESERVED",
    "method_kwargs",
    "prepare_task",
    "process_shard",
    "rank_device",
    "run_method",
]


def method_kwargs(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """The options for ``method`` with ``None`` values dropped
    (:func:`adaptive_tts.registry.check_method_options`).

    Raises:
        ValueError: ``method`` is not registered (the message lists the registered ones), or an
            option's value is out of its type or range.
        TypeError: an option ``method`` does not take (naming the option and the method).
    """
    return check_method_options(method, options)


def run_method(
    task: Task,
    method: str,
    sampler: Sampler,
    seeds: list[int],
    prompts: torch.Tensor,
    device: str = "cpu",
    generator_device: str | None = None,
    **options: Any,
) -> SearchResult:
    """Search with ``method`` for each ``(seed, prompt)`` pair, as one batch.

    Args:
        seeds: one integer seed per sample (its generator drives every random draw).
        prompts: ``(B,)`` long class/target per sample (``-1`` where unused).
        options: method settings (``n``, ``k``, ``eps``, ``lam``, ``width``, ``sims``,
            ``controller``, ``max_batch`` ...); ``None`` values are dropped, and an option the
            method does not take is a ``TypeError``.
        generator_device: where the per-sample generators draw. ``None``/``"cpu"``: on the
            CPU, bit-reproducible on any machine; ``"cuda"``: on the GPU, reproducible on the
            same GPU model and much faster there (no host-side draws or copies).
    """
    if len(seeds) != prompts.shape[0]:
        raise ValueError(
            f"need one prompt per seed: {len(seeds)} seeds, {prompts.shape[0]} prompts"
        )
    gens = make_generators(seeds, device=generator_device or "cpu")
    x_T = initial_noise(task.sample_shape, gens, sampler.sigma(0), device=device)
    fn = METHODS[method]
    cond = prompts.to(device) if task.uses_prompt else None
    result = fn(
        task.denoiser,
        sampler,
        x_T,
        cond=cond,
        reward=task.reward,
        generator=gens,
        **method_kwargs(method, options),
    )
    for tr, seed in zip(result.traces, seeds):
        tr["seed"] = int(seed)
        tr["task"] = task.name
        tr["model"] = task.model
    return result


def process_shard() -> tuple[int, int]:
    """``(rank, world)`` of this process from torchrun/accelerate's environment (else 0, 1)."""
    rank, world = int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK must lie in [0, WORLD_SIZE - 1], got RANK={rank} of {world}")
    return rank, world


def rank_device(device: str) -> str:
    """``"cuda"`` becomes ``"cuda:LOCAL_RANK"`` in a multi-process launch; else unchanged."""
    if device == "cuda" and process_shard()[1] > 1:
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def prepare_task(
    name: str,
    device: str = "cpu",
    cuda_graphs: bool = False,
    build: Callable[[str], Task] | None = None,
) -> tuple[Task, str]:
    """Build task ``name`` (or ``build(device)``, e.g. a model spec's task) for this process:
    ``device`` goes through :func:`rank_device` (and becomes the current CUDA device), and
    ``cuda_graphs`` wraps the denoiser and reward in CUDA-graph replay. Returns the task and
    the device it lives on."""
    device = rank_device(str(device))
    if cuda_graphs and not device.startswith("cuda"):
        raise ValueError(f"cuda_graphs needs a CUDA device, got device {device!r}")
    if device.startswith("cuda:"):
        torch.cuda.set_device(torch.device(device))
    task = build(device) if build is not None else build_task(name, device=device)
    if cuda_graphs:
        from adaptive_tts.cuda_graphs import graph_task

        task = graph_task(task)
    return task, device
