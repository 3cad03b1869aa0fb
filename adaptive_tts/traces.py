"""The trace schema (``adaptive_tts.trace/1``) as typed records, with its one reader and writer.

A search returns one JSON-ready trace per sample (:attr:`SearchResult.traces`); calibration
appends them to JSON Lines shards (:func:`append_traces`) and the learned controllers read them
back (:func:`load_traces`). Searches and controllers work on the plain dicts (cheap, exact on
round trips); :class:`TraceRecord` gives the same data typed (:meth:`TraceRecord.from_dict`,
:meth:`TraceRecord.to_dict` round-trip exactly; keys a method adds of its own stay in ``extra``).

Calibration directories are self-describing: ``DIR/calibration.json`` (:data:`SETTINGS_FILE`)
holds the settings and their hash (:func:`settings_hash`, sha256 of the canonical JSON), and every
trace appended under them carries the hash (``settings_hash``). :func:`load_traces` refuses a
directory whose traces have several hashes unless told which one (``settings=HASH``), and counts
a (settings, prompt, seed, k) record once however often it was stored. A trace without a hash
(written before hashes existed) belongs to its directory's settings.

Written JSON is strict (no bare ``NaN``/``Infinity``, which strict parsers refuse): a
non-finite float is stored as the string ``"NaN"``, ``"Infinity"`` or ``"-Infinity"``
(:func:`to_strict`) and read back as the float (:func:`from_strict`); e.g. an EDM sampler's
``s_max = inf``.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from adaptive_tts.fileio import dumps_json
from adaptive_tts.types import TRACE_SCHEMA

SETTINGS_FILE = "calibration.json"
"""A calibration directory's settings file (``{schema, settings, hash}``)."""
SETTINGS_SCHEMA = "adaptive_tts.calibration/1"
HASH_KEY = "settings_hash"
"""The trace key holding the hash of the settings it was calibrated under."""
_NONFINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

__all__ = [
    "HASH_KEY",
    "SETTINGS_FILE",
    "TRACE_SCHEMA",
    "IterRecord",
    "StepRecord",
    "TraceRecord",
    "append_traces",
    "load_trace_records",
    "load_traces",
    "read_settings",
    "read_shard",
    "settings_hash",
    "from_strict",
    "to_strict",
]


def to_strict(obj: Any) -> Any:
    """``obj`` with every non-finite float replaced by ``"NaN"``, ``"Infinity"`` or
    ``"-Infinity"`` (so that :func:`~adaptive_tts.fileio.dumps_json` accepts it)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "NaN" if math.isnan(obj) else ("Infinity" if obj > 0 else "-Infinity")
    if isinstance(obj, dict):
        return {k: to_strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_strict(v) for v in obj]
    return obj


def from_strict(obj: Any) -> Any:
    """The inverse of :func:`to_strict`: those three strings become floats again."""
    if isinstance(obj, str):
        return _NONFINITE.get(obj, obj)
    if isinstance(obj, dict):
        return {k: from_strict(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [from_strict(v) for v in obj]
    return obj


def strict_dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON of ``obj`` (:func:`to_strict`, then :func:`~adaptive_tts.fileio.dumps_json`)."""
    return dumps_json(to_strict(obj), **kwargs)


