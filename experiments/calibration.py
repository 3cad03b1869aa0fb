"""Calibration runs: full-budget searches over (prompt, seed) pairs whose per-trajectory traces
are appended to JSON Lines shards, resumably.

Layout of a calibration directory::

    DIR/calibration.json      settings (task, model, method, knobs, sampler) and their hash
    DIR/traces-00000.jsonl    one trace per line (schema ``adaptive_tts.trace/1``), append-only
    DIR/traces-0000R.jsonl    process R's shard when launched with several processes
    DIR/.traces-0000R.lock    the lock of shard R (``fcntl.flock``; held while R is written)

Self-describing: every trace carries the settings hash of ``calibration.json``
(:func:`~adaptive_tts.traces.settings_hash`, sha256 of the canonical settings JSON). A run with
other settings (another k, task, sampler ...) on an existing directory is refused, and so is a
directory holding traces of other settings ("foreign" records): one directory, one setting,
never mixed. The batch size is not a setting (resuming with another one is allowed; see the
README on what is bit-identical across batch compositions).

Locked: a process takes an exclusive, non-blocking lock on its shard before reading or writing
it; a second process on the same shard gets a one-line error (a ``ValueError``,
:class:`ShardLocked`) naming the lock and the holder's pid, and writes nothing. The lock
disappears with its process (``kill -9`` included), so a resume after a crash never waits.

Several processes (``torchrun --nproc_per_node G -m experiments.cli calibrate ...`` or
``accelerate launch``; :func:`~experiments.runner.process_shard` reads ``RANK`` and
``WORLD_SIZE``) split the pairs round-robin and each appends the ones not yet done to its own
shard (no process group or gather is needed). The split is of the pair list itself (pair ``j``
goes to process ``j mod world``), so it does not depend on when each process starts. With
``--device cuda``, process R uses GPU ``LOCAL_RANK``.

Re-running the same command skips finished (prompt, seed) pairs: only records of the same
settings hash count as done. Traces are appended one batch at a time with fsync, so a crash
loses at most the batch in flight; a truncated last line (a crash mid-write) is detected,
dropped with a warning, and cut off (by the shard's lock holder) before appending; a failed
write (a full disk) is cut back so nothing half-written stays. A record stored twice is
counted once by :func:`~adaptive_tts.traces.load_traces`.

Everything is validated before the directory is touched: the method's options (``n`` an
integer >= 1, ``k`` >= 0, ``eps`` in [0, 1], ``lam`` finite >= 0 ...), ``batch``, the pairs
(seeds in :data:`~adaptive_tts.seeds.SEED_MAX` range, prompts of the task, no pair twice). A
task without prompts takes only prompt ``-1``: other prompts would store identical
trajectories under several keys, so they are an error, not silently merged.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from adaptive_tts.control import check_float, check_int
from adaptive_tts.fileio import atomic_write_text
from adaptive_tts.sampling import Sampler
from adaptive_tts.seeds import check_seed
from adaptive_tts.tasks import Task
from adaptive_tts.traces import (
    HASH_KEY,
    SETTINGS_FILE,
    SETTINGS_SCHEMA,
    append_traces,
    load_traces,
    read_settings,
    read_shard,
    settings_hash,
    strict_dumps,
)
from experiments.pairs import Batch, run_pairs

SETTINGS = SETTINGS_FILE
MAX_BATCH = 65536
"""The largest ``batch`` (pairs per search call) accepted."""

__all__ = [
    "MAX_BATCH",
    "SETTINGS",
    "ShardLocked",
    "calibrate",
    "check_out_dir",
    "load_traces",
    "preflight",
    "shard_lock",
]


class ShardLocked(ValueError):
    """Another process holds the shard's lock (it is being written)."""


def _settings(task: Task, method: str, sampler: Sampler, options: dict[str, Any]) -> dict[str, Any]:
    return {
        "task": task.name,
        "model": task.model,
        "method": method,
        "sampler": sampler.describe(),
        "options": options,
    }


def check_calibration(
    task: Task, method: str, pairs: list[tuple[int, int]], batch: int, options: dict[str, Any]
) -> dict[str, Any]:
    """Validate a calibration before anything is written; return the method's options.

    Raises:
        ValueError: a knob, ``batch`` or pair out of range (naming it); TypeError: an option
            the method does not take.
    """
    from experiments.runner import method_kwargs

    check_int(batch, "batch", 1, MAX_BATCH)
    for name in ("n", "k"):
        if options.get(name) is not None:
            check_int(options[name], name, 1 if name == "n" else 0)
    if options.get("eps") is not None:
        check_float(options["eps"], "eps", 0.0, 1.0)
    if options.get("lam") is not None:
        check_float(options["lam"], "lam", 0.0)
    kw = method_kwargs(method, {k: v for k, v in options.items() if k != "generator_device"})
    if not pairs:
        raise ValueError("pairs is empty: nothing to calibrate")
    seen: set[tuple[int, int]] = set()
    for prompt, seed in pairs:
        check_seed(seed, "seed")
        p = check_int(prompt, "prompt", -1)
        if not task.uses_prompt and p != -1:
            raise ValueError(
                f"prompt {p} is invalid: task {task.name!r} takes no prompt (identical "
                "trajectories would be stored under several prompts), allowed: -1"
            )
        if task.uses_prompt and not 0 <= p < task.num_classes:
            raise ValueError(
                f"prompt {p} is invalid for task {task.name!r}, allowed: integers in "
                f"[0, {task.num_classes - 1}]"
            )
        if (p, int(seed)) in seen:
            raise ValueError(f"pair (prompt {p}, seed {seed}) is listed twice")
        seen.add((p, int(seed)))
    return kw


