"""FLOPs-matched comparison of a committed frontier run, the reward's compute included.

The matched-budget tables (:mod:`experiments.frontier_stats`) match arms on counted NFEs. A
per-step search also pays one reward call per candidate, best-of-N one per trajectory; where the
reward is a network (the MNIST classifier of ``mnist-target`` costs about as much per call as the
UNet per NFE) NFE matching hides part of the search's cost. This module prices every held-out
pair of every arm (``nfe x FLOPs per NFE + reward calls x FLOPs per reward call``, the prices
measured once on the task with torch's FLOP counter, :func:`adaptive_tts.compute.measure_prices`;
exact because each call's FLOPs are linear in its rows) and re-runs the matched-budget comparison
at budgets that are multiples of plain sampling's FLOPs. No arm is re-run.

    python -m experiments.frontier_flops experiments/results/frontier mnist-target mnist-compress
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_tts.compute import FlopPrices, measure_prices
from adaptive_tts.fileio import atomic_write_json
from experiments.frontier_stats import diff_cell, load_records, summarise


def task_prices(name: str, res: dict[str, Any]) -> tuple[FlopPrices, str]:
    """``(prices, where)``: the prices the run enforced its FLOPs budgets with (``res["prices"]``,
    measured on the run's device: torch's FLOP counter counts the MNIST UNet 0.4% higher on
    CUDA than on the CPU), else task ``name``'s measured here on the CPU with the run's sampler."""
    from adaptive_tts.sampling import sampler_from_description
    from adaptive_tts.tasks import build_task

    if res.get("prices"):
        rec = dict(res["prices"])
        device = rec.pop("device", "?")
        return FlopPrices.from_dict(rec), f"recorded by the run ({device})"
    return measure_prices(build_task(name), sampler_from_description(res["sampler"])), "cpu"


def flops_view(res: dict[str, Any], prices: FlopPrices, where: str = "cpu") -> dict[str, Any]:
    """The run's arms priced in FLOPs and compared at ``budget_multiples`` x plain FLOPs
    (:func:`experiments.frontier_stats.summarise` with FLOPs in place of NFEs)."""
    from adaptive_tts.sampling import sampler_from_description

    records = load_records(res)
    naive = prices.naive(sampler_from_description(res["sampler"]))
    priced = {}
    for arm, rec in records.items():
        flops = np.asarray(prices.cost(np.asarray(rec["nfe"]), np.asarray(rec["reward_calls"])))
        priced[arm] = {**rec, "nfe": (flops / naive).tolist()}  # in units of plain sampling
    clusters = [s for _, s in res["pairs"]]
    multiples = res["budget_multiples"]
    out = summarise(priced, clusters, list(multiples), list(multiples))
    nfe_cost = {a["arm"]: a["nfe"] / res["naive_nfe"] for a in res["arms"]}
    return {
        "task": res["task"],
        "prices": prices.to_dict(),
        "prices_from": where,
        "naive_flops": naive,
        "reward_share_of_naive": prices.reward / naive,
        "arms": [
            {
                "arm": a["arm"],
                "family": a["family"],
                "reward": a["reward"],
                "eval": a["eval"],
                "cost_flops": a["nfe"],  # multiples of plain sampling's FLOPs
                "cost_nfe": nfe_cost[a["arm"]],  # multiples of plain sampling's NFEs
            }
            for a in out["arms"]
        ],
        "best_at_budget": out["best_at_budget"],
        "best_vs_fixed_k": out["best_vs_fixed_k"],
        "nfe_view": res["best_at_budget"],
    }


def flops_settings(
    closed: list[tuple[str, str, float, dict[str, Any]]],
    args: Any,
    stopping: Any,
    run: Any,
) -> tuple[list[tuple[str, str, float, dict[str, Any]]], float]:
    """Hard FLOPs-budget stopping arms for :mod:`experiments.frontier` (``--flops-budgets``):
    every logistic setting of ``closed`` is run on the calibration pairs (``run(ctrl)``) under
    each budget of ``args.flops_budgets`` x plain sampling's FLOPs (``args.prices``; per batch,
    greedy spread, as the NFE hard budgets); the setting with the highest calibration reward
    whose mean priced cost fits is deployed under that budget. Returns the arms and the
    calibration NFEs spent."""
    prices: FlopPrices = args.prices
    picked, spent = [], 0.0
    for m in args.flops_budgets:
        tried = []
        for label, model, target, opts in closed:
            if model != "logistic" or (args.settings and not re.search(args.settings, label)):
                continue
            hard = {**opts, "budget_mode": "batch", "spread": "greedy", "prices": prices}
            ctrl = stopping(model, target, **hard, budget=m * prices_naive(args, prices))
            if ctrl is None:
                continue
            rec = run(ctrl)
            cost = float(
                np.mean(prices.cost(np.asarray(rec["nfe"]), np.asarray(rec["reward_calls"])))
            )
            spent += float(np.sum(rec["nfe"]))
            if cost <= m * prices_naive(args, prices) * (1 + 1e-9):
                tried.append((float(np.mean(rec["reward"])), label, target, hard))
        if tried:
            _, chosen, target, hard = max(tried, key=lambda t: t[0])
            hard = {**hard, "budget": m * prices_naive(args, prices)}
            picked.append((f"stopping flops {m:g}x ({chosen[9:]})", "logistic", target, hard))
    return picked, spent


def prices_naive(args: Any, prices: FlopPrices) -> float:
    """Plain sampling's FLOPs with the frontier's sampler (EDM Heun, ``args.steps``)."""
    from adaptive_tts.sampling import make_sampler

    return prices.naive(make_sampler("heun", args.steps))


def markdown(views: list[dict[str, Any]]) -> str:
    """Per task and budget: the winner matched in NFEs and matched in FLOPs (both against the
    best fixed arm or baseline within the budget)."""
    lines = [
        "| task | budget | matched in NFEs: best adaptive vs best fixed, reward diff; eval diff | "
        "matched in FLOPs: best adaptive vs best fixed, reward diff; eval diff |",
        "|---|---|---|---|",
    ]
    for v in views:
        nfe = {x["budget_multiple"]: x for x in v["nfe_view"]}
        fl = {x["budget_multiple"]: x for x in v["best_at_budget"]}
        for m in sorted(set(nfe) | set(fl)):
            cells = []
            for x, unit in ((nfe.get(m), "nfe"), (fl.get(m), "flops")):
                if x is None:
                    cells.append("no adaptive arm within the budget")
                    continue
                scale = 1.0 if unit == "flops" else 1.0 / (x["budget_nfe"] / m)
                cells.append(
                    f"{x['arm']} ({x['nfe'] * scale:.2f}x) vs {x['best_fixed']} "
                    f"({x['best_fixed_nfe'] * scale:.2f}x): {diff_cell(x['reward_diff'])}; "
                    f"{diff_cell(x['eval_diff'])}"
                )
            lines.append(f"| {v['task']} | {m:g}x | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def plot(view: dict[str, Any], path: Path) -> None:
    """Reward against cost, in NFE multiples (left) and FLOPs multiples (right)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptive_tts.viz import save_figure

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
    colours = {"baseline": "grey", "fixed": "tab:blue", "adaptive": "tab:red"}
    colours |= {"peer": "tab:green", "learned": "tab:orange", "reference": "black"}
    for ax, key, name in zip(axes, ("cost_nfe", "cost_flops"), ("NFEs", "FLOPs")):
        for fam, col in colours.items():
            pts = [a for a in view["arms"] if a["family"] == fam]
            if pts:
                ax.scatter([a[key] for a in pts], [a["reward"]["value"] for a in pts],
                           s=14, c=col, label=fam)  # fmt: skip
        ax.set_xscale("log")
        ax.set_xlabel(f"cost per sample, multiples of plain sampling's {name}")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("search reward (held-out pairs)")
    axes[1].legend(fontsize=8)
    share = view["reward_share_of_naive"]
    fig.suptitle(f"{view['task']}: one reward call = {share:.1%} of plain sampling's FLOPs")
    save_figure(fig, path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("results", type=Path, help="directory of frontier_<task>.json files")
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--markdown", action="store_true", help="print the README table")
    args = ap.parse_args(argv)
    views = []
    for name in args.tasks:
        res = json.loads((args.results / f"frontier_{name}.json").read_text())
        view = flops_view(res, *task_prices(name, res))
        atomic_write_json(args.results / f"flops_{name}.json", view)
        plot(view, args.results / f"flops_{name}.png")
        views.append(view)
    print(markdown(views))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
