"""Command line: ``adaptive-tts sample | demo | calibrate | fit | bench``.

Methods, tasks, samplers and controller kinds come from their registries
(:mod:`adaptive_tts.registry`, :mod:`adaptive_tts.tasks`, :mod:`controllers.registry`)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from adaptive_tts.registry import METHODS, SAMPLERS
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


def _add_calibrate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="full-budget searches; append traces to DIR (resumable)")
    p.add_argument("--task", choices=sorted(TASKS), required=True)
    p.add_argument("--method", choices=["eps-greedy", "zero-order"], default="eps-greedy")
    p.add_argument("--n", type=int, default=4)
    p.add_argument("--k", type=int, default=20)
    p.add_argument(
        "--budgets",
        type=int,
        nargs="+",
        default=None,
        metavar="K",
        help="budget-varied calibration (for `fit --controller stopping`): one run per K into "
        "OUT/kK (include 0); replaces --k",
    )
    p.add_argument("--eps", type=float, default=0.4)
    p.add_argument("--lam", type=float, default=0.15)
    p.add_argument("--classes", type=int, nargs="*", default=None, help="prompts (default: all)")
    p.add_argument("--seeds", type=int, nargs=2, default=[0, 8], metavar=("FIRST", "COUNT"))
    p.add_argument("--sampler", choices=sorted(SAMPLERS), default="heun")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--device", default="cpu", help="cpu, cuda (cuda:LOCAL_RANK per process)")
    _add_gpu_options(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--stats",
        type=str,
        default=None,
        help="write this process's timing JSON here ('{rank}' is replaced by the process rank)",
    )


def _add_gpu_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--generator-device",
        choices=["cpu", "cuda"],
        default=None,
        help="where per-sample noise is drawn (cpu: bit-reproducible anywhere; cuda: faster)",
    )
    p.add_argument(
        "--cuda-graphs", action="store_true", help="replay the denoiser and reward from CUDA graphs"
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from experiments.calibration import calibrate
    from experiments.runner import prepare_task, process_shard

    task, device = prepare_task(args.task, args.device, args.cuda_graphs)
    args.device = device
    sampler = SAMPLERS[args.sampler](args.steps, sigma_max=task.sigma_max)
    classes = (
        args.classes
        if args.classes
        else (list(range(task.num_classes)) if task.uses_prompt else [-1])
    )
    first, count = args.seeds
    pairs = [(c, s) for c in classes for s in range(first, first + count)]
    if args.budgets is not None and any(k < 0 for k in args.budgets):
        raise SystemExit(f"--budgets must be integers >= 0, got {args.budgets}")
    runs = (
        [(args.k, args.out)]
        if args.budgets is None
        else [(k, args.out / f"k{k}") for k in sorted(set(args.budgets))]
    )
    for k, out in runs:
        info = calibrate(
            task,
            args.method,
            sampler,
            pairs,
            out,
            batch=args.batch,
            device=args.device,
            n=args.n,
            k=k,
            eps=args.eps,
            lam=args.lam,
            generator_device=args.generator_device,
            shard=process_shard(),
        )
        print(json.dumps(info))
    if args.stats is not None:
        stats = Path(args.stats.replace("{rank}", str(info["rank"])))
        stats.parent.mkdir(parents=True, exist_ok=True)
        tmp = stats.with_name(stats.name + ".tmp")
        tmp.write_text(json.dumps({**info, "device": device, "cuda_graphs": args.cuda_graphs}))
        os.replace(tmp, stats)
    return 0


def _add_fit(sub: argparse._SubParsersAction) -> None:
    from controllers.registry import CONTROLLERS

    fitted = sorted(k for k, v in CONTROLLERS.items() if v.fitted)
    p = sub.add_parser("fit", help="fit a controller on calibration traces; write schedule JSON")
    p.add_argument("--controller", choices=fitted, required=True)
    p.add_argument("--traces", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--mapping", choices=["eps", "ceil", "draw", "improve"], default=None)
    p.add_argument("--kernel", choices=["warp", "rbf"], default=None, help="gp (default warp)")
    p.add_argument("--budget", type=float, default=None, help="NFEs per sample (budget)")
    p.add_argument("--k-mean", type=float, default=None, help="gain/budget: target mean K_t")
    p.add_argument(
        "--target",
        type=float,
        default=None,
        help="stopping: share of the full search's gain over plain sampling to hold (0.99)",
    )
    p.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="stopping: traces of the full search (eps-greedy(4,20)) on the same pairs",
    )
    p.add_argument(
        "--option",
        dest="options",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="any other option of the kind's fit (value parsed as YAML)",
    )
    p.add_argument("--plot", type=Path, default=None, help="PNG of the statistics and the fit")


def cmd_fit(args: argparse.Namespace) -> int:
    import yaml

    from adaptive_tts.registry import sampler_from_description
    from controllers.fitting import fit_controller
    from controllers.registry import CONTROLLERS

    traces = _load_calibration(args.traces)
    sampler = sampler_from_description(traces[0]["sampler"])
    opts: dict[str, Any] = {
        k: v
        for k, v in {
            "mapping": args.mapping,
            "kernel": args.kernel,
            "budget": args.budget,
            "k_mean": args.k_mean,
            "target": args.target,
            "reference": None if args.reference is None else _load_calibration(args.reference),
        }.items()
        if v is not None
    }
    for item in args.options:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--option must look like key=value, got {item!r}")
        opts[key] = yaml.safe_load(raw)
    try:
        ctrl = fit_controller(args.controller, traces, sampler=sampler, **opts)
    except TypeError as err:  # an option the kind does not take
        raise SystemExit(f"adaptive-tts fit: {err}") from err
    ctrl.save(args.out)
    plot = CONTROLLERS[args.controller].plot
    if args.plot is not None and plot is not None:
        plot(ctrl, traces, str(args.plot))
    base: Any = getattr(ctrl, "base", ctrl)
    if not hasattr(base, "steps"):  # closed loop: thresholds over sigma, not a step table
        print(json.dumps({"controller": args.controller, "out": str(args.out), **ctrl.summary()}))
        return 0
    print(
        json.dumps(
            {
                "controller": base.kind,
                "out": str(args.out),
                "k": [s["k"] for s in base.steps],
                "eps": [round(s["eps"], 3) for s in base.steps],
            }
        )
    )
    return 0


def _load_calibration(path: Path) -> list[dict[str, Any]]:
    """Traces of a calibration directory, or of its budget-varied runs (``DIR/kK``)."""
    from adaptive_tts.traces import load_traces

    subdirs = sorted(p for p in path.glob("k*") if p.is_dir() and p.name[1:].isdigit())
    if subdirs and not any(path.glob("traces-*.jsonl")):
        return [t for d in subdirs for t in load_traces(d)]
    return load_traces(path)


def _add_bench(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="run an experiment config (see experiments/configs)")
    p.add_argument("config", type=Path)
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--no-wandb", action="store_true")


def cmd_bench(args: argparse.Namespace) -> int:
    from experiments.run import main as run_main

    argv = [str(args.config), "--set", *args.overrides]
    if args.out is not None:
        argv += ["--out", str(args.out)]
    if args.no_wandb:
        argv.append("--no-wandb")
    return run_main(argv)


def _add_demo(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="calibrate, fit controllers, compare on held-out pairs")
    p.add_argument("--task", choices=sorted(TASKS), default=None, help="default: mnist-target")
    p.add_argument("--seeds", type=int, default=None, help="held-out seeds per class (default 1)")
    p.add_argument("--out", type=Path, default=Path("runs/demo"))
    p.add_argument("--device", default="cpu")
    p.add_argument("--wandb", action="store_true", help="also log to W&B (offline by default)")
    p.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")


def cmd_demo(args: argparse.Namespace) -> int:
    from experiments.demo import run_demo
    from experiments.run import table

    result = run_demo(
        args.out,
        task=args.task,
        device=args.device,
        seeds=args.seeds,
        wandb=args.wandb,
        overrides=args.overrides,
    )
    print(table(result["rows"]))
    print(
        f"run directory: {args.out} (results.json, results.csv, reward_vs_nfe.png, "
        "samples.png, schedule_*.json, fit_*.png)"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="adaptive-tts", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    _add_sample(sub)
    _add_demo(sub)
    _add_calibrate(sub)
    _add_fit(sub)
    _add_bench(sub)
    args = parser.parse_args(argv)
    if args.command == "bench":
        return cmd_bench(args)
    if args.command == "calibrate":
        return cmd_calibrate(args)
    if args.command == "fit":
        return cmd_fit(args)
    if args.command == "sample":
        return cmd_sample(args)
    if args.command == "demo":
        return cmd_demo(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
