"""The trace schema (``adaptive_tts.trace/1``) as typed records, with its one reader and writer.

A search returns one JSON-ready trace per sample (:attr:`SearchResult.traces`); calibration
appends them to JSON Lines shards (:func:`append_traces`) and the learned controllers read them
back (:func:`load_traces`). Searches and controllers work on the plain dicts (cheap, exact on
round trips); :class:`TraceRecord` gives the same data typed (:meth:`TraceRecord.from_dict`,
:meth:`TraceRecord.to_dict` round-trip exactly; keys a method adds of its own stay in ``extra``).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive_tts.types import TRACE_SCHEMA

__all__ = [
    "TRACE_SCHEMA",
    "IterRecord",
    "StepRecord",
    "TraceRecord",
    "append_traces",
    "load_trace_records",
    "load_traces",
    "read_shard",
]


@dataclass
class IterRecord:
    """One search iteration at a step: ``I`` an exploration candidate won, ``J`` the pivot
    improved, ``score`` the pivot's score after it, ``n_explore`` fresh draws among the N."""

    I: int  # noqa: E741
    J: int
    score: float
    n_explore: int

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> IterRecord:
        return cls(int(d["I"]), int(d["J"]), float(d["score"]), int(d["n_explore"]))

    def to_dict(self) -> dict[str, Any]:
        return {"I": self.I, "J": self.J, "score": self.score, "n_explore": self.n_explore}


_STEP_KEYS = frozenset(
    ("i", "sigma", "searchable", "sigma_hat", "knobs", "initial_score", "iters", "one_step_reward")
)


@dataclass
class StepRecord:
    """One sampler step: plain (``searchable`` False: only ``i``, ``sigma``) or searched (knobs,
    the pivot's first score, the iterations, the chosen pivot's one-step reward)."""

    i: int
    sigma: float
    searchable: bool
    sigma_hat: float | None = None
    knobs: dict[str, Any] | None = None
    initial_score: float | None = None
    iters: list[IterRecord] | None = None
    one_step_reward: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StepRecord:
        iters = d.get("iters")
        return cls(
            i=int(d["i"]),
            sigma=float(d["sigma"]),
            searchable=bool(d.get("searchable", False)),
            sigma_hat=d.get("sigma_hat"),
            knobs=d.get("knobs"),
            initial_score=d.get("initial_score"),
            iters=None if iters is None else [IterRecord.from_dict(t) for t in iters],
            one_step_reward=d.get("one_step_reward"),
            extra={k: v for k, v in d.items() if k not in _STEP_KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"i": self.i, "sigma": self.sigma, "searchable": self.searchable}
        for key in ("sigma_hat", "knobs", "initial_score"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.iters is not None:
            out["iters"] = [t.to_dict() for t in self.iters]
        if self.one_step_reward is not None:
            out["one_step_reward"] = self.one_step_reward
        out.update(self.extra)
        return out


_TRACE_KEYS = frozenset(
    ("schema", "method", "sampler", "params", "steps", "final_reward", "cond", "nfe")
    + ("seed", "task", "model", "prompt")
)


@dataclass
class TraceRecord:
    """One sample's trace: method, sampler description, settings, steps, final reward and
    counted NFEs; ``seed``/``task``/``model`` (set by the runner) and ``prompt`` (calibration)."""

    method: str
    sampler: dict[str, Any]
    params: dict[str, Any]
    steps: list[StepRecord]
    final_reward: float | None = None
    cond: int | None = None
    nfe: dict[str, int] | None = None
    seed: int | None = None
    task: str | None = None
    model: str | None = None
    prompt: int | None = None
    schema: str = TRACE_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TraceRecord:
        """Typed view of a trace dict; refuses another schema."""
        if d.get("schema") != TRACE_SCHEMA:
            raise ValueError(f"trace schema {d.get('schema')!r}, expected {TRACE_SCHEMA!r}")
        return cls(
            method=str(d["method"]),
            sampler=dict(d["sampler"]),
            params=dict(d.get("params", {})),
            steps=[StepRecord.from_dict(s) for s in d.get("steps", [])],
            final_reward=d.get("final_reward"),
            cond=d.get("cond"),
            nfe=d.get("nfe"),
            seed=d.get("seed"),
            task=d.get("task"),
            model=d.get("model"),
            prompt=d.get("prompt"),
            extra={k: v for k, v in d.items() if k not in _TRACE_KEYS},
            schema=str(d["schema"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready dict (equal to the one :meth:`from_dict` read)."""
        out: dict[str, Any] = {
            "schema": self.schema,
            "method": self.method,
            "sampler": self.sampler,
            "params": self.params,
            "steps": [s.to_dict() for s in self.steps],
        }
        for key in ("final_reward", "cond", "nfe", "seed", "task", "model", "prompt"):
            if getattr(self, key) is not None or (key == "cond" and self.final_reward is not None):
                out[key] = getattr(self, key)
        out.update(self.extra)
        return out


def read_shard(path: str | os.PathLike[str], repair: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the traces of one JSON Lines shard. A truncated or corrupt *last* line (a crash
    mid-write) is dropped with a warning (and cut from the file when ``repair``); a corrupt line
    elsewhere, or another schema, is a ``ValueError``."""
    path = Path(path)
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        cut = data.rfind(b"\n") + 1  # start of the partial line
        warnings.warn(
            f"{path}: dropping a truncated last line ({len(data) - cut} bytes)", stacklevel=2
        )
        if repair:
            with open(path, "r+b") as f:
                f.truncate(cut)
        data = data[:cut]
    lines = data.split(b"\n")[:-1]
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as err:
            if n < len(lines):
                raise ValueError(f"{path}:{n}: corrupt trace line: {err}") from err
            warnings.warn(f"{path}: dropping a corrupt last line: {err}", stacklevel=2)
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(len(data) - len(line) - 1)
            continue
        if rec.get("schema") != TRACE_SCHEMA:
            raise ValueError(f"{path}:{n}: schema {rec.get('schema')!r}, expected {TRACE_SCHEMA!r}")
        yield rec


def load_traces(directory: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """All traces in a calibration directory (every ``*.jsonl`` shard), in (prompt, seed)
    order, so what is fitted on them does not depend on how the run was split in shards."""
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"traces directory not found: {d}")
    shards = sorted(d.glob("*.jsonl"))
    if not shards:
        raise FileNotFoundError(f"no *.jsonl trace shards in {d}")
    recs = [rec for s in shards for rec in read_shard(s)]
    return sorted(recs, key=lambda r: (int(r.get("prompt", -1)), int(r.get("seed", 0))))


def load_trace_records(directory: str | os.PathLike[str]) -> list[TraceRecord]:
    """:func:`load_traces` as typed records."""
    return [TraceRecord.from_dict(d) for d in load_traces(directory)]


def append_traces(
    path: str | os.PathLike[str], traces: Iterable[dict[str, Any] | TraceRecord]
) -> None:
    """Append traces to a shard, one compact JSON line each, then flush and fsync (a crash
    loses at most this call's lines, which :func:`read_shard` then drops or repairs)."""
    lines = [
        json.dumps(t.to_dict() if isinstance(t, TraceRecord) else t, separators=(",", ":"))
        for t in traces
    ]
    if not lines:
        return
    with open(path, "a", encoding="utf-8") as f:
        f.write("\n".join(lines) + "\n")
        f.flush()
        os.fsync(f.fileno())
