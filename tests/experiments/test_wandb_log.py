"""What W&B gets of a result row: every number, the compute ledger's nested counts included."""

from __future__ import annotations

from experiments.wandb_log import numbers


def test_numbers_flatten_the_compute_ledger_and_skip_the_rest() -> None:
    compute = {"nfe": {"step": 35, "score": 108}, "vae_decodes": 2, "steps": [{"a": 1}]}
    row = {"label": "eps", "reward": 0.5, "nfe": 143, "ok": True, "prompts": [0, 1]}
    row["compute"] = compute
    assert numbers(row, "eps") == {
        "eps/reward": 0.5,
        "eps/nfe": 143,
        "eps/compute/nfe/step": 35,
        "eps/compute/nfe/score": 108,
        "eps/compute/vae_decodes": 2,
    }
