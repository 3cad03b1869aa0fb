"""A schedule of knobs as a function of sigma (what every fitted controller deploys), with
versioned JSON save/load that refuses a schedule made for another model.

The fitted table holds one ``(sigma, k, eps[, p])`` point per searchable step of the calibration
sampler. At a step whose sigma is one of those points the knobs are exactly the table's; at any
other sigma inside the fitted range they are interpolated linearly in ``log sigma`` (``k`` rounded
to the nearest integer, ``eps`` and ``p`` as they come), so a schedule fitted at 18 Heun steps
deploys at 10 or 50 steps and on another sampler or model whose sigmas it covers. A sigma outside
the range (more than :data:`LOG_SIGMA_TOL` in ``log sigma`` beyond the extreme points; within it
the end point's knobs hold) is a ``ValueError`` naming the sigma and the range."""

from __future__ import annotations

import bisect
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from adaptive_tts.control import check_knobs
from adaptive_tts.fileio import atomic_write_text
from adaptive_tts.traces import strict_dumps
from adaptive_tts.types import Knobs, StepInfo
from controllers.schema import check_schedule_dict, read_json_file

SCHEMA = "adaptive_tts.schedule/1"
LOG_SIGMA_TOL = 0.05
"""How far (in ``log sigma``, about 5% in sigma) beyond the fitted range a step may lie."""
Mode = Literal["table", "draw"]


