"""Noise-space helpers shared by the seed-space searches (EACPS, EvoSearch): Gaussian-preserving
mixing, the noised steps of a sampler, and a noise hook that replays stored per-step noise."""

from __future__ import annotations

import math

from torch import Tensor

from adaptive_tts.sampling import Sampler
from adaptive_tts.search.loop import NoiseHook, StepContext


def check_beta(beta: float) -> None:
    """``beta`` (mutation / mixing strength) must be a finite number in [0, 1]."""
    try:
        ok = 0.0 <= float(beta) <= 1.0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"beta must lie in [0, 1], got {beta!r}")


def gaussian_mix(x: Tensor, eta: Tensor, beta: float) -> Tensor:
    """``sqrt(1 - beta^2) x + beta eta``: maps ``N(0, I)`` to ``N(0, I)`` for independent
    ``eta ~ N(0, I)`` (any shape, ``x`` and ``eta`` alike); ``beta = 0`` returns ``x`` exactly."""
    return math.sqrt(1.0 - beta * beta) * x + beta * eta


def noised_steps(sampler: Sampler) -> list[int]:
    """Indices of the steps that inject noise (non-zero noise scale)."""
    return [i for i in range(sampler.num_steps) if sampler.noise_scale(i) > 0.0]


def bank_noise(bank: Tensor, steps: list[int]) -> NoiseHook:
    """Noise hook replaying column ``k`` of ``bank`` ``(R, len(steps), *S)`` at step
    ``steps[k]``."""
    col = {i: k for k, i in enumerate(steps)}

    def choose(ctx: StepContext) -> Tensor:
        return bank[:, col[ctx.i]]

    return choose
