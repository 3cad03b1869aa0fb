"""A step's per-sample draws: stacked as each sample's own generator gives them; with CUDA
generators, replayed from a CUDA graph with the same numbers as the eager draws (GPU only)."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.sampling import make_generators, randn_like_rows
from adaptive_tts.search.step_draws import StepDraws, draw_step

SHAPE = (1, 4, 4)


def test_eager_draws_are_each_samples_own_and_padded() -> None:
    drawer = StepDraws(make_generators([3, 4, 5]))
    assert not drawer.enabled  # CPU generators: never a graph
    e, f, d, u = drawer([2, 0, 1], 2, SHAPE)
    assert e.shape == (3, 2, 2) and f.shape == d.shape == (3, 2, 2, *SHAPE) and u.shape == (3, 2, 2)
    alone = draw_step(1, 2, make_generators([5])[0], SHAPE)  # sample 2 drawn on its own
    assert torch.equal(f[2, :1], alone[1]) and torch.equal(d[2, :1], alone[2])
    assert not f[1].any() and not f[2, 1:].any()  # padded past each sample's caps
    again = StepDraws(make_generators([3, 4, 5]))([2, 0, 1], 2, SHAPE)
    assert all(torch.equal(a, b) for a, b in zip(again, (e, f, d, u)))


def test_caps_must_match_the_generators() -> None:
    with pytest.raises(ValueError, match="2 caps for 3 generators"):
        StepDraws(make_generators([0, 1, 2]))([1, 1], 2, SHAPE)


def test_graphs_can_be_turned_off(monkeypatch) -> None:
    monkeypatch.setenv("ADAPTIVE_TTS_GRAPH_DRAWS", "0")
    gens = make_generators([0], device="cuda") if torch.cuda.is_available() else []
    assert not StepDraws(gens).enabled


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_graph_replays_give_the_eager_numbers() -> None:
    seeds = list(range(100, 164))
    graphed = StepDraws(make_generators(seeds, device="cuda"))
    eager = StepDraws(make_generators(seeds, device="cuda"))
    eager.enabled = False
    template = torch.zeros(64, *SHAPE, device="cuda")
    for step in range(5):  # a pivot draw between steps, as the search does
        caps = [4] * 64 if step != 3 else [4] * 63 + [2]
        a = graphed(caps, 3, SHAPE)
        b = eager(caps, 3, SHAPE)
        assert all(torch.equal(x, y) for x, y in zip(a, b)), step
        assert torch.equal(
            randn_like_rows(template, graphed.gens), randn_like_rows(template, eager.gens)
        )
    assert graphed._graph is not None  # caps seen twice in a row were captured


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_search_is_the_same_with_and_without_graphed_draws(monkeypatch) -> None:
    from adaptive_tts.tasks import build_task
    from experiments.runner import run_method

    task = build_task("mnist-target", device="cuda")
    sampler = task.make_sampler(None, 6)
    prompts = torch.arange(16) % 10

    def run() -> torch.Tensor:
        res = run_method(task, "eps-greedy", sampler, list(range(16)), prompts, device="cuda",
                         generator_device="cuda", n=4, k=3)  # fmt: skip
        return res.reward

    on = run()
    monkeypatch.setenv("ADAPTIVE_TTS_GRAPH_DRAWS", "0")
    assert torch.equal(on, run())
