"""NFE/s of eps-greedy search on CPU: exact mixture and the shipped MNIST UNet2DModel, with the
candidates of an iteration batched into one network call vs evaluated one by one.

    python -m experiments.bench_throughput --out experiments/results/throughput_cpu.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.models.gmm import make_gmm
from adaptive_tts.rewards import Brightness, OnImages
from adaptive_tts.sampling import initial_noise, make_generators, make_sampler
from adaptive_tts.search import eps_greedy


def measure(
    denoiser: Any,
    shape: tuple[int, ...],
    batch: int,
    max_batch: int | None,
    steps: int,
    n: int,
    k: int,
    repeats: int,
) -> dict[str, float]:
    sampler = make_sampler("euler", steps)
    reward = OnImages(Brightness(), lambda x: ((x + 1) / 2).clamp(0, 1))
    times, nfe = [], 0
    for r in range(repeats + 1):
        gens = make_generators(list(range(r * batch, (r + 1) * batch)))
        x = initial_noise(shape, gens, sampler.sigma(0))
        t0 = time.perf_counter()
        res = eps_greedy(
            denoiser,
            sampler,
            x,
            cond=None,
            reward=reward,
            generator=gens,
            n=n,
            k=k,
            max_batch=max_batch,
        )
        if r > 0:  # the first run is a warm-up
            times.append(time.perf_counter() - t0)
            nfe = int(res.nfe.sum())
    med = sorted(times)[len(times) // 2]
    return {
        "batch": batch,
        "max_batch": max_batch or 0,
        "nfe": nfe,
        "seconds_median": med,
        "nfe_per_s": nfe / med,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/throughput_cpu.json"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    gmm = make_gmm(dim=1024, shape=(1, 32, 32))
    from adaptive_tts import models

    unet = models.load("mnist")  # the shipped 0.8M-parameter UNet2DModel
    rows = []
    for name, model, batch, steps, k in [
        ("gmm-1x32x32", gmm, 8, 6, 2),
        ("mnist-unet", unet, 8, 6, 2),
    ]:
        for mb in (None, 1):
            row = measure(model, (1, 32, 32), batch, mb, steps, 4, k, args.repeats)
            row.update(model=name, candidates="batched" if mb is None else "one-by-one")
            rows.append(row)
            print(f"{name:12s} {row['candidates']:10s} {row['nfe_per_s']:9.1f} NFE/s")
    meta = {
        "torch": torch.__version__,
        "threads": args.threads,
        "cpu": platform.processor(),
        "nproc": os.cpu_count(),
        "method": "eps-greedy N=4, euler",
        "rows": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=2))
    tmp.replace(args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
