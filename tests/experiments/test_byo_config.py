"""Bring your own model and reward from an experiment config: tiny ``edm:DIR`` and ``sd:DIR``
directories (built offline, as in tests/models/test_model_specs.py) with a ``module:callable``
reward and a weighted composite, run end to end through ``adaptive-tts bench`` on the CPU; the
results record the prompt texts and the compute ledger."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from experiments.cli import main

PLUGIN = "tests.fixtures.reward_plugin:mean_red"
PROMPTS = ["a photo of a cat", "a red car"]


def bench(tmp_path: Path, capsys, cfg: dict[str, Any]) -> dict[str, Any]:
    path = tmp_path / "byo.yaml"
    path.write_text(yaml.safe_dump({"wandb": {"enabled": False}, **cfg}))
    out = tmp_path / "run"
    rc = main(["bench", str(path), "--out", str(out), "--no-wandb"])
    assert rc == 0, capsys.readouterr().err
    return json.loads((out / "results.json").read_text())


def check_compute(res: dict[str, Any]) -> None:
    """Every row's ledger adds up to its per-pair records' counted NFEs and reward calls."""
    for row in res["rows"]:
        recs = [r for r in res["records"] if r["label"] == row["label"]]
        net = row["compute"]["network"]
        assert net["nfe_total"] == sum(r["nfe"] for r in recs) > 0
        for purpose, n in net["nfe"].items():
            assert n == sum(r[f"nfe_{purpose}"] for r in recs)
        assert row["compute"]["reward"]["calls"] == sum(r["reward_calls"] for r in recs) > 0
    total = sum(row["compute"]["network"]["nfe_total"] for row in res["rows"])
    assert res["compute"]["network"]["nfe_total"] == total


def test_edm_dir_with_a_weighted_plugin_composite(tmp_path, capsys, edm_dir) -> None:
    cfg = {
        "name": "byo-edm",
        "model": f"edm:{edm_dir}",
        "reward": [f"{PLUGIN}=1.0", "brightness=0.5"],
        "eval_reward": "compress",
        "sampler": {"steps": 3},  # the model's default sampler (EDM Heun) with 3 steps
        "pairs": {"seeds": [0, 2]},
        "batch": 2,
        "methods": [
            {"label": "naive", "method": "naive"},
            {"label": "eg", "method": "eps-greedy", "n": 2, "k": 1, "eps": 0.5},
        ],
    }
    res = bench(tmp_path, capsys, cfg)
    assert res["model"] == f"edm:{edm_dir}" and res["prompts"] is None
    assert res["task"] == "edm-tests.fixtures.reward_plugin+brightness"
    rows = {r["label"]: r for r in res["rows"]}
    assert rows["naive"]["nfe"] == 3 + 2  # Heun, 3 steps: 2 calls per step but the last
    assert rows["eg"]["nfe"] > rows["naive"]["nfe"]
    assert all(0.0 <= r["eval_reward"] <= 1.0 for r in res["records"])  # the judge reported
    assert "eval_reward" in rows["naive"]
    check_compute(res)


def test_sd_dir_with_prompts_records_texts_and_vae_decodes(tmp_path, capsys, sd_dir) -> None:
    cfg = {
        "name": "byo-sd",
        "model": f"sd:{sd_dir}",
        "reward": PLUGIN,
        "prompts": PROMPTS,
        "guidance": 2.0,
        "sampler": {"steps": 2},  # the model's default sampler (DDIM, eta 1) with 2 steps
        "pairs": {"seeds": [0, 1]},
        "batch": 2,
        "methods": [{"label": "best-of-2", "method": "best-of-n", "n": 2}],
    }
    res = bench(tmp_path, capsys, cfg)
    assert res["prompts"] == PROMPTS
    assert [r["prompt_text"] for r in res["records"]] == PROMPTS  # one pair per prompt
    assert [r["prompt"] for r in res["records"]] == [0, 1]
    row = res["rows"][0]
    assert row["nfe"] == 2 * 2 * 2  # 2 candidates x 2 DDIM steps x CFG (2 NFEs a call)
    assert row["compute"]["vae_decodes"] == 2 * 2  # every candidate decoded once for its reward
    check_compute(res)
    csv_head = (tmp_path / "run" / "results.csv").read_text().splitlines()[0]
    assert "prompt_text" in csv_head and "nfe_step" in csv_head


def test_byo_config_errors_name_the_key(tmp_path, capsys, edm_dir, sd_dir) -> None:
    cases = [
        ({"model": f"sd:{sd_dir}", "reward": PLUGIN}, "give 'prompts' or 'prompts_file'"),
        ({"model": f"edm:{edm_dir}"}, "'reward' is required"),
        ({"model": f"edm:{edm_dir}", "reward": "brightness", "guidance": 2.0}, "'guidance'"),
        ({"model": f"sd:{sd_dir}", "reward": PLUGIN, "prompts": PROMPTS, "height": 30}, "of 8"),
        ({"model": f"sd:{sd_dir}", "reward": PLUGIN, "prompts_file": "nope.txt"}, "nope.txt"),
        ({"model": "mnist", "task": "mnist-target"}, "both 'task' and 'model'"),
        ({"model": "nosuch:x", "reward": "brightness"}, "'model'='nosuch:x' is unknown"),
        ({"model": f"edm:{edm_dir}", "reward": "no_such_reward"}, "unknown reward"),
    ]
    for extra, want in cases:
        path = tmp_path / "bad.yaml"
        cfg = {"name": "bad", "methods": [{"method": "naive"}], **extra}
        path.write_text(yaml.safe_dump(cfg))
        assert main(["bench", str(path), "--out", str(tmp_path / "out")]) == 2
        err = capsys.readouterr().err
        assert want in err and err.startswith("adaptive-tts: error: "), (want, err)
        assert not (tmp_path / "out").exists()


def test_prompts_file_feeds_the_prompts(tmp_path, capsys, sd_dir) -> None:
    (tmp_path / "prompts.txt").write_text("# one a line\na blue bird\n\na green tree\n")
    cfg = {
        "name": "byo-file",
        "model": f"sd:{sd_dir}",
        "reward": PLUGIN,
        "prompts_file": str(tmp_path / "prompts.txt"),
        "guidance": 1.0,
        "sampler": {"steps": 1},
        "pairs": {"prompts": [1], "seeds": [0, 1]},
        "batch": 1,
        "methods": [{"label": "naive", "method": "naive"}],
    }
    res = bench(tmp_path, capsys, cfg)
    assert res["prompts"] == ["a blue bird", "a green tree"]
    assert [r["prompt_text"] for r in res["records"]] == ["a green tree"]
    assert res["rows"][0]["nfe"] == 1  # guidance 1: no CFG row
