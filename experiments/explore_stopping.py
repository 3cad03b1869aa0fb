"""Sweep of the closed-loop stopping controller's settings on one task (GPU where it pays).

    python -m experiments.explore_stopping --task mnist-target --device cuda --out DIR

Budget-varied calibration (eps-greedy, fresh draws, K in --cal-k per pair, K = 0 included) on
calibration pairs, logistic and GP reliability fits, then on held-out pairs (each pair its own
noise seed, disjoint from calibration): eps-greedy(4,20), fixed K arms and stopping-controller
variants (target, confidence, N, K cap, hard budget). Writes ``explore_<task>.json`` and prints a
table (reward, independent evaluation rate, counted NFEs, ratios to eps-greedy(4,20)).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.report import format_table, mean_ci
from adaptive_tts.sampling import make_sampler
from adaptive_tts.tasks import build_task
from controllers.closed_loop import StoppingController
from controllers.fixed import FixedController
from controllers.reliability import fit_reliability
from experiments.frontier import GaussianMove, run_arm


def pairs(task: Any, count: int, base: int) -> tuple[list[int], torch.Tensor]:
    """``count`` pairs, each its own seed ``base + j``; prompts cycle over the classes."""
    seeds = [base + j for j in range(count)]
    prompts = [j % task.num_classes if task.uses_prompt else -1 for j in range(count)]
    return seeds, torch.tensor(prompts)


def run(task: Any, sampler: Any, seeds: list[int], prompts: torch.Tensor, args: Any, **kw: Any):
    """Eps-greedy over the pairs (:func:`experiments.frontier.run_arm`): per-pair rewards,
    counted NFEs and evaluation scores, the traces and the wall seconds."""
    rec = run_arm(task, sampler, list(zip(prompts.tolist(), seeds)), args, "eps-greedy", **kw)
    r, n, h = (torch.tensor(rec[k]) for k in ("reward", "nfe", "eval"))
    return r, n, h, rec["traces"], rec["seconds"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="mnist-target")
    ap.add_argument("--cal-pairs", type=int, default=256)
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--cal-k", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    ap.add_argument("--cal-n", type=int, default=2)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--generator-device", default=None)
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("experiments/results/stopping"))
    ap.add_argument("--targets", type=float, nargs="+", default=[0.99, 0.999])
    ap.add_argument(
        "--reference",
        action="store_true",
        help="run eps-greedy(4,20) on the calibration pairs: the success level's full reward",
    )
    ap.add_argument(
        "--variants",
        type=json.loads,
        default=None,
        help="JSON list of controller settings that change the default (one arm each)",
    )
    ap.add_argument("--no-fixed", action="store_true", help="skip the fixed-K arms")
    args = ap.parse_args(argv)
    args.generator_device = args.generator_device or "cpu"
    task = build_task(args.task, device=args.device)
    if args.cuda_graphs:
        from adaptive_tts.cuda_graphs import graph_task

        task = graph_task(task)
    sampler = make_sampler("heun", 18, sigma_max=task.sigma_max)
    cal_seeds, cal_prompts = pairs(task, args.cal_pairs, 1_000_000)
    ev_seeds, ev_prompts = pairs(task, args.pairs, 2_000_000)
    cal: list[dict[str, Any]] = []
    cal_nfe = 0.0
    for k in args.cal_k:
        ctrl = FixedController(n=args.cal_n, k=k, eps=1.0)
        _, n, _, traces, _ = run(task, sampler, cal_seeds, cal_prompts, args, controller=ctrl)
        cal += traces
        cal_nfe += float(n.sum())
    reference = None
    if args.reference:
        _, n, _, reference, _ = run(task, sampler, cal_seeds, cal_prompts, args, n=4, k=20)
        cal_nfe += float(n.sum())
    kinds = {v.get("kind", "logistic") for v in (args.variants or [{"kind": "gp"}])}
    models: dict[str, dict[float, Any]] = {kind: {} for kind in kinds | {"logistic"}}
    for kind in models:
        for target in args.targets:
            t0 = time.perf_counter()
            models[kind][target] = fit_reliability(cal, target, kind, reference=reference)  # type: ignore[arg-type]
            print(f"fit {kind} target {target}: {time.perf_counter() - t0:.1f}s", flush=True)
    arms: list[tuple[str, dict[str, Any]]] = [("eps-greedy(4,20)", {"n": 4, "k": 20})]
    for n, k in () if args.no_fixed else ((1, 1), (2, 1), (4, 1), (4, 2), (4, 4)):
        arms.append((f"fixed N={n} K={k}", {"controller": FixedController(n=n, k=k)}))
    for n, k in () if args.no_fixed else ((1, 1), (2, 1), (2, 2)):
        ctrl = FixedController(n=n, k=k, eps=1.0)
        arms.append((f"fixed fresh N={n} K={k}", {"controller": ctrl}))
    base = {"kind": "logistic", "target": 0.99, "confidence": 0.95, "n": 1, "k_max": 8}
    grid: list[dict[str, Any]] = [
        {},
        {"n": 2, "k_max": 4},
        {"confidence": 0.9},
        {"confidence": 0.99},
        {"target": 0.999},
        {"rule": "absolute"},
        {"kind": "gp"},
        {"kind": "gp", "target": 0.999},
        {"k_max": 16},
        {"eps": 0.4},
        {"budget": 103.0},
        {"budget": 103.0, "spread": "greedy"},
        {"budget": 74.0},
        {"budget": 74.0, "spread": "greedy"},
        {"target": 0.999, "budget": 103.0, "spread": "greedy"},
        {"budget": 103.0, "spread": "greedy", "budget_mode": "batch"},
    ]
    for change in args.variants or grid:
        opts = base | change
        model = models[opts.pop("kind")][opts.pop("target")]
        ctrl = StoppingController(model, sampler=sampler, **opts)
        label = "stop " + (" ".join(f"{k}={v}" for k, v in change.items()) or "default")
        arms.append((label, {"controller": ctrl}))
    if not args.no_fixed:  # the move ablation
        arms.append(("fixed N=4 K=4 move=additive", {"controller": FixedController(n=4, k=4)}))
        gauss = GaussianMove(FixedController(n=4, k=4))
        arms.append(("fixed N=4 K=4 move=gaussian", {"controller": gauss}))
    rows = []
    for label, kw in arms:
        r, n, h, _, secs = run(task, sampler, ev_seeds, ev_prompts, args, **kw)
        m, ci = mean_ci(r)
        hm, hci = mean_ci(h)
        rows.append(
            {
                "arm": label,
                "reward": m,
                "ci": ci,
                "eval": hm,
                "eval_ci": hci,
                "nfe": float(n.mean()),
                "nfe_max": float(n.max()),
                "seconds": secs,
            }
        )
        print(f"{label}: {m:.4f} eval {hm:.4f} nfe {float(n.mean()):.1f} ({secs:.1f}s)", flush=True)
    ref = rows[0]
    for row in rows:
        row["reward_ratio"] = row["reward"] / ref["reward"] if ref["reward"] else float("nan")
        row["eval_ratio"] = row["eval"] / ref["eval"] if ref["eval"] else float("nan")
        row["nfe_ratio"] = row["nfe"] / ref["nfe"]
    result = {
        "task": args.task,
        "calibration": {
            "pairs": args.cal_pairs,
            "k": args.cal_k,
            "n": args.cal_n,
            "eps": 1.0,
            "nfe": cal_nfe,
        },
        "heldout_pairs": args.pairs,
        "models": {
            f"{k}-{t}": m.metrics | {"q": m.q} for k, d in models.items() for t, m in d.items()
        },
        "thresholds": {
            f"{k}-{t}": {
                f"{sh:g}": m.threshold(math.log(sh), 0.95)
                for sh in (100, 30, 10, 3, 1, 0.3, 0.1, 0.01)
                if m.covers(sh)
            }
            for k, d in models.items()
            for t, m in d.items()
        },
        "levels": {f"{k}-{t}": m.levels for k, d in models.items() for t, m in d.items()},
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"explore_{args.task}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    table = [
        {
            "arm": r["arm"],
            "reward": f"{r['reward']:.4f}",
            "eval": f"{r['eval']:.4f}",
            "NFEs": f"{r['nfe']:.1f}",
            "max": f"{r['nfe_max']:.0f}",
            "r/ref": f"{r['reward_ratio']:.4f}",
            "e/ref": f"{r['eval_ratio']:.4f}",
            "nfe/ref": f"{r['nfe_ratio']:.4f}",
        }
        for r in rows
    ]
    print(json.dumps(result["levels"]))
    print(format_table(table, list(table[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
