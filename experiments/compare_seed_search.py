"""Seed-space and evolutionary search vs best-of-N at matched counted NFEs.

For each budget B (in trajectories' worth of NFEs) and each ``(prompt, seed)`` pair:
best-of-B; EACPS with noise-space children and with literal seed+delta children (same
``(K_global, M, K_local)`` with ``K_global + M K_local = B``, so exactly B trajectories); EvoSearch
with a schedule at 0, T/3, 2T/3 and populations sized to spend at most B trajectories (within a few
percent; the JSON holds every method's counted NFEs). Reported per method and budget: mean reward
and evaluation-classifier hit rate with 95% intervals, the paired reward difference to best-of-N
on the same pairs, and diversity.

Diversity: each prompt is run with several seeds; a method's answers for one prompt form a set,
whose mean pairwise L2 distance (:mod:`adaptive_tts.diversity`) is averaged over prompts. Features:
the evaluation classifier's penultimate layer (its logits when it has no ``features``) for MNIST,
raw samples otherwise; pixel-space diversity is reported too. Using several seeds (rather than
one search's candidates) measures what a user sees: whether the returned answers collapse.

    python -m experiments.compare_seed_search --task mnist-target
    python -m experiments.compare_seed_search --task gmm-target --pairs 64

Writes ``experiments/results/seed_search_<task>.json`` and ``.png`` (atomically).
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
from tqdm import tqdm

from adaptive_tts.diversity import classifier_features, grouped_diversity
from adaptive_tts.registry import SAMPLERS
from adaptive_tts.report import format_table, mean_ci
from adaptive_tts.sampling import Sampler
from adaptive_tts.search.evosearch import evosearch_nfe, trajectory_nfe
from adaptive_tts.tasks import Task, build_task
from experiments.pairs import Batch, run_pairs

RESULTS = Path(__file__).resolve().parent / "results"


def eacps_plan(budget: int) -> dict[str, int]:
    """``(K_global, M, K_local)`` with ``K_global + M K_local = budget`` (8 -> 4, 2, 2)."""
    k = max(1, budget // 2)
    m = 1 if budget <= 4 else (2 if budget <= 16 else 4)
    m = min(m, k)
    kl = (budget - k) // m
    k = budget - m * kl
    return {"k_global": k, "elites": m, "k_local": kl}


def evo_plan(sampler: Sampler, budget: int, first: float = 0.25) -> dict[str, Any]:
    """Schedule ``(0, T/3, 2T/3)``; elites 1 for budgets <= 4 else 2;
    ``P_0 = max(elites + 1, first * budget)``; ``P_1 = P_2`` as large as the budget (``budget``
    trajectories from x_T) allows."""
    elites = 1 if budget <= 4 else 2
    t = sampler.num_steps
    sched = [0] + [s for s in (t // 3, (2 * t) // 3) if 0 < s and sampler.noise_scale(s) > 0]
    sched = sorted(set(sched))
    cap = budget * trajectory_nfe(sampler, 0)
    p0 = max(elites + 1, round(first * budget))
    best: dict[str, Any] | None = None
    for p1 in range(elites, 8 * budget + elites):
        pops = [p0] + [p1] * (len(sched) - 1)
        n = evosearch_nfe(sampler, sched, pops, elites)
        if n > cap:
            break
        best = {"schedule": sched, "population": pops, "elites": elites, "planned_nfe": n}
    if best is None:
        raise ValueError(f"budget {budget} too small for EvoSearch with P_0 = {p0}")
    return best


def features_fn(task: Task, device: str):
    """Per-output feature rows for diversity: eval-classifier features for MNIST, else raw x0."""
    if task.model == "mnist":
        from adaptive_tts import models

        clf = models.load("mnist-eval-clf", device=device)
        return lambda x0: classifier_features(task.to_image(x0).to(device), clf).cpu()
    return lambda x0: x0.reshape(x0.shape[0], -1).float().cpu()


def run_one(
    task: Task,
    method: str,
    sampler: Sampler,
    seeds: list[int],
    prompts: torch.Tensor,
    opts: dict[str, Any],
    batch: int,
    max_batch: int | None,
    device: str,
) -> dict[str, Any]:
    """Run ``method`` over all pairs in chunks of ``batch``; concatenated outputs (and the
    searches' own time)."""
    secs = [0.0]

    def seed_base(chunk: list[tuple[int, int]]) -> dict[str, Any]:
        return {"seed_base": [s for _, s in chunk]} if opts.get("locality") == "seed" else {}

    def add_time(b: Batch) -> None:
        secs[0] += b.result.seconds

    name = "eacps" if method.startswith("eacps") else method
    res = run_pairs(
        task,
        name,
        sampler,
        list(zip(prompts.tolist(), seeds)),
        batch=batch,
        device=device,
        evaluate=False,
        keep_x0=True,
        batch_options=seed_base,
        on_batch=add_time,
        max_batch=max_batch,
        **opts,
    )
    return {"x0": res.x0, "reward": res.reward, "nfe": res.nfe, "sec": secs[0]}


def summarise(
    task: Task, out: dict[str, Any], prompts: torch.Tensor, groups: torch.Tensor, feats
) -> dict[str, Any]:
    ev = task.evaluate(out["x0"], prompts if task.uses_prompt else None)
    hit = ev.get("eval_hit", torch.zeros(len(groups)))
    r_mean, r_ci = mean_ci(out["reward"])
    h_mean, h_ci = mean_ci(hit)
    return {
        "nfe": float(out["nfe"].float().mean()),
        "nfe_min": int(out["nfe"].min()),
        "nfe_max": int(out["nfe"].max()),
        "reward": r_mean,
        "reward_ci": r_ci,
        "eval_hit": h_mean,
        "eval_hit_ci": h_ci,
        "diversity": grouped_diversity(feats(out["x0"]), groups),
        "diversity_pixels": grouped_diversity(
            task.to_image(out["x0"]).reshape(len(groups), -1), groups
        ),
        "seconds": out["sec"],
        "rewards": out["reward"].tolist(),
    }


def plot(rows: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        rs = sorted((r for r in rows if r["method"] == method), key=lambda r: r["nfe"])
        nfe = [r["nfe"] for r in rs]
        for ax, key in zip(axes, ("reward", "eval_hit")):
            ax.errorbar(nfe, [r[key] for r in rs], yerr=[r[key + "_ci"] for r in rs],
                        marker="o", capsize=3, label=method)  # fmt: skip
    for ax, label in zip(axes, ("mean reward (95% CI)", "eval-classifier hit rate (95% CI)")):
        ax.set_xscale("log")
        ax.set_xlabel("counted NFEs per sample")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(title)
    fig.tight_layout()
    tmp = path.with_name(path.name + ".tmp")
    fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--task", default="mnist-target")
    p.add_argument("--pairs", type=int, default=32, help="(prompt, seed) pairs (>= 32 advised)")
    p.add_argument("--seeds-per-prompt", type=int, default=4)
    p.add_argument("--budgets", type=int, nargs="+", default=[4, 8, 16])
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument(
        "--betas", type=float, nargs="+", default=[0.3], help="EACPS noise-mode mixing strengths"
    )
    p.add_argument("--evo-first", type=float, default=0.25, help="EvoSearch P_0 / budget")
    p.add_argument("--batch", type=int, default=32, help="pairs per search call")
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=RESULTS)
    args = p.parse_args(argv)
    if args.pairs < 2 or args.seeds_per_prompt < 2:
        raise SystemExit("--pairs and --seeds-per-prompt must be >= 2 (diversity needs sets)")

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    task = build_task(args.task, device=args.device)
    sampler = SAMPLERS[args.sampler](args.steps, sigma_max=task.sigma_max)
    n_prompts = -(-args.pairs // args.seeds_per_prompt)
    groups = torch.arange(n_prompts).repeat_interleave(args.seeds_per_prompt)[: args.pairs]
    classes = [int(g) % task.num_classes for g in groups] if task.uses_prompt else None
    prompts = task.prompts(classes, args.pairs)
    # seeds far apart: the literal seed mode uses seed + j (K_local + 1) + delta from each pair's
    # seed, and neighbouring pair seeds would share candidates (identical images across pairs)
    seeds = [args.seed + 10_000 * i for i in range(args.pairs)]
    feats = features_fn(task, args.device)

    jobs: list[tuple[int, str, dict[str, Any]]] = []
    for b in args.budgets:
        plan = eacps_plan(b)
        jobs += [
            (b, "best-of-n", {"n": b}),
            (b, "eacps-seed", {**plan, "locality": "seed"}),
        ]
        for beta in args.betas:
            name = "eacps-noise" if len(args.betas) == 1 else f"eacps-noise-b{beta:g}"
            jobs.append((b, name, {**plan, "locality": "noise", "beta": beta}))
        evo = evo_plan(sampler, b, first=args.evo_first)
        jobs.append((b, "evosearch", {k: v for k, v in evo.items() if k != "planned_nfe"}))
    rows: list[dict[str, Any]] = []
    base: dict[int, torch.Tensor] = {}
    t0 = time.perf_counter()
    for b, method, opts in tqdm(jobs, desc=f"seed search on {args.task}"):
        out = run_one(
            task, method, sampler, seeds, prompts, opts, args.batch, args.max_batch, args.device
        )
        row = {"budget": b, "method": method, "options": opts}
        row.update(summarise(task, out, prompts, groups, feats))
        if method == "best-of-n":
            base[b] = out["reward"].double()
        d_mean, d_ci = mean_ci(out["reward"].double() - base[b])
        row["vs_best_of_n"], row["vs_best_of_n_ci"] = d_mean, d_ci
        row["verdict"] = (
            "=" if method == "best-of-n" or abs(d_mean) <= d_ci else (">" if d_mean > 0 else "<")
        )  # paired 95% CI of the reward difference to best-of-N on the same pairs
        rows.append(row)

    cols = ["budget", "method", "nfe", "reward", "reward_ci", "vs_best_of_n", "vs_best_of_n_ci"]
    cols += ["verdict", "eval_hit", "diversity", "seconds"]
    fmt = [{k: (f"{v:.4g}" if isinstance(v, float) else v) for k, v in r.items()} for r in rows]
    print(format_table(fmt, cols))
    result = {
        "task": args.task,
        "sampler": sampler.describe(),
        "pairs": args.pairs,
        "seeds_per_prompt": args.seeds_per_prompt,
        "prompts": prompts.tolist(),
        "seeds": seeds,
        "budgets": args.budgets,
        "trajectory_nfe": trajectory_nfe(sampler, 0),
        "diversity_features": "eval-classifier" if task.model == "mnist" else "raw x0",
        "rows": rows,
        "wall_seconds": time.perf_counter() - t0,
        "host": {"platform": platform.platform(), "threads": torch.get_num_threads()},
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"seed_search_{args.task}.json"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    plot(rows, path.with_suffix(".png"), f"{args.task}: {sampler.name}, {args.pairs} pairs")
    print(f"wrote {path} and {path.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
