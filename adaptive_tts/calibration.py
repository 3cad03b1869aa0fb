"""Calibration runs: full-budget searches over (prompt, seed) pairs whose per-trajectory traces
are appended to JSON Lines shards, resumably.

Layout of a calibration directory::

    DIR/calibration.json      settings (task, method, knobs, sampler); a re-run must match them
    DIR/traces-00000.jsonl    one trace per line (schema ``adaptive_tts.trace/1``), append-only
    DIR/traces-0000R.jsonl    process R's shard when launched with several processes

Several processes (``torchrun --nproc_per_node G -m adaptive_tts.cli calibrate ...`` or
``accelerate launch``; :func:`~adaptive_tts.runner.process_shard` reads ``RANK`` and
``WORLD_SIZE``) split the pairs round-robin and each appends the ones not yet done to its own
shard (no process group or gather is needed). The split is of the pair list itself (pair ``j``
goes to process ``j mod world``), so it does not depend on when each process starts. With
``--device cuda``, process R uses GPU ``LOCAL_RANK``.

Re-running the same command skips finished (prompt, seed) pairs. Traces are appended one batch
at a time with flush + fsync, so a crash loses at most the batch in flight; a truncated last
line (a crash mid-write) is detected, dropped with a warning, and cut off before appending.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.runner import run_method
from adaptive_tts.sampling import Sampler
from adaptive_tts.tasks import Task
from adaptive_tts.types import TRACE_SCHEMA

SETTINGS = "calibration.json"


def _read_jsonl(path: Path, repair: bool = False) -> Iterator[dict[str, Any]]:
    """Yield the records of one shard; a truncated or corrupt *last* line is dropped with a
    warning (and cut from the file when ``repair``); a corrupt line elsewhere is an error."""
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
    recs = [rec for s in shards for rec in _read_jsonl(s)]
    return sorted(recs, key=lambda r: (int(r.get("prompt", -1)), int(r.get("seed", 0))))


def _settings(task: Task, method: str, sampler: Sampler, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": task.name,
        "model": task.model,
        "method": method,
        "sampler": sampler.describe(),
        "options": options,
    }


def calibrate(
    task: Task,
    method: str,
    sampler: Sampler,
    pairs: list[tuple[int, int]],
    out: str | os.PathLike[str],
    batch: int = 16,
    device: str = "cpu",
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    **options: Any,
) -> dict[str, Any]:
    """Run ``method`` on every (prompt, seed) pair not yet in ``out``; append the traces.

    Args:
        pairs: ``(prompt, seed)`` pairs (prompt -1 where the task uses none).
        batch: pairs per search call (the unit a crash can lose).
        shard: ``(rank, world)``: this process runs pairs ``rank::world`` into its own shard
            (:func:`~adaptive_tts.runner.process_shard` reads them from a launcher).
        options: the method's knobs (``n``, ``k``, ``eps``, ``lam`` ...), recorded in the settings.
    Returns:
        ``{"done": already finished, "ran": run here, "total": len(pairs), "rank", "world",
        "nfe": counted NFEs run here, "seconds": search time here, "seconds_first": of the
        first batch (it includes warm-up such as CUDA-graph capture), "t_start", "t_first",
        "t_end": wall-clock times of the start, the first batch's end and the end}``.
    """
    from tqdm.auto import tqdm

    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    settings = _settings(task, method, sampler, {k: v for k, v in options.items() if v is not None})
    spath = out / SETTINGS
    if spath.exists():
        old = json.loads(spath.read_text())
        if old != json.loads(json.dumps(settings)):
            raise ValueError(
                f"{spath} holds different calibration settings; use a new --out "
                f"directory (old: {old['method']} {old['options']} on {old['task']})"
            )
    else:
        tmp = out / f"{SETTINGS}.{rank}.tmp"  # processes may race here: same content
        tmp.write_text(json.dumps(settings, indent=2))
        os.replace(tmp, spath)
    shard_path = out / f"traces-{rank:05d}.jsonl"
    done: set[tuple[int, int]] = set()
    for s in sorted(out.glob("*.jsonl")):  # only our own shard is repaired: others may be live
        for rec in _read_jsonl(s, repair=s == shard_path):
            done.add((int(rec.get("prompt", -1)), int(rec["seed"])))
    todo = [p for p in pairs if (int(p[0]), int(p[1])) not in done]
    mine = [p for p in pairs[rank::world] if (int(p[0]), int(p[1])) not in done]  # fixed split
    bar = tqdm(
        total=len(mine),
        desc=f"calibrate {task.name}" + (f" [{rank}/{world}]" if world > 1 else ""),
        disable=not progress or rank > 0,
    )
    nfe, nfe_first, seconds, first = 0, 0, 0.0, 0.0
    t_start = t_first = time.time()
    for start in range(0, len(mine), batch):
        chunk = mine[start : start + batch]
        prompts = torch.tensor([p for p, _ in chunk], dtype=torch.long)
        t0 = time.perf_counter()
        res = run_method(
            task, method, sampler, [s for _, s in chunk], prompts, device=device, **options
        )
        took = time.perf_counter() - t0  # the result is on the host: the GPU work is done
        seconds, nfe = seconds + took, nfe + int(res.nfe.sum())
        if start == 0:
            first, nfe_first, t_first = took, nfe, time.time()
        lines = []
        for (prompt, _), tr in zip(chunk, res.traces):
            tr["prompt"] = int(prompt)
            lines.append(json.dumps(tr, separators=(",", ":")))
        with open(shard_path, "a", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
            f.flush()
            os.fsync(f.fileno())
        bar.update(len(chunk))
    bar.close()
    return {
        "done": len(pairs) - len(todo),
        "ran": len(mine),
        "total": len(pairs),
        "rank": rank,
        "world": world,
        "nfe": nfe,
        "seconds": seconds,
        "seconds_first": first,
        "nfe_first": nfe_first,
        "t_start": t_start,  # wall clock (time.time()): start, end of the first batch, end
        "t_first": t_first,
        "t_end": time.time(),
    }
