"""Fault injection on calibration (on the exact mixture, where the model does not matter and
results are batch-invariant, so a resumed run must equal an uninterrupted one bit for bit):
``kill -9`` of a calibrating process mid-run, a second writer on a locked shard, a full disk,
and a garbage last line."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

from adaptive_tts.traces import load_traces
from experiments.cli import main

ROOT = Path(__file__).resolve().parents[2]
PAIRS = 12
ARGS = ["--task", "gmm-target", "--n", "2", "--k", "3", "--steps", "6", "--classes", "0"]
ARGS += ["--seeds", "0", str(PAIRS), "--batch", "1"]


def calibrate_cli(out: Path) -> int:
    return main(["calibrate", *ARGS, "--out", str(out)])


def records(out: Path) -> dict[tuple[int, int], dict[str, Any]]:
    """The directory's traces by (prompt, seed), strict JSON round-tripped, timings removed."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no truncated line, no duplicate left
        traces = load_traces(out)
    drop = {"seconds", "time", "wall"}
    return {(t["prompt"], t["seed"]): {k: v for k, v in t.items() if k not in drop} for t in traces}


def lines(out: Path) -> list[str]:
    return [ln for p in sorted(out.glob("*.jsonl")) for ln in p.read_text().splitlines()]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict[tuple[int, int], dict[str, Any]]:
    """One uninterrupted run of the same command."""
    out = tmp_path_factory.mktemp("reference")
    assert calibrate_cli(out) == 0
    return records(out)


def test_kill_9_mid_run_then_resume_equals_an_uninterrupted_run(tmp_path, reference) -> None:
    """SIGKILL once the shard holds at least one batch and before the last: every line left is
    a whole record; the rerun runs only what is missing and the directory then holds exactly
    the uninterrupted run's records (each once)."""
    out = tmp_path / "cal"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    cmd = [sys.executable, "-m", "experiments.cli", "calibrate", *ARGS, "--out", str(out)]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stderr=subprocess.DEVNULL)
    shard = out / "traces-00000.jsonl"
    deadline = time.monotonic() + 120
    while proc.poll() is None and time.monotonic() < deadline:
        if shard.exists() and shard.stat().st_size > 0:
            break
        time.sleep(0.005)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    kept = lines(out)
    assert 1 <= len(kept) < PAIRS
    assert all(json.loads(ln)["seed"] >= 0 for ln in kept[:-1])  # whole records
    assert calibrate_cli(out) == 0
    assert records(out) == reference
    assert len(lines(out)) >= PAIRS  # a torn last line, if any, was cut off, not kept


def test_second_writer_on_a_locked_shard_gets_one_line_and_writes_nothing(
    tmp_path, capsys, reference
) -> None:
    """A process holding the shard's lock (as a running calibration does): the second writer
    exits 2 with one line naming the lock, leaves no trace behind; once the holder is gone
    the same command runs to the uninterrupted result."""
    out = tmp_path / "cal"
    out.mkdir()
    lock = out / ".traces-00000.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, sys, time; f = open(sys.argv[1], 'w'); "
            "fcntl.flock(f, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)",
            str(lock),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "locked"
        assert calibrate_cli(out) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("adaptive-tts: error:")
        assert lock.name in err[0]
        assert not list(out.glob("*.jsonl"))
    finally:
        holder.kill()
        holder.wait()
    assert calibrate_cli(out) == 0
    assert records(out) == reference


def test_full_disk_leaves_whole_records_and_resumes(tmp_path, monkeypatch, reference) -> None:
    """The disk fills during the 4th append (after part of it was written): the error names
    the disk, the shard keeps exactly the three whole batches before it, and a rerun with
    space again completes to the uninterrupted result."""
    import adaptive_tts.traces as traces_mod

    out = tmp_path / "cal"
    real_write = os.write
    calls = {"appends": 0}
    real_append = traces_mod.append_traces

    def append(path, recs):
        calls["appends"] += 1
        return real_append(path, recs)

    def write(fd: int, data: Any) -> int:
        if calls["appends"] == 4:
            real_write(fd, bytes(data[: len(data) // 2]))
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_write(fd, data)

    monkeypatch.setattr("experiments.calibration.append_traces", append)
    monkeypatch.setattr(os, "write", write)
    with pytest.raises(OSError, match="No space left"):
        calibrate_cli(out)
    monkeypatch.undo()
    kept = lines(out)
    assert len(kept) == 3 and all(json.loads(ln)["seed"] in (0, 1, 2) for ln in kept)
    assert calibrate_cli(out) == 0
    assert records(out) == reference


def test_garbage_last_line_is_dropped_and_rerun(tmp_path, reference) -> None:
    """Bytes that are not JSON at the end of a shard (a crash mid-write): dropped with a
    warning, cut off by the next run, and that pair run again."""
    out = tmp_path / "cal"
    assert calibrate_cli(out) == 0
    shard = out / "traces-00000.jsonl"
    data = shard.read_text().splitlines(keepends=True)
    shard.write_text("".join(data[:-1]) + "\x00\x17garbage{")
    with pytest.warns(UserWarning, match="truncated"):
        assert calibrate_cli(out) == 0
    assert records(out) == reference
    assert len(lines(out)) == PAIRS
