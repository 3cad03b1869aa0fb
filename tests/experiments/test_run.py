"""Experiment runner: configs and overrides, results files, W&B offline, sharded = single."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from experiments.config import expand_methods, load_config
from experiments.run import (
    cluster_mean_ci,
    config_prompts,
    config_task,
    make_pairs,
    noise_seed,
    plan_pairs,
    run_experiment,
    trace_sets,
)

CONFIG = Path(__file__).resolve().parents[2] / "experiments" / "configs" / "smoke.yaml"
CONFIGS = sorted(CONFIG.parent.glob("*.yaml"))


@pytest.mark.parametrize("path", CONFIGS, ids=[p.stem for p in CONFIGS])
def test_no_two_pairs_of_a_config_share_noise(path) -> None:
    """Every (prompt, seed) pair of a shipped config has its own noise seed, and the
    calibration's noise seeds are disjoint from the held-out ones."""
    cfg = load_config(path)
    prompts = config_prompts(cfg, config_task(cfg))
    pairs, cal = plan_pairs(cfg, prompts)
    first, count = cfg["pairs"]["seeds"]
    assert len(pairs) == len(prompts) * count
    assert len({ns for _, _, ns in pairs}) == len(pairs)  # on an unconditional task too
    assert len({ns for _, _, ns in cal}) == len(cal)
    assert not {ns for _, _, ns in pairs} & {ns for _, _, ns in cal}


def test_noise_seeds_are_unique_deterministic_and_checked() -> None:
    prompts = list(range(10))
    pairs = make_pairs(prompts, 0, 3)
    assert [ns for _, _, ns in pairs] == list(range(30))  # seed * 10 + prompt index
    assert make_pairs(prompts, 0, 3) == pairs
    assert noise_seed(4, 7, 10) == 74 and make_pairs([5, 2], 3, 1) == [(5, 3, 6), (2, 3, 7)]
    shared = make_pairs(prompts, 0, 3, "shared")
    assert {ns for _, _, ns in shared} == {0, 1, 2}
    with pytest.raises(ValueError, match="prompt index"):
        noise_seed(10, 0, 10)
    cfg = load_config(CONFIG, ["calibration.seeds=[2, 3]"])  # seeds 2..4 meet 0..2
    with pytest.raises(ValueError, match="share 2 noise seeds"):
        plan_pairs(cfg, [0, 1])
    legacy = load_config(CONFIG, ["pairs.unique_seeds=false"])
    assert legacy["pairs"]["noise"] == "shared"
    with pytest.raises(ValueError, match="pairs.noise"):
        load_config(CONFIG, ["pairs.noise=sometimes"])


def test_budget_varied_calibration_section(tmp_path) -> None:
    cal = {"seeds": [9, 1], "budgets": [0, 2], "n": 2, "eps": 1.0, "reference": {"n": 2, "k": 4}}
    sets = trace_sets(cal, tmp_path)
    assert sets["budgets"] == [
        (tmp_path / "k0", {"n": 2, "eps": 1.0, "k": 0}),
        (tmp_path / "k2", {"n": 2, "eps": 1.0, "k": 2}),
    ]
    assert sets["full"] == [(tmp_path / "reference", {"n": 2, "k": 4})]
    assert trace_sets({"seeds": [9, 1], "n": 2, "k": 4}, tmp_path) == {
        "full": [(tmp_path, {"n": 2, "k": 4})]
    }
    with pytest.raises(ValueError, match="drop calibration.k"):
        load_config(CONFIG, ["calibration.budgets=[0, 1]"])
    with pytest.raises(ValueError, match="goes with calibration.budgets"):
        load_config(CONFIG, ["calibration.reference={n: 2, k: 4}"])
    with pytest.raises(ValueError, match="integers K >= 0"):
        load_config(CONFIG, ["calibration.k=null", "calibration.budgets=[-1]"])


