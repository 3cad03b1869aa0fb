"""The documented seed range.

A CPU ``torch.Generator`` seeds its Mersenne Twister from the low 32 bits of the seed, so seeds
that differ only above bit 31 (``0`` and ``2**32``) would give identical noise, and negative
seeds alias large ones. Seeds are therefore integers in ``[0, SEED_MAX]``; a batch that runs
``seed, seed + 1, ..., seed + batch - 1`` must keep its last seed in range too. Anything else
is a ``ValueError`` naming the parameter and the range, so distinct accepted seeds never collide.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterable

SEED_MAX = 2**32 - 1
"""The largest accepted seed (inclusive)."""


def check_seed(seed: object, name: str = "seed", count: int = 1) -> int:
    """``seed`` as an ``int`` if it and ``seed + count - 1`` lie in ``[0, SEED_MAX]``."""
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral):
        raise ValueError(f"{name}={seed!r} is invalid, allowed: an integer in [0, {SEED_MAX}]")
    s = int(seed)
    if s < 0 or s + max(int(count), 1) - 1 > SEED_MAX:
        span = f"{name}={s}" if count <= 1 else f"{name}={s} with {count} consecutive seeds"
        raise ValueError(f"{span} is out of range, allowed: integers in [0, {SEED_MAX}]")
    return s


def check_seeds(seeds: Iterable[object], name: str = "seeds") -> list[int]:
    """Every seed of ``seeds`` checked by :func:`check_seed`."""
    return [check_seed(s, name) for s in seeds]
