"""Registries refuse duplicates and unknown names; options a method or kind does not take are
a ``TypeError`` naming the option; tasks combine any model with any reward; samplers rebuild
from their descriptions."""

from __future__ import annotations

import pytest

from adaptive_tts.registry import (
    METHODS,
    SAMPLERS,
    Registry,
    UnknownNameError,
    sampler_from_description,
)
from adaptive_tts.search import METHODS as BUILTIN_METHODS
from adaptive_tts.tasks import MODELS, REWARDS, TASKS, TaskSpec, build_task
from controllers.registry import CONTROLLERS, make_controller
from experiments.runner import method_kwargs


def test_registry_refuses_duplicates_and_lists_names_on_unknown() -> None:
    reg: Registry[int] = Registry("widget", {"a": 1})
    reg.register("b", 2)

    @reg.register("c")
    def c() -> int:
        return 3

    assert sorted(reg) == ["a", "b", "c"] and reg["b"] == 2 and "c" in reg
    with pytest.raises(ValueError, match="widget 'a' is already registered"):
        reg.register("a", 9)
    with pytest.raises(UnknownNameError, match="unknown widget 'z'; registered: a, b, c"):
        reg["z"]
    with pytest.raises(KeyError):  # also a KeyError, so Mapping.get works
        reg["z"]
    assert reg.get("z") is None
    assert reg.unregister("c") is c and "c" not in reg


def test_methods_start_with_the_builtins() -> None:
    assert set(BUILTIN_METHODS) <= set(METHODS)
    with pytest.raises(ValueError, match="unknown search method 'beem'; registered: beam"):
        method_kwargs("beem", {})


def test_method_kwargs_is_strict_and_drops_none() -> None:
    assert method_kwargs("beam", {"n": 2, "width": None}) == {"n": 2}
    with pytest.raises(TypeError, match="search method 'beam' takes no option 'controller'"):
        method_kwargs("beam", {"controller": object()})
    with pytest.raises(TypeError, match="'eps-greedy' takes no option 'ek'"):
        method_kwargs("eps-greedy", {"ek": 2})
    with pytest.raises(TypeError, match="'reward' of search method 'naive' is set by the runner"):
        method_kwargs("naive", {"reward": object()})


def test_tasks_combine_any_model_with_any_reward() -> None:
    assert {"gmm", "mnist"} <= set(MODELS) and {"target", "brightness", "compress"} <= set(REWARDS)
    assert TASKS["mnist-cond"] == TaskSpec("mnist", "target", conditional=True)
    task = build_task("gmm-brightness")
    assert (task.name, task.model, task.uses_prompt) == ("gmm-brightness", "gmm", False)
    same = build_task({"model": "gmm", "reward": "brightness"})
    assert same.name == "gmm-brightness"
    with pytest.raises(ValueError, match="unknown task 'gmm-shiny'"):
        build_task("gmm-shiny")
    with pytest.raises(TypeError, match="rewrd"):
        build_task({"model": "gmm", "rewrd": "target"})


def test_samplers_by_name_and_rebuilt_from_descriptions() -> None:
    for name in ("heun", "euler", "ancestral"):
        s = SAMPLERS[name](6, sigma_max=20.0)
        again = sampler_from_description(s.describe())
        assert again.describe() == s.describe()


def test_ddim_rebuilds_from_its_description() -> None:
    import torch

    from adaptive_tts.models.latent_t2i import ddim_sampler

    betas = torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64)
    s = ddim_sampler(torch.cumprod(1 - betas, 0), 5)
    again = sampler_from_description(s.describe())
    assert type(again) is type(s) and again.describe() == s.describe()


def test_controller_kinds_are_strict() -> None:
    assert {"fixed", "window", "binomial", "gp", "gain", "budget"} <= set(CONTROLLERS)
    assert make_controller("fixed", k=3).k == 3
    with pytest.raises(TypeError, match="controller kind 'window' takes no option 'kk'"):
        make_controller("window", kk=3)
    with pytest.raises(ValueError, match="needs calibration traces"):
        make_controller("gain")
    with pytest.raises(ValueError, match="unknown controller kind 'gian'"):
        make_controller("gian")
