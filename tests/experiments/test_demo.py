"""The demo pipeline end to end on the exact mixture (small settings): calibrate, fit, deploy."""

from __future__ import annotations

import json

from experiments.cli import main


def test_demo_writes_run_directory(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    sets = [
        "sampler.steps=5",
        "calibration.k=3",
        "calibration.n=2",
        "pairs.prompts=[0, 1]",
        "calibration.seeds=[1000, 4]",
    ]
    assert (
        main(["demo", "--task", "gmm-target", "--seeds", "2", "--out", str(out), "--set", *sets])
        == 0
    )
    text = capsys.readouterr().out
    for label in (
        "naive",
        "best-of-4",
        "eps-greedy(4,20)",
        "sigma-window",
        "gp-warp",
        "budget(150)",
    ):
        assert label in text
    res = json.loads((out / "results.json").read_text())
    rows = {r["label"]: r for r in res["rows"]}
    assert rows["budget(150)"]["nfe"] <= 150
    assert rows["eps-greedy(4,20)"]["nfe"] == 5 * (1 + 80) + 4
    assert (out / "reward_vs_nfe.png").exists() and list(out.glob("schedule_*.json"))
