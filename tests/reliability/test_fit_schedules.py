"""Bad input to ``adaptive-tts fit`` and bad schedule files: exit code 2, one line naming the
option (or the file and key), nothing written."""

from __future__ import annotations

import errno
import json
import math
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch

from adaptive_tts.sampling import make_sampler
from adaptive_tts.tasks import build_task
from controllers.budget import BudgetController
from controllers.closed_loop import StoppingController
from controllers.io import load_controller
from controllers.reliability import GRID_U, ReliabilityModel, ScoreTransform
from controllers.schedule import ScheduleController
from experiments.calibration import calibrate
from experiments.cli import main
from tests.reliability.common import one_error_line, snapshot

KN = {"n": 2, "k": 2, "eps": 0.4, "lam": 0.15}


@pytest.fixture(scope="module")
def cal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small calibration (gmm, Euler 4 steps, N=2, K=2, 8 pairs)."""
    out = tmp_path_factory.mktemp("cal")
    pairs = [(c, s) for c in (0, 1) for s in range(4)]
    calibrate(build_task("gmm-target"), "eps-greedy", make_sampler("euler", 4), pairs, out,
              progress=False, **KN)  # fmt: skip
    return out


FIT_CASES = [
    (["--controller", "gain", "--budget", "-5"], "--budget"),
    (["--controller", "gain", "--budget", "200"], "--budget"),
    (["--controller", "budget", "--budget", "nan"], "--budget"),
    (["--controller", "budget", "--budget", "inf"], "--budget"),
    (["--controller", "budget", "--budget", "-5"], "--budget"),
    (["--controller", "budget"], "--budget"),
    (["--controller", "budget", "--budget", "3"], "--budget"),  # below plain sampling's calls
    (["--controller", "gain", "--k-mean", "0"], "--k-mean"),
    (["--controller", "gain", "--k-mean", "nan"], "--k-mean"),
    (["--controller", "gain", "--k-mean", "50"], "--k-mean"),  # above the traces' K = 2
    (["--controller", "stopping", "--target", "1.5"], "--target"),
    (["--controller", "stopping", "--target", "0"], "--target"),
    (["--controller", "gain", "--target", "0.9"], "--target"),
    (["--controller", "binomial", "--kernel", "rbf"], "--kernel"),
    (["--controller", "gp", "--mapping", "eps"], "--mapping"),
    (["--controller", "gain", "--reference", "ref"], "--reference"),
    (["--controller", "stopping", "--reference", "missing"], "--reference"),
    (["--controller", "gain", "--option", "foo=1"], "--option foo"),
    (["--controller", "gain", "--option", "=3"], "--option"),
    (["--controller", "gain", "--option", "weight=foo"], "--option weight"),
    (["--controller", "gp", "--option", "eps_lo=0.9", "eps_hi=0.1"], "--option eps_lo"),
    (["--controller", "gain", "--option", "eps=.nan"], "--option eps"),
    (["--controller", "binomial", "--option", "tau=.inf"], "--option tau"),
    (["--controller", "gain", "--k-mean", "1", "--option", "k_mean=1"], "--option k_mean"),
    (["--controller", "gain", "--settings", "xyz"], "--settings"),
    (["--controller", "gain", "--settings", "0123456789abcdef"], "--settings"),
    (["--controller", "gain", "--plot", "fit.txt"], "--plot"),
    (["--controller", "gain", "--plot", "gain.json"], "--plot"),
    (["--controller", "gain", "--out", "gain.txt"], "--out"),
    (["--controller", "gain", "--out", "sub"], "--out"),
    (["--controller", "gain", "--traces", "missing"], "--traces"),
]


@pytest.mark.parametrize("args, option", FIT_CASES, ids=[" ".join(a) for a, _ in FIT_CASES])
def test_bad_fit_option(tmp_path, capsys, cal: Path, args: list[str], option: str) -> None:
    (tmp_path / "sub").mkdir()
    (tmp_path / "ref").mkdir()
    shutil.copytree(cal, tmp_path / "ref", dirs_exist_ok=True)
    paths = {"ref", "missing", "fit.txt", "gain.json", "gain.txt", "sub"}
    own = [str(tmp_path / a) if a in paths else a for a in args]
    before = snapshot(tmp_path)
    argv = ["fit", "--traces", str(cal), "--out", str(tmp_path / "gain.json"), *own]
    assert main(argv) == 2
    assert option in one_error_line(capsys)
    assert snapshot(tmp_path) == before


def test_settings_picks_one_group_of_mixed_traces(tmp_path, capsys, cal: Path) -> None:
    other = tmp_path / "other"
    calibrate(build_task("gmm-target"), "eps-greedy", make_sampler("euler", 4), [(0, 0)], other,
              progress=False, **{**KN, "k": 3})  # fmt: skip
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    shutil.copy(cal / "traces-00000.jsonl", mixed / "traces-00000.jsonl")
    shutil.copy(other / "traces-00000.jsonl", mixed / "traces-00001.jsonl")
    ours = json.loads((cal / "calibration.json").read_text())["hash"]
    theirs = json.loads((other / "calibration.json").read_text())["hash"]
    out = tmp_path / "gain.json"
    fit = ["fit", "--controller", "gain", "--traces", str(mixed), "--out", str(out)]
    assert main(fit) == 2
    line = one_error_line(capsys)
    assert ours in line and theirs in line and not out.exists()
    assert main([*fit, "--settings", theirs]) == 0
    assert json.loads(out.read_text())["meta"]["calibration"]["k"] == 3


def test_failing_plot_leaves_nothing(tmp_path, capsys, cal: Path, monkeypatch) -> None:
    def broken(*args: Any, **kwargs: Any) -> None:
        raise RuntimeError("the renderer crashed")

    monkeypatch.setattr("adaptive_tts.viz.save_figure", broken)
    out, plot = tmp_path / "gain.json", tmp_path / "gain.png"
    argv = ["fit", "--controller", "gain", "--traces", str(cal), "--out", str(out)]
    assert main([*argv, "--plot", str(plot)]) == 2
    assert "--plot" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_failing_save_removes_the_plot(tmp_path, capsys, cal: Path, monkeypatch) -> None:
    def full(*args: Any, **kwargs: Any) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("controllers.schedule.atomic_write_text", full)
    out, plot = tmp_path / "gain.json", tmp_path / "gain.png"
    argv = ["fit", "--controller", "gain", "--traces", str(cal), "--out", str(out)]
    assert main([*argv, "--plot", str(plot)]) == 2
    assert "No space left" in one_error_line(capsys)
    assert list(tmp_path.iterdir()) == []


def test_fit_never_uses_a_fixed_temp_name(tmp_path, capsys, cal: Path) -> None:
    """A concurrent writer's temp file at the old fixed name (``NAME.tmp``) is left alone."""
    out = tmp_path / "gain.json"
    (tmp_path / "gain.json.tmp").mkdir()  # another fit's temp file would sit here
    argv = ["fit", "--controller", "gain", "--traces", str(cal), "--out", str(out)]
    assert main([*argv, "--plot", str(tmp_path / "gain.png")]) == 0
    assert json.loads(out.read_text())["kind"] == "gain"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gain.json", "gain.json.tmp", "gain.png"]


