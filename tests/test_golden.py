"""Bit-identity with the golden outputs of the reference code (``tests/golden/*.json``, written
by ``experiments/make_golden.py``; see its docstring for the regeneration command): final
rewards, NFEs, reward calls, the ``x0`` hash and the traces of every search method."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments.make_golden import all_names, run_case

GOLDEN = Path(__file__).resolve().parent / "golden"


def test_every_case_has_a_golden_file() -> None:
    assert sorted(p.stem for p in GOLDEN.glob("*.json")) == sorted(all_names())


@pytest.mark.parametrize("name", all_names())
def test_golden(name: str) -> None:
    want = json.loads((GOLDEN / f"{name}.json").read_text())
    got = json.loads(json.dumps(run_case(name), sort_keys=True))
    for key in ("reward", "nfe", "nfe_by_purpose", "reward_calls", "x0_sha256"):
        assert got.get(key) == want.get(key), f"{name}: {key} differs"
    assert got.get("traces") == want.get("traces"), f"{name}: traces differ"