def test_results_are_strict_json_and_atomic(tmp_path) -> None:
    """NaN in a result is refused (strict JSON) and leaves no file, not even a temporary one."""
    from experiments.results import write_results

    rec = {"label": "a", "reward": float("nan")}
    with pytest.raises(ValueError, match="non-finite JSON"):
        write_results({"records": [rec], "rows": []}, tmp_path)
    assert not list(tmp_path.iterdir())
    write_results({"records": [{**rec, "reward": 1.0}], "rows": []}, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.csv", "results.json"]


def test_clustered_interval() -> None:
    vals = [1.0, 0.0, 1.0, 0.5]
    assert cluster_mean_ci(vals, [0, 1, 2, 3]) == pytest.approx(
        (0.625, 1.96 * (sum((v - 0.625) ** 2 for v in vals) / 3) ** 0.5 / 2)
    )
    m, half = cluster_mean_ci(vals, [0, 2, 0, 1])  # alike pairs sharing noise: wider
    assert m == 0.625 and half > cluster_mean_ci(vals, [0, 1, 2, 3])[1]


def test_overrides_and_sweeps() -> None:
    cfg = load_config(CONFIG, ["task=gmm-target", "pairs.seeds=[5, 2]", "sampler.steps=4"])
    assert cfg["pairs"]["seeds"] == [5, 2] and cfg["sampler"]["steps"] == 4
    labels = [r["label"] for r in expand_methods(cfg)]
    assert "eps-greedy(eps=0.0)" in labels and "eps-greedy(eps=0.4)" in labels
    with pytest.raises(ValueError, match="pairs.seeds"):
        load_config(CONFIG, ["pairs.seeds=[0]"])
    with pytest.raises(ValueError, match="key.sub=value"):
        load_config(CONFIG, ["nonsense"])


def test_cuda_graphs_on_cpu_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        load_config(CONFIG, ["cuda_graphs=true", "device=cpu"])
    with pytest.raises(ValueError, match="'generator_device'='cuda' needs device cuda"):
        load_config(CONFIG, ["generator_device=cuda"])
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize(
    "sets, want",
    [
        ([], ("cpu", False)),  # the CPU: nothing changes
        (["device=cuda"], ("cuda", True)),  # the fast GPU path is the default there
        (["device=cuda:1"], ("cuda", True)),
        (["device=cuda", "generator_device=cpu"], ("cpu", True)),  # opt out of each
        (["device=cuda", "cuda_graphs=false"], ("cuda", False)),
        (["device=cuda", "generator_device=cpu", "cuda_graphs=false"], ("cpu", False)),
    ],
)
def test_gpu_defaults_resolve_per_device(sets, want) -> None:
    """Resolved without running on the device: device-side generators and CUDA graphs are
    the default for cuda, a config opts out per key; on the CPU neither."""
    cfg = load_config(CONFIG, sets)
    assert (cfg["generator_device"], cfg["cuda_graphs"]) == want


def test_results_and_offline_wandb(tmp_path, monkeypatch) -> None:
    monkeypatch.delenv("WANDB_MODE", raising=False)
    cfg = load_config(CONFIG, ["sampler.steps=4"])
    result = run_experiment(cfg, tmp_path, wandb_on=True, progress=False)
    assert os.environ["WANDB_MODE"] == "offline"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert [r["label"] for r in saved["rows"]] == [r["label"] for r in result["rows"]]
    assert (tmp_path / "results.csv").read_text().count("\n") == len(result["records"]) + 1
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1 and list(runs[0].glob("run-*.wandb"))
    assert (tmp_path / "reward_vs_nfe.png").stat().st_size > 0
    naive = next(r for r in saved["rows"] if r["label"] == "naive")
    assert naive["nfe"] == 4  # euler: one call per step
    # each pair its own noise seed, recorded per pair; the same config reproduces the records
    assert saved["noise"] == "independent"
    for label in {r["label"] for r in saved["records"]}:
        seeds = [r["noise_seed"] for r in saved["records"] if r["label"] == label]
        assert len(set(seeds)) == len(seeds) == saved["pairs"]
    assert not set(saved["calibration"]["noise_seeds"]) & {
        r["noise_seed"] for r in saved["records"]
    }
    assert saved["calibration"]["nfe"]["full"] > 0
    again = run_experiment(cfg, tmp_path / "again", wandb_on=False, progress=False)
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]  # noqa: E731
    assert strip(again["records"]) == strip(result["records"])


def test_two_processes_match_one(tmp_path) -> None:
    """``accelerate launch`` with 2 CPU processes (gloo) gives the single-process records."""
    args = ["experiments/configs/smoke.yaml", "--no-wandb", "--set", "sampler.steps=4"]
    root = CONFIG.parents[2]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.run",
            *args[:1],
            "--out",
            str(tmp_path / "one"),
            *args[1:],
        ],
        cwd=root,
        env=env,
        check=True,
        capture_output=True,
    )
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "experiments.run",
        args[0],
        "--out",
        str(tmp_path / "two"),
        *args[1:],
    ]
    for _ in range(2):  # one retry: a gloo rendezvous can fail on a heavily loaded 2-core host
        done = subprocess.run(
            launch, cwd=root, env=env, capture_output=True, text=True, timeout=300
        )
        if done.returncode == 0:
            break
    assert done.returncode == 0, done.stderr[-3000:]
    one = json.loads((tmp_path / "one" / "results.json").read_text())
    two = json.loads((tmp_path / "two" / "results.json").read_text())
    strip = lambda recs: [{k: v for k, v in r.items() if k != "seconds"} for r in recs]  # noqa: E731
    assert two["processes"] == 2 and one["processes"] == 1
    assert strip(one["records"]) == strip(two["records"])
