"""``adaptive-tts calibrate`` on your own model directory and reward (``--model SPEC``), and
``fit`` on its traces: tiny pipelines built offline (as :mod:`tests.experiments.test_byo`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adaptive_tts.traces import load_traces
from experiments.cli import main
from tests.experiments.test_byo import PROMPTS, REDNESS

SMALL = ["--n", "2", "--k", "1", "--steps", "2", "--batch", "2", "--seeds", "0", "2"]


def calibrate(capsys, argv: list[str]) -> dict:
    assert main(["calibrate", *argv]) == 0, capsys.readouterr().err
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_sd_dir_with_prompts_records_the_prompt_texts(
    sd_dir: Path,
    tmp_path: Path,
    capsys,
) -> None:
    prompts = [a for p in PROMPTS for a in ("--prompt", p)]
    out = tmp_path / "cal"
    info = calibrate(
        capsys,
        ["--model", f"sd:{sd_dir}", *prompts, "--reward", REDNESS, *SMALL, "--out", str(out)],
    )
    assert info["ran"] == 4 and info["total"] == 4  # 2 prompts x 2 seeds
    meta = json.loads((out / "calibration.json").read_text())
    assert meta["prompt_texts"] == PROMPTS
    assert f"sd:{sd_dir}" in meta["task"] and "ddim" in json.dumps(meta["sampler"])
    traces = load_traces(out)
    assert sorted((t["prompt"], t["prompt_text"]) for t in traces) == sorted(
        (i, p) for i, p in enumerate(PROMPTS) for _ in range(2)
    )
    again = calibrate(  # a resume runs nothing
        capsys,
        ["--model", f"sd:{sd_dir}", *prompts, "--reward", REDNESS, *SMALL, "--out", str(out)],
    )
    assert again["ran"] == 0 and again["done"] == 4


def test_edm_dir_then_fit(edm_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal"
    info = calibrate(
        capsys, ["--model", f"edm:{edm_dir}", "--reward", "brightness", *SMALL, "--out", str(out)]
    )
    assert info["ran"] == 2 and info["nfe"] > 0  # unconditional brightness: prompt -1 only
    sched = tmp_path / "binomial.json"
    assert main(["fit", "--controller", "binomial", "--traces", str(out), "--out", str(sched)]) == 0
    assert json.loads(sched.read_text())["steps"]


def test_another_reward_is_other_settings(edm_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cal"
    calibrate(
        capsys, ["--model", f"edm:{edm_dir}", "--reward", "brightness", *SMALL, "--out", str(out)]
    )
    code = main(["calibrate", "--model", f"edm:{edm_dir}", "--reward", "compress", *SMALL,
                 "--out", str(out)])  # fmt: skip
    assert code == 2 and "different calibration settings" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "needs one of --task and --model"),
        (["--task", "gmm-target", "--model", "gmm"], "needs one of --task and --model"),
        (["--task", "gmm-target", "--reward", "brightness"], "--reward with --task"),
        (["--task", "gmm-target", "--prompt", "a cat"], "--prompt with --task"),
        (["--task", "gmm-target", "--sampler", "ddim"], "--sampler"),
        (["--model", "gmm", "--reward", "brightness", "--classes", "0"], "takes no prompt"),
        (["--model", "nosuch:dir"], "--model"),
    ],
)
def test_bad_model_options_are_one_line(tmp_path: Path, capsys, argv, message) -> None:
    out = tmp_path / "cal"
    assert main(["calibrate", *argv, *SMALL, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err
    assert not (out / "calibration.json").exists()


def test_flux_dir_with_an_entry_point_reward(tmp_path: Path, capsys, contrast_plugin) -> None:
    """``calibrate --model flux:DIR`` with a prompts file and an installed plug-in's reward: the
    traces carry the prompt texts, the settings the model's own sampler and the reward spec."""
    from tests.experiments.test_byo import build_flux

    root = build_flux(tmp_path / "flux")
    capsys.readouterr()  # the build's own progress output
    table = tmp_path / "prompts.txt"
    table.write_text("\n".join(PROMPTS) + "\n")
    out = tmp_path / "cal"
    argv = ["--model", f"flux:{root}", "--prompts", str(table), "--reward", "contrast:2",
            "--height", "16", "--width", "16", *SMALL, "--out", str(out)]  # fmt: skip
    info = calibrate(capsys, argv)
    assert info["ran"] == 4 and info["nfe"] > 0
    meta = json.loads((out / "calibration.json").read_text())
    assert meta["prompt_texts"] == PROMPTS and "contrast:2" in meta["task"]
    assert f"flux:{root}" in meta["task"]
    traces = load_traces(out)
    assert sorted(t["prompt_text"] for t in traces) == sorted(PROMPTS * 2)
    assert all(t["nfe"]["total"] > 0 for t in traces)
