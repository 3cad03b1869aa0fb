"""Portability of learned controllers across step counts (issue 12, item 4).

    python -m experiments.portability --task gmm-target --out experiments/results/portability
    python -m experiments.portability --task mnist-target --device cuda --cal-pairs 256 \\
        --pairs 512 --batch 512 --out experiments/results/portability

For each fit step count F (``--fit-steps``, 18 among them) on the EDM Heun sampler:

* budget-varied calibration on the calibration pairs (eps-greedy, fresh draws,
  ``FixedController(n=--cal-n, k=K, eps=1.0)`` for K in ``--cal-k``) plus a reference
  eps-greedy(4,20) run (the full search whose reward a success must hold a share of);
* the closed-loop **stopping** controller (:func:`controllers.closed_loop.fit_stopping`, logistic
  reliability model) from the budget-varied traces, and a **gain** schedule
  (``make_controller("gain", ..., k_mean=--k-mean)``) from the full-budget eps-greedy(4,20)
  traces.

Every (fit F, deploy D) combination, D in ``--deploy-steps``, then runs on held-out pairs (each
pair its own seed, disjoint from calibration), next to plain sampling and eps-greedy(4,20) at D
steps. Reported: mean reward (95% interval), counted NFEs and the task's evaluation rate
(``eval_hit``). Writes ``portability_<task>.json`` (atomic) and ``portability_<task>.png``
(reward vs NFEs, one marker per deploy step count, fitted at 18 vs fitted at the same count).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.report import format_table, mean_ci
from adaptive_tts.sampling import Sampler, make_sampler
from adaptive_tts.tasks import Task, build_task
from controllers.closed_loop import StoppingController, fit_stopping
from controllers.fixed import FixedController
from controllers.registry import make_controller
from experiments.frontier import run_arm

CAL_BASE, EVAL_BASE = 1_000_000, 2_000_000
"""Calibration pair j has seed ``CAL_BASE + j``, held-out pair j ``EVAL_BASE + j`` (disjoint)."""


def make_pairs(task: Task, count: int, base: int) -> tuple[list[int], torch.Tensor]:
    """``count`` pairs, each its own seed ``base + j``; prompts cycle over the classes."""
    seeds = [base + j for j in range(count)]
    prompts = [j % task.num_classes if task.uses_prompt else -1 for j in range(count)]
    return seeds, torch.tensor(prompts)


def run(
    task: Task,
    sampler: Sampler,
    seeds: list[int],
    prompts: torch.Tensor,
    args: Any,
    **kw: Any,
) -> dict[str, Any]:
    """Eps-greedy over the pairs (:func:`experiments.frontier.run_arm`, one generator per
    pair): per-pair rewards, counted NFEs, evaluation hits (host tensors), the traces and the
    wall seconds."""
    rec = run_arm(task, sampler, list(zip(prompts.tolist(), seeds)), args, "eps-greedy", **kw)
    out = {
        k: torch.tensor(rec[src])
        for k, src in (("reward", "reward"), ("nfe", "nfe"), ("hit", "eval"))
    }
    return {**out, "traces": rec["traces"], "seconds": rec["seconds"]}


def row(label: str, fit: int | None, deploy: int, res: dict[str, Any]) -> dict[str, Any]:
    m, ci = mean_ci(res["reward"])
    h, hci = mean_ci(res["hit"])
    return {
        "arm": label,
        "fit_steps": fit,
        "deploy_steps": deploy,
        "reward": m,
        "ci95": ci,
        "eval_rate": h,
        "eval_ci95": hci,
        "nfe": float(res["nfe"].mean()),
        "nfe_max": float(res["nfe"].max()),
        "seconds": res["seconds"],
    }


def fit_controllers(
    task: Task, steps: int, args: Any
) -> tuple[StoppingController, Any, dict[str, Any]]:
    """Calibrate at ``steps`` Heun steps and fit the stopping and gain controllers."""
    sampler = make_sampler("heun", steps, sigma_max=task.sigma_max)
    seeds, prompts = make_pairs(task, args.cal_pairs, CAL_BASE)
    t0 = time.perf_counter()
    cal: list[dict[str, Any]] = []
    nfe = 0.0
    for k in args.cal_k:
        res = run(
            task,
            sampler,
            seeds,
            prompts,
            args,
            controller=FixedController(n=args.cal_n, k=k, eps=1.0),
        )
        cal += res["traces"]
        nfe += float(res["nfe"].sum())
    ref = run(task, sampler, seeds, prompts, args, n=4, k=20)
    nfe += float(ref["nfe"].sum())
    stop = fit_stopping(
        cal,
        sampler,
        target=args.target,
        reference=ref["traces"],
        confidence=args.confidence,
        n=args.stop_n,
        k_max=args.stop_k_max,
    )
    gain = make_controller("gain", ref["traces"], sampler, k_mean=args.k_mean)
    info = {
        "fit_steps": steps,
        "calibration_nfe": nfe,
        "seconds": time.perf_counter() - t0,
        "stopping": stop.summary(),
        "gain_k": [int(s["k"]) for s in gain.steps],
        "gain_sigma": [float(s["sigma"]) for s in gain.steps],
    }
    return stop, gain, info


def evaluate(args: argparse.Namespace) -> dict[str, Any]:
    task = build_task(args.task, device=args.device)
    fitted: dict[int, tuple[StoppingController, Any]] = {}
    fits: list[dict[str, Any]] = []
    for f in args.fit_steps:
        stop, gain, info = fit_controllers(task, f, args)
        fitted[f] = (stop, gain)
        fits.append(info)
        print(f"fit at {f} steps: {info['seconds']:.1f}s", flush=True)
    seeds, prompts = make_pairs(task, args.pairs, EVAL_BASE)
    rows: list[dict[str, Any]] = []
    for d in args.deploy_steps:
        sampler = make_sampler("heun", d, sigma_max=task.sigma_max)
        arms: list[tuple[str, int | None, dict[str, Any]]] = [
            ("plain", None, {"controller": FixedController(n=1, k=0)}),
            ("eps-greedy(4,20)", None, {"n": 4, "k": 20}),
        ]
        for f, (stop, gain) in fitted.items():
            arms.append(("stopping", f, {"controller": dataclasses.replace(stop, sampler=sampler)}))
            arms.append(("gain", f, {"controller": gain}))
        for label, f, kw in arms:
            r = row(label, f, d, run(task, sampler, seeds, prompts, args, **kw))
            rows.append(r)
            print(
                f"{label} fit {f} deploy {d}: reward {r['reward']:.4f} eval {r['eval_rate']:.3f}"
                f" nfe {r['nfe']:.1f} ({r['seconds']:.1f}s)",
                flush=True,
            )
    for r in rows:  # ratios to eps-greedy(4,20) at the same deploy step count
        ref = next(
            x
            for x in rows
            if x["arm"] == "eps-greedy(4,20)" and x["deploy_steps"] == r["deploy_steps"]
        )
        r["reward_ratio"] = r["reward"] / ref["reward"] if ref["reward"] else float("nan")
        r["eval_ratio"] = r["eval_rate"] / ref["eval_rate"] if ref["eval_rate"] else float("nan")
        r["nfe_ratio"] = r["nfe"] / ref["nfe"]
    return {
        "task": args.task,
        "sampler": "edm-heun",
        "calibration": {
            "pairs": args.cal_pairs,
            "seeds": f"{CAL_BASE} + j",
            "k": args.cal_k,
            "n": args.cal_n,
            "eps": 1.0,
            "reference": "eps-greedy(4,20)",
        },
        "stopping_options": {
            "target": args.target,
            "confidence": args.confidence,
            "n": args.stop_n,
            "k_max": args.stop_k_max,
            "model": "logistic",
        },
        "gain_options": {"k_mean": args.k_mean},
        "heldout": {"pairs": args.pairs, "seeds": f"{EVAL_BASE} + j"},
        "fits": fits,
        "rows": rows,
    }


def write_json(obj: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def plot(result: dict[str, Any], path: Path) -> None:
    """Reward vs counted NFEs: one marker per deploy step count; filled = fitted at 18 steps,
    hollow = fitted at the deploy step count; grey = plain and eps-greedy(4,20)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    deploys = sorted({r["deploy_steps"] for r in rows})
    shapes = dict(zip(deploys, "osD^vP*X"))
    colors = {"stopping": "tab:blue", "gain": "tab:orange"}
    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    for ax, key, ci, ylabel in (
        (axes[0], "reward", "ci95", "mean reward (95% interval)"),
        (axes[1], "eval_rate", "eval_ci95", "evaluation rate (eval_hit, 95% interval)"),
    ):
        for r in rows:
            kw: dict[str, Any] = {"marker": shapes[r["deploy_steps"]], "ms": 8, "ls": "none"}
            if r["arm"] in colors:
                c = colors[r["arm"]]
                if r["fit_steps"] == 18:
                    kw |= {"color": c}
                elif r["fit_steps"] == r["deploy_steps"]:
                    kw |= {"mfc": "none", "mec": c, "mew": 1.8, "ecolor": c}
                else:
                    continue
            else:
                kw |= {"color": "0.55" if r["arm"] == "eps-greedy(4,20)" else "k", "ms": 6}
            ax.errorbar(r["nfe"], r[key], yerr=r[ci], capsize=2, **kw)
        for arm, c in colors.items():  # connect the 18-step fit across deploy step counts
            pts = sorted(
                (r["nfe"], r[key]) for r in rows if r["arm"] == arm and r["fit_steps"] == 18
            )
            if pts:
                ax.plot(*zip(*pts), color=c, lw=0.8, alpha=0.6)
        ax.set_xscale("log")
        ax.set_xlabel("counted NFEs per sample")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    from matplotlib.lines import Line2D

    handles = [
        Line2D([], [], color=c, marker="o", ls="-", label=f"{a}, fit at 18")
        for a, c in colors.items()
    ]
    handles += [
        Line2D(
            [], [], color=c, marker="o", mfc="none", ls="none", label=f"{a}, fit at deploy steps"
        )
        for a, c in colors.items()
    ]
    handles += [
        Line2D([], [], color="0.55", marker="o", ls="none", label="eps-greedy(4,20)"),
        Line2D([], [], color="k", marker="o", ls="none", label="plain"),
    ]
    handles += [
        Line2D([], [], color="0.3", marker=shapes[d], ls="none", label=f"{d} steps")
        for d in deploys
    ]
    fig.suptitle(
        f"{result['task']}: stopping and gain controllers fitted at 18 Heun steps (filled) or at "
        f"the deploy step count (hollow), {result['heldout']['pairs']} held-out pairs",
        fontsize=10,
    )
    axes[0].legend(handles=handles, fontsize=7, loc="lower right", ncol=2)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.stem + ".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def table(result: dict[str, Any]) -> str:
    rows = [
        {
            "arm": r["arm"],
            "fit": "-" if r["fit_steps"] is None else str(r["fit_steps"]),
            "deploy": str(r["deploy_steps"]),
            "reward": f"{r['reward']:.4f} +- {r['ci95']:.4f}",
            "eval": f"{r['eval_rate']:.3f}",
            "NFEs": f"{r['nfe']:.1f}",
            "r/ref": f"{r['reward_ratio']:.4f}",
            "nfe/ref": f"{r['nfe_ratio']:.4f}",
        }
        for r in result["rows"]
    ]
    return format_table(rows, list(rows[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--task", default="gmm-target")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--generator-device", default="cpu")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--cal-pairs", type=int, default=128, help="calibration pairs per fit")
    ap.add_argument("--pairs", type=int, default=512, help="held-out pairs")
    ap.add_argument("--cal-k", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    ap.add_argument("--cal-n", type=int, default=2)
    ap.add_argument("--fit-steps", type=int, nargs="+", default=[10, 18, 50])
    ap.add_argument("--deploy-steps", type=int, nargs="+", default=[10, 18, 30, 50])
    ap.add_argument("--target", type=float, default=0.99)
    ap.add_argument("--confidence", type=float, default=0.95)
    ap.add_argument("--stop-n", type=int, default=1)
    ap.add_argument("--stop-k-max", type=int, default=8)
    ap.add_argument("--k-mean", type=float, default=1.5)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/portability"))
    args = ap.parse_args(argv)
    if 18 not in args.fit_steps:
        ap.error("--fit-steps must include 18 (the reference fit)")
    t0 = time.perf_counter()
    result = evaluate(args)
    result["seconds"] = time.perf_counter() - t0
    given = sys.argv[1:] if argv is None else argv
    result["command"] = "python -m experiments.portability " + " ".join(given)
    write_json(result, args.out / f"portability_{args.task}.json")
    plot(result, args.out / f"portability_{args.task}.png")
    print(table(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