@dataclass
class ScheduleController:
    """Knobs as a function of the step's sigma (see the module docstring).

    Attributes:
        steps: one dict per searchable step of the fitted sampler: ``i``, ``sigma``, ``k``,
            ``eps`` and, for ``mode="draw"``, ``p`` (then ``K_t = max(k_min, Bin(k_max, p))``
            per sample from its generator).
        n, lam: candidates per iteration and neighbour radius scale.
        kind: which fit produced it (``binomial``, ``gp``, ...); ``meta``: model, task, sampler and
            calibration settings; ``diagnostics``: fitted curves for plots.
    """

    steps: list[dict[str, Any]]
    n: int = 4
    lam: float = 0.15
    mode: Mode = "table"
    k_max: int = 20
    k_min: int = 0
    kind: str = "schedule"
    meta: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("table", "draw"):
            raise ValueError(f"mode must be 'table' or 'draw', got {self.mode!r}")
        if not self.steps:
            raise ValueError("a schedule needs at least one step")
        if not 0 <= self.k_min <= self.k_max:
            raise ValueError(f"k_min must lie in [0, k_max={self.k_max}], got {self.k_min}")
        for st in self.steps:
            check_knobs(self.n, st["k"], st["eps"], self.lam)  # k=2.7 refused, not truncated
            if self.mode == "draw" and not 0.0 <= float(st.get("p", -1)) <= 1.0:
                raise ValueError(f"step {st['i']}: p must lie in [0, 1] for mode='draw'")
            if not float(st["sigma"]) > 0:
                raise ValueError(f"step {st['i']}: sigma must be > 0, got {st['sigma']}")
        self._sorted = sorted(self.steps, key=lambda st: float(st["sigma"]))
        self._log_sigma = [math.log(float(st["sigma"])) for st in self._sorted]

    def sigma_range(self) -> tuple[float, float]:
        """The fitted sigmas' range ``(lo, hi)``."""
        return float(self._sorted[0]["sigma"]), float(self._sorted[-1]["sigma"])

    def covers(self, sigma: float) -> bool:
        """Whether ``sigma`` lies in the fitted range (with :data:`LOG_SIGMA_TOL`)."""
        if not sigma > 0:
            return False
        ls = math.log(sigma)
        return self._log_sigma[0] - LOG_SIGMA_TOL <= ls <= self._log_sigma[-1] + LOG_SIGMA_TOL

    def at(self, sigma: float, index: int = -1) -> dict[str, Any]:
        """The knobs ``{i, sigma, k, eps[, p]}`` at ``sigma``: the table's own entry where
        ``sigma`` is a fitted point, else interpolated in ``log sigma``.

        Raises:
            ValueError: ``sigma`` outside the fitted range (naming it and the range).
        """
        for st in self._sorted:  # a fitted point: exactly the table's knobs
            if math.isclose(float(st["sigma"]), sigma, rel_tol=1e-6, abs_tol=1e-12):
                return st
        if not self.covers(sigma):
            lo, hi = self.sigma_range()
            raise ValueError(
                f"sigma {sigma:.4g} (step {index}) lies outside the range [{lo:.4g}, {hi:.4g}] "
                f"this {self.kind} schedule was fitted on (tolerance {LOG_SIGMA_TOL} in log "
                "sigma): fit it on a sampler whose sigmas cover it"
            )
        ls, xs, pts = math.log(sigma), self._log_sigma, self._sorted
        j = bisect.bisect_left(xs, ls)
        if j == 0 or j == len(xs):  # within the tolerance beyond an end: the end's knobs
            end = pts[0] if j == 0 else pts[-1]
            return {**end, "i": index, "sigma": sigma}
        w = (ls - xs[j - 1]) / (xs[j] - xs[j - 1])
        a, b = pts[j - 1], pts[j]

        def lerp(key: str) -> float:
            return (1.0 - w) * float(a[key]) + w * float(b[key])

        out: dict[str, Any] = {
            "i": index,
            "sigma": sigma,
            "k": int(math.floor(lerp("k") + 0.5)),  # nearest integer (halves round up)
            "eps": min(max(lerp("eps"), 0.0), 1.0),
        }
        if "p" in a and "p" in b:
            out["p"] = min(max(lerp("p"), 0.0), 1.0)
        return out

    def entry(self, step: StepInfo) -> dict[str, Any]:
        """The knobs at ``step.sigma`` (:meth:`at`)."""
        return self.at(step.sigma, step.index)

    def decide(self, step: StepInfo) -> Knobs:
        st = self.entry(step)
        b = step.batch
        if self.mode == "draw":
            if step.generators is None:
                raise ValueError("mode='draw' needs the samples' generators in StepInfo")
            k = torch.stack(  # each draw on its generator's device (CPU or CUDA)
                [
                    torch.binomial(
                        torch.tensor([float(self.k_max)], device=g.device),
                        torch.tensor([float(st["p"])], device=g.device),
                        generator=g,
                    )[0].cpu()
                    for g in step.generators
                ]
            ).long()
            k = k.clamp_min(self.k_min)  # the same draw, lifted to k_min
        else:
            k = torch.full((b,), int(st["k"]), dtype=torch.long)
        return Knobs(self.n, k, torch.full((b,), float(st["eps"])), self.lam)

    def expected_k(self) -> float:
        """Mean K_t over the scheduled steps (``E[max(k_min, Bin(k_max, p))]`` for ``draw``)."""
        ks = [
            _clipped_binomial_mean(self.k_max, float(s["p"]), self.k_min)
            if self.mode == "draw"
            else float(s["k"])
            for s in self.steps
        ]
        return sum(ks) / max(len(ks), 1)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": self.kind,
            "mode": self.mode,
            "n": self.n,
            "lam": self.lam,
            "k_max": self.k_max,
            "k_min": self.k_min,
            "steps": self.steps,
            "meta": self.meta,
            "diagnostics": self.diagnostics,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write versioned JSON atomically (temp file, then rename)."""
        return write_json(self.to_dict(), path)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ScheduleController:
        return cls(
            steps=d["steps"],
            n=int(d["n"]),
            lam=float(d["lam"]),
            mode=d["mode"],
            k_max=int(d["k_max"]),
            k_min=int(d.get("k_min", 0)),  # files from before k_min: no floor
            kind=d["kind"],
            meta=d.get("meta", {}),
            diagnostics=d.get("diagnostics", {}),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScheduleController:
        return cls.from_dict(read_schedule_json(path))


def _clipped_binomial_mean(n: int, p: float, floor: int) -> float:
    """``E[max(floor, X)]`` for ``X ~ Bin(n, p)``."""
    return sum(max(floor, x) * math.comb(n, x) * p**x * (1.0 - p) ** (n - x) for x in range(n + 1))


def write_json(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Strict JSON written atomically through a unique temp file
    (:func:`~adaptive_tts.fileio.atomic_write_text`: concurrent writers to one path never
    share a temp name); a non-finite float is stored as ``"NaN"``/``"Infinity"``
    (:func:`~adaptive_tts.traces.to_strict`), which the knob checks then refuse on load."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return atomic_write_text(path, strict_dumps(obj, indent=1) + "\n")


def read_schedule_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a schedule file (:func:`~controllers.schema.check_schedule_dict`):
    every problem is a ``ValueError`` naming the file and the key (a missing file:
    ``FileNotFoundError``)."""
    return check_schedule_dict(read_json_file(path), str(path), SCHEMA)


def check_compatible(
    meta: dict[str, Any], sampler: Any | None, model: str | None, path: str
) -> None:
    """Refuse a schedule fitted for another model.

    Another sampler, step count or sigma schedule is not refused here: the schedule is a
    function of sigma, and a step whose sigma lies outside the fitted range is an error when it
    runs (:meth:`ScheduleController.at`). ``sampler`` is accepted for the callers' sake."""
    del sampler
    if model is not None and meta.get("model") not in (None, model):
        raise ValueError(
            f"{path}: schedule was fitted for model {meta.get('model')!r}, not {model!r}"
        )
