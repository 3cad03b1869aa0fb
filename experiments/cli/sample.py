"""``adaptive-tts sample``: one search method on one task: a built-in one (``--model gmm|mnist``,
``--task``) or your own model, reward(s) and prompts (``--model sd:DIR --reward clip:DIR
--prompt ...``, see :mod:`experiments.cli.byo`).

Every option is checked before the task is built or anything runs (types, ranges, finiteness,
upper bounds, the seed range, the ``--out`` path); an option the chosen method does not use is
an error naming it, never ignored. The ``--json`` line records the prompts (texts for text
models) and the complete compute ledger (:mod:`experiments.cli.ledger`)."""

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
from adaptive_tts.specs import MODEL_SPECS, parse_spec
from adaptive_tts.tasks import TASKS
from experiments.cli.byo import add_model_reward_options
from experiments.cli.common import (
    RunSettings,
    add_run_options,
    check_int,
    check_out_file,
    run_settings,
    task_run_settings,
)
from experiments.cli.errors import UsageError, usage

SAMPLER_NAMES = {
    "sd": ("ddim", "ancestral", "euler", "heun"),
    "sdxl": ("ddim", "ancestral", "euler", "heun"),
    "sd3": ("ancestral", "euler", "heun"),
    "flux": ("ancestral", "euler", "heun"),
}
"""The samplers of text models (their own schedules); every other model: :data:`SAMPLERS`."""
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
    add_model_reward_options(
        p, default_model=None, model_default_help="the --task's model, else gmm"
    )
    p.add_argument(
        "--task",
        choices=sorted(TASKS),
        default=None,
        help="a registered task of --model gmm|mnist instead of --reward (default: gmm-target "
        "for gmm, mnist-cond for mnist)",
    )
    p.add_argument("--method", choices=sorted(METHODS), default="eps-greedy")
    p.add_argument(
        "--class",
        dest="classes",
        type=int,
        nargs="*",
        default=None,
        help="class / target class / prompt index per sample (cycled); default 0 (text "
        "models: every prompt in turn)",
    )
    p.add_argument(
        "--batch", type=int, default=4, help=f"samples, 1..{MAX_BATCH} (seeds seed..seed+batch-1)"
    )
    p.add_argument("--seed", type=int, default=0, help="first seed, in [0, 2**32 - 1]")
    p.add_argument(
        "--sampler",
        choices=sorted({*SAMPLERS, "ddim"}),
        default=None,
        help="default: the model's own (heun for gmm/mnist/edm, ddim for sd/sdxl, the flow "
        "SDE 'ancestral' for sd3/flux)",
    )
    p.add_argument(
        "--steps", type=int, default=None, help=f"1..{MAX_STEPS} (default: the model's own)"
    )
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
    p.add_argument(
        "--flops",
        action="store_true",
        help="estimate FLOPs of every network and reward call in the compute ledger",
    )
    p.add_argument(
        "--budget-flops",
        dest="budget_flops",
        default=None,
        metavar="F|Mx",
        help="with --schedule of a stopping or budget controller: its budget in FLOPs per "
        "sample, the reward's included (F FLOPs, or M times plain sampling's); priced on this "
        "model and reward once",
    )
    add_run_options(p)
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


def _task_model(task: str | None) -> str | None:
    """The model a registered task runs on (``mnist`` for ``mnist-target``); ``None`` for none."""
    if task is None:
        return None
    spec = TASKS[task]
    return spec.model if hasattr(spec, "model") else None


def _check_model(args: argparse.Namespace) -> str:
    """The scheme of ``--model`` (and a ``--task`` that fits it, ``--sampler``); no
    ``--model``: the model of ``--task`` (``mnist`` for ``mnist-target``), else ``gmm``."""
    task_model = _task_model(args.task)
    if args.model is None:
        args.model = task_model or "gmm"
    try:
        scheme, _ = parse_spec(args.model)
    except ValueError as err:
        raise usage("--model", args.model, "SCHEME or SCHEME:DIR") from err
    if scheme not in MODEL_SPECS:
        allowed = " | ".join(s if s in ("gmm", "mnist") else f"{s}:DIR" for s in MODEL_SPECS)
        raise usage("--model", args.model, allowed)
    if args.task is not None:
        if task_model != args.model:
            fits = sorted(t for t in TASKS if _task_model(t) == args.model)
            raise UsageError(
                f"--task {args.task} does not run on --model {args.model}",
                None,
                f"allowed: {', '.join(fits) or 'none'}",
            )
        for opt, val in (("--reward", args.rewards), ("--eval-reward", args.eval_reward)):
            if val:
                raise UsageError(f"{opt} with --task {args.task}", None, "allowed: one of them")
    names = SAMPLER_NAMES.get(scheme, tuple(SAMPLERS))
    if args.sampler is not None and args.sampler not in names:
        raise usage("--sampler", args.sampler, f"for --model {scheme}: {', '.join(names)}")
    return scheme


def check_budget_flops(text: str) -> None:
    """``--budget-flops``: a positive finite number of FLOPs or ``Mx`` with ``M > 0``."""
    import math

    raw = text.strip().lower()
    try:
        val = float(raw[:-1] if raw.endswith("x") else raw)
    except ValueError:
        val = math.nan
    if not (math.isfinite(val) and val > 0):
        raise usage("--budget-flops", text, "a number of FLOPs > 0, or Mx with M > 0 (e.g. 4x)")


