"""Extension points: a search method, a controller kind and a model backend, each added in a
fixture module by one registration, run from an experiment config."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

import tests.fixtures.controller_plugin  # noqa: F401  (registers "fixture-fraction")
import tests.fixtures.method_plugin  # noqa: F401  (registers "fixture-restarts")
import tests.fixtures.model_plugin  # noqa: F401  (registers model "fixture-gauss")
from experiments.config import load_config
from experiments.run import run_experiment

BASE: dict[str, Any] = {
    "task": "gmm-target",
    "sampler": {"name": "euler", "steps": 4},
    "pairs": {"prompts": [0, 1], "seeds": [0, 2]},
    "batch": 4,
    "wandb": {"enabled": False},
}


def run(tmp_path: Path, **cfg: Any) -> dict[str, dict[str, Any]]:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"name": "ext", **BASE, **cfg}))
    result = run_experiment(load_config(path), tmp_path / "run", wandb_on=False, progress=False)
    return {r["label"]: r for r in result["rows"]}


def test_new_search_method_runs_from_a_config(tmp_path) -> None:
    methods = [
        {"label": "plugin", "method": "fixture-restarts", "restarts": 2},
        {"label": "builtin", "method": "best-of-n", "n": 2},
    ]
    rows = run(tmp_path, methods=methods)
    assert rows["plugin"]["reward"] == rows["builtin"]["reward"]
    assert rows["plugin"]["nfe"] == rows["builtin"]["nfe"]


def test_new_search_method_refuses_unknown_options(tmp_path) -> None:
    with pytest.raises(TypeError, match="'fixture-restarts' takes no option 'n'"):
        run(tmp_path, methods=[{"method": "fixture-restarts", "n": 2}])


def test_new_controller_kind_runs_from_a_config(tmp_path) -> None:
    cal = {"seeds": [1000, 2], "n": 2, "k": 4, "eps": 0.4, "lam": 0.15}
    methods = [
        {"label": "plugin", "method": "eps-greedy", "controller": {"kind": "fixture-fraction"}},
        {"label": "k=2", "method": "eps-greedy", "n": 2, "k": 2, "eps": 0.4, "lam": 0.15},
    ]
    rows = run(tmp_path, calibration=cal, methods=methods)
    assert rows["plugin"]["reward"] == rows["k=2"]["reward"]  # fraction 0.5 of K=4
    bad = [{"method": "eps-greedy", "controller": {"kind": "fixture-fraction", "mapping": "x"}}]
    with pytest.raises(TypeError, match="'fixture-fraction' takes no option 'mapping'"):
        run(tmp_path, calibration=cal, methods=bad)


def test_new_model_backend_runs_from_a_config(tmp_path) -> None:
    task = {"model": "fixture-gauss", "reward": "target"}
    methods = [
        {"label": "naive", "method": "naive"},
        {"label": "eps-greedy", "method": "eps-greedy", "n": 4, "k": 4},
    ]
    rows = run(tmp_path, task=task, methods=methods)
    assert rows["eps-greedy"]["nfe"] > rows["naive"]["nfe"]
    assert rows["eps-greedy"]["reward"] > rows["naive"]["reward"]


def test_registered_model_combines_with_any_registered_reward(tmp_path) -> None:
    rows = run(tmp_path, task="fixture-gauss-brightness", methods=[{"method": "naive"}])
    assert rows["naive"]["n"] == 4
