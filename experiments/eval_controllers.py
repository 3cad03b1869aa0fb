"""Evaluate learned controllers against fixed eps-greedy and the baselines on held-out pairs.

    python -m experiments.eval_controllers --task mnist-target --out experiments/results

Steps: (1) calibrate full-budget eps-greedy (N=4, K=20) on calibration (prompt, seed) pairs;
(2) fit every controller; (3) on held-out pairs never used in calibration, run naive, best-of-N
at matched NFEs, fixed eps-greedy, the sigma window, constant K in {2, 4, 8}, and each learned
controller; (4) write JSON (mean reward with 95% CI, counted NFEs, evaluation-classifier rate,
ratios to fixed eps-greedy) and plots (reward vs NFEs, fitted p(t) and R(t) with bands).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.registry import SAMPLERS
from adaptive_tts.report import format_table
from adaptive_tts.tasks import build_task
from adaptive_tts.traces import load_traces
from controllers import FixedController, SigmaWindowController
from controllers.binomial import fit_binomial
from controllers.budget import BudgetController, plain_cost
from controllers.gain import fit_gain
from controllers.gp import fit_gp_controller
from controllers.registry import CONTROLLERS, make_controller
from controllers.stats import plot_stats, step_stats
from experiments.calibration import calibrate
from experiments.pairs import run_pairs
from experiments.plots import plot_reward_vs_nfe

CAL = {"n": 4, "k": 20, "eps": 0.4, "lam": 0.15}
BUILTIN = ("binomial", "gp", "gain", "budget")  # fitted below with their own variants


def pairs_for(task: Any, seeds: range) -> list[tuple[int, int]]:
    """``len(seeds)`` pairs per prompt, each its own noise seed (seed-major: the pairs of seed
    ``s`` get seeds ``s * P + i``), so the targets of one seed never share noise."""
    prompts = list(range(task.num_classes)) if task.uses_prompt else [-1]
    n = len(prompts)
    return [(p, s * n + i) for s in seeds for i, p in enumerate(prompts)]


def evaluate(
    task: Any,
    sampler: Any,
    pairs: list[tuple[int, int]],
    label: str,
    method: str,
    device: str,
    batch: int,
    **kw: Any,
) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = run_pairs(task, method, sampler, pairs, batch=batch, device=device, **kw)
    return {
        "method": label,
        **res.summary(),  # reward, ci95, nfe, eval_rate
        "seconds": time.perf_counter() - t0,
        "per_pair_reward": res.reward.tolist(),
    }


def fit_all(
    stats: Any, sampler: Any, k_means: list[float], traces: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """The built-in kinds' variants, plus every other registered fitted kind (plug-ins) with its
    default options when ``traces`` are given."""
    ctrls: dict[str, Any] = {
        "binomial-ceil": fit_binomial(stats, "ceil"),
        "binomial-draw": fit_binomial(stats, "draw", bootstrap=0),
        "binomial-eps": fit_binomial(stats, "eps", bootstrap=0),
        "binomial-improve": fit_binomial(stats, "improve", bootstrap=0),
        "gp-warp": fit_gp_controller(stats, kernel="warp"),
    }
    for km in k_means:
        ctrls[f"gain(k_mean={km:g})"] = fit_gain(stats, k_mean=km)
    for kind, entry in CONTROLLERS.items():
        if entry.fitted and kind not in BUILTIN and traces is not None:
            ctrls[kind] = make_controller(kind, traces, sampler)
    return ctrls


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--task", default="mnist-target")
    ap.add_argument("--out", type=Path, default=Path("experiments/results"))
    ap.add_argument("--cal-seeds", type=int, default=4, help="calibration seeds per prompt")
    ap.add_argument("--eval-seeds", type=int, default=7, help="held-out seeds per prompt")
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--k-means", type=float, nargs="*", default=[0.5, 1.0, 1.5, 2.0, 4.0])
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    task = build_task(args.task, device=args.device)
    sampler = SAMPLERS["heun"](args.steps, sigma_max=task.sigma_max)
    out = args.out
    cal_dir = out / f"calibration_{args.task}"
    cal_pairs = pairs_for(task, range(10_000, 10_000 + args.cal_seeds))
    eval_pairs = pairs_for(task, range(args.eval_seeds))
    if not task.uses_prompt:  # one prompt: use more seeds for the same number of pairs
        cal_pairs = pairs_for(task, range(10_000, 10_000 + 10 * args.cal_seeds))
        eval_pairs = pairs_for(task, range(10 * args.eval_seeds))
    assert not set(cal_pairs) & set(eval_pairs)
    calibrate(
        task, "eps-greedy", sampler, cal_pairs, cal_dir, batch=args.batch, device=args.device, **CAL
    )
    traces = load_traces(cal_dir)
    stats = step_stats(traces)
    plot_stats(stats, str(out / f"stats_{args.task}.png"))
    ctrls = fit_all(stats, sampler, args.k_means, traces)
    for name, c in ctrls.items():
        if not hasattr(c, "save"):
            continue
        c.save(
            out
            / f"schedules_{args.task}"
            / f"{name.replace('(', '_').replace(')', '').replace('=', '')}.json"
        )
    for name in ("binomial-ceil", "gp-warp", "gain(k_mean=1)"):
        plot = CONTROLLERS[name.split("(")[0].split("-")[0]].plot
        if name in ctrls and plot is not None:
            plot(ctrls[name], None, str(out / f"fit_{name.split('(')[0]}_{args.task}.png"))
    full_nfe = sum(plain_cost(sampler))  # one plain trajectory
    ev = lambda label, method, **kw: evaluate(  # noqa: E731
        task, sampler, eval_pairs, label, method, args.device, args.batch, **kw
    )
    rows = [
        ev("naive", "naive"),
        ev("eps-greedy(4,20)", "eps-greedy", **CAL),
        ev("sigma-window", "eps-greedy", controller=SigmaWindowController()),
    ]
    for k in (2, 4, 8):
        rows.append(ev(f"fixed K={k}", "eps-greedy", controller=FixedController(k=k)))
    for name, c in ctrls.items():
        rows.append(ev(name, "eps-greedy", controller=c))
    gain_row = next(r for r in rows if r["method"] == "gain(k_mean=1.5)")
    ref_nfe = next(r for r in rows if r["method"] == "eps-greedy(4,20)")["nfe"]
    base = ctrls.get("gain(k_mean=2)", ctrls["gain(k_mean=1.5)"])
    for budget in sorted({round(gain_row["nfe"]), round(0.1 * ref_nfe)}):
        ctrl = BudgetController(base, budget, sampler)
        rows.append(ev(f"budget({budget})", "eps-greedy", controller=ctrl))
    ref = next(r for r in rows if r["method"] == "eps-greedy(4,20)")
    n_match = max(1, round(gain_row["nfe"] / full_nfe))
    rows.insert(1, ev(f"best-of-{n_match} (matched)", "best-of-n", n=n_match))
    for r in rows:
        r["reward_ratio"] = r["reward"] / ref["reward"] if ref["reward"] else float("nan")
        r["nfe_ratio"] = r["nfe"] / ref["nfe"]
    result = {
        "task": args.task,
        "sampler": sampler.describe(),
        "calibration": CAL,
        "calibration_pairs": len(cal_pairs),
        "heldout_pairs": len(eval_pairs),
        "schedules": {
            k: [s["k"] for s in c.steps] for k, c in ctrls.items() if hasattr(c, "steps")
        },
        "step_stats": stats.summary(),
        "rows": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / f"controllers_{args.task}.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / f"controllers_{args.task}.json")
    plot_reward_vs_nfe(
        rows,
        out / f"frontier_{args.task}.png",
        f"{args.task}: reward vs counted NFEs ({len(eval_pairs)} held-out pairs)",
    )
    table = [
        {
            "method": r["method"],
            "reward": f"{r['reward']:.4f} ± {r['ci95']:.4f}",
            "NFEs": f"{r['nfe']:.0f}",
            "reward ratio": f"{r['reward_ratio']:.3f}",
            "NFE ratio": f"{r['nfe_ratio']:.3f}",
            "eval": f"{r['eval_rate']:.3f}",
        }
        for r in rows
    ]
    print(format_table(table, list(table[0])))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
