"""The shared device defaults of ``sample``, ``calibrate`` and ``bench``
(:func:`experiments.cli.common.run_settings`): ``--device cuda`` turns on CUDA generators and
CUDA graphs where the model and reward allow, each opt-out works, and on the CPU nothing
changes. Resolved without running CUDA."""

from __future__ import annotations

import argparse

import pytest

from experiments.cli.common import RunSettings, add_run_options, run_settings, task_run_settings
from experiments.cli.errors import UsageError


def parse(*argv: str, device: str | None = "cpu") -> argparse.Namespace:
    p = argparse.ArgumentParser()
    add_run_options(p, device=device)
    return p.parse_args(list(argv))


@pytest.fixture(autouse=True)
def _no_cuda_check(monkeypatch) -> None:
    """``--generator-device cuda`` is checked against the machine; pretend it has a GPU."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)


@pytest.mark.parametrize(
    "model, rewards, graphs, graph_reward",
    [
        ("mnist", None, True, True),  # target reward: captured too
        ("mnist", ["brightness", "classifier:/c=0.5"], True, True),
        ("mnist", ["compress"], True, False),  # JPEG on the CPU: the reward runs eagerly
        ("edm:/m", ["tests.fixtures.reward_plugin:redness"], True, False),  # unknown plug-in
        ("gmm", None, False, False),  # CPU model
        ("sd:/m", ["brightness"], False, False),  # compute-bound text model
        ("flux:/m", ["clip:/c"], False, False),
    ],
)
def test_cuda_turns_on_the_fast_path(model, rewards, graphs, graph_reward) -> None:
    s = run_settings(parse("--device", "cuda"), model, rewards)
    assert s == RunSettings("cuda", "cuda", graphs, graph_reward, progress=False)


def test_opt_outs_and_forcing() -> None:
    s = run_settings(parse("--device", "cuda", "--no-cuda-graphs"), "mnist")
    assert s.generator_device == "cuda" and not s.cuda_graphs and not s.graph_reward
    s = run_settings(parse("--device", "cuda", "--generator-device", "cpu"), "mnist")
    assert s.generator_device == "cpu" and s.cuda_graphs
    s = run_settings(parse("--device", "cuda:1", "--cuda-graphs"), "sd:/m", ["compress"])
    assert s.cuda_graphs and s.graph_reward  # explicit: both, the reward falls back if it must


def test_cpu_changes_nothing() -> None:
    s = run_settings(parse(), "mnist")
    assert s == RunSettings("cpu", None, False, False, progress=False)
    assert task_run_settings(parse(), "mnist-compress") == s
    assert task_run_settings(parse("--device", "cuda"), "mnist-compress").graph_reward is False
    with pytest.raises(UsageError, match="--cuda-graphs needs a CUDA device"):
        run_settings(parse("--cuda-graphs"), "mnist")


def test_progress_only_on_a_terminal(monkeypatch) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: True)
    assert run_settings(parse(), "gmm").progress
    assert not run_settings(parse("--quiet"), "gmm").progress


def test_bench_device_overrides(tmp_path) -> None:
    from experiments.cli.common import device_overrides

    cfg = tmp_path / "c.yaml"
    cfg.write_text("name: c\ntask: mnist-target\nmethods: [{label: naive, method: naive}]\n")
    args = parse("--device", "cuda", device=None)
    args.config, args.overrides = cfg, []
    assert device_overrides(args) == ["device=cuda", "cuda_graphs=true", "generator_device=cuda"]
    args.overrides = ["task=mnist-compress"]  # graphs only where the reward is captured too
    assert "cuda_graphs=false" in device_overrides(args)
    none = parse(device=None)
    none.config, none.overrides = cfg, []
    assert device_overrides(none) == []  # the config's settings stand
    with pytest.raises(UsageError, match="need --device"):
        bad = parse("--no-cuda-graphs", device=None)
        bad.config, bad.overrides = cfg, []
        device_overrides(bad)
