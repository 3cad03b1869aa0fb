"""``results.json``'s per-step compute ledger (``rows[i].compute.steps``) and FLOPs
(``flops: true``): the steps add up to the per-pair counts whatever the batching, the report
re-renders the NFEs-per-step plot."""

from __future__ import annotations

import json
from pathlib import Path

from experiments.cli import main
from experiments.config import load_config
from experiments.run import run_experiment

CONFIGS = Path(__file__).resolve().parents[2] / "experiments" / "configs"
PNG = b"\x89PNG\r\n\x1a\n"


def test_steps_add_up_to_the_records_with_uneven_batches(tmp_path: Path) -> None:
    # 6 pairs in batches of 4: one batch of 4, one of 2 (totals, not per-sample lists)
    cfg = load_config(CONFIGS / "smoke.yaml", ["sampler.steps=4", "batch=4"])
    result = run_experiment(cfg, tmp_path, wandb_on=False, progress=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == json.loads(json.dumps(result["rows"]))
    assert "steps" not in saved["compute"]  # per method only
    for row in saved["rows"]:
        recs = [r for r in saved["records"] if r["label"] == row["label"]]
        steps = row["compute"]["steps"]
        assert [s["i"] for s in steps] == [0, 1, 2, 3]
        for purpose in ("step", "score"):
            inside = sum(s["nfe"].get(purpose, 0) for s in steps)
            assert inside <= sum(r[f"nfe_{purpose}"] for r in recs)
        total = sum(sum(s["nfe"].values()) for s in steps)
        assert total == sum(r["nfe"] for r in recs)  # euler: every NFE is inside a step
        assert sum(s["nfe_per_sample"] for s in steps) == row["nfe"]
        out = row["compute"]["outside_steps"]  # the rest: inside + outside = the records
        assert sum(s["reward_calls"] for s in steps) + out["reward_calls"] == sum(
            r["reward_calls"] for r in recs
        )
        for purpose in ("step", "score", "rollout"):
            assert sum(s["nfe"].get(purpose, 0) for s in steps) + out[purpose] == sum(
                r[f"nfe_{purpose}"] for r in recs
            )
        assert all(s["seconds"] >= 0 and s["invocations"] >= 1 for s in steps)
    by = {r["label"]: r["compute"]["steps"] for r in saved["rows"]}
    assert all(s["nfe"] == {"step": 6} for s in by["naive"])  # one call per pair per step
    assert all(s["reward_calls"] == 0 for s in by["naive"])
    best = next(r for r in saved["rows"] if r["label"] == "best-of-2")
    assert best["compute"]["outside_steps"]["reward_calls"] == 2 * 6  # scored at the end
    assert all(s["nfe"]["score"] > 0 and s["reward_calls"] > 0 for s in by["eps-greedy(2,4)"])
    assert (tmp_path / "nfe_per_step.png").read_bytes().startswith(PNG)
    (tmp_path / "nfe_per_step.png").unlink()
    assert main(["report", str(tmp_path)]) == 0
    assert (tmp_path / "nfe_per_step.png").read_bytes().startswith(PNG)
    mine = tmp_path / "plots" / "nfe_per_step.png"  # --out's name: the step plot goes beside
    assert main(["report", str(tmp_path), "--out", str(mine)]) == 0
    beside = tmp_path / "plots" / "nfe_per_step_nfe_per_step.png"
    assert mine.read_bytes().startswith(PNG) and beside.read_bytes().startswith(PNG)
    assert mine.read_bytes() != beside.read_bytes()  # neither overwrote the other


def test_flops_per_sample_on_the_mnist_model(tmp_path: Path) -> None:
    sets = ["sampler.steps=2", "pairs.prompts=[3]", "pairs.seeds=[0, 2]", "flops=true"]
    cfg = load_config(CONFIGS / "byo.yaml", sets)
    cfg["methods"] = cfg["methods"][:2]  # naive, best-of-4
    result = run_experiment(cfg, tmp_path, wandb_on=False, progress=False)
    naive, bo4 = result["rows"]
    assert naive["flops_per_sample"] > 0
    # best-of-4: four times the network's FLOPs, plus four reward calls instead of one
    net = {r["label"]: r["compute"]["network"]["flops"]["step"] for r in result["rows"]}
    assert net["best-of-4"] == 4 * net["naive"]
    assert bo4["flops_per_sample"] > 4 * naive["flops_per_sample"] - 1
    assert result["compute"]["flops_total"] == sum(
        r["compute"]["flops_total"] for r in result["rows"]
    )
    off = load_config(CONFIGS / "byo.yaml", sets[:-1])
    off["methods"] = off["methods"][:1]
    plain = run_experiment(off, tmp_path / "off", wandb_on=False, progress=False)
    assert "flops_per_sample" not in plain["rows"][0]
    assert [r["reward"] for r in plain["records"]] == [
        r["reward"] for r in result["records"] if r["label"] == "naive"
    ]  # counting FLOPs changes nothing computed
