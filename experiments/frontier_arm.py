"""One plain arm on the frontier's held-out pairs (same pair ids and seeds as
:mod:`experiments.frontier`), for a baseline added after a frontier run:

    python -m experiments.frontier_arm --task mnist-target --method beam --option n=4 width=2

The noise matches the frontier run only with the same ``--generator-device``. Prints and writes
``frontier_arm_<task>_<method>.json`` (mean reward, evaluation rate, counted NFEs, seconds).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np
import yaml

from adaptive_tts.sampling import make_sampler
from experiments.frontier import make_pairs, run_arm
from experiments.runner import prepare_task


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", default="mnist-target")
    ap.add_argument("--method", required=True)
    ap.add_argument("--option", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--generator-device", default="cpu")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/frontier"))
    args = ap.parse_args(argv)
    opts = {k: yaml.safe_load(v) for k, _, v in (o.partition("=") for o in args.option)}
    task, args.device = prepare_task(args.task, args.device)
    sampler = make_sampler("heun", args.steps, sigma_max=task.sigma_max)
    pairs = make_pairs(task, args.pairs, 2_000_000)
    rec = run_arm(task, sampler, pairs, args, args.method, **opts)
    row = {k: float(np.mean(rec[k])) for k in ("reward", "eval", "nfe")}
    row |= {"method": args.method, "options": opts, "pairs": len(pairs), "seconds": rec["seconds"],
            "generator_device": args.generator_device}  # fmt: skip
    print(json.dumps(row))
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"frontier_arm_{args.task}_{args.method}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(row, indent=1))
    os.replace(tmp, path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
