"""Golden outputs of every search method, for the bit-identity test ``tests/test_golden.py``.

Each case runs one method (with small knobs) on a batch of (seed, target) pairs on the CPU with
one torch thread, and records what a refactor must not change: final rewards (``float.hex``),
per-sample NFEs, NFEs by purpose, reward calls, the sha256 of ``x0`` as float64 bytes and the
traces (JSON, exact float ``repr``). Cases: the Gaussian-mixture task (``gmm-target``, 3 pairs)
on four samplers (Heun, Heun with a churn window, Euler, ancestral) and the MNIST task
(``mnist-target``, 2 pairs) on short Heun and ancestral schedules, plus the model-quality
script's plain sampler (``experiments/eval_mnist_model.sample``).

Regenerate (from a clean checkout of the reference commit, so the files describe that code)::

    git worktree add /tmp/golden_base 612798e
    PYTHONPATH=/tmp/golden_base python experiments/make_golden.py --out tests/golden
    git worktree remove --force /tmp/golden_base

The mixture cases are float64 closed forms and bit-identical on any machine. The MNIST cases run
float32 convolutions whose last bits depend on the CPU kernels torch picks (its version and the
CPU's vector unit), so they are bit-identical only where :func:`environment` equals the
``"env"`` a file records; elsewhere the test compares them to a tolerance (files without
``"env"``, as the committed ones from 612798e, always are). The model-quality case's
``x0_pooled`` (7x7-pooled images, compared within 5e-5: a 0.1% change of the Heun drift moves
them by 9e-5) was added to its file later, on a
machine whose hash differs from the reference's by float rounding only.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import torch

GMM_PAIRS = ([0, 1, 2], [0, 1, 2])  # (seeds, targets)
MNIST_PAIRS = ([0, 1], [3, 7])
SAMPLERS: dict[str, tuple[str, int, dict[str, float]]] = {
    "heun10": ("heun", 10, {}),
    "heun10w": ("heun", 10, {"s_min": 0.05, "s_max": 10.0}),
    "euler8": ("euler", 8, {}),
    "anc10": ("ancestral", 10, {}),
    "heun5": ("heun", 5, {}),
    "anc5": ("ancestral", 5, {}),
}


def make_sampler(key: str) -> Any:
    from adaptive_tts.sampling import make_sampler as make

    name, steps, kw = SAMPLERS[key]
    return make(name, steps, **kw)  # type: ignore[arg-type]


def sigma_window(n: int, k_in: int, k_out: int, lo: float, hi: float) -> Any:
    """The paper's sigma-window controller (wherever the package keeps it)."""
    try:
        from adaptive_tts.controllers import SigmaWindowController  # type: ignore[attr-defined]
    except ImportError:
        from controllers.fixed import SigmaWindowController
    return SigmaWindowController(n=n, k_in=k_in, k_out=k_out, lo=lo, hi=hi)


def evo_schedule(sampler: Any, rounds: int) -> list[int]:
    """``[0]`` plus ``rounds - 1`` noised steps spread over the first half of the schedule."""
    noised = [i for i in range(2, sampler.num_steps) if sampler.noise_scale(i) > 0.0]
    return [0, *noised[: 2 * (rounds - 1) : 2]]


def method_cases(small: bool) -> list[tuple[str, str, Callable[[Any], dict[str, Any]]]]:
    """``(case name, method, sampler -> kwargs)``; ``small``: the MNIST knobs."""
    n, k = 2, 2 if small else 3
    cases: list[tuple[str, str, Callable[[Any], dict[str, Any]]]] = [
        ("naive", "naive", lambda s: {}),
        ("best-of-n", "best-of-n", lambda s: {"n": 2 if small else 3}),
        ("beam", "beam", lambda s: {"n": n, "width": 2}),
        ("mcts", "mcts", lambda s: {"n": 2, "sims": 2 if small else 3}),
        ("zero-order", "zero-order", lambda s: {"n": n, "k": k}),
        ("eps-greedy", "eps-greedy", lambda s: {"n": n, "k": k, "eps": 0.4, "lam": 0.15}),
        (
            "eps-greedy-window",
            "eps-greedy",
            lambda s: {"controller": sigma_window(n, k, 1, 0.05, 5.0)},
        ),
        ("eacps", "eacps", lambda s: {"k_global": 3, "elites": 2, "k_local": 2, "beta": 0.3}),
        (
            "eacps-seed",
            "eacps",
            lambda s: {"k_global": 3, "elites": 1, "k_local": 2, "locality": "seed"},
        ),
        (
            "evosearch",
            "evosearch",
            lambda s: {
                "schedule": evo_schedule(s, 2 if small else 3),
                "population": [3, 2] if small else [4, 3, 3],
                "elites": 1,
                "tournament": 2,
                "beta": 0.3,
            },
        ),
    ]
    return cases


