"""``adaptive-tts demo``: compare search methods on a task and print reward vs counted NFEs."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.report import format_table, mean_ci
from adaptive_tts.runner import run_method
from adaptive_tts.sampling import make_sampler
from adaptive_tts.tasks import Task, build_task

TABLE1: list[tuple[str, str, dict[str, Any]]] = [
    ("naive", "naive", {}),
    ("best-of-4", "best-of-n", {"n": 4}),
    ("beam(4,2)", "beam", {"n": 4, "width": 2}),
    ("mcts(4,8)", "mcts", {"n": 4, "sims": 8}),
    ("zero-order(4,20)", "zero-order", {"n": 4, "k": 20}),
    ("eps-greedy(4,20)", "eps-greedy", {"n": 4, "k": 20}),
]


def compare(
    task: Task,
    methods: list[tuple[str, str, dict[str, Any]]],
    seeds: list[int],
    classes: list[int] | None,
    sampler_name: str = "heun",
    steps: int = 18,
    device: str = "cpu",
    progress: bool = True,
) -> list[dict[str, Any]]:
    """Run each method on the same (seed, prompt) pairs; one summary row per method."""
    from tqdm.auto import tqdm

    sampler = make_sampler(sampler_name, steps, sigma_max=task.sigma_max)  # type: ignore[arg-type]
    prompts = task.prompts(classes, len(seeds))
    rows = []
    for label, method, kw in tqdm(methods, desc=f"methods on {task.name}", disable=not progress):
        t0 = time.perf_counter()
        res = run_method(task, method, sampler, seeds, prompts, device=device, **kw)
        seconds = time.perf_counter() - t0
        ev = task.evaluate(res.x0, prompts)
        m, h = mean_ci(res.reward)
        row: dict[str, Any] = {
            "method": label,
            "reward": m,
            "ci95": h,
            "nfe": float(res.nfe.float().mean()),
            "seconds": seconds,
            "per_sample_reward": res.reward.tolist(),
        }
        if "eval_hit" in ev:
            row["eval_rate"] = float(ev["eval_hit"].mean())
        rows.append(row)
    return rows


def pretty(rows: list[dict[str, Any]]) -> str:
    shown = []
    for r in rows:
        shown.append(
            {
                "method": r["method"],
                "reward (95% CI)": f"{r['reward']:.4f} ± {r['ci95']:.4f}",
                "NFEs/sample": f"{r['nfe']:.0f}",
                "eval rate": f"{r['eval_rate']:.2f}" if "eval_rate" in r else "-",
                "seconds": f"{r['seconds']:.1f}",
            }
        )
    return format_table(shown, list(shown[0]))


def run_demo(task_name: str, out: Path, seeds: int, device: str = "cpu") -> list[dict[str, Any]]:
    """Table-1 comparison on ``task_name``; writes ``results.json`` into ``out``."""
    task = build_task(task_name, device=device)
    classes = list(range(task.num_classes)) if task.uses_prompt else None
    rows = compare(task, TABLE1, list(range(seeds)), classes, device=device)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "results.json.tmp"
    tmp.write_text(
        json.dumps(
            {
                "task": task_name,
                "seeds": seeds,
                "rows": rows,
                "torch_threads": torch.get_num_threads(),
            },
            indent=2,
        )
    )
    os.replace(tmp, out / "results.json")
    return rows
