"""Baseline controllers the core searches default to: fixed knobs (the paper's defaults) and the
paper's sigma window. Learned controllers build on these in :mod:`controllers`."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from adaptive_tts.types import Knobs, StepInfo


def check_knobs(n: int, k: int, eps: float, lam: float) -> None:
    """Raise ``ValueError`` naming the first out-of-range knob."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n (candidates per iteration) must be an integer >= 1, got {n!r}")
    if not isinstance(k, int) or k < 0:
        raise ValueError(f"k (search iterations) must be an integer >= 0, got {k!r}")
    if not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must lie in [0, 1], got {eps!r}")
    if not lam >= 0.0:
        raise ValueError(f"lam must be >= 0, got {lam!r}")


@dataclass
class FixedController:
    """Same knobs at every step. Defaults: the paper's N=4, K=20, lambda=0.15, eps=0.4."""

    n: int = 4
    k: int = 20
    eps: float = 0.4
    lam: float = 0.15

    def __post_init__(self) -> None:
        check_knobs(self.n, self.k, self.eps, self.lam)

    def decide(self, step: StepInfo) -> Knobs:
        b = step.batch
        return Knobs(
            self.n, torch.full((b,), self.k, dtype=torch.long), torch.full((b,), self.eps), self.lam
        )

    def to_dict(self) -> dict[str, object]:
        return {"type": "fixed", **asdict(self)}


@dataclass
class SigmaWindowController:
    """The paper's heuristic: ``k_in`` iterations where ``lo <= sigma_t <= hi``, else ``k_out``."""

    n: int = 4
    k_in: int = 20
    k_out: int = 1
    eps: float = 0.4
    lam: float = 0.15
    lo: float = 0.01
    hi: float = 1.0

    def __post_init__(self) -> None:
        check_knobs(self.n, self.k_in, self.eps, self.lam)
        check_knobs(self.n, self.k_out, self.eps, self.lam)
        if not 0 <= self.lo <= self.hi:
            raise ValueError(f"need 0 <= lo <= hi, got lo={self.lo}, hi={self.hi}")

    def decide(self, step: StepInfo) -> Knobs:
        b = step.batch
        k = self.k_in if self.lo <= step.sigma <= self.hi else self.k_out
        return Knobs(
            self.n, torch.full((b,), k, dtype=torch.long), torch.full((b,), self.eps), self.lam
        )

    def to_dict(self) -> dict[str, object]:
        return {"type": "sigma-window", **asdict(self)}
