"""GPU benchmark of the search on the embedded MNIST model (issue: main job / workflow).

    python -m experiments.bench_gpu --out experiments/results/gpu_bench.json \\
        --schedule experiments/results/controllers/schedules_mnist-target/binomial-ceil.json

For eps-greedy (N=4, K=20, 18 EDM Heun steps, 64 images of mnist-target), naive sampling and
learned schedules: seconds per image, counted NFE/s of the whole search against the raw batched
network throughput at the same batch (4 x 64 rows; search overhead), and peak GPU memory. Three
variants: ``eager-fp32`` (plain PyTorch calls), ``graphs-fp32`` (denoiser and reward replayed
from CUDA graphs, :mod:`adaptive_tts.cuda_graphs`) and ``graphs-bf16`` (the same with the UNet's
weights in bfloat16). Noise is drawn by per-sample CUDA generators. Each timing is the best of
``--repeats`` runs after a warm-up run; graphed outputs are checked against eager ones first.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.cuda_graphs import graph_task
from adaptive_tts.sampling import initial_noise, make_generators, make_sampler
from adaptive_tts.search import eps_greedy, naive
from adaptive_tts.tasks import Task, build_task

N, K, STEPS = 4, 20, 18


def rows_per_second(fn: Any, rows: int, iters: int = 100) -> float:
    """Rows/s of ``fn(rows)`` (already built inputs), after warm-up, synchronised."""
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        fn()
    torch.cuda.synchronize()
    return rows * iters / (time.perf_counter() - t0)


def raw_rates(task: Task, rows: int) -> dict[str, float]:
    """Network calls/s and network + reward rows/s at ``rows`` rows, on random inputs."""
    x = torch.randn(rows, *task.sample_shape, device="cuda")
    sig = torch.full((rows,), 1.0, device="cuda")
    cond = torch.arange(rows, device="cuda") % 10
    with torch.no_grad():
        net = rows_per_second(lambda: task.denoiser(x, sig, None), rows)
        both = rows_per_second(lambda: task.reward(task.denoiser(x, sig, None), cond), rows)
    return {"raw_nfe_per_s": net, "raw_net_reward_rows_per_s": both}


def call_pattern_rate(task: Task, sampler: Any, images: int, iters: int = 3) -> float:
    """Counted NFE/s of eps-greedy (N, K)'s exact sequence of network + reward calls (pivot and
    Heun calls on ``images`` rows, K candidate calls on ``N * images`` rows per searchable step)
    replayed on fixed random inputs with nothing else: the rate the search would reach with zero
    bookkeeping (draws, selection, traces). Best of ``iters``."""
    xs = {m: torch.randn(m, *task.sample_shape, device="cuda") for m in (images, N * images)}
    cs = {m: torch.arange(m, device="cuda") % 10 for m in xs}

    def call(m: int, sigma: float, score: bool) -> None:
        out = task.denoiser(xs[m], torch.full((m,), sigma, device="cuda"), None)
        if score:
            task.reward(out, cs[m])

    nfe, best = 0, float("inf")
    for _ in range(iters):
        nfe = 0
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        with torch.no_grad():
            for i in range(sampler.num_steps):
                sh, nxt = sampler.sigma_hat(i), sampler.sigma(i + 1)
                searchable = sampler.noise_scale(i) > 0
                call(images, sh, searchable)  # the pivot (or the plain step)
                nfe += 1
                for _ in range(K if searchable else 0):
                    call(N * images, sh, True)
                    nfe += N
                if nxt > 0:  # Heun's second call
                    call(images, nxt, False)
                    nfe += 1
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return nfe * images / best


def timed(task: Task, sampler: Any, images: int, method: str, ctrl: Any, repeats: int) -> dict:
    """Best-of-``repeats`` timing (after one warm-up run) of one search on ``images`` images."""
    best: dict[str, float] | None = None
    for r in range(repeats + 1):
        gens = make_generators(list(range(r * images, (r + 1) * images)), device="cuda")
        x = initial_noise(task.sample_shape, gens, sampler.sigma(0), device="cuda")
        prompts = torch.arange(images, device="cuda") % 10
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        kw = dict(cond=prompts, reward=task.reward, generator=gens)
        if method == "naive":
            res = naive(task.denoiser, sampler, x, **kw)
        else:
            res = eps_greedy(task.denoiser, sampler, x, n=N, k=K, controller=ctrl, **kw)
        torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        if r > 0 and (best is None or sec < best["seconds"]):  # run 0 is the warm-up
            best = {
                "seconds": sec,
                "seconds_per_image": sec / images,
                "nfe_per_image": float(res.nfe.float().mean()),
                "nfe_per_s": float(res.nfe.sum()) / sec,
                "reward": float(res.reward.mean()),
                "eval_target_rate": float(task.evaluate(res.x0, prompts.cpu())["eval_hit"].mean()),
                "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
                "reserved_gib": torch.cuda.memory_reserved() / 2**30,  # includes graph pools
            }
    assert best is not None
    return best


def graph_error(eager: Task, graphed: Task, rows: int = 200) -> dict[str, float]:
    """Relative error ``|graphed - eager| / |eager|`` of the denoiser and the reward on fresh
    random inputs at mixed noise levels (``rows`` is padded to a bucket by the graphs)."""
    x = torch.randn(rows, *eager.sample_shape, device="cuda") * 3
    sig = torch.exp(torch.empty(rows, device="cuda").uniform_(-5, 4))
    cond = torch.randint(0, 10, (rows,), device="cuda")
    with torch.no_grad():
        d0, d1 = eager.denoiser(x, sig, None), graphed.denoiser(x, sig, None)
        r0, r1 = eager.reward(d0, cond), graphed.reward(d0, cond)
    return {
        "denoiser": float((d1 - d0).norm() / d0.norm()),
        "reward": float((r1 - r0).norm() / r0.norm()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/gpu_bench.json"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--schedule", type=Path, nargs="*", default=[], help="learned schedules")
    ap.add_argument("--variants", nargs="*", default=["eager-fp32", "graphs-fp32", "graphs-bf16"])
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    sampler = make_sampler("heun", STEPS)
    from controllers.io import load_controller

    schedules = {p.stem: load_controller(p, sampler=sampler, model="mnist") for p in args.schedule}
    rows = []
    for v in args.variants:
        task = build_task("mnist-target", device="cuda")
        if v.endswith("bf16"):
            task.denoiser.denoiser.unet.to(dtype=torch.bfloat16)
        row: dict[str, Any] = {"variant": v, "gpu": torch.cuda.get_device_name()}
        if v.startswith("graphs"):
            eager, task = task, graph_task(task)
            row["relative_error_vs_eager"] = graph_error(eager, task)
        row.update(raw_rates(task, N * args.images))
        row["naive"] = timed(task, sampler, args.images, "naive", None, args.repeats)
        e = row["eps_greedy_4_20"] = timed(task, sampler, args.images, "eps", None, args.repeats)
        e["overhead_vs_raw_network"] = 1 - e["nfe_per_s"] / row["raw_nfe_per_s"]
        e["overhead_vs_raw_network_and_reward"] = (
            1 - e["nfe_per_s"] / row["raw_net_reward_rows_per_s"]
        )
        row["call_pattern_nfe_per_s"] = call_pattern_rate(task, sampler, args.images)
        e["overhead_vs_call_pattern"] = 1 - e["nfe_per_s"] / row["call_pattern_nfe_per_s"]
        for name, ctrl in schedules.items():
            row[f"learned:{name}"] = timed(task, sampler, args.images, "eps", ctrl, args.repeats)
        if v.startswith("graphs"):
            row["graphs"] = {
                "denoiser_graphs": len(task.denoiser.graphs),
                "reward_graphs": len(task.reward.graphs),
                "padded_rows": task.denoiser.padded_rows,
            }
        rows.append(row)
        print(
            f"{v:12s} raw {row['raw_nfe_per_s']:8.0f} NFE/s (+reward "
            f"{row['raw_net_reward_rows_per_s']:8.0f} rows/s) | eps-greedy "
            f"{e['seconds_per_image']:.4f} s/img {e['nfe_per_s']:8.0f} NFE/s"
            f" overhead {e['overhead_vs_raw_network']:.1%} (vs net+reward "
            f"{e['overhead_vs_raw_network_and_reward']:.1%}; vs its call pattern "
            f"{row['call_pattern_nfe_per_s']:.0f} NFE/s: {e['overhead_vs_call_pattern']:.1%})"
            f" peak {e['peak_mem_gib']:.2f} GiB"
            f" reward {e['reward']:.3f}",
            flush=True,
        )
        for name in schedules:
            s = row[f"learned:{name}"]
            print(
                f"{'':12s} learned {name}: {s['seconds_per_image']:.4f} s/img "
                f"{s['nfe_per_image']:.0f} NFE/img reward {s['reward']:.3f}",
                flush=True,
            )
        del task
        torch.cuda.empty_cache()
    out = {
        "torch": torch.__version__,
        "images": args.images,
        "sampler": f"edm-heun-{STEPS}",
        "search": {"n": N, "k": K, "eps": 0.4, "lam": 0.15},
        "generators": "cuda, one per sample",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
