"""Calibration runs: append-only shards, resume, truncated-line recovery, settings checks."""

from __future__ import annotations

import json
import warnings

import pytest

from adaptive_tts.sampling import make_sampler
from adaptive_tts.tasks import build_task
from experiments.calibration import calibrate, load_traces
from experiments.runner import process_shard, rank_device

KN = {"n": 2, "k": 2, "eps": 0.4, "lam": 0.15}


@pytest.fixture()
def setup():
    task = build_task("gmm-target")
    return task, make_sampler("euler", 4)


def test_resume_skips_finished_pairs(tmp_path, setup) -> None:
    task, sampler = setup
    pairs = [(c, s) for c in (0, 1) for s in range(3)]
    first = calibrate(
        task, "eps-greedy", sampler, pairs[:4], tmp_path, batch=2, progress=False, **KN
    )
    assert {k: first[k] for k in ("done", "ran", "total", "rank", "world")} == {
        "done": 0,
        "ran": 4,
        "total": 4,
        "rank": 0,
        "world": 1,
    }
    assert first["nfe"] > 0 and first["seconds"] >= first["seconds_first"] > 0
    again = calibrate(task, "eps-greedy", sampler, pairs, tmp_path, batch=2, progress=False, **KN)
    assert (again["done"], again["ran"], again["total"]) == (4, 2, 6)
    traces = load_traces(tmp_path)
    assert sorted((t["prompt"], t["seed"]) for t in traces) == sorted(pairs)
    assert all(t["schema"] == "adaptive_tts.trace/1" and t["task"] == "gmm-target" for t in traces)


def test_resumed_traces_equal_a_fresh_run(tmp_path, setup) -> None:
    task, sampler = setup
    pairs = [(0, 5), (1, 6)]
    calibrate(task, "eps-greedy", sampler, pairs[:1], tmp_path / "a", progress=False, **KN)
    calibrate(task, "eps-greedy", sampler, pairs, tmp_path / "a", progress=False, **KN)
    calibrate(task, "eps-greedy", sampler, pairs, tmp_path / "b", progress=False, **KN)
    a = {(t["prompt"], t["seed"]): t for t in load_traces(tmp_path / "a")}
    b = {(t["prompt"], t["seed"]): t for t in load_traces(tmp_path / "b")}
    assert {k: v["final_reward"] for k, v in a.items()} == {
        k: v["final_reward"] for k, v in b.items()
    }


def test_processes_split_pairs_into_own_shards_like_one_process(tmp_path, setup) -> None:
    """Two ranks (run one after the other) split the pairs round-robin into their own shards;
    together they hold exactly the single-process traces."""
    task, sampler = setup
    pairs = [(c, s) for c in (0, 1) for s in range(3)]
    ran = []
    for rank in (0, 1):
        info = calibrate(
            task,
            "eps-greedy",
            sampler,
            pairs,
            tmp_path / "two",
            progress=False,
            shard=(rank, 2),
            **KN,
        )
        ran.append(info["ran"])
    assert ran == [3, 3]
    assert sorted(p.name for p in (tmp_path / "two").glob("*.jsonl")) == [
        "traces-00000.jsonl",
        "traces-00001.jsonl",
    ]
    calibrate(task, "eps-greedy", sampler, pairs, tmp_path / "one", progress=False, **KN)
    two = {(t["prompt"], t["seed"]): t for t in load_traces(tmp_path / "two")}
    one = {(t["prompt"], t["seed"]): t for t in load_traces(tmp_path / "one")}
    assert two == one


def test_bad_shard_and_rank_environment_are_errors(tmp_path, setup, monkeypatch) -> None:
    task, sampler = setup
    with pytest.raises(ValueError, match="shard must be"):
        calibrate(task, "eps-greedy", sampler, [(0, 0)], tmp_path, progress=False, shard=(2, 2))
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "2")
    with pytest.raises(ValueError, match="RANK must lie in"):
        process_shard()
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert process_shard() == (1, 2)
    assert rank_device("cuda") == "cuda:1" and rank_device("cpu") == "cpu"


def test_truncated_last_line_dropped_with_warning_and_rerun(tmp_path, setup) -> None:
    task, sampler = setup
    pairs = [(0, 0), (0, 1), (0, 2)]
    calibrate(task, "eps-greedy", sampler, pairs, tmp_path, progress=False, **KN)
    shard = next(tmp_path.glob("*.jsonl"))
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) - 40])  # a crash in the middle of the last line
    with pytest.warns(UserWarning, match="truncated last line"):
        assert len(load_traces(tmp_path)) == 2
    with pytest.warns(UserWarning, match="truncated"):
        info = calibrate(task, "eps-greedy", sampler, pairs, tmp_path, progress=False, **KN)
    assert info["ran"] == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(load_traces(tmp_path)) == 3


def test_corrupt_middle_line_is_an_error(tmp_path, setup) -> None:
    task, sampler = setup
    calibrate(task, "eps-greedy", sampler, [(0, 0), (0, 1)], tmp_path, progress=False, **KN)
    shard = next(tmp_path.glob("*.jsonl"))
    lines = shard.read_text().splitlines()
    shard.write_text("{broken\n" + "\n".join(lines) + "\n")
    with pytest.raises(ValueError, match="corrupt trace line"):
        load_traces(tmp_path)


def test_changed_settings_refused(tmp_path, setup) -> None:
    task, sampler = setup
    calibrate(task, "eps-greedy", sampler, [(0, 0)], tmp_path, progress=False, **KN)
    with pytest.raises(ValueError, match="different calibration settings"):
        calibrate(task, "eps-greedy", sampler, [(0, 1)], tmp_path, progress=False, **{**KN, "k": 3})
    with pytest.raises(FileNotFoundError):
        load_traces(tmp_path / "missing")
    settings = json.loads((tmp_path / "calibration.json").read_text())
    assert settings["options"]["k"] == 2 and settings["sampler"]["steps"] == 4
