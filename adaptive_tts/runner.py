"""Run a named search method on a task for given seeds and prompts (shared by the CLI,
calibration and benchmarks)."""

from __future__ import annotations

import inspect
from typing import Any

import torch

from adaptive_tts.sampling import Sampler, initial_noise, make_generators
from adaptive_tts.search import METHODS
from adaptive_tts.tasks import Task
from adaptive_tts.types import SearchResult


def method_kwargs(method: str, options: dict[str, Any]) -> dict[str, Any]:
    """Keep only the options ``method`` accepts (``None`` values dropped)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    accepted = inspect.signature(METHODS[method]).parameters
    return {k: v for k, v in options.items() if k in accepted and v is not None}


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
            ``controller``, ``max_batch`` ...); ones the method does not take are ignored.
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
