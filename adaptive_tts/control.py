"""Baseline controllers the core searches default to: fixed knobs (the paper's defaults) and the
paper's sigma window. Learned controllers build on these in :mod:`controllers`."""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass

import torch

from adaptive_tts.types import Knobs, StepInfo


def check_int(value: object, name: str, lo: int = 0, hi: int | None = None) -> int:
    """``value`` as an ``int`` if it is an integer (not a bool, not ``2.7``) in ``[lo, hi]``;
    else a ``ValueError`` naming ``name`` and the allowed range."""
    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if not ok or int(value) < lo or (hi is not None and int(value) > hi):  # type: ignore[call-overload]
        span = f">= {lo}" if hi is None else f"in [{lo}, {hi}]"
        raise ValueError(f"{name}={value!r} is invalid, allowed: an integer {span}")
    return int(value)  # type: ignore[call-overload]


def check_float(
    value: object,
    name: str,
    lo: float = -math.inf,
    hi: float = math.inf,
    lo_open: bool = False,
    hi_open: bool = False,
) -> float:
    """``value`` as a finite ``float`` in the interval ``lo..hi`` (ends open or closed);
    NaN, infinity, bools and strings are a ``ValueError`` naming ``name`` and the range."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    inside = (
        math.isfinite(v) and (lo < v if lo_open else lo <= v) and (v < hi if hi_open else v <= hi)
    )
    if not inside:
        left, right = "(" if lo_open else "[", ")" if hi_open else "]"
        where = f" in {left}{lo:g}, {hi:g}{right}" if (lo, hi) != (-math.inf, math.inf) else ""
        raise ValueError(f"{name}={value!r} is invalid, allowed: a finite number{where}")
    return v


def check_knobs(n: int, k: int, eps: float, lam: float) -> None:
    """Raise ``ValueError`` naming the first out-of-range knob: ``n`` an integer >= 1, ``k`` an
    integer >= 0 (``2.7`` is refused, not truncated), ``eps`` in [0, 1] (NaN refused), ``lam``
    finite and >= 0."""
    check_int(n, "n (candidates per iteration)", 1)
    check_int(k, "k (search iterations)", 0)
    check_float(eps, "eps", 0.0, 1.0)
    check_float(lam, "lam", 0.0)


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
