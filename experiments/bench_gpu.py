"""GPU benchmark of the search on the embedded MNIST model (issue: main job / workflow).

    python -m experiments.bench_gpu --out experiments/results/gpu_bench.json [--schedule S.json]

For eps-greedy (N=4, K=20, 18 EDM Heun steps, 64 images of mnist-target) and a learned schedule:
seconds per image, NFE/s of the whole search against the raw batched network throughput at the
same batch size (search overhead), and peak GPU memory; in fp32, bf16 + channels-last, and
bf16 + channels-last + ``torch.compile(mode="reduce-overhead")``.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.sampling import initial_noise, make_generators, make_sampler
from adaptive_tts.search import eps_greedy, naive
from adaptive_tts.tasks import build_task


def raw_throughput(net: Any, batch: int, shape: tuple[int, ...], iters: int = 50) -> float:
    """Network calls per second (rows/s) at ``batch`` on random inputs, after warm-up."""
    x = torch.randn(batch, *shape, device="cuda")
    sig = torch.full((batch,), 1.0, device="cuda")
    for _ in range(5):
        net(x, sig, None)
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(iters):
        net(x, sig, None)
    torch.cuda.synchronize()
    return batch * iters / (time.perf_counter() - t0)


def timed_search(
    task: Any, sampler: Any, images: int, controller: Any = None, repeats: int = 2
) -> dict[str, float]:
    best = None
    for r in range(repeats + 1):
        gens = make_generators(list(range(r * images, (r + 1) * images)), device="cuda")
        x = initial_noise(task.sample_shape, gens, sampler.sigma(0), device="cuda")
        prompts = torch.arange(images, device="cuda") % 10
        torch.cuda.reset_peak_memory_stats()
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        if controller == "naive":
            res = naive(task.denoiser, sampler, x, cond=prompts, reward=task.reward, generator=gens)
        else:
            res = eps_greedy(
                task.denoiser,
                sampler,
                x,
                cond=prompts,
                reward=task.reward,
                generator=gens,
                controller=controller,
            )
        torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        if r > 0 and (best is None or sec < best["seconds"]):  # run 0 is a warm-up
            best = {
                "seconds": sec,
                "seconds_per_image": sec / images,
                "nfe_per_image": float(res.nfe.float().mean()),
                "nfe_per_s": float(res.nfe.sum()) / sec,
                "reward": float(res.reward.mean()),
                "peak_mem_gib": torch.cuda.max_memory_allocated() / 2**30,
            }
    assert best is not None
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/gpu_bench.json"))
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--schedule", type=Path, default=None, help="a learned schedule JSON")
    ap.add_argument("--no-compile", action="store_true")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    task = build_task("mnist-target", device="cuda")
    sampler = make_sampler("heun", 18)
    net = task.denoiser.denoiser  # the EDM wrapper (mnist-target is unconditional)
    ctrl = None
    if args.schedule is not None:
        from controllers.io import load_controller

        ctrl = load_controller(args.schedule, sampler=sampler, model="mnist")
    rows = []
    variants = ["fp32", "bf16-cl"] + ([] if args.no_compile else ["bf16-cl-compiled"])
    for v in variants:
        if v.startswith("bf16"):
            net.unet.to(dtype=torch.bfloat16, memory_format=torch.channels_last)
        if v.endswith("compiled"):
            net.unet = torch.compile(net.unet, mode="reduce-overhead", dynamic=False)
        row: dict[str, Any] = {"variant": v, "gpu": torch.cuda.get_device_name()}
        row["raw_nfe_per_s_b256"] = raw_throughput(net, 4 * args.images, task.sample_shape)
        row["naive"] = timed_search(task, sampler, args.images, "naive")
        row["eps_greedy_4_20"] = timed_search(task, sampler, args.images, None)
        row["eps_greedy_4_20"]["overhead_vs_raw"] = (
            1 - row["eps_greedy_4_20"]["nfe_per_s"] / row["raw_nfe_per_s_b256"]
        )
        if ctrl is not None:
            row["learned"] = timed_search(task, sampler, args.images, ctrl)
            row["learned"]["schedule"] = str(args.schedule)
        rows.append(row)
        e = row["eps_greedy_4_20"]
        print(
            f"{v:18s} raw {row['raw_nfe_per_s_b256']:9.0f} NFE/s | eps-greedy "
            f"{e['seconds_per_image']:.4f} s/img {e['nfe_per_s']:9.0f} NFE/s overhead "
            f"{e['overhead_vs_raw']:.1%} peak {e['peak_mem_gib']:.2f} GiB",
            flush=True,
        )
    out = {
        "torch": torch.__version__,
        "images": args.images,
        "sampler": "edm-heun-18",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(out, indent=1))
    os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
