"""``adaptive-tts sample``: one search method on one task."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from adaptive_tts.registry import METHODS, SAMPLERS
from adaptive_tts.tasks import TASKS
from experiments.cli.common import _add_gpu_options

DEFAULT_TASK = {"gmm": "gmm-target", "mnist": "mnist-cond"}


def add_sample(sub: argparse._SubParsersAction) -> None:
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
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--n", type=int, default=None, help="candidates per iteration / branching")
    p.add_argument("--k", type=int, default=None, help="search iterations per step")
    p.add_argument("--eps", type=float, default=None, help="exploration probability")
    p.add_argument("--lam", type=float, default=None, help="neighbour radius scale")
    p.add_argument("--beam-width", dest="width", type=int, default=None)
    p.add_argument("--sims", type=int, default=None, help="MCTS simulations per step")
    p.add_argument("--schedule", type=Path, default=None, help="fitted controller JSON")
    p.add_argument("--k-global", dest="k_global", type=int, default=None, help="EACPS")
    p.add_argument("--k-local", dest="k_local", type=int, default=None, help="EACPS")
    p.add_argument("--elites", type=int, default=None, help="EACPS / EvoSearch elites")
    p.add_argument("--locality", choices=["noise", "seed"], default=None, help="EACPS")
    p.add_argument("--beta", type=float, default=None, help="EACPS / EvoSearch mutation")
    p.add_argument(
        "--evo-schedule",
        dest="evo_schedule",
        type=int,
        nargs="+",
        default=None,
        help="EvoSearch step indices (increasing, starting at 0)",
    )
    p.add_argument("--population", type=int, nargs="+", default=None, help="EvoSearch")
    p.add_argument("--tournament", type=int, default=None, help="EvoSearch")
    p.add_argument(
        "--option",
        dest="options",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="any other option of the method, e.g. budget=140 (value parsed as YAML)",
    )
    p.add_argument("--device", default="cpu")
    _add_gpu_options(p)
    p.add_argument("--out", type=Path, default=None, help="write a PNG grid of the samples")
    p.add_argument("--json", action="store_true", help="last stdout line: one JSON object")


def cmd_sample(args: argparse.Namespace) -> int:
    from experiments.runner import prepare_task, run_method

    task_name = args.task or DEFAULT_TASK[args.model]
    if not task_name.startswith(args.model):
        raise SystemExit(f"--task {task_name} does not run on --model {args.model}")
    if args.batch < 1:
        raise SystemExit(f"--batch must be >= 1, got {args.batch}")
    task, args.device = prepare_task(task_name, args.device, args.cuda_graphs)
    sampler = SAMPLERS[args.sampler](args.steps, sigma_max=task.sigma_max)
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
        "k_global": args.k_global,
        "k_local": args.k_local,
        "elites": args.elites,
        "locality": args.locality,
        "beta": args.beta,
        "schedule": tuple(args.evo_schedule) if args.evo_schedule else None,
        "population": tuple(args.population) if args.population else None,
        "tournament": args.tournament,
    }
    for item in args.options:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--option must look like key=value, got {item!r}")
        import yaml

        options[key] = yaml.safe_load(raw)
    if args.schedule is not None:
        from controllers.io import load_controller

        options["controller"] = load_controller(args.schedule, sampler=sampler, model=task.model)
    try:
        result = run_method(
            task,
            args.method,
            sampler,
            seeds,
            prompts,
            device=args.device,
            generator_device=args.generator_device,
            **options,
        )
    except TypeError as err:  # an option the method does not take
        raise SystemExit(f"adaptive-tts sample: {err}") from err
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
