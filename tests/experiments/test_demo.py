"""The demo pipeline end to end on the exact mixture (small settings): budget-varied
calibration, the stopping fit, deployment beside the fixed baselines on independent pairs."""

from __future__ import annotations

import json

from experiments.cli import main

STOP = "stopping(0.9999, 0.99)"


def test_demo_writes_run_directory(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    sets = [
        "sampler.steps=5",
        "calibration.reference.k=3",
        "pairs.prompts=[0, 1]",
        "calibration.seeds=[1000, 4]",
    ]
    assert (
        main(["demo", "--task", "gmm-target", "--seeds", "2", "--out", str(out), "--set", *sets])
        == 0
    )
    text = capsys.readouterr().out
    for label in ("naive", "best-of-4", "fixed K=2", "fixed K=4", "eps-greedy(4,20)", STOP):
        assert label in text
    for column in ("reward (95% CI)", "NFEs", "eval", "s/sample"):
        assert column in text
    res = json.loads((out / "results.json").read_text())
    rows = {r["label"]: r for r in res["rows"]}
    assert rows["eps-greedy(4,20)"]["nfe"] == 5 * (1 + 80) + 4
    assert rows["fixed K=2"]["nfe"] == 5 * (1 + 8) + 4
    # held-out pairs: each its own noise, none of them a calibration pair's
    noise = [r["noise_seed"] for r in res["records"] if r["label"] == STOP]
    assert len(set(noise)) == len(noise) == res["pairs"] == 4
    assert not set(noise) & set(res["calibration"]["noise_seeds"])
    # the closed-loop controller: its fit, its calibration data and its reliability plot
    stop = out / "schedule_stopping_0.9999__0.99.json"
    saved = json.loads(stop.read_text())
    assert saved["kind"] == "stopping"
    assert stop.with_suffix(".data.safetensors").exists()
    assert (out / "fit_stopping_0.9999__0.99.png").exists()
    assert sorted(p.name for p in (out / "calibration").iterdir()) == [
        "k0",
        "k1",
        "k2",
        "k4",
        "k8",
        "reference",
    ]
    assert set(res["calibration"]["nfe"]) == {"budgets", "full"}
    assert (out / "reward_vs_nfe.png").exists()
