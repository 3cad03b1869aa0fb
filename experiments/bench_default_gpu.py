"""The plain command's GPU speed: eps-greedy(4,20) on mnist-target with only ``--device cuda``.

    python -m experiments.bench_default_gpu --out experiments/results/gpu_default.json

Builds the task exactly as ``adaptive-tts sample --model mnist --task mnist-target --method
eps-greedy --n 4 --k 20 --device cuda`` does (the same option parsing, run settings and task
building: :func:`experiments.cli.sample.check_sample_args` and ``build_sample_task``), so
the defaults it reports (device-side generators, CUDA graphs of the denoiser and reward) are the
ones a user gets with no other flag. Then times the search itself (best of ``--repeats`` after a
warm-up run, which also captures the graphs) at 64 images (seconds per image) and at a large batch
(counted NFE/s of the search against the raw batched network + reward rate at the same rows, the
search's efficiency). ``--extra='FLAGS'`` appends flags (e.g. ``--no-cuda-graphs``) for
comparison rows.
"""

from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.fileio import atomic_write_json
from experiments.bench_gpu import raw_rates

N, K = 4, 20


def sample_args(images: int, extra: list[str]) -> argparse.Namespace:
    """The ``sample`` command's parsed arguments for eps-greedy(4,20) on ``images`` images."""
    from experiments.cli.sample import add_sample

    parser = argparse.ArgumentParser()
    add_sample(parser.add_subparsers(dest="command"))
    argv = [
        "sample",
        "--model",
        "mnist",
        "--task",
        "mnist-target",
        "--method",
        "eps-greedy",
        "--n",
        str(N),
    ]
    argv += ["--k", str(K), "--batch", str(images), "--device", "cuda", "--quiet"]
    argv += ["--class", *map(str, range(10)), *extra]
    return parser.parse_args(argv)


def measure(images: int, repeats: int, extra: list[str]) -> dict[str, Any]:
    """Settings, seconds per image and NFE/s of the plain command's search on ``images``."""
    from experiments.cli.sample import _sampler, build_sample_task, check_sample_args
    from experiments.runner import run_method

    args = sample_args(images, extra)
    settings, options = check_sample_args(args)
    task, device = build_sample_task(args, settings)
    sampler = _sampler(task, args)
    prompts = task.prompts(args.classes, images)
    best, nfe, reward = float("inf"), 0.0, 0.0
    for r in range(repeats + 1):  # run 0: warm-up (cuDNN choices, graph captures)
        seeds = list(range(r * images, (r + 1) * images))
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        res = run_method(
            task,
            "eps-greedy",
            sampler,
            seeds,
            prompts,
            device=device,
            generator_device=settings.generator_device,
            **options,
        )
        torch.cuda.synchronize()
        sec = time.perf_counter() - t0
        if r > 0 and sec < best:
            best = sec
            nfe = float(res.nfe.float().mean())
            reward = float(res.reward.float().mean())
    raw = raw_rates(task, N * images)
    row = {
        "images": images,
        "extra_flags": extra,
        "settings": {
            "device": settings.device,
            "generator_device": settings.generator_device,
            "cuda_graphs": settings.cuda_graphs,
            "graph_reward": settings.graph_reward,
        },
        "seconds": best,
        "seconds_per_image": best / images,
        "nfe_per_image": nfe,
        "nfe_per_s": nfe * images / best,
        "reward": reward,
        **raw,
    }
    row["fraction_of_raw_net_reward"] = row["nfe_per_s"] / raw["raw_net_reward_rows_per_s"]
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/gpu_default.json"))
    ap.add_argument("--images", type=int, nargs="+", default=[64, 1024])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--extra",
        default="",
        help="flags added for a comparison row, e.g. --extra='--no-cuda-graphs'",
    )
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        raise SystemExit("this benchmark needs a CUDA GPU")
    torch.backends.cudnn.benchmark = True
    rows = [measure(m, args.repeats, []) for m in args.images]
    if args.extra:
        rows += [measure(m, args.repeats, shlex.split(args.extra)) for m in args.images]
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}
    atomic_write_json(args.out, out)
    print(f"{'images':>6} {'flags':18} {'s/image':>8} {'NFE/s':>9} {'raw rows/s':>10} {'frac':>5}")
    for r in rows:
        print(
            f"{r['images']:6d} {' '.join(r['extra_flags']) or '(--device cuda)':18} "
            f"{r['seconds_per_image']:8.4f} {r['nfe_per_s']:9.0f} "
            f"{r['raw_net_reward_rows_per_s']:10.0f} {r['fraction_of_raw_net_reward']:5.1%}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