def check_sample_args(args: argparse.Namespace) -> tuple[RunSettings, dict[str, Any]]:
    """Every option checked before any work: the run settings and the method's options."""
    _check_model(args)
    check_int("--batch", args.batch, 1, MAX_BATCH)
    if args.steps is not None:
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
    if args.budget_flops is not None:
        if args.schedule is None:
            raise UsageError(
                "--budget-flops sets a controller's budget", None, "give --schedule FILE"
            )
        check_budget_flops(args.budget_flops)
    rows = args.batch * _rows_per_sample(args.method, kw)
    if rows > MAX_ROWS:
        raise UsageError(
            f"--batch {args.batch} with these options holds {rows} candidate rows",
            None,
            f"allowed: at most {MAX_ROWS} (lower --batch or the candidates per sample)",
        )
    if args.task is not None:
        settings = task_run_settings(args, args.task)
    else:
        settings = run_settings(args, args.model, args.rewards)
    if args.out is not None:
        check_out_file(args.out, "--out", IMAGE_SUFFIXES)
    return settings, kw


def build_sample_task(args: argparse.Namespace, settings: RunSettings) -> tuple[Any, str]:
    """The task of ``--task`` or of ``--model``/``--reward``/``--prompt``..., on its device,
    in CUDA graphs where ``settings`` say so: ``(task, device)``."""
    from experiments.cli.byo import resolve_task
    from experiments.cli.common import graph, place, prepare_run, quiet_loaders

    if args.task is not None:
        return prepare_run(args, args.task)
    quiet_loaders(settings)
    device = place(settings.device)
    return graph(resolve_task(args, device), settings), device


def _sampler(task: Any, args: argparse.Namespace) -> Any:
    try:
        return task.make_sampler(args.sampler, args.steps)
    except (ValueError, TypeError) as err:
        raise UsageError(f"--sampler {args.sampler} --steps {args.steps}: {err}") from err


def _flops_budget(
    args: argparse.Namespace, task: Any, sampler: Any, options: dict[str, Any]
) -> Any:
    """Price the task (:func:`~adaptive_tts.compute.measure_prices`) and set the loaded
    controller's budget to ``--budget-flops``; returns the prices."""
    from adaptive_tts.compute import measure_prices
    from controllers.budget import with_flops_budget

    try:
        prices = measure_prices(task, sampler)
        options["controller"] = with_flops_budget(
            options["controller"], args.budget_flops, prices, sampler
        )
    except ValueError as err:
        raise UsageError(f"--budget-flops {args.budget_flops}: {err}") from err
    return prices


def cmd_sample(args: argparse.Namespace) -> int:
    from experiments.cli.ledger import metered
    from experiments.runner import run_method

    settings, options = check_sample_args(args)
    task, args.device = build_sample_task(args, settings)
    if args.out is not None and len(task.sample_shape) != 3:
        raise UsageError(
            f"--out writes an image grid, but task {task.name} has samples of shape "
            f"{tuple(task.sample_shape)}",
            None,
            "allowed: an image model (mnist, edm:DIR, sd:DIR, sdxl:DIR, sd3:DIR, flux:DIR)",
        )
    sampler = _sampler(task, args)
    default = None if task.prompt_texts or not task.uses_prompt else [0]  # text: all prompts
    classes = args.classes or default
    prompts = task.prompts(classes, args.batch)
    seeds = list(range(args.seed, args.seed + args.batch))
    if args.schedule is not None:
        from controllers.io import load_controller

        options["controller"] = load_controller(args.schedule, sampler=sampler, model=task.model)
    priced = _flops_budget(args, task, sampler, options) if args.budget_flops else None
    flops = args.flops or priced is not None
    with metered(task, sync=args.device.startswith("cuda"), flops=flops) as (timed, ledger_of):
        result = run_method(
            timed,
            args.method,
            sampler,
            seeds,
            prompts,
            device=args.device,
            generator_device=settings.generator_device,
            **options,
        )
    ev = task.evaluate(result.x0, prompts)
    row = result.summary()
    row.update(
        task=task.name,
        model=task.model,
        sampler=args.sampler or sampler.name,
        steps=sampler.num_steps,
        batch=args.batch,
        seed=args.seed,
        prompts=prompts.tolist() if task.uses_prompt else None,
        prompt_texts=task.prompt_text(prompts),
        rewards=[round(float(r), 6) for r in result.reward],
        nfe_by_purpose={k: sum(v) / len(v) for k, v in result.nfe_by_purpose.items()},
        device=args.device,
        generator_device=settings.generator_device or "cpu",
        cuda_graphs=settings.cuda_graphs,
    )
    for key, val in ev.items():
        if val.dtype.is_floating_point:
            row[key] = float(val.float().mean())
    row["compute"] = ledger_of(result)
    if priced is not None:
        row["budget_flops"] = options["controller"].budget
        row["prices"] = priced.to_dict()
    if args.out is not None:
        from adaptive_tts.viz import save_grid

        save_grid(
            task.to_image(result.x0), args.out, labels=[f"{float(r):.2f}" for r in result.reward]
        )
        row["grid"] = str(args.out)
    if not (args.quiet and args.json):
        print(
            f"{args.method} on {task.name}: reward {row['reward']:.4f}  NFEs/sample "
            f"{row['nfe']:.0f}  seconds {row['seconds']:.2f}",
            file=sys.stderr if args.json else sys.stdout,
        )
    if args.json:
        print(json.dumps(row))
    return 0
