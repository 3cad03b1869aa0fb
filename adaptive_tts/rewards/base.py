"""Reward plumbing: finiteness checks, image adaptors, composites and a closed-form reward."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

from adaptive_tts.cuda_graphs import capturing


def check_finite(values: Tensor, name: str) -> Tensor:
    """Raise ``ValueError`` naming the reward if ``values`` holds NaN or inf (skipped while a
    CUDA graph is being captured: the check would synchronise)."""
    if capturing():
        return values
    if not torch.isfinite(values).all():
        bad = int((~torch.isfinite(values)).sum())
        raise ValueError(f"reward {name!r} returned {bad} non-finite value(s) (NaN/inf)")
    return values


def reward_name(reward: object) -> str:
    return str(getattr(reward, "name", type(reward).__name__))


class OnImages:
    """Apply an image reward to model-space samples: ``r(to_image(x0), cond)``."""

    def __init__(
        self,
        reward: Callable[[Tensor, Tensor | None], Tensor],
        to_image: Callable[[Tensor], Tensor],
    ):
        self.reward = reward
        self.to_image = to_image
        self.name = reward_name(reward)

    def __call__(self, x0: Tensor, cond: Tensor | None) -> Tensor:
        return check_finite(self.reward(self.to_image(x0), cond), self.name)


class Composite:
    """Weighted potential ``U(x) = sum_k w_k v_k(x)`` (EACPS's scalarisation).

    Args:
        terms: ``(weight, reward)`` pairs; each reward maps ``(x, cond) -> (B,)``.
    """

    def __init__(self, terms: Sequence[tuple[float, Callable[[Tensor, Tensor | None], Tensor]]]):
        if not terms:
            raise ValueError("terms must hold at least one (weight, reward) pair")
        for w, _ in terms:
            if not math.isfinite(w):
                raise ValueError(f"composite weights must be finite, got {w}")
        self.terms = list(terms)
        self.name = " + ".join(f"{w:g}*{reward_name(r)}" for w, r in self.terms)

    def components(self, x: Tensor, cond: Tensor | None) -> dict[str, Tensor]:
        """Each term's value ``(B,)``, by reward name."""
        return {reward_name(r): check_finite(r(x, cond), reward_name(r)) for _, r in self.terms}

    def __call__(self, x: Tensor, cond: Tensor | None) -> Tensor:
        total = torch.zeros(x.shape[0], dtype=torch.float32, device=x.device)
        for w, r in self.terms:
            total = total + w * check_finite(r(x, cond), reward_name(r)).float()
        return total


class GaussianLogDensity:
    """Closed-form reward: ``log N(x; mean, diag(var))`` per sample, averaged over dimensions.

    Args:
        mean: ``(d,)``; var: ``(d,)`` positive (or a float).
    """

    def __init__(self, mean: Tensor, var: Tensor | float, name: str = "log-density"):
        self.mean = mean.double().reshape(-1)
        self.var = torch.as_tensor(var, dtype=torch.float64).expand_as(self.mean)
        if (self.var <= 0).any():
            raise ValueError("var must be positive")
        self.name = name

    def __call__(self, x: Tensor, cond: Tensor | None = None) -> Tensor:
        xf = x.reshape(x.shape[0], -1).double().cpu()
        lp = -0.5 * ((xf - self.mean) ** 2 / self.var + self.var.log() + math.log(2 * math.pi))
        return lp.mean(1).float().to(x.device)
