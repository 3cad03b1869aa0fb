"""Reward specs (built in, ``module:callable``, entry-point plug-ins, weighted composites, the
output checker), prompt lists, model-spec errors, and the compute meter's closed-form counts on
the exact Gaussian mixture."""

from __future__ import annotations

import importlib.metadata
import math

import pytest
import torch

from adaptive_tts.compute import ComputeMeter, compute_summary
from adaptive_tts.prompts import read_prompt_file, resolve_prompts
from adaptive_tts.rewards.spec import (
    ENTRY_POINT_GROUP,
    CheckedReward,
    RewardContext,
    build_reward,
    build_rewards,
    parse_weighted,
)
from adaptive_tts.search import METHODS
from adaptive_tts.specs import build_model, make_task, parse_spec
from adaptive_tts.tasks import build_task
from experiments.runner import run_method


def dark(images: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    """A user reward on images in [0, 1]: darkness."""
    return 1.0 - images.float().mean(dim=(1, 2, 3))


class Offset:
    """A user reward class on model-space samples, built with the spec's argument."""

    space = "samples"

    def __init__(self, value: str = "0") -> None:
        self.value = float(value)

    def __call__(self, x0: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
        return x0.flatten(1).mean(1) + self.value


def wrong_shape(images: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return images.mean(dim=(2, 3))  # (B, C): not one score per sample


def nan_reward(images: torch.Tensor, cond: torch.Tensor | None) -> torch.Tensor:
    return torch.full((images.shape[0],), math.nan)


def ctx(prompts: list[str] | None = None) -> RewardContext:
    return RewardContext(to_image=lambda x: x.clamp(0, 1), prompts=prompts)


def test_builtin_module_and_composite_rewards() -> None:
    x = torch.rand(3, 1, 4, 4)
    assert torch.allclose(build_reward("brightness", ctx())(x, None), x.mean(dim=(1, 2, 3)))
    r = build_reward(f"{__name__}:dark", ctx())
    assert r.name == f"{__name__}:dark"
    torch.testing.assert_close(r(x, None), 1 - x.mean(dim=(1, 2, 3)))
    both = build_rewards(["brightness=2", f"{__name__}:dark=0.5"], ctx())
    want = 2 * x.mean(dim=(1, 2, 3)) + 0.5 * (1 - x.mean(dim=(1, 2, 3)))
    torch.testing.assert_close(both(x, None), want)
    assert parse_weighted("clip:/a=b/dir") == ("clip:/a=b/dir", 1.0)
    assert parse_weighted("clip:/models/c=0.25") == ("clip:/models/c", 0.25)
    with pytest.raises(ValueError, match="finite"):
        parse_weighted("brightness=inf")


def test_entry_point_plugin(monkeypatch) -> None:
    ep = importlib.metadata.EntryPoint("offset", f"{__name__}:Offset", ENTRY_POINT_GROUP)
    real = importlib.metadata.entry_points

    def fake(**kw):
        return [ep] if kw.get("group") == ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", fake)
    x = torch.randn(2, 8)
    r = build_reward("offset:1.5", ctx())  # a class: built with the argument, on samples
    torch.testing.assert_close(r(x, None), x.mean(1) + 1.5)
    with pytest.raises(ValueError, match="installed plug-ins .*: offset"):
        build_reward("nosuch", ctx())
    task = make_task("gmm", ["target", "offset:0"])  # plug-in combined with any model
    _, res = _naive(task)
    assert torch.isfinite(res.reward).all()


def test_a_weighted_target_reward_still_takes_prompts() -> None:
    """``target=1.0`` in a composite is the target reward: the task takes a target per sample."""
    assert make_task("gmm", ["target=1.0", "brightness=0.5"]).uses_prompt
    assert make_task("gmm", ["target"]).uses_prompt
    assert not make_task("gmm", ["brightness=1.0", "compress=0.5"]).uses_prompt


def test_reward_output_checker_names_the_reward() -> None:
    x = torch.rand(2, 1, 4, 4)
    with pytest.raises(ValueError, match=r"wrong_shape' must return shape \(2,\)"):
        build_reward(f"{__name__}:wrong_shape", ctx())(x, None)
    with pytest.raises(ValueError, match="nan_reward' returned 2 non-finite"):
        build_reward(f"{__name__}:nan_reward", ctx())(x, None)
    with pytest.raises(ValueError, match="must return a tensor"):
        CheckedReward(lambda x, c: [1.0, 2.0], "listy")(x, None)  # type: ignore[arg-type,return-value]


def test_bad_reward_and_model_specs(tmp_path) -> None:
    with pytest.raises(ValueError, match="unknown reward 'brightnes'; built in: aesthetic"):
        build_reward("brightnes", ctx())
    with pytest.raises(ValueError, match="module 'no_such_pkg' does not import"):
        build_reward("no_such_pkg:fn", ctx())
    with pytest.raises(ValueError, match="has no attribute 'missing'"):
        build_reward(f"{__name__}:missing", ctx())
    with pytest.raises(ValueError, match="takes no argument"):
        build_reward("brightness:3", ctx())
    with pytest.raises(ValueError, match="scores images against prompts"):
        build_reward(f"clip:{tmp_path}", ctx())
    with pytest.raises(FileNotFoundError, match="directory not found"):
        build_reward(f"classifier:{tmp_path / 'none'}", ctx())
    with pytest.raises(FileNotFoundError, match="aesthetic_head.safetensors"):
        build_reward(f"aesthetic:{tmp_path}", ctx())
    with pytest.raises(ValueError, match="unknown model 'dalle:x'; allowed: gmm | mnist | edm"):
        build_model("dalle:x")
    with pytest.raises(ValueError, match="needs a directory: sd:DIR"):
        build_model("sd")
    with pytest.raises(ValueError, match="takes no directory"):
        build_model("gmm:/x")
    with pytest.raises(ValueError, match="SCHEME or SCHEME:ARG"):
        parse_spec("sd:")
    with pytest.raises(ValueError, match="takes classes, not text prompts"):
        make_task("gmm", prompts=["a cat"])


def test_prompts_from_texts_lines_and_csv(tmp_path) -> None:
    lines = tmp_path / "p.txt"
    lines.write_text("# comment\na cat\n\n  a dog  \n")
    assert read_prompt_file(lines) == ["a cat", "a dog"]
    table = tmp_path / "p.csv"
    table.write_text('id,caption\n1,"a red car, fast"\n2,a bowl\n')
    assert read_prompt_file(table) == ["a red car, fast", "a bowl"]
    assert read_prompt_file(table, column="id") == ["1", "2"]
    assert resolve_prompts(["x"], lines) == ["x", "a cat", "a dog"]
    assert resolve_prompts(None, None) is None
    with pytest.raises(ValueError, match="no column 'nope'"):
        read_prompt_file(table, column="nope")
    with pytest.raises(ValueError, match="prompt 0 is empty"):
        resolve_prompts(["  "])
    with pytest.raises(FileNotFoundError, match="prompts file not found"):
        read_prompt_file(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("# nothing\n")
    with pytest.raises(ValueError, match="holds no prompts"):
        read_prompt_file(tmp_path / "empty.txt")


def test_builtin_specs_are_the_registered_tasks() -> None:
    assert make_task("gmm").name == "gmm-target"
    assert make_task("mnist").name == "mnist-cond"
    assert make_task("mnist", "compress").name == "mnist-compress"
    t = make_task("gmm", "target", eval_reward="target")
    assert t.name == "gmm-target" and t.uses_prompt
    ref = build_task("gmm-target")
    cond = torch.tensor([0, 1])
    s = t.make_sampler(None, 4)
    a = run_method(t, "naive", s, [0, 1], cond)
    b = run_method(ref, "naive", s, [0, 1], cond)
    assert torch.equal(a.x0, b.x0)
    ev = t.evaluate(a.x0, cond)
    torch.testing.assert_close(ev["eval_reward"], a.reward)


def _naive(task, steps: int = 5):
    sampler = task.make_sampler(None, steps)
    prompts = task.prompts([0, 1], 2) if task.uses_prompt else torch.full((2,), -1)
    return sampler, run_method(task, "naive", sampler, [0, 1], prompts)


@pytest.mark.parametrize("method", ["naive", "best-of-n", "eps-greedy"])
def test_meter_counts_equal_closed_form_on_gmm(method: str) -> None:
    task = build_task("gmm-target")
    steps, b, n, k = 6, 2, 3, 2
    sampler = task.make_sampler(None, steps)  # EDM Heun: 2 calls a step, the last one Euler
    kw = {"naive": {}, "best-of-n": {"n": n}, "eps-greedy": {"n": n, "k": k, "eps": 0.5}}[method]
    with ComputeMeter(flops=True) as meter:
        timed = meter.instrument(task)
        res = run_method(timed, method, sampler, [0, 1], torch.tensor([0, 1]), **kw)
    out = compute_summary(res, meter)
    plain = 2 * steps - 1
    want = {"naive": plain, "best-of-n": n * plain, "eps-greedy": None}[method]
    if want is not None:
        assert out["per_sample"]["total"] == [want] * b
        assert out["network"]["nfe_total"] == b * want
    assert out["network"]["nfe_total"] == int(res.nfe.sum())
    for p in ("step", "score", "rollout"):
        assert out["network"]["nfe"][p] == sum(res.nfe_by_purpose[p])
    assert out["reward"]["calls"] == int(res.reward_calls.sum())
    assert sum(lv["step"] + lv["score"] for lv in out["by_level"]) == int(res.nfe.sum())
    assert out["by_level"][0]["sigma"] == pytest.approx(sampler.sigma(0) * (1 + 0.0), rel=0.5)
    assert out["reward"]["invocations"] >= 1 and out["wall_seconds"] >= 0
    assert "flops_total" in out and out["flops_total"] >= 0
    assert METHODS[method] is not None


def test_meter_flops_on_a_linear_denoiser() -> None:
    """FLOPs are measured once per batch shape and multiplied out over the calls."""
    from adaptive_tts.nfe import Ledger

    lin = torch.nn.Linear(8, 8, bias=False)

    def denoiser(x, sigma, cond):
        return lin(x)

    ledger = Ledger(denoiser, 4)
    with ComputeMeter(flops=True) as meter:
        for _ in range(3):
            ledger(torch.randn(4, 8), 1.0, None, torch.arange(4), "step")
    assert len(meter.flops_per_call) == 1
    assert meter.summary()["network"]["flops"]["step"] == 3 * 2 * 4 * 8 * 8
    ledger(torch.randn(4, 8), 1.0, None, torch.arange(4), "step")  # no meter: no accounting
    assert meter.summary()["network"]["nfe"]["step"] == 12
