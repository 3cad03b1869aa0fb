"""``adaptive-tts sample``: one search method on one task.

Every option is checked before the task is built or anything runs (types, ranges, finiteness,
upper bounds, the seed range, the ``--out`` path); an option the chosen method does not use is
an error naming it, never ignored."""

from __future__ import annotations

import argparse
import inspect
import json
import re
import sys
from pathlib import Path
from typing import Any

from adaptive_tts.registry import METHODS, SAMPLERS, check_method_options
from adaptive_tts.seeds import check_seed
from adaptive_tts.tasks import TASKS
from experiments.cli.common import (
    _add_gpu_options,
    check_generator_device,
    check_int,
    check_out_file,
)
from experiments.cli.errors import UsageError, usage

DEFAULT_TASK = {"gmm": "gmm-target", "mnist": "mnist-cond"}
MAX_BATCH, MAX_STEPS = 4096, 1000
MAX_ROWS = 2**20
"""The most candidate rows (samples times candidates per sample) one ``sample`` may hold."""
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".pdf", ".svg")
FLAGS = {
    "n": "--n",
    "k": "--k",
    "eps": "--eps",
    "lam": "--lam",
    "width": "--beam-width",
    "sims": "--sims",
    "k_global": "--k-global",
    "k_local": "--k-local",
    "elites": "--elites",
    "locality": "--locality",
    "beta": "--beta",
    "schedule": "--evo-schedule",
    "population": "--population",
    "tournament": "--tournament",
    "controller": "--schedule",
}
"""Method option -> the flag that sets it (the name every message shows)."""


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
    p.add_argument(
        "--batch", type=int, default=4, help=f"samples, 1..{MAX_BATCH} (seeds seed..seed+batch-1)"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed, in [0, 2**32 - 1]")
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun")
    p.add_argument("--steps", type=int, default=18, help=f"1..{MAX_STEPS}")
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


def _extra_options(items: list[str], options: dict[str, Any], names: dict[str, str]) -> None:
    """``--option key=value`` entries into ``options`` (value parsed as YAML, never executed)."""
    import yaml

    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise usage("--option", item, "key=value with key a method option name")
        if options.get(key) is not None:
            raise UsageError(f"--option {key} is already set by {names.get(key, key)}")
        try:
            options[key] = yaml.safe_load(raw)
        except yaml.YAMLError as err:
            raise usage(
                f"--option {key}", raw, f"a YAML value ({err.__class__.__name__})"
            ) from None
        names[key] = f"--option {key}"


def _rows_per_sample(method: str, kw: dict[str, Any]) -> int:
    """Candidate rows one sample holds at once (the method's defaults where not given)."""
    params = inspect.signature(METHODS[method]).parameters

    def get(key: str, default: int = 1) -> int:
        if key in kw:
            val = kw[key]
        elif key in params and isinstance(params[key].default, (int, tuple)):
            val = params[key].default
        else:
            return default
        return max(val) if isinstance(val, (list, tuple)) else int(val)

    rows = get("n") * get("width")
    if method == "eacps":
        rows = max(get("k_global"), get("elites") * get("k_local"))
    elif method == "evosearch":
        rows = get("population")
    elif method == "fk":
        rows = get("k")
    return max(rows, 1)


def check_sample_args(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """Every option checked before any work: the task name and the method's options."""
    task_name = args.task or DEFAULT_TASK[args.model]
    if not task_name.startswith(args.model):
        raise UsageError(
            f"--task {task_name} does not run on --model {args.model}",
            None,
            f"allowed: tasks {args.model}-*",
        )
    check_int("--batch", args.batch, 1, MAX_BATCH)
    check_int("--steps", args.steps, 1, MAX_STEPS)
    check_seed(args.seed, "--seed", args.batch)
    options: dict[str, Any] = {
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
        "controller": args.schedule,
    }
    names = dict(FLAGS)
    _extra_options(args.options, options, names)
    kw = check_method_options(args.method, options, names)
    if args.schedule is not None and not args.schedule.is_file():
        raise UsageError(f"--schedule {args.schedule}: file not found")
    rows = args.batch * _rows_per_sample(args.method, kw)
    if rows > MAX_ROWS:
        raise UsageError(
            f"--batch {args.batch} with these options holds {rows} candidate rows",
            None,
            f"allowed: at most {MAX_ROWS} (lower --batch or the candidates per sample)",
        )
    check_generator_device(args.generator_device)
    if args.out is not None:
        check_out_file(args.out, "--out", IMAGE_SUFFIXES)
    return task_name, kw


def cmd_sample(args: argparse.Namespace) -> int:
    from experiments.runner import prepare_task, run_method

    task_name, options = check_sample_args(args)
    task, args.device = prepare_task(task_name, args.device, args.cuda_graphs)
    if args.out is not None and len(task.sample_shape) != 3:
        raise UsageError(
            f"--out writes an image grid, but task {task.name} has samples of shape "
            f"{tuple(task.sample_shape)}",
            None,
            "allowed: an image task (mnist-*)",
        )
    sampler = SAMPLERS[args.sampler](args.steps, sigma_max=task.sigma_max)
    classes = args.classes if args.classes else ([0] if task.uses_prompt else None)
    prompts = task.prompts(classes, args.batch)
    seeds = list(range(args.seed, args.seed + args.batch))
    if args.schedule is not None:
        from controllers.io import load_controller

        options["controller"] = load_controller(args.schedule, sampler=sampler, model=task.model)
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
