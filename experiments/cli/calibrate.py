"""``adaptive-tts calibrate`` (here) and ``adaptive-tts fit`` (:mod:`experiments.cli.fit`).

Every calibrate option is checked before anything is written, each error naming the option
and its allowed range: ``--n``, ``--k``, ``--budgets``, ``--steps``, ``--batch`` integers in
range, ``--eps`` in [0, 1], ``--lam`` finite and > 0, ``--seeds FIRST COUNT`` in the documented
seed range, ``--classes`` valid for the task, ``--out`` a writable directory (not a file),
``--stats`` a writable ``.json`` path; a budget-varied run is preflighted for every budget
before the first one starts. A task without prompts refuses ``--classes``: its trajectories do
not depend on a class, so each would be stored again under every class (an error, not a
silent dedupe)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from pathlib import Path
from typing import Any

from adaptive_tts.fileio import atomic_write_json
from adaptive_tts.registry import SAMPLERS, check_method_options
from adaptive_tts.seeds import SEED_MAX, check_seed
from adaptive_tts.tasks import PROMPTED_REWARDS, TASKS
from experiments.cli.byo import add_model_reward_options
from experiments.cli.common import (
    add_run_options,
    check_float,
    check_generator_device,
    check_int,
    check_out_file,
)
from experiments.cli.errors import UsageError, usage
from experiments.cli.fit import add_fit, cmd_fit

__all__ = ["add_calibrate", "add_fit", "check_calibrate_args", "cmd_calibrate", "cmd_fit"]

MAX_N, MAX_K, MAX_STEPS = 4096, 100_000, 1000
MAX_ROWS = 2**20
"""The most candidate rows (``--batch`` times ``--n``) one search call may hold."""
MAX_PAIRS = 2**22
"""The most (prompt, seed) pairs one calibrate command may list."""
DEFAULT_K, DEFAULT_EPS = 20, 0.4
FLAGS = {"n": "--n", "k": "--k", "eps": "--eps", "lam": "--lam"}


def check_positive(option: str, value: object, hi: float = math.inf) -> float:
    """``value`` if it is a finite number in ``(0, hi]``, else a :class:`UsageError`."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    v = float(value) if ok else math.nan  # type: ignore[arg-type]
    if not (math.isfinite(v) and 0 < v <= hi):
        span = "> 0" if hi == math.inf else f"in (0, {hi:g}]"
        raise usage(option, value, f"a finite number {span}")
    return v


def add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="full-budget searches; append traces to DIR (resumable)")
    p.add_argument(
        "--task",
        choices=sorted(TASKS),
        default=None,
        help="a registered task (or --model SPEC with --reward / --prompt ...)",
    )
    add_model_reward_options(
        p, default_model=None, model_default_help="none; give --task or --model"
    )
    p.add_argument("--method", choices=["eps-greedy", "zero-order"], default="eps-greedy")
    p.add_argument("--n", type=int, default=4, help=f"candidates per iteration, 1..{MAX_N}")
    p.add_argument(
        "--k", type=int, default=None, help=f"iterations per step, 1..{MAX_K} (default 20)"
    )
    p.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="budget-varied calibration (for `fit --controller stopping`): one run per K into "
        f"OUT/kK (include 0; each in 0..{MAX_K}); replaces --k",
    )
    p.add_argument(
        "--eps", type=float, default=None, help="eps-greedy's exploration rate, [0, 1] (0.4)"
    )
    p.add_argument("--lam", type=float, default=0.15, help="neighbour radius scale, > 0")
    p.add_argument(
        "--classes",
        type=int,
        nargs="*",
        default=None,
        help="prompts (default: all; a task without prompts takes none)",
    )
    p.add_argument(
        "--seeds",
        type=int,
        nargs=2,
        default=[0, 8],
        metavar=("FIRST", "COUNT"),
        help=f"seeds FIRST..FIRST+COUNT-1 (COUNT in [1, {MAX_PAIRS}], all in [0, {SEED_MAX}])",
    )
    p.add_argument(
        "--sampler",
        choices=sorted({*SAMPLERS, "ddim"}),
        default=None,
        help="default: heun for --task, the model's own for --model",
    )
    p.add_argument(
        "--steps", type=int, default=None, help=f"1..{MAX_STEPS} (default 18, or the model's own)"
    )
    p.add_argument("--batch", type=int, default=16, help="pairs per search call")
    add_run_options(p)
    p.add_argument("--out", type=Path, required=True, help="calibration directory")
    p.add_argument(
        "--stats",
        type=str,
        default=None,
        help="write this process's timing JSON here ('{rank}' is replaced by the process rank)",
    )


