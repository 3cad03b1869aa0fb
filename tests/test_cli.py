"""The command line: the --json contract and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from adaptive_tts.cli import main


def test_sample_json_last_line(capsys) -> None:
    assert (
        main(
            [
                "sample",
                "--model",
                "gmm",
                "--method",
                "eps-greedy",
                "--k",
                "2",
                "--batch",
                "2",
                "--steps",
                "6",
                "--seed",
                "3",
                "--json",
            ]
        )
        == 0
    )
    last = capsys.readouterr().out.strip().splitlines()[-1]
    row = json.loads(last)
    assert {"method", "reward", "nfe", "seconds"} <= set(row)
    assert row["method"] == "eps-greedy" and row["nfe"] == 6 * (1 + 4 * 2) + 5


@pytest.mark.parametrize(
    "method", ["naive", "best-of-n", "beam", "mcts", "zero-order", "eacps", "evosearch"]
)
def test_every_method_runs(method: str, capsys) -> None:
    main(
        [
            "sample",
            "--method",
            method,
            "--k",
            "1",
            "--sims",
            "1",
            "--batch",
            "1",
            "--steps",
            "4",
            "--k-global",
            "2",
            "--elites",
            "1",
            "--k-local",
            "1",
            "--evo-schedule",
            "0",
            "2",
            "--population",
            "4",
            "2",
            "--json",
        ]
    )
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["method"] == method


def test_console_script_entry_point() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "adaptive_tts.cli",
            "sample",
            "--method",
            "naive",
            "--batch",
            "1",
            "--steps",
            "4",
            "--json",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(out.stdout.strip().splitlines()[-1])["nfe"] == 7


def test_bad_class_is_clear() -> None:
    with pytest.raises(ValueError, match="class"):
        main(["sample", "--model", "gmm", "--class", "9", "--batch", "1", "--steps", "4"])


def test_cuda_graphs_need_a_cuda_device() -> None:
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        main(["sample", "--model", "gmm", "--batch", "1", "--steps", "4", "--cuda-graphs"])


def test_generator_device_reaches_the_search(capsys) -> None:
    """`--generator-device cpu` is the default stream: same JSON as without the flag."""
    base = ["sample", "--model", "gmm", "--method", "eps-greedy", "--batch", "2", "--steps", "4"]
    main([*base, "--json"])
    a = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    main([*base, "--generator-device", "cpu", "--json"])
    b = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert a["rewards"] == b["rewards"] and a["nfe"] == b["nfe"]
