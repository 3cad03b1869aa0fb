"""Fault injection on calibration (gmm task, tiny runs): ``kill -9`` mid-run then resume, two
writers on one shard, a full disk, a torn last line and a garbage line in a trace shard.

The records after a crash and a resume equal those of an uninterrupted run exactly (every key
of every trace: each pair is its own batch here, so batch composition does not enter)."""

from __future__ import annotations

import errno
import json
import os
import re
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import adaptive_tts.traces as traces_mod
from adaptive_tts.traces import load_traces
from experiments.calibration import shard_lock
from experiments.cli import main

ROOT = Path(__file__).resolve().parents[2]
SEEDS = 8
ARGS = ["calibrate", "--task", "gmm-target", "--n", "2", "--k", "2", "--steps", "4"]
ARGS += ["--sampler", "euler", "--classes", "0", "--batch", "1"]

SLOW_WRITER = """
import sys, time
import experiments.calibration as cal
append = cal.append_traces
def slow(path, traces):
    append(path, traces)
    time.sleep(0.25)  # a pair every quarter second: time to interfere
cal.append_traces = slow
from experiments.cli import main
sys.exit(main(sys.argv[1:]))
"""


def run(out: Path, seeds: int = SEEDS) -> int:
    return main([*ARGS, "--seeds", "0", str(seeds), "--out", str(out)])


def records(out: Path) -> dict[tuple[int, int], dict[str, Any]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {(t["prompt"], t["seed"]): t for t in load_traces(out)}


def one_error_line(capsys: pytest.CaptureFixture[str]) -> str:
    """The one error line of stderr (beside it only the progress bar's own lines)."""
    lines = [ln for ln in re.split(r"[\r\n]", capsys.readouterr().err) if ln.strip()]
    errors = [ln for ln in lines if not ln.startswith("calibrate gmm-target:")]
    assert len(errors) == 1 and errors[0].startswith("adaptive-tts: error:"), lines
    return errors[0]


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[int, int], dict[str, Any]]:
    """An uninterrupted run."""
    out = tmp_path_factory.mktemp("ref") / "cal"
    assert run(out) == 0
    return records(out)


def slow_writer(out: Path, tmp_path: Path) -> subprocess.Popen[bytes]:
    """A calibrate subprocess writing one pair every 0.25 s; returns once it wrote two."""
    script = tmp_path / "slow_writer.py"
    script.write_text(SLOW_WRITER)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "WANDB_MODE": "offline"}
    argv = [sys.executable, str(script), *ARGS, "--seeds", "0", str(SEEDS), "--out", str(out)]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    shard = out / "traces-00000.jsonl"
    deadline = time.monotonic() + 60
    while not (shard.is_file() and shard.read_bytes().count(b"\n") >= 2):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise AssertionError(f"writer ended early: {proc.communicate()[1].decode()[-2000:]}")
        time.sleep(0.02)
    return proc


def test_kill_9_mid_run_then_resume_equals_uninterrupted(tmp_path, reference) -> None:
    out = tmp_path / "cal"
    proc = slow_writer(out, tmp_path)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = len(records(out))
    assert 2 <= done < SEEDS  # killed mid-run
    assert run(out) == 0  # the lock died with the process: the resume does not wait
    assert records(out) == reference


def test_second_writer_on_a_live_shard_gets_the_lock_error(tmp_path, capsys, reference) -> None:
    out = tmp_path / "cal"
    proc = slow_writer(out, tmp_path)
    try:
        assert run(out) == 2
        line = one_error_line(capsys)
        assert "being written by another calibrate process" in line
        assert f"pid {proc.pid}" in line
    finally:
        assert proc.wait(timeout=60) == 0
    assert records(out) == reference  # the first writer finished alone, nothing twice


def test_lock_held_in_this_process_refuses_a_writer(tmp_path, capsys) -> None:
    out = tmp_path / "cal"
    out.mkdir()
    with shard_lock(out / ".traces-00000.lock"):
        assert run(out) == 2
        assert ".traces-00000.lock" in one_error_line(capsys)
    assert not list(out.glob("*.jsonl"))


def test_full_disk_leaves_no_partial_record_and_resume_completes(
    tmp_path, capsys, reference, monkeypatch
) -> None:
    out = tmp_path / "cal"
    write_all = traces_mod._write_all
    calls = {"n": 0}

    def full_disk(fd: int, data: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 3:  # the third batch: half of it lands, then the disk is full
            os.write(fd, data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device")
        write_all(fd, data)

    monkeypatch.setattr(traces_mod, "_write_all", full_disk)
    assert run(out) == 2
    assert "No space left on device" in one_error_line(capsys)
    data = (out / "traces-00000.jsonl").read_bytes()
    assert data.endswith(b"\n") and data.count(b"\n") == 2  # the two whole batches only
    monkeypatch.setattr(traces_mod, "_write_all", write_all)
    assert run(out) == 0
    assert records(out) == reference


def test_torn_last_line_is_cut_back_and_resume_completes(tmp_path, reference) -> None:
    out = tmp_path / "cal"
    assert run(out, seeds=3) == 0
    shard = out / "traces-00000.jsonl"
    whole = shard.read_bytes()
    shard.write_bytes(whole + whole.splitlines()[0][:100])  # a crash mid-write
    with pytest.warns(UserWarning, match="truncated last line"):
        assert len(load_traces(out)) == 3  # readers drop it
    with pytest.warns(UserWarning, match="truncated last line"):
        assert run(out) == 0  # the lock holder cuts it off, then appends
    assert shard.read_bytes().startswith(whole) and shard.read_bytes().endswith(b"\n")
    assert records(out) == reference


@pytest.mark.parametrize("command", ["calibrate", "fit"])
def test_garbage_line_is_an_error_naming_file_and_line(tmp_path, capsys, command: str) -> None:
    out = tmp_path / "cal"
    assert run(out, seeds=3) == 0
    capsys.readouterr()
    shard = out / "traces-00000.jsonl"
    lines = shard.read_bytes().splitlines(keepends=True)
    shard.write_bytes(lines[0] + b"{not json\n" + b"".join(lines[1:]))
    before = shard.read_bytes()
    if command == "calibrate":
        assert run(out) == 2
    else:
        fit = ["fit", "--controller", "gain", "--traces", str(out)]
        assert main([*fit, "--out", str(tmp_path / "gain.json")]) == 2
    line = one_error_line(capsys)
    assert f"{shard}:2: corrupt trace line" in line
    assert shard.read_bytes() == before and not (tmp_path / "gain.json").exists()


def test_resumed_records_are_strict_json(tmp_path) -> None:
    """What a resume appends parses under a strict reader (no bare NaN / Infinity)."""
    out = tmp_path / "cal"
    assert run(out, seeds=2) == 0

    def refuse(name: str) -> None:
        raise ValueError(name)

    for line in (out / "traces-00000.jsonl").read_text().splitlines():
        json.loads(line, parse_constant=refuse)
