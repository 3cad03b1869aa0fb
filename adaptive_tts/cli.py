"""Command line: ``adaptive-tts sample | ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adaptive_tts.search import METHODS
from adaptive_tts.tasks import TASKS

DEFAULT_TASK = {"gmm": "gmm-target", "mnist": "mnist-cond"}


def _add_sample(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("sample", help="run one search method and report reward and counted NFEs")
    p.add_argument("--model", choices=sorted(DEFAULT_TASK), default="gmm")
    p.add_argument(
        "--task",
        choices=sorted(TASKS),
        default=None,
        help="default: gmm-target for gmm, mnist-cond for mnist",
    )
    p.add_argument("--method", choices=sorted(METHODS), default="eps-greedy")
    p.add_argument(
        "--class",
        dest="classes",
        type=int,
        nargs="*",
        default=None,
        help="class / target class per sample (cycled); default 0",
    )
    p.add_argument("--batch", type=int, default=4, help="samples (seeds seed..seed+batch-1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--sampler", choices=["heun", "euler", "ancestral"], default="heun")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--n", type=int, default=None, help="candidates per iteration / branching")
    p.add_argument("--k", type=int, default=None, help="search iterations per step")
    p.add_argument("--eps", type=float, default=None, help="exploration probability")
    p.add_argument("--lam", type=float, default=None, help="neighbour radius scale")
    p.add_argument("--beam-width", dest="width", type=int, default=None)
    p.add_argument("--sims", type=int, default=None, help="MCTS simulations per step")
    p.add_argument("--schedule", type=Path, default=None, help="fitted controller JSON")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=None, help="write a PNG grid of the samples")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def cmd_sample(args: argparse.Namespace) -> int:
    from adaptive_tts.runner import run_method
    from adaptive_tts.sampling import make_sampler
    from adaptive_tts.tasks import build_task

    task_name = args.task or DEFAULT_TASK[args.model]
    if not task_name.startswith(args.model):
        raise SystemExit(f"--task {task_name} does not run on --model {args.model}")
    if args.batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {args.batch}")
    task = build_task(task_name, device=args.device)
    sampler = make_sampler(args.sampler, args.steps, sigma_max=task.sigma_max)
    classes = args.classes if args.classes else ([0] if task.uses_prompt else None)
    prompts = task.prompts(classes, args.batch)
    seeds = list(range(args.seed, args.seed + args.batch))
    options = {
        "n": args.n,
        "k": args.k,
        "eps": args.eps,
        "lam": args.lam,
        "width": args.width,
        "sims": args.sims,
    }
    if args.schedule is not None:
        from controllers.io import load_controller

        options["controller"] = load_controller(args.schedule, sampler=sampler, model=task.model)
    result = run_method(task, args.method, sampler, seeds, prompts, device=args.device, **options)
    ev = task.evaluate(result.x0, prompts)
    row = result.summary()
    row.update(
        task=task.name,
        sampler=args.sampler,
        steps=args.steps,
        batch=args.batch,
        seed=args.seed,
        rewards=[round(float(r), 6) for r in result.reward],
        nfe_by_purpose={k: sum(v) / len(v) for k, v in result.nfe_by_purpose.items()},
    )
    for key, val in ev.items():
        if val.dtype.is_floating_point:
            row[key] = float(val.float().mean())
    if args.out is not None:
        from adaptive_tts.viz import save_grid

        save_grid(
            task.to_image(result.x0), args.out, labels=[f"{float(r):.2f}" for r in result.reward]
        )
        row["grid"] = str(args.out)
    print(
        f"{args.method} on {task.name}: reward {row['reward']:.4f}  NFEs/sample {row['nfe']:.0f}"
        f"  seconds {row['seconds']:.2f}",
        file=sys.stderr if args.json else sys.stdout,
    )
    if args.json:
        print(json.dumps(row))
    return 0


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="compare the search methods on the default task")
    p.add_argument("--task", choices=sorted(TASKS), default="gmm-target")
    p.add_argument("--seeds", type=int, default=8)
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--device", default="cpu")


def cmd_demo(args: argparse.Namespace) -> int:
    from adaptive_tts.demo import pretty, run_demo

    rows = run_demo(args.task, args.out, args.seeds, device=args.device)
    print(pretty(rows))
    print(f"results: {args.out / 'results.json'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptive-tts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sample(sub)
    _add_demo(sub)
    args = parser.parse_args(argv)
    if args.command == "sample":
        return cmd_sample(args)
    if args.command == "demo":
        return cmd_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
