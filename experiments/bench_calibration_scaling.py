"""One- vs multi-GPU throughput of a calibration run (issue: main job / workflow, target >= 1.9x
on two GPUs).

    python -m experiments.bench_calibration_scaling --gpus 1 2 \\
        --out experiments/results/calibration_scaling.json

For each GPU count G it launches ``torchrun --standalone --nproc_per_node G -m experiments.cli
calibrate`` (eps-greedy N=4, K=20, 18 Heun steps on mnist-target, CUDA graphs, CUDA generators,
the same pairs and per-process batch every time) into a fresh directory, and reads each
process's timing file. Throughput is counted NFEs per wall-clock second over the window in which
all processes run after their first batch (the first batch holds CUDA-graph capture and cuDNN
autotuning); the whole command's wall time (start-up included) is reported too. The traces of
every run are compared pair by pair with the one-GPU run's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def launch(gpus: int, pairs_per_class: int, batch: int, out: Path) -> dict[str, Any]:
    """Run one calibration on ``gpus`` processes; return the timing summary."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={gpus}",
        "--module",
        "experiments.cli",
        "calibrate",
        "--task=mnist-target",
        "--device=cuda",
        "--generator-device=cuda",
        "--cuda-graphs",
        "--seeds",
        "0",
        str(pairs_per_class),
        f"--batch={batch}",
        f"--out={out}",
        f"--stats={out}/stats-{{rank}}.json",
    ]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "TQDM_DISABLE": "1"}
    t0 = time.time()
    subprocess.run(cmd, check=True, env=env)
    wall = time.time() - t0
    stats = [json.loads((out / f"stats-{r}.json").read_text()) for r in range(gpus)]
    nfe = sum(s["nfe"] for s in stats)
    # steady rate: each process's NFEs after its first batch over its own time after it; the
    # sum is the machine's rate when the processes overlap (``overlap`` near 1 says they did)
    steady = sum((s["nfe"] - s["nfe_first"]) / (s["t_end"] - s["t_first"]) for s in stats)
    overlap = (min(s["t_end"] for s in stats) - max(s["t_first"] for s in stats)) / max(
        s["t_end"] - s["t_first"] for s in stats
    )
    span = max(s["t_end"] for s in stats) - min(s["t_start"] for s in stats)
    return {
        "gpus": gpus,
        "pairs": sum(s["ran"] for s in stats),
        "nfe": nfe,
        "command_wall_s": wall,
        "steady_nfe_per_s": steady,
        "steady_overlap": overlap,
        "whole_run_nfe_per_s": nfe / span,
        "per_process": stats,
    }


def final_rewards(directory: Path) -> dict[tuple[int, int], float]:
    from adaptive_tts.traces import load_traces

    return {(t["prompt"], t["seed"]): t["final_reward"] for t in load_traces(directory)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--gpus", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seeds-per-class", type=int, default=128, help="10 classes x this many")
    ap.add_argument("--batch", type=int, default=64, help="pairs per search call, per process")
    ap.add_argument(
        "--out", type=Path, default=Path("experiments/results/calibration_scaling.json")
    )
    args = ap.parse_args(argv)
    import torch

    have = torch.cuda.device_count()
    if max(args.gpus) > have:
        raise SystemExit(f"--gpus asks for {max(args.gpus)} GPUs, this machine has {have}")
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for g in args.gpus:
            run = launch(g, args.seeds_per_class, args.batch, Path(tmp) / f"g{g}")
            runs.append(run)
        base = final_rewards(Path(tmp) / f"g{args.gpus[0]}")
        for g, run in zip(args.gpus, runs):
            other = final_rewards(Path(tmp) / f"g{g}")
            run["same_pairs_as_first"] = sorted(other) == sorted(base)
            run["max_abs_final_reward_diff"] = max(abs(other[k] - base[k]) for k in base)
    one = runs[0]["steady_nfe_per_s"]
    for run in runs:
        run["speedup"] = run["steady_nfe_per_s"] / one
        run["whole_run_speedup"] = run["whole_run_nfe_per_s"] / runs[0]["whole_run_nfe_per_s"]
    result = {
        "gpu": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "task": "mnist-target",
        "search": "eps-greedy n=4 k=20 eps=0.4 lam=0.15, edm-heun-18",
        "pairs": 10 * args.seeds_per_class,
        "batch_per_process": args.batch,
        "runs": runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".tmp")
    tmp_out.write_text(json.dumps(result, indent=1))
    os.replace(tmp_out, args.out)
    print("gpus | pairs | steady NFE/s | speedup | whole-run speedup | command s | same traces")
    for r in runs:
        print(
            f"{r['gpus']:4d} | {r['pairs']:5d} | {r['steady_nfe_per_s']:12.0f} | "
            f"{r['speedup']:6.2f}x"
            f" | {r['whole_run_speedup']:6.2f}x | {r['command_wall_s']:8.1f} |"
            f" {r['same_pairs_as_first']} (max diff {r['max_abs_final_reward_diff']:.2g})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
