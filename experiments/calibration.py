"""Calibration runs: full-budget searches over (prompt, seed) pairs whose per-trajectory traces
are appended to JSON Lines shards, resumably.

Layout of a calibration directory::

    DIR/calibration.json      settings (task, method, knobs, sampler); a re-run must match them
    DIR/traces-00000.jsonl    one trace per line (schema ``adaptive_tts.trace/1``), append-only
    DIR/traces-0000R.jsonl    process R's shard when launched with several processes

Several processes (``torchrun --nproc_per_node G -m experiments.cli calibrate ...`` or
``accelerate launch``; :func:`~experiments.runner.process_shard` reads ``RANK`` and
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
from pathlib import Path
from typing import Any

from adaptive_tts.sampling import Sampler
from adaptive_tts.tasks import Task
from adaptive_tts.traces import append_traces, load_traces, read_shard
from experiments.pairs import Batch, run_pairs

SETTINGS = "calibration.json"

__all__ = ["SETTINGS", "calibrate", "load_traces"]


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
            (:func:`~experiments.runner.process_shard` reads them from a launcher).
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
        for rec in read_shard(s, repair=s == shard_path):
            done.add((int(rec.get("prompt", -1)), int(rec["seed"])))
    todo = [p for p in pairs if (int(p[0]), int(p[1])) not in done]
    mine = [p for p in pairs[rank::world] if (int(p[0]), int(p[1])) not in done]  # fixed split
    bar = tqdm(
        total=len(mine),
        desc=f"calibrate {task.name}" + (f" [{rank}/{world}]" if world > 1 else ""),
        disable=not progress or rank > 0,
    )
    timing = {"nfe": 0, "nfe_first": 0, "seconds": 0.0, "first": 0.0}
    t_start = time.time()
    t_first = t_start

    def write(b: Batch) -> None:
        nonlocal t_first
        timing["seconds"] += b.seconds
        timing["nfe"] += int(b.result.nfe.sum())
        if b.start == 0:
            timing["first"], timing["nfe_first"], t_first = b.seconds, timing["nfe"], time.time()
        for (prompt, _), tr in zip(b.pairs, b.result.traces):
            tr["prompt"] = int(prompt)
        append_traces(shard_path, b.result.traces)
        bar.update(len(b.pairs))

    run_pairs(
        task,
        method,
        sampler,
        mine,
        batch=batch,
        device=device,
        evaluate=False,
        on_batch=write,
        **options,
    )
    bar.close()
    return {
        "done": len(pairs) - len(todo),
        "ran": len(mine),
        "total": len(pairs),
        "rank": rank,
        "world": world,
        "nfe": timing["nfe"],
        "seconds": timing["seconds"],
        "seconds_first": timing["first"],
        "nfe_first": timing["nfe_first"],
        "t_start": t_start,  # wall clock (time.time()): start, end of the first batch, end
        "t_first": t_first,
        "t_end": time.time(),
    }