def settings_hash(settings: dict[str, Any]) -> str:
    """A stable 16-hex-digit hash of calibration settings: sha256 of their canonical JSON
    (sorted keys, no spaces; non-finite floats as in :func:`to_strict`)."""
    text = strict_dumps(settings, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def read_settings(directory: str | os.PathLike[str]) -> tuple[dict[str, Any], str] | None:
    """``(settings, hash)`` of a calibration directory (``None`` when it has no settings
    file: ``{"schema", "hash", **settings}``; the hash is recomputed from the settings, and a
    file from before hashes, the bare settings, is read too).

    Raises:
        ValueError: the file is not valid JSON or not a settings object (naming the file).
    """
    path = Path(directory) / SETTINGS_FILE
    if not path.is_file():
        return None
    try:
        d = from_strict(json.loads(path.read_text()))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); remove it or use a new --out") from err
    if not isinstance(d, dict):
        raise ValueError(f"{path}: expected a JSON object of calibration settings")
    if "schema" in d and d["schema"] != SETTINGS_SCHEMA:
        raise ValueError(f"{path}: schema {d['schema']!r}, expected {SETTINGS_SCHEMA!r}")
    settings = {k: v for k, v in d.items() if k not in ("schema", "hash")}
    return settings, settings_hash(settings)


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
    mid-write) is dropped with a warning (and cut from the file when ``repair``: only the
    shard's writer, holding its lock, may repair); a corrupt line elsewhere, or another schema,
    is a ``ValueError`` naming the file and line."""
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
            if not isinstance(rec, dict):
                raise json.JSONDecodeError("not a JSON object", line.decode(errors="replace"), 0)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            if n < len(lines):
                raise ValueError(
                    f"{path}:{n}: corrupt trace line ({err}); remove the line or the shard"
                ) from err
            warnings.warn(f"{path}: dropping a corrupt last line: {err}", stacklevel=2)
            if repair:
                with open(path, "r+b") as f:
                    f.truncate(len(data) - len(line) - 1)
            continue
        if rec.get("schema") != TRACE_SCHEMA:
            raise ValueError(f"{path}:{n}: schema {rec.get('schema')!r}, expected {TRACE_SCHEMA!r}")
        yield from_strict(rec)


def run_k(rec: dict[str, Any]) -> Any:
    """The iterations a trace ran with: the largest ``k`` of its searched steps' knobs (its
    params' ``k`` when no step was searched), so a controller's budget counts, not a default."""
    ks = [
        st["knobs"]["k"]
        for st in rec.get("steps", [])
        if isinstance(st, dict) and isinstance(st.get("knobs"), dict) and "k" in st["knobs"]
    ]
    if ks:
        return max(ks)
    params = rec.get("params")
    return params.get("k") if isinstance(params, dict) else None


def record_key(rec: dict[str, Any]) -> tuple[Any, int, int, Any]:
    """What makes a record unique: (settings hash, prompt, seed, k it ran with)."""
    return rec.get(HASH_KEY), int(rec.get("prompt", -1)), int(rec["seed"]), run_k(rec)


def load_traces(
    directory: str | os.PathLike[str], settings: str | None = None
) -> list[dict[str, Any]]:
    """All traces in a calibration directory (every ``*.jsonl`` shard), in (prompt, seed)
    order, so what is fitted on them does not depend on how the run was split in shards.

    A record stored twice (same settings hash, prompt, seed and k) counts once (the first
    copy; a warning says how many were dropped). A trace without a hash gets the directory's.

    Args:
        settings: keep only the traces of this settings hash (needed when the directory holds
            traces of several settings).
    Raises:
        FileNotFoundError: no such directory, or no shard in it.
        ValueError: traces of several settings and no ``settings`` (listing the hashes), or
            none of ``settings``; a corrupt line (:func:`read_shard`).
    """
    d = Path(directory)
    if not d.is_dir():
        raise FileNotFoundError(f"traces directory not found: {d}")
    shards = sorted(d.glob("*.jsonl"))
    if not shards:
        raise FileNotFoundError(f"no *.jsonl trace shards in {d}")
    own = read_settings(d)
    recs = [rec for s in shards for rec in read_shard(s)]
    if own is not None:
        for rec in recs:
            rec.setdefault(HASH_KEY, own[1])
    groups: dict[Any, int] = {}
    for rec in recs:
        groups[rec.get(HASH_KEY)] = groups.get(rec.get(HASH_KEY), 0) + 1
    if settings is not None:
        if settings not in groups:
            raise ValueError(
                f"{d}: no traces of settings {settings!r}; its settings: {_describe(groups)}"
            )
        recs = [r for r in recs if r.get(HASH_KEY) == settings]
    elif len(groups) > 1:
        raise ValueError(
            f"{d} holds traces of {len(groups)} calibration settings ({_describe(groups)}): "
            "choose one with --settings HASH (settings=HASH), or keep each in its own directory"
        )
    unique: dict[tuple[Any, int, int, Any], dict[str, Any]] = {}
    for rec in recs:
        unique.setdefault(record_key(rec), rec)
    if len(unique) < len(recs):
        warnings.warn(
            f"{d}: {len(recs) - len(unique)} duplicate trace(s) counted once", stacklevel=2
        )
    return sorted(unique.values(), key=lambda r: (int(r.get("prompt", -1)), int(r["seed"])))


def _describe(groups: dict[Any, int]) -> str:
    return ", ".join(f"{h or 'no hash'}: {n} traces" for h, n in sorted(groups.items(), key=str))


def load_trace_records(directory: str | os.PathLike[str]) -> list[TraceRecord]:
    """:func:`load_traces` as typed records."""
    return [TraceRecord.from_dict(d) for d in load_traces(directory)]


def append_traces(
    path: str | os.PathLike[str], traces: Iterable[dict[str, Any] | TraceRecord]
) -> None:
    """Append traces to a shard, one compact strict-JSON line each (:func:`to_strict`), in one
    write, then flush and fsync (a crash loses at most this call's lines, which
    :func:`read_shard` then drops or repairs). A failed write (e.g. a full disk) cuts the
    shard back to its size before the call, so nothing half-written stays behind."""
    lines = [
        strict_dumps(t.to_dict() if isinstance(t, TraceRecord) else t, separators=(",", ":"))
        for t in traces
    ]
    if not lines:
        return
    data = ("\n".join(lines) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.lseek(fd, 0, os.SEEK_END)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # nothing half-written stays behind
            raise
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    """``os.write`` until every byte is written (a short write is not an error)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]