@contextmanager
def shard_lock(path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing) or raise :class:`ShardLocked`."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "?"
            raise ShardLocked(
                f"{path.parent} is being written by another calibrate process (pid {holder}, "
                f"lock {path.name}): wait for it to finish, or use another --out"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _check_settings(out: Path, settings: dict[str, Any], digest: str, create: bool = True) -> None:
    """Check that ``calibration.json`` holds the same settings (create it if missing)."""
    old = read_settings(out)
    if old is None and create:
        text = strict_dumps({"schema": SETTINGS_SCHEMA, "hash": digest, **settings}, indent=2)
        atomic_write_text(out / SETTINGS, text + "\n")
    elif old is not None and old[1] != digest:
        o = old[0]
        raise ValueError(
            f"{out / SETTINGS} holds different calibration settings (hash {old[1]}, not "
            f"{digest}: {o.get('method')} {o.get('options')} on {o.get('task')}); use a new "
            "--out directory"
        )


def _done_pairs(out: Path, own: Path | None, digest: str) -> set[tuple[int, int]]:
    """Pairs already stored under ``digest``; a foreign record is a ``ValueError``."""
    done: set[tuple[int, int]] = set()
    for s in sorted(out.glob("*.jsonl")):  # only our own shard is repaired: others may be live
        for rec in read_shard(s, repair=s == own):
            theirs = rec.get(HASH_KEY, digest)  # a trace from before hashes: the directory's
            if theirs != digest:
                raise ValueError(
                    f"{s} holds traces of other calibration settings (hash {theirs}, not "
                    f"{digest}): keep each setting in its own --out directory"
                )
            done.add((int(rec.get("prompt", -1)), int(rec["seed"])))
    return done


def check_out_dir(out: Path, name: str = "out") -> None:
    """``out`` must be a directory or creatable as one (its nearest existing parent a
    writable directory); else a ``ValueError`` naming ``name``."""
    if out.exists():
        if not out.is_dir():
            raise ValueError(
                f"{name}={str(out)!r} is a file, allowed: a directory (new or existing)"
            )
        if not os.access(out, os.W_OK | os.X_OK):
            raise ValueError(f"{name}={str(out)!r} is not writable, allowed: a writable directory")
        return
    parent = out.parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise ValueError(
            f"{name}={str(out)!r} cannot be created ({parent} is not a writable directory), "
            "allowed: a directory (new or existing)"
        )


def preflight(
    task: Task,
    method: str,
    sampler: Sampler,
    pairs: list[tuple[int, int]],
    out: str | os.PathLike[str],
    batch: int = 16,
    **options: Any,
) -> tuple[dict[str, Any], str]:
    """Every check :func:`calibrate` makes before it writes, writing nothing: the options and
    pairs, ``out`` usable, no other settings and no foreign records in it. Returns the
    settings and their hash."""
    check_calibration(task, method, pairs, batch, options)
    out = Path(out)
    check_out_dir(out)
    settings = _settings(task, method, sampler, {k: v for k, v in options.items() if v is not None})
    digest = settings_hash(settings)
    if out.is_dir():
        _check_settings(out, settings, digest, create=False)
        _done_pairs(out, None, digest)
    return settings, digest


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
        "settings_hash", "nfe": counted NFEs run here, "seconds": search time here,
        "seconds_first": of the first batch (it includes warm-up such as CUDA-graph capture),
        "t_start", "t_first", "t_end": wall-clock times of the start, the first batch's end and
        the end}``.
    Raises:
        ValueError: a bad option or pair (nothing is written), other settings or foreign
            records in ``out``, or :class:`ShardLocked`.
    """
    from tqdm.auto import tqdm

    rank, world = shard
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    settings, digest = preflight(task, method, sampler, pairs, out, batch, **options)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    shard_path = out / f"traces-{rank:05d}.jsonl"
    with shard_lock(out / f".{shard_path.stem}.lock"):
        with shard_lock(out / ".calibration.lock"):  # one creator of calibration.json
            _check_settings(out, settings, digest)
        done = _done_pairs(out, shard_path, digest)
        todo = [p for p in pairs if (int(p[0]), int(p[1])) not in done]
        mine = [p for p in pairs[rank::world] if (int(p[0]), int(p[1])) not in done]
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
                timing["first"], timing["nfe_first"], t_first = (
                    b.seconds,
                    timing["nfe"],
                    time.time(),
                )
            for (prompt, _), tr in zip(b.pairs, b.result.traces):
                tr["prompt"] = int(prompt)
                tr[HASH_KEY] = digest
            append_traces(shard_path, b.result.traces)
            bar.update(len(b.pairs))

        try:
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
        finally:
            bar.close()  # also on a failure: its error then starts on a line of its own
    return {
        "done": len(pairs) - len(todo),
        "ran": len(mine),
        "total": len(pairs),
        "rank": rank,
        "world": world,
        "settings_hash": digest,
        "nfe": timing["nfe"],
        "seconds": timing["seconds"],
        "seconds_first": timing["first"],
        "nfe_first": timing["nfe_first"],
        "t_start": t_start,  # wall clock (time.time()): start, end of the first batch, end
        "t_first": t_first,
        "t_end": time.time(),
    }
