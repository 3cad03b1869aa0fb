"""Bad input to ``adaptive-tts sample`` and the seed path: exit code 2, one line naming the
option, nothing written (the checks run before the task is built or anything searches)."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.sampling import make_generators
from experiments.cli import main

BASE = ["sample", "--model", "gmm", "--steps", "2", "--batch", "1"]

CASES = [
    (["--seed", "4294967296"], "--seed"),
    (["--seed", "-1"], "--seed"),
    (["--seed", "4294967295", "--batch", "2"], "--seed"),
    (["--batch", "0"], "--batch"),
    (["--batch", "100000"], "--batch"),
    (["--steps", "0"], "--steps"),
    (["--method", "naive", "--k", "-5", "--eps", "7"], "--k"),
    (["--method", "zero-order", "--eps", "0.9"], "--eps"),
    (["--method", "zero-order", "--schedule", "s.json"], "--schedule"),
    (["--method", "best-of-n", "--schedule", "s.json"], "--schedule"),
    (["--eps", "1.5"], "--eps"),
    (["--eps", "nan"], "--eps"),
    (["--lam", "inf"], "--lam"),
    (["--lam", "-0.1"], "--lam"),
    (["--n", "0"], "--n"),
    (["--n", "100000000"], "--n"),
    (["--k", "-1"], "--k"),
    (["--method", "beam", "--beam-width", "0"], "--beam-width"),
    (["--method", "mcts", "--sims", "0"], "--sims"),
    (["--method", "eacps", "--beta", "1.5"], "--beta"),
    (["--method", "eacps", "--k-global", "0"], "--k-global"),
    (["--method", "eacps", "--elites", "0"], "--elites"),
    (["--method", "evosearch", "--population", "0"], "--population"),
    (["--method", "evosearch", "--tournament", "0"], "--tournament"),
    (["--option", "=3"], "--option"),
    (["--option", "x=3"], "--option x"),
    (["--option", "k=abc"], "--option k"),
    (["--method", "fk", "--option", "potential=foo"], "--option potential"),
    (["--n", "1000", "--batch", "4000"], "--batch"),
    (["--method", "eps-greedy", "--schedule", "missing.json"], "--schedule"),
    (["--task", "mnist-target"], "--task"),
]


@pytest.mark.parametrize("args, option", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_bad_sample_option(tmp_path, capsys, args: list[str], option: str) -> None:
    out = tmp_path / "grid.png"
    argv = [*BASE, *[str(tmp_path / a) if a.endswith(".json") else a for a in args]]
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("adaptive-tts: error:"), err
    assert option in err[0]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("out", ["dir", "grid.txt", "missing/deeper/grid.png"])
def test_out_checked_before_the_search(tmp_path, capsys, out: str) -> None:
    (tmp_path / "dir").mkdir()
    (tmp_path / "missing").write_text("a file, not a directory")
    before = sorted(tmp_path.rglob("*"))
    assert main([*BASE, "--out", str(tmp_path / out)]) == 2
    assert "--out" in capsys.readouterr().err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("seed", [-1, 2**32, 2**64 - 1, True, 1.0, "3"])
def test_make_generators_refuses_aliasing_seeds(seed: object) -> None:
    with pytest.raises(ValueError, match="seed"):
        make_generators([seed])  # type: ignore[list-item]


def test_distinct_accepted_seeds_never_collide() -> None:
    a, b = make_generators([0, 2**32 - 1])
    assert not torch.equal(torch.randn(4, generator=a), torch.randn(4, generator=b))


def test_nan_x_T_is_named(gmm, target_reward) -> None:
    from adaptive_tts.sampling import make_sampler
    from adaptive_tts.search import naive

    x = torch.full((1, *gmm.sample_shape), float("nan"))
    with pytest.raises(ValueError, match="x_T"):
        naive(gmm, make_sampler("euler", 2), x, cond=None, reward=target_reward,
              generator=make_generators([0]))  # fmt: skip


def test_eacps_seed_base_range(gmm, target_reward) -> None:
    from adaptive_tts.sampling import initial_noise, make_sampler
    from adaptive_tts.search import eacps

    s, gens = make_sampler("euler", 2), make_generators([0])
    x = initial_noise(gmm.sample_shape, gens, s.sigma(0))
    with pytest.raises(ValueError, match="seed_base"):  # its last child seed passes 2**32 - 1
        eacps(gmm, s, x, cond=None, reward=target_reward, generator=gens, locality="seed",
              seed_base=2**32 - 10)  # fmt: skip