@pytest.fixture(scope="module")
def schedule(cal: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = tmp_path_factory.mktemp("schedule") / "gain.json"
    assert main(["fit", "--controller", "gain", "--traces", str(cal), "--out", str(out)]) == 0
    return json.loads(out.read_text())


def _edit(d: dict[str, Any], change: str) -> dict[str, Any] | str:
    d = json.loads(json.dumps(d))
    if change == "typo":
        d["k_maxx"] = d.pop("k_max")
    elif change == "step-typo":
        d["steps"][0]["epsilon"] = d["steps"][0].pop("eps")
    elif change == "k-float":
        d["steps"][0]["k"] = 2.7
    elif change == "k-negative":
        d["steps"][1]["k"] = -1
    elif change == "eps-high":
        d["steps"][0]["eps"] = 1.5
    elif change == "eps-nan":
        d["steps"][0]["eps"] = "@"
        return json.dumps(d).replace('"@"', "NaN")
    elif change == "lam-inf":
        d["lam"] = "@"
        return json.dumps(d).replace('"@"', "Infinity")
    elif change == "version":
        d["schema"] = "adaptive_tts.schedule/2"
    elif change == "n-zero":
        d["n"] = 0
    elif change == "n-bool":
        d["n"] = True
    elif change == "mode":
        d["mode"] = "drawn"
    elif change == "k-min":
        d["k_min"] = d["k_max"] + 1
    elif change == "no-steps":
        d["steps"] = []
    elif change == "sigma":
        d["steps"][0]["sigma"] = -1.0
    elif change == "budget-typo":
        d["budget"] = {"per_sampel": 100.0, "cap": 3.0, "floor": 0.25}
    elif change == "budget-negative":
        d["budget"] = {"per_sample": -5.0, "cap": 3.0, "floor": 0.25}
    elif change == "corrupt":
        return json.dumps(d)[:-20]
    return d


SCHEDULE_CASES = [
    ("typo", "'k_maxx' (did you mean 'k_max'?)"),
    ("step-typo", "'epsilon' (did you mean 'eps'?)"),
    ("k-float", "steps[0].k=2.7"),
    ("k-negative", "steps[1].k=-1"),
    ("eps-high", "steps[0].eps=1.5"),
    ("eps-nan", "steps[0].eps=nan"),
    ("lam-inf", "lam=inf"),
    ("version", "'schema'"),
    ("n-zero", "n=0"),
    ("n-bool", "n=True"),
    ("mode", "'mode'"),
    ("k-min", "k_min="),
    ("no-steps", "'steps'"),
    ("sigma", "steps[0].sigma=-1.0"),
    ("budget-typo", "'per_sampel' (did you mean 'per_sample'?)"),
    ("budget-negative", "budget.per_sample=-5.0"),
    ("corrupt", "not valid JSON"),
]


@pytest.mark.parametrize("change, key", SCHEDULE_CASES, ids=[c for c, _ in SCHEDULE_CASES])
def test_bad_schedule_file(tmp_path, capsys, schedule, change: str, key: str) -> None:
    path = tmp_path / "bad.json"
    edited = _edit(schedule, change)
    path.write_text(edited if isinstance(edited, str) else json.dumps(edited))
    before = snapshot(tmp_path)
    sample = ["sample", "--model", "gmm", "--method", "eps-greedy", "--steps", "4", "--batch", "1"]
    assert main([*sample, "--schedule", str(path)]) == 2
    line = one_error_line(capsys)
    assert str(path) in line and key in line, line
    assert snapshot(tmp_path) == before


def test_schedule_controller_refuses_a_fractional_k() -> None:
    step = {"i": 0, "sigma": 1.0, "k": 2.7, "eps": 0.4}
    with pytest.raises(ValueError, match="k .*=2.7"):
        ScheduleController(steps=[step])


def _stopping(tmp_path: Path) -> Path:
    model = ReliabilityModel(
        kind="logistic", q=0.0, target=0.9, levels={}, transform=ScoreTransform("standard"),
        u_lo=-2.0, u_hi=2.0, z_grid=torch.linspace(-1, 1, 5),
        p_grid=torch.linspace(0, 1, 5).repeat(GRID_U, 1), data={"score": torch.arange(3.0)},
    )  # fmt: skip
    return StoppingController(model, 0.9, n=2, k_max=4).save(tmp_path / "stop.json")


def test_stopping_save_never_uses_a_fixed_temp_name(tmp_path) -> None:
    """Concurrent writers' temp files at the old fixed names are left alone."""
    for name in ("stop.json.tmp", "stop.data.safetensors.tmp"):
        (tmp_path / name).mkdir()
    path = _stopping(tmp_path)
    assert load_controller(path).k_max == 4
    assert json.loads(path.read_text())["data"] == "stop.data.safetensors"
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "stop.data.safetensors", "stop.data.safetensors.tmp", "stop.json", "stop.json.tmp"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "change, key",
    [({"confidnce": 0.9}, "did you mean 'confidence'"), ({"eps": "NaN"}, "eps=nan"),
     ({"k_max": 2.5}, "k_max=2.5"), ({"model": {"kind": "x", "pgrid": []}}, "'pgrid'")],
)  # fmt: skip
def test_bad_stopping_file(tmp_path, change: dict[str, Any], key: str) -> None:
    path = _stopping(tmp_path)
    assert load_controller(path).confidence == 0.9
    d = json.loads(path.read_text())
    if "confidnce" in change:
        d.pop("confidence")
    d.update(change)
    text = json.dumps(d).replace('"NaN"', "NaN")
    path.write_text(text)
    with pytest.raises(ValueError, match="stop.json") as err:
        load_controller(path)
    assert key in str(err.value)


@pytest.mark.parametrize("budget", [math.nan, math.inf, 0.0, -5.0])
def test_budget_controller_refuses_non_finite_or_non_positive(schedule, budget: float) -> None:
    base = ScheduleController.from_dict(schedule)
    with pytest.raises(ValueError, match="budget"):
        BudgetController(base, budget, make_sampler("euler", 4))


def test_committed_controller_files_pass_the_load_checks() -> None:
    """Every schedule and stopping file the repository ships loads (their metadata hold
    ``s_max = Infinity``: metadata may, knobs may not)."""
    root = Path(__file__).resolve().parents[2] / "experiments" / "results"
    schemas = ('"adaptive_tts.schedule/1"', '"adaptive_tts.closed_loop/1"')
    files = [p for p in sorted(root.rglob("*.json")) if any(s in p.read_text() for s in schemas)]
    assert files
    for path in files:
        load_controller(path, sampler=make_sampler("heun", 18))
