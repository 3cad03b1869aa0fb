"""Bad input to ``adaptive-tts calibrate`` (exit code 2, one line naming the option, nothing
written, checked for every budget before the first run) and the landed calibration features:
the settings hash, other settings and foreign records refused, duplicates counted once,
``one_setting``."""

from __future__ import annotations

import dataclasses
import json
import warnings

import pytest
import torch

from adaptive_tts.sampling import make_sampler
from adaptive_tts.tasks import build_task
from adaptive_tts.traces import HASH_KEY, load_traces, read_settings, settings_hash
from controllers.stats import one_setting
from experiments.calibration import calibrate, check_calibration, preflight
from experiments.cli import main
from tests.reliability.common import one_error_line, snapshot

BASE = ["calibrate", "--task", "gmm-target", "--n", "2", "--steps", "4", "--classes", "0"]
KN = {"n": 2, "k": 2, "eps": 0.4, "lam": 0.15}

CASES = [
    (["--n", "0"], "--n"),
    (["--n", "5000"], "--n"),
    (["--k", "0"], "--k"),
    (["--k", "-3"], "--k"),
    (["--k", "100001"], "--k"),
    (["--eps", "1.5"], "--eps"),
    (["--eps", "-0.1"], "--eps"),
    (["--eps", "nan"], "--eps"),
    (["--lam", "0"], "--lam"),
    (["--lam", "-1"], "--lam"),
    (["--lam", "inf"], "--lam"),
    (["--lam", "nan"], "--lam"),
    (["--seeds", "0", "0"], "--seeds COUNT"),
    (["--seeds", "-1", "2"], "--seeds FIRST"),
    (["--seeds", "4294967296", "1"], "--seeds FIRST"),
    (["--seeds", "4294967295", "2"], "--seeds FIRST"),
    (["--seeds", "0", "4194305"], "--seeds COUNT"),
    (["--classes", "0", "1", "2", "--seeds", "0", "2000000"], "--seeds"),
    (["--steps", "0"], "--steps"),
    (["--batch", "0"], "--batch"),
    (["--batch", "100000"], "--batch"),
    (["--n", "4096", "--batch", "4096"], "--batch"),
    (["--classes", "4"], "--classes"),
    (["--classes", "-1"], "--classes"),
    (["--classes", "0", "0"], "--classes"),
    (["--task", "mnist-compress", "--classes", "0", "1"], "--classes"),
    (["--budgets", "0", "-2"], "--budgets"),
    (["--budgets", "0", "100001"], "--budgets"),
    (["--budgets", "0", "1", "--k", "3"], "--k"),
    (["--method", "zero-order", "--eps", "0.5"], "--eps"),
    (["--stats", "timing.txt"], "--stats"),
]


@pytest.mark.parametrize("args, option", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_calibrate_option(tmp_path, capsys, args: list[str], option: str) -> None:
    own = [str(tmp_path / a) if a.endswith(".txt") else a for a in args]  # last value wins
    assert main([*BASE, "--seeds", "0", "2", *own, "--out", str(tmp_path / "cal")]) == 2
    assert option in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["file", "file/below"])
