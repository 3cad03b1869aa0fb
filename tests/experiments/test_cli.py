"""The command line: the --json contract and clear errors."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from experiments.cli import main


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


METHOD_ARGS = {
    "naive": [],
    "best-of-n": ["--n", "2"],
    "beam": ["--n", "2", "--beam-width", "1"],
    "mcts": ["--n", "2", "--sims", "1"],
    "zero-order": ["--k", "1"],
    "eacps": ["--k-global", "2", "--elites", "1", "--k-local", "1"],
    "evosearch": ["--elites", "1", "--evo-schedule", "0", "2", "--population", "4", "2"],
}


@pytest.mark.parametrize("method", sorted(METHOD_ARGS))
def test_every_method_runs(method: str, capsys) -> None:
    args = ["sample", "--method", method, "--batch", "1", "--steps", "4", "--json"]
    main(args + METHOD_ARGS[method])
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["method"] == method


def test_option_a_method_does_not_take_is_an_error(capsys) -> None:
    assert main(["sample", "--method", "naive", "--k", "2", "--batch", "1", "--steps", "4"]) == 2
    assert "'naive' takes no option '--k'" in capsys.readouterr().err


def test_console_script_entry_point() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "experiments.cli",
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


def test_bad_class_is_clear(capsys) -> None:
    assert main(["sample", "--model", "gmm", "--class", "9", "--batch", "1", "--steps", "4"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adaptive-tts: error:") and "class" in err[0]
    with pytest.raises(ValueError, match="class"):  # --debug: the traceback
        main(["--debug", "sample", "--model", "gmm", "--class", "9", "--batch", "1"])


def test_cuda_graphs_need_a_cuda_device() -> None:
    argv = ["sample", "--model", "gmm", "--batch", "1", "--steps", "4", "--cuda-graphs"]
    with pytest.raises(ValueError, match="cuda_graphs needs a CUDA device"):
        main(["--debug", *argv])


def _spy_generator_devices(monkeypatch) -> list[str]:
    """Record the device of every generator set the runner makes (what the search draws on)."""
    import experiments.runner as runner

    seen: list[str] = []
    real = runner.make_generators

    def spy(seeds, device="cpu"):
        gens = real(seeds, device)
        seen.append(str(gens[0].device))
        return gens

    monkeypatch.setattr(runner, "make_generators", spy)
    return seen


def _last_json(capsys) -> dict:
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_generator_device_reaches_the_search(monkeypatch, capsys) -> None:
    """The search draws on the generators the flag names, one per seed, in the seed's own CPU
    stream: the CLI's rewards equal a direct search on ``make_generators(seeds)`` (seeds
    ``--seed .. --seed + batch - 1``), and a different stream gives different rewards. On a
    CUDA machine ``--generator-device cuda`` reaches the search too."""
    from adaptive_tts.registry import SAMPLERS
    from adaptive_tts.sampling import initial_noise, make_generators
    from adaptive_tts.search import eps_greedy
    from adaptive_tts.tasks import build_task

    seen = _spy_generator_devices(monkeypatch)
    base = ["sample", "--model", "gmm", "--method", "eps-greedy", "--batch", "2", "--steps", "4"]
    main([*base, "--seed", "5", "--json"])
    a = _last_json(capsys)
    main([*base, "--seed", "5", "--generator-device", "cpu", "--json"])
    b = _last_json(capsys)
    assert seen == ["cpu", "cpu"] and a["rewards"] == b["rewards"] and a["nfe"] == b["nfe"]
    t = build_task("gmm-target")
    s = SAMPLERS["heun"](4, sigma_max=t.sigma_max)
    gens = make_generators([5, 6])
    x = initial_noise(t.sample_shape, gens, s.sigma(0))
    cond = t.prompts([0], 2) if t.uses_prompt else None
    ref = eps_greedy(t.denoiser, s, x, cond=cond, reward=t.reward, generator=gens)
    assert a["rewards"] == [round(float(r), 6) for r in ref.reward]
    main([*base, "--seed", "7", "--json"])
    assert _last_json(capsys)["rewards"] != a["rewards"]
    if torch.cuda.is_available():
        main([*base, "--seed", "5", "--device", "cuda", "--generator-device", "cuda", "--json"])
        assert seen[-1].startswith("cuda") and _last_json(capsys)["rewards"] != a["rewards"]


def test_calibrate_then_fit_with_strict_options(tmp_path, capsys) -> None:
    cal = tmp_path / "cal"
    args = ["calibrate", "--task", "gmm-target", "--n", "2", "--k", "2", "--steps", "4"]
    assert main(args + ["--classes", "0", "1", "--seeds", "0", "2", "--out", str(cal)]) == 0
    out = tmp_path / "gain.json"
    fit = ["fit", "--traces", str(cal), "--out", str(out)]
    assert main(fit + ["--controller", "gain", "--k-mean", "1"]) == 0
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["controller"] == "gain" and out.is_file()
    assert main(fit + ["--controller", "gain", "--mapping", "ceil"]) == 2
    assert "--mapping is not an option of --controller gain" in capsys.readouterr().err


def test_budget_varied_calibration_fit_stopping_and_deploy(tmp_path, capsys) -> None:
    """`calibrate --budgets`, `fit --controller stopping --target`, `sample --schedule`."""
    cal, ref = tmp_path / "cal", tmp_path / "ref"
    base = ["calibrate", "--task", "gmm-target", "--steps", "8", "--classes", "0", "1"]
    budgets = ["--n", "2", "--eps", "1.0", "--budgets", "0", "1", "3"]
    assert main([*base, *budgets, "--seeds", "0", "6", "--out", str(cal)]) == 0
    assert sorted(p.name for p in cal.iterdir()) == ["k0", "k1", "k3"]
    assert main([*base, "--n", "2", "--k", "4", "--seeds", "0", "6", "--out", str(ref)]) == 0
    out = tmp_path / "stop.json"
    fit = ["fit", "--controller", "stopping", "--traces", str(cal), "--out", str(out)]
    assert (
        main([*fit, "--target", "0.9", "--reference", str(ref), "--plot", str(tmp_path / "s.png")])
        == 0
    )
    row = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert row["controller"] == "stopping" and row["target"] == 0.9
    assert out.is_file() and (tmp_path / "s.png").is_file()
    assert (tmp_path / "stop.data.safetensors").is_file()
    sample = ["sample", "--model", "gmm", "--task", "gmm-target", "--steps", "12", "--batch", "2"]
    assert main([*sample, "--method", "eps-greedy", "--schedule", str(out), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["params"]["controller"] == "StoppingController" and res["nfe"] >= 23
    assert (
        main([*base, "--budgets", "0", "-2", "--seeds", "0", "1", "--out", str(tmp_path / "x")])
        == 2
    )
    assert "--budgets=-2 is invalid" in capsys.readouterr().err
