"""A per-step schedule of knobs (what every fitted controller deploys), with versioned JSON
save/load that refuses a schedule made for another sampler, step count or model."""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from adaptive_tts.control import check_knobs
from adaptive_tts.types import Knobs, StepInfo

SCHEMA = "adaptive_tts.schedule/1"
Mode = Literal["table", "draw"]


@dataclass
class ScheduleController:
    """Knobs looked up by step index.

    Attributes:
        steps: one dict per searchable step: ``i``, ``sigma``, ``k``, ``eps`` and, for
            ``mode="draw"``, ``p`` (then ``K_t ~ Bin(k_max, p)`` per sample from its generator).
        n, lam: candidates per iteration and neighbour radius scale.
        kind: which fit produced it (``binomial``, ``gp``, ...); ``meta``: model, task, sampler and
            calibration settings; ``diagnostics``: fitted curves for plots.
    """

    steps: list[dict[str, Any]]
    n: int = 4
    lam: float = 0.15
    mode: Mode = "table"
    k_max: int = 20
    kind: str = "schedule"
    meta: dict[str, Any] = field(default_factory=dict)
    diagnostics: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.mode not in ("table", "draw"):
            raise ValueError(f"mode must be 'table' or 'draw', got {self.mode!r}")
        for st in self.steps:
            check_knobs(self.n, int(st["k"]), float(st["eps"]), self.lam)
            if self.mode == "draw" and not 0.0 <= float(st.get("p", -1)) <= 1.0:
                raise ValueError(f"step {st['i']}: p must lie in [0, 1] for mode='draw'")
        self._by_index = {int(st["i"]): st for st in self.steps}

    def entry(self, step: StepInfo) -> dict[str, Any]:
        st = self._by_index.get(step.index)
        if st is None:
            raise ValueError(
                f"schedule has no entry for step {step.index} (sigma {step.sigma:.4g}):"
                " it was fitted for another sampler or step count"
            )
        if not math.isclose(float(st["sigma"]), step.sigma, rel_tol=1e-6, abs_tol=1e-12):
            raise ValueError(
                f"schedule step {step.index} has sigma {st['sigma']:.6g} but the "
                f"sampler has {step.sigma:.6g}: different sampler"
            )
        return st

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
        else:
            k = torch.full((b,), int(st["k"]), dtype=torch.long)
        return Knobs(self.n, k, torch.full((b,), float(st["eps"])), self.lam)

    def expected_k(self) -> float:
        """Mean K_t over the scheduled steps."""
        ks = [
            self.k_max * float(s["p"]) if self.mode == "draw" else float(s["k"]) for s in self.steps
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
            kind=d["kind"],
            meta=d.get("meta", {}),
            diagnostics=d.get("diagnostics", {}),
        )

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ScheduleController:
        return cls.from_dict(read_schedule_json(path))


def write_json(obj: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)
    return path


def read_schedule_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and check a schedule file; every problem is a ``ValueError`` naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"schedule file not found: {path}")
    try:
        d = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the file is corrupt") from err
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object")
    if d.get("schema") != SCHEMA:
        raise ValueError(f"{path}: schema {d.get('schema')!r}, expected {SCHEMA!r}")
    missing = [k for k in ("kind", "mode", "n", "lam", "k_max", "steps", "meta") if k not in d]
    if missing:
        raise ValueError(f"{path}: missing key(s) {missing}")
    if not isinstance(d["steps"], list) or not all(
        isinstance(s, dict) and {"i", "sigma", "k", "eps"} <= set(s) for s in d["steps"]
    ):
        raise ValueError(f"{path}: 'steps' must be a list of objects with i, sigma, k, eps")
    return d


def check_compatible(
    meta: dict[str, Any], sampler: Any | None, model: str | None, path: str
) -> None:
    """Refuse a schedule made for another sampler, step count or model."""
    if model is not None and meta.get("model") not in (None, model):
        raise ValueError(
            f"{path}: schedule was fitted for model {meta.get('model')!r}, not {model!r}"
        )
    if sampler is None or "sampler" not in meta:
        return
    want, have = meta["sampler"], sampler.describe()
    if want.get("name") != have.get("name"):
        raise ValueError(
            f"{path}: schedule was fitted for sampler {want.get('name')!r}, "
            f"not {have.get('name')!r}"
        )
    if want.get("steps") != have.get("steps"):
        raise ValueError(
            f"{path}: schedule was fitted for {want.get('steps')} steps, not {have.get('steps')}"
        )
    ws, hs = want.get("sigmas", []), have.get("sigmas", [])
    if len(ws) != len(hs) or any(not math.isclose(a, b, rel_tol=1e-6) for a, b in zip(ws, hs)):
        raise ValueError(f"{path}: schedule was fitted for a different sigma schedule")