def cases() -> dict[str, tuple[str, str, str, Callable[[Any], dict[str, Any]]]]:
    """All golden cases: ``name -> (task, sampler key, method, kwargs builder)``."""
    out = {}
    for task, skeys, small in (
        ("gmm-target", ("heun10", "heun10w", "euler8", "anc10"), False),
        ("mnist-target", ("heun5", "anc5"), True),
    ):
        for skey in skeys:
            for cname, method, kw in method_cases(small):
                out[f"{task}__{skey}__{cname}"] = (task, skey, method, kw)
    return out


@cache
def task(name: str) -> Any:
    from adaptive_tts.tasks import build_task

    return build_task(name, "cpu")


def environment() -> dict[str, str]:
    """What the float32 MNIST outputs' last bits depend on: torch's version and CPU kernels."""
    import platform

    return {
        "torch": torch.__version__,
        "cpu_capability": str(torch.backends.cpu.get_cpu_capability()),
        "machine": platform.machine(),
    }


def x0_hash(x: torch.Tensor) -> str:
    """sha256 of ``x`` as contiguous float64 CPU bytes."""
    return hashlib.sha256(x.detach().double().cpu().contiguous().numpy().tobytes()).hexdigest()


def run_case(name: str) -> dict[str, Any]:
    """Run one golden case; returns its JSON-ready record."""
    from adaptive_tts.sampling import initial_noise, make_generators
    from adaptive_tts.search import METHODS

    torch.set_num_threads(1)
    if name == "eval_mnist_model__sample":
        return run_eval_sample()
    tname, skey, method, kw = cases()[name]
    t = task(tname)
    seeds, targets = GMM_PAIRS if tname.startswith("gmm") else MNIST_PAIRS
    sampler = make_sampler(skey)
    gens = make_generators(seeds)
    x_T = initial_noise(t.sample_shape, gens, sampler.sigma(0))
    cond = torch.tensor(targets, dtype=torch.long)
    res = METHODS[method](
        t.denoiser, sampler, x_T, cond=cond, reward=t.reward, generator=gens, **kw(sampler)
    )
    return {
        "case": name,
        "reward": [float(v).hex() for v in res.reward.double().tolist()],
        "nfe": res.nfe.tolist(),
        "nfe_by_purpose": res.nfe_by_purpose,
        "reward_calls": res.reward_calls.tolist(),
        "x0_sha256": x0_hash(res.x0),
        "traces": json.loads(json.dumps(res.traces)),
    }


def run_eval_sample() -> dict[str, Any]:
    """The model-quality script's naive Heun-18 sampler on two seeds (one conditional batch)."""
    from experiments.eval_mnist_model import sample

    net = task("mnist-target").denoiser.denoiser
    img = sample(net, [5, 6], torch.tensor([1, 8]), "cpu")
    pooled = torch.nn.functional.avg_pool2d(img.double(), 7).flatten()  # tolerance check
    return {
        "case": "eval_mnist_model__sample",
        "x0_sha256": x0_hash(img),
        "x0_pooled": [round(float(v), 6) for v in pooled],
    }


def all_names() -> list[str]:
    return [*cases(), "eval_mnist_model__sample"]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default="tests/golden")
    args = ap.parse_args(argv)
    import adaptive_tts
    from adaptive_tts.fileio import atomic_write_text

    print(f"adaptive_tts from {adaptive_tts.__file__}", file=sys.stderr)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for name in all_names():
        rec = run_case(name)
        if not name.startswith("gmm"):
            rec["env"] = environment()
        atomic_write_text(out / f"{name}.json", json.dumps(rec, indent=1, sort_keys=True) + "\n")
        print(name, file=sys.stderr)


if __name__ == "__main__":
    sys.path.append(str(Path(__file__).resolve().parent.parent))  # after PYTHONPATH
    main()
