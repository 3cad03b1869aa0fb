"""The adaptive peers are reachable from the command line (``--option KEY=VALUE``) and from
experiment configs (method entries with their options), with counted NFEs and reward calls."""

from __future__ import annotations

import json

import pytest
import yaml

from experiments.cli import main
from experiments.config import load_config
from experiments.run import run_experiment


@pytest.mark.parametrize(
    "method, options, nfe",
    [
        ("fk", ["k=3", "potential=difference", "resample=multinomial"], 3 * 7),
        ("rollover", ["budget=20"], None),
        ("threshold", ["threshold=[[0.1, 0.0], [10.0, -5.0]]", "max_tries=4"], None),
        ("dts", ["budget=21", "children=3"], None),
    ],
)
def test_cli_reaches_every_option(capsys, method, options, nfe) -> None:
    argv = ["sample", "--model", "gmm", "--method", method, "--steps", "4", "--batch", "2"]
    assert main([*argv, "--option", *options, "--json"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["method"] == method and row["nfe"] <= 21
    for item in options:
        key, _, raw = item.partition("=")
        assert row["params"][key] == yaml.safe_load(raw)
    if nfe is not None:
        assert row["nfe"] == nfe


def test_cli_names_an_option_the_method_does_not_take(capsys) -> None:
    assert main(["sample", "--model", "gmm", "--method", "rollover", "--option", "k=2"]) == 2
    err = capsys.readouterr().err
    assert "'rollover'" in err and "takes no option '--option k'" in err
    assert len(err.strip().splitlines()) == 1
    assert main(["sample", "--model", "gmm", "--method", "fk", "--option", "k"]) == 2
    assert "--option" in capsys.readouterr().err


def test_config_runs_the_peers(tmp_path) -> None:
    cfg_path = tmp_path / "peers.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "name": "peers",
                "sampler": {"name": "heun", "steps": 4},
                "pairs": {"prompts": None, "seeds": [0, 2]},
                "methods": [
                    {"label": "fk", "method": "fk", "k": 2, "lam": 1.0},
                    {"label": "rbf", "method": "rollover", "budget": 14},
                    {"label": "vts", "method": "threshold", "threshold": -1.0, "budget": 14},
                    {"label": "dts", "method": "dts", "budget": 14},
                ],
            }
        )
    )
    result = run_experiment(load_config(cfg_path), tmp_path / "out", wandb_on=False, progress=False)
    rows = {r["label"]: r for r in result["rows"]}
    assert set(rows) == {"fk", "rbf", "vts", "dts"}
    assert rows["fk"]["nfe"] == 14 and all(r["nfe"] <= 14 for r in rows.values())
