"""Bad experiment configs, ``--set`` keys, names and ``--out`` paths through the command line
(``adaptive-tts bench`` / ``demo``): exit code 2, one line naming the key (and the closest valid
key where there is one), nothing written under ``runs/`` or the ``--out`` directory."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from experiments.cli import main

BASE: dict[str, Any] = {
    "name": "cfgtest",
    "task": "gmm-target",
    "sampler": {"name": "euler", "steps": 2},
    "pairs": {"prompts": [0], "seeds": [0, 1]},
    "batch": 2,
    "calibration": {"seeds": [1000, 1], "n": 2, "k": 1, "eps": 0.4, "lam": 0.15},
    "methods": [{"label": "eg", "method": "eps-greedy", "n": 2, "k": 1}],
    "wandb": {"enabled": False},
}


def edit(path: str, value: Any) -> dict[str, Any]:
    """BASE with ``path`` (``a.b``, ``methods.0.k``) set to ``value`` (``DELETE``: removed)."""
    cfg = copy.deepcopy(BASE)
    *head, last = path.split(".")
    node: Any = cfg
    for p in head:
        node = node[int(p)] if isinstance(node, list) else node.setdefault(p, {})
    if value == "DELETE":
        del node[last]
    elif isinstance(node, list):
        node[int(last)] = value
    else:
        node[last] = value
    return cfg


BAD_CONFIGS = [
    (
        "methods.0.controller",
        {"kind": "gain", "budget_flops": "4x"},
        ["'methods[0].controller.budget_flops'", "has no budget", "stopping, budget"],
    ),
    (
        "methods.0.controller",
        {"kind": "stopping", "budget_flops": "lots"},
        ["'methods[0].controller.budget_flops'='lots' is invalid", "'Mx' with M > 0"],
    ),
    ("batchsize", 4, ["'batchsize' is unknown", "did you mean 'batch'"]),
    ("sampler.stepz", 4, ["'sampler.stepz' is unknown", "did you mean 'sampler.steps'"]),
    ("methods.0.K", 2, ["'methods[0].K' is unknown", "did you mean 'methods[0].k'"]),
    ("methods.0.method", "eps-gredy", ["methods[0].method", "did you mean 'eps-greedy'"]),
    ("methods.0.eps", 1.5, ["methods[0].eps=1.5", "[0, 1]"]),
    ("methods.0.controller", {"kind": "gian"}, ["controller.kind", "did you mean 'gain'"]),
    (
        "methods.0.controller",
        {"kind": "gain", "k_maen": 1.0},
        [
            "'methods[0].controller.k_maen' is unknown",
            "did you mean 'methods[0].controller.k_mean'",
        ],
    ),
    ("methods.0.controller", {"kind": "stopping"}, ["needs calibration traces 'budgets'"]),
    ("batch", 0, ["'batch'=0 is invalid", "[1, 4096]"]),
    ("batch", "four", ["'batch'='four' is invalid", "an integer"]),
    ("sampler.steps", 0, ["'sampler.steps'=0", "[1, 1000]"]),
    ("sampler.eta", 0.5, ["'sampler.eta' does not apply to sampler 'euler'"]),
    ("sampler.name", "hune", ["sampler.name", "did you mean 'heun'"]),
    ("pairs.seeds", [0], ["pairs.seeds must be [first, count >= 1]"]),
    ("pairs.seeds", [-1, 2], ["pairs.seeds[0]=-1", "[0, 4294967295]"]),
    ("pairs.noise", "sometimes", ["'pairs.noise'='sometimes'", "'independent', 'shared'"]),
    ("pairs.prompts", [7], ["'pairs.prompts' entry 7", "[0, 3]"]),
    ("calibration.nn", 2, ["'calibration.nn' is unknown", "did you mean 'calibration.n'"]),
    ("calibration.budgets", [-1], ["calibration.budgets", "integers K >= 0"]),
    ("wandb.mod", "offline", ["'wandb.mod' is unknown", "did you mean 'wandb.mode'"]),
    ("device", "gpu", ["'device'='gpu' is invalid", "cpu, cuda, cuda:N"]),
    ("cuda_graphs", True, ["cuda_graphs needs a CUDA device"]),
    ("generator_device", "cuda", ["'generator_device'='cuda' needs device cuda"]),
    ("model", "mnist", ["both 'task' and 'model'"]),
    ("reward", "brightness", ["'reward' goes with 'model'"]),
    ("task", "gmm-nothing", ["config key 'task'", "unknown task"]),
    ("methods.0.label", "", ["methods[0].label", "non-empty"]),
    ("sweeps", [{"base": {"method": "naive"}, "parm": "n", "values": [1]}], ["sweeps[0].parm"]),
    ("methods", [{"method": "naive"}, {"method": "naive"}], ["'naive' is used twice"]),
    ("methods", [{"method": "naive", "n": 2}], ["'methods[0].n' is unknown", "'naive'"]),
    ("methods", [], ["no methods and no sweeps"]),
]
BAD_NAMES = ["../x", "/abs/path", "a/b", "..", ".hidden", "", "x" * 101, "name with space"]
BAD_SETS = [
    (["=3"], ["config key '' is empty"]),
    (["sampler.step=6"], ["'sampler.step' is unknown", "did you mean 'sampler.steps'"]),
    (["batchsize=2"], ["'batchsize' is unknown", "did you mean 'batch'"]),
    (["nonsense"], ["key.sub=value"]),
    (["pairs.seeds=[0"], ["--set pairs.seeds", "not valid YAML"]),
    (["methods.0.n=2"], ["'methods' holds a list", "set it whole"]),
    (["batch.x=1"], ["'batch' holds an integer"]),
    (["name=../escape"], ["'name'='../escape' is invalid"]),
    (["wandb..enabled=false"], ["empty part"]),
]


def bench(tmp_path: Path, capsys, cfg: Any, *extra: str) -> tuple[int, str]:
    path = tmp_path / "config.yaml"
    path.write_text(cfg if isinstance(cfg, str) else yaml.safe_dump(cfg))
    rc = main(["bench", str(path), "--no-wandb", *extra])
    return rc, capsys.readouterr().err


def assert_refused(tmp_path: Path, rc: int, err: str, wants: list[str]) -> None:
    lines = err.strip().splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith("adaptive-tts: error: "), err
    for want in wants:
        assert want in lines[0], f"{want!r} not in {lines[0]!r}"
    assert not (tmp_path / "runs").exists()  # nothing written under runs/
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml"]


@pytest.fixture(autouse=True)
def _in_tmp(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # the default run directory runs/NAME lands here


@pytest.mark.parametrize("key, value, wants", BAD_CONFIGS, ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_key_or_value(tmp_path, capsys, key, value, wants) -> None:
    rc, err = bench(tmp_path, capsys, edit(key, value))
    assert_refused(tmp_path, rc, err, wants)


@pytest.mark.parametrize("name", BAD_NAMES)
def test_bad_name_is_refused(tmp_path, capsys, name) -> None:
    rc, err = bench(tmp_path, capsys, edit("name", name))
    assert_refused(tmp_path, rc, err, ["config key 'name'", "runs/NAME"])


@pytest.mark.parametrize("sets, wants", BAD_SETS, ids=[s[0][0] for s in BAD_SETS])
def test_bad_set_key(tmp_path, capsys, sets, wants) -> None:
    rc, err = bench(tmp_path, capsys, BASE, "--set", *sets)
    assert_refused(tmp_path, rc, err, wants)


@pytest.mark.parametrize(
    "text, wants",
    [
        ("- just\n- a list\n", ["a config must be a YAML mapping"]),
        ("name: [unclosed\n", ["not valid YAML"]),
        ('name: !!python/object/apply:os.system ["touch pwned"]\n', ["not valid YAML"]),
    ],
    ids=["list", "broken", "python-tag"],
)
def test_yaml_is_data_only(tmp_path, capsys, text, wants) -> None:
    """safe_load only: a python tag is refused, never executed."""
    rc, err = bench(tmp_path, capsys, text)
    assert_refused(tmp_path, rc, err, wants)
    assert not (tmp_path / "pwned").exists()


@pytest.mark.parametrize("command", ["bench", "demo"])
@pytest.mark.parametrize("where", ["file", "under-file"])
def test_bad_out_is_refused_before_any_work(tmp_path, capsys, command, where) -> None:
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(BASE))
    blocker = tmp_path / "taken.txt"
    blocker.write_text("keep")
    out = blocker if where == "file" else blocker / "run"
    head = ["bench", str(tmp_path / "config.yaml")] if command == "bench" else ["demo"]
    rc = main([*head, "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("adaptive-tts: error: --out=") and "directory" in err, err
    assert blocker.read_text() == "keep" and not (tmp_path / "runs").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["config.yaml", "taken.txt"]


def test_demo_bad_seeds_is_refused(tmp_path, capsys) -> None:
    (tmp_path / "config.yaml").write_text("")
    rc = main(["demo", "--seeds", "0", "--out", str(tmp_path / "d")])
    assert rc == 2 and "--seeds=0 is invalid" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()


def test_run_module_entry_exits_2_with_one_line(tmp_path, capsys) -> None:
    """``python -m experiments.run CONFIG`` (its ``__main__`` entry): the same one-line error
    and exit code 2 as ``adaptive-tts bench``."""
    from experiments.run import _script

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(edit("sampler.stepz", 3)))
    assert _script([str(path), "--no-wandb"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("adaptive-tts: error: ") and "did you mean 'sampler.steps'" in err
    assert not (tmp_path / "runs").exists()