def test_out_must_be_a_writable_directory(tmp_path, capsys, out: str) -> None:
    (tmp_path / "file").write_text("not a directory")
    before = snapshot(tmp_path)
    assert main([*BASE, "--seeds", "0", "1", "--out", str(tmp_path / out)]) == 2
    assert "--out" in one_error_line(capsys)
    assert snapshot(tmp_path) == before


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_generator_needs_cuda(tmp_path, capsys) -> None:
    argv = [*BASE, "--generator-device", "cuda", "--out", str(tmp_path / "cal")]
    assert main(argv) == 2
    assert "--generator-device" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_other_settings_in_out_refused(tmp_path, capsys) -> None:
    cal = str(tmp_path / "cal")
    assert main([*BASE, "--k", "2", "--seeds", "0", "2", "--out", cal]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main([*BASE, "--k", "3", "--seeds", "0", "2", "--out", cal]) == 2
    assert "calibration.json holds different calibration settings" in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_every_budget_preflighted_before_the_first_run(tmp_path, capsys) -> None:
    """k3 holds other settings (n=3): neither k0 nor k1 may be started."""
    cal = tmp_path / "cal"
    assert main([*BASE, "--n", "3", "--k", "3", "--seeds", "0", "1", "--out", str(cal / "k3")]) == 0
    capsys.readouterr()
    before = snapshot(tmp_path)
    assert main([*BASE, "--budgets", "0", "1", "3", "--seeds", "0", "1", "--out", str(cal)]) == 2
    assert "k3" in one_error_line(capsys)
    assert snapshot(tmp_path) == before and sorted(p.name for p in cal.iterdir()) == ["k3"]


@pytest.fixture()
def setup():
    return build_task("gmm-target"), make_sampler("euler", 4)


def test_settings_hash_in_settings_file_and_every_trace(tmp_path, setup) -> None:
    task, sampler = setup
    info = calibrate(task, "eps-greedy", sampler, [(0, 0), (1, 1)], tmp_path, progress=False, **KN)
    settings, digest = read_settings(tmp_path)  # type: ignore[misc]
    assert digest == info["settings_hash"] == settings_hash(settings)
    assert json.loads((tmp_path / "calibration.json").read_text())["hash"] == digest
    assert {t[HASH_KEY] for t in load_traces(tmp_path)} == {digest}
    _, other = preflight(task, "eps-greedy", sampler, [(0, 0)], tmp_path / "x", **{**KN, "k": 3})
    assert other != digest and not (tmp_path / "x").exists()


def test_foreign_record_refused_and_nothing_appended(tmp_path, setup) -> None:
    task, sampler = setup
    calibrate(task, "eps-greedy", sampler, [(0, 0)], tmp_path, progress=False, **KN)
    shard = tmp_path / "traces-00000.jsonl"
    rec = json.loads(shard.read_text().splitlines()[0])
    rec.update({HASH_KEY: "0" * 16, "seed": 9})
    (tmp_path / "traces-00007.jsonl").write_text(json.dumps(rec) + "\n")
    before = snapshot(tmp_path)
    with pytest.raises(ValueError, match="traces-00007.jsonl holds traces of other calibration"):
        calibrate(task, "eps-greedy", sampler, [(0, 0), (0, 1)], tmp_path, progress=False, **KN)
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith(".")} == {
        k: v for k, v in before.items() if not k.startswith(".")
    }


def test_duplicates_counted_once(tmp_path, setup) -> None:
    task, sampler = setup
    calibrate(task, "eps-greedy", sampler, [(0, 0), (0, 1)], tmp_path, progress=False, **KN)
    shard = tmp_path / "traces-00000.jsonl"
    first = shard.read_text().splitlines()[0]
    (tmp_path / "traces-00001.jsonl").write_text(first + "\n")  # the same record again
    with pytest.warns(UserWarning, match="1 duplicate trace"):
        traces = load_traces(tmp_path)
    assert sorted((t["prompt"], t["seed"]) for t in traces) == [(0, 0), (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        again = calibrate(task, "eps-greedy", sampler, [(0, 0), (0, 1)], tmp_path, **KN)
    assert (again["done"], again["ran"]) == (2, 0)
    assert len(one_setting(traces + [json.loads(first)])) == 2


def test_one_setting_refuses_mixed_settings_naming_hashes(tmp_path, setup) -> None:
    task, sampler = setup
    calibrate(task, "eps-greedy", sampler, [(0, 0)], tmp_path / "a", progress=False, **KN)
    kn3 = {**KN, "k": 3}
    calibrate(task, "eps-greedy", sampler, [(0, 0)], tmp_path / "b", progress=False, **kn3)
    a, b = load_traces(tmp_path / "a"), load_traces(tmp_path / "b")
    with pytest.raises(ValueError, match="mix 2 calibration settings") as err:
        one_setting(a + b)
    assert a[0][HASH_KEY] in str(err.value) and b[0][HASH_KEY] in str(err.value)
    assert len(one_setting(a + b, vary=("k",))) == 2  # budget-varied: k may differ


def test_prompt_of_a_task_without_prompts_refused(setup) -> None:
    task, _ = setup
    plain = dataclasses.replace(task, uses_prompt=False)
    with pytest.raises(ValueError, match="takes no prompt"):
        check_calibration(plain, "eps-greedy", [(0, 0), (1, 0)], 4, KN)
    assert check_calibration(plain, "eps-greedy", [(-1, 0)], 4, KN)["k"] == 2
    with pytest.raises(ValueError, match="listed twice"):
        check_calibration(task, "eps-greedy", [(0, 0), (0, 0)], 4, KN)


def test_debug_shows_the_error_instead_of_one_line(tmp_path) -> None:
    with pytest.raises(ValueError, match="--lam"):
        main(["--debug", *BASE, "--lam", "0", "--out", str(tmp_path / "cal")])
    assert list(tmp_path.iterdir()) == []


def test_stats_written_whole_and_alone(tmp_path, capsys) -> None:
    stats = tmp_path / "timing-{rank}.json"
    argv = [*BASE, "--k", "1", "--seeds", "0", "2", "--stats", str(stats)]
    assert main([*argv, "--out", str(tmp_path / "cal")]) == 0
    info = json.loads((tmp_path / "timing-0.json").read_text())
    assert (info["rank"], info["ran"], info["device"]) == (0, 2, "cpu")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cal", "timing-0.json"]
