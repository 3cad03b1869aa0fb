"""The trace schema: typed records round-trip the dicts a search writes; one writer, one
reader (shards with a truncated last line are repaired)."""

from __future__ import annotations

import pytest

from adaptive_tts.registry import SAMPLERS
from adaptive_tts.tasks import build_task
from adaptive_tts.traces import (
    TRACE_SCHEMA,
    TraceRecord,
    append_traces,
    load_trace_records,
    load_traces,
    read_shard,
)
from experiments.runner import run_method


@pytest.fixture(scope="module")
def traces() -> list[dict]:
    import torch

    task = build_task("gmm-target")
    sampler = SAMPLERS["heun"](4)
    res = run_method(task, "eps-greedy", sampler, [0, 1], torch.tensor([0, 1]), n=2, k=2)
    for p, tr in enumerate(res.traces):
        tr["prompt"] = p
    return res.traces


def test_records_round_trip_search_traces(traces) -> None:
    for tr in traces:
        rec = TraceRecord.from_dict(tr)
        assert rec.to_dict() == tr
        searched = [s for s in rec.steps if s.searchable]
        assert searched and all(s.iters is not None and len(s.iters) == 2 for s in searched)
        assert rec.method == "eps-greedy" and rec.task == "gmm-target" and rec.seed in (0, 1)


def test_records_refuse_another_schema(traces) -> None:
    with pytest.raises(ValueError, match="schema"):
        TraceRecord.from_dict({**traces[0], "schema": "other/9"})


def test_writer_and_reader(tmp_path, traces) -> None:
    shard = tmp_path / "traces-00000.jsonl"
    append_traces(shard, traces[:1])
    append_traces(shard, [TraceRecord.from_dict(traces[1])])
    assert load_traces(tmp_path) == traces
    assert [r.seed for r in load_trace_records(tmp_path)] == [0, 1]
    with open(shard, "a") as f:
        f.write('{"schema": "' + TRACE_SCHEMA + '", "trunc')
    with pytest.warns(UserWarning, match="truncated"):
        assert len(list(read_shard(shard, repair=True))) == 2
    assert shard.read_bytes().endswith(b"\n")