def check_calibrate_args(args: argparse.Namespace, rank: int = 0) -> dict[str, Any]:
    """Every option that needs no task checked (nothing is built or written); returns the
    method's options (``n``, ``k``, ``eps``, ``lam``)."""
    from experiments.calibration import MAX_BATCH, check_out_dir

    check_int("--n", args.n, 1, MAX_N)
    if args.budgets is not None:
        if args.k is not None:
            raise UsageError("--k and --budgets exclude each other", None, "give one of them")
        for k in args.budgets:
            check_int("--budgets", k, 0, MAX_K)
    else:
        check_int("--k", DEFAULT_K if args.k is None else args.k, 1, MAX_K)
    if args.eps is not None:
        check_float("--eps", args.eps, 0.0, 1.0)
    check_positive("--lam", args.lam)
    first, count = args.seeds
    check_int("--seeds COUNT", count, 1, MAX_PAIRS)
    check_seed(first, "--seeds FIRST", count)
    if (args.task is None) == (args.model is None):
        raise UsageError(
            "calibrate needs one of --task and --model",
            None,
            "allowed: --task NAME, or --model SPEC [--reward SPEC ...]",
        )
    if args.task is not None:
        for opt in ("rewards", "eval_reward", "prompt_texts", "prompt_file", "guidance"):
            if getattr(args, opt, None) is not None:
                flag = {
                    "rewards": "--reward",
                    "prompt_texts": "--prompt",
                    "prompt_file": "--prompts",
                }.get(opt, "--" + opt)
                raise UsageError(f"{flag.replace('_', '-')} with --task", None, "use --model")
    if args.model is not None:  # the scheme (and --sampler for it), before anything is built
        from experiments.cli.sample import _check_model

        _check_model(args)
    if args.steps is not None:
        check_int("--steps", args.steps, 1, MAX_STEPS)
    check_int("--batch", args.batch, 1, MAX_BATCH)
    if args.batch * args.n > MAX_ROWS:
        raise UsageError(
            f"--batch {args.batch} with --n {args.n} holds {args.batch * args.n} candidate rows",
            None,
            f"allowed: at most {MAX_ROWS}",
        )
    if args.task is not None:
        spec = TASKS[args.task]
        check_classes(args, args.task, spec.conditional or spec.reward in PROMPTED_REWARDS)
    if args.classes and len(set(args.classes)) < len(args.classes):
        dup = next(c for c in args.classes if args.classes.count(c) > 1)
        raise UsageError(f"--classes lists class {dup} twice", None, "allowed: distinct classes")
    check_out_dir(args.out, "--out")
    if args.stats is not None:
        check_out_file(Path(args.stats.replace("{rank}", str(rank))), "--stats", (".json",))
    check_generator_device(args.generator_device)
    k = None if args.budgets is not None else (DEFAULT_K if args.k is None else args.k)
    eps = DEFAULT_EPS if args.eps is None and args.method == "eps-greedy" else args.eps
    options = {"n": args.n, "k": k, "eps": eps, "lam": args.lam}
    check_method_options(args.method, options, dict(FLAGS))  # zero-order takes no --eps
    return {key: v for key, v in options.items() if v is not None}


def check_classes(args: argparse.Namespace, name: str, uses_prompt: bool) -> None:
    """``--classes`` refused for a task whose trajectories do not depend on a prompt."""
    if args.classes and not uses_prompt:
        raise UsageError(
            f"--classes {' '.join(map(str, args.classes))}: task {name} takes no prompt "
            "(its trajectories do not depend on a class: each would be stored again under "
            "every class)",
            None,
            "allowed: no --classes for this task",
        )


def _build(args: argparse.Namespace) -> tuple[Any, str, Any]:
    """``(task, device, sampler)`` of ``--task`` or of ``--model``/``--reward``/``--prompt``."""
    from experiments.cli.common import apply_run_settings, prepare_run, run_settings
    from experiments.cli.sample import build_sample_task

    if args.task is not None:
        task, device = prepare_run(args, args.task)
        steps = 18 if args.steps is None else args.steps
        if args.sampler == "ddim":
            raise usage("--sampler", "ddim", f"for --task: {', '.join(sorted(SAMPLERS))}")
        return task, device, SAMPLERS[args.sampler or "heun"](steps, sigma_max=task.sigma_max)
    settings = apply_run_settings(args, run_settings(args, args.model, args.rewards))
    task, device = build_sample_task(args, settings)
    # the settings hash tells models and rewards apart by their specs, not only their kinds
    label = " ".join([args.model, *(args.rewards or []), *filter(None, [args.eval_reward])])
    task = dataclasses.replace(task, name=f"{task.name} ({label})")
    check_classes(args, task.name, task.uses_prompt)
    try:
        return task, device, task.make_sampler(args.sampler, args.steps)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--sampler {args.sampler} --steps {args.steps}: {err}") from err


def cmd_calibrate(args: argparse.Namespace) -> int:
    from experiments.calibration import calibrate, preflight
    from experiments.runner import process_shard

    shard = process_shard()
    options = check_calibrate_args(args, shard[0])
    task, device, sampler = _build(args)
    args.device = device
    if task.uses_prompt:
        for c in args.classes or []:
            check_int("--classes", c, 0, task.num_classes - 1)
    classes = (
        args.classes
        if args.classes
        else (list(range(task.num_classes)) if task.uses_prompt else [-1])
    )
    first, count = args.seeds
    if len(classes) * count > MAX_PAIRS:
        raise UsageError(
            f"--seeds {first} {count} over {len(classes)} classes lists "
            f"{len(classes) * count} pairs",
            None,
            f"allowed: at most {MAX_PAIRS}",
        )
    pairs = [(c, s) for c in classes for s in range(first, first + count)]
    runs = (
        [(int(options.pop("k")), args.out)]
        if args.budgets is None
        else [(k, args.out / f"k{k}") for k in sorted(set(args.budgets))]
    )
    extra = {"generator_device": args.generator_device}
    for k, out in runs:  # every run checked before the first one writes
        preflight(task, args.method, sampler, pairs, out, args.batch, k=k, **options, **extra)
    for k, out in runs:
        try:
            info = calibrate(
                task,
                args.method,
                sampler,
                pairs,
                out,
                batch=args.batch,
                device=args.device,
                k=k,
                shard=shard,
                progress=args.progress,
                **options,
                **extra,
            )
        except OSError as err:  # e.g. a full disk: the failed batch was cut back
            raise UsageError(
                f"writing {out} failed ({err}); nothing half-written was kept: free the "
                "space and run the same command again to resume"
            ) from err
        print(json.dumps(info))
    if args.stats is not None:
        stats = Path(args.stats.replace("{rank}", str(info["rank"])))
        stats.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(stats, {**info, "device": device, "cuda_graphs": args.cuda_graphs})
    return 0
