"""``adaptive-tts calibrate`` and ``adaptive-tts fit``."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from adaptive_tts.registry import SAMPLERS
from adaptive_tts.tasks import TASKS
from experiments.cli.common import add_run_options


def add_calibrate(sub: argparse._SubParsersAction) -> None:
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
    add_run_options(p)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--stats",
        type=str,
        default=None,
        help="write this process's timing JSON here ('{rank}' is replaced by the process rank)",
    )


def cmd_calibrate(args: argparse.Namespace) -> int:
    from experiments.calibration import calibrate
    from experiments.cli.common import prepare_run
    from experiments.runner import process_shard

    task, device = prepare_run(args, args.task)
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
            progress=args.progress,
        )
        print(json.dumps(info))
    if args.stats is not None:
        stats = Path(args.stats.replace("{rank}", str(info["rank"])))
        stats.parent.mkdir(parents=True, exist_ok=True)
        tmp = stats.with_name(stats.name + ".tmp")
        tmp.write_text(json.dumps({**info, "device": device, "cuda_graphs": args.cuda_graphs}))
        os.replace(tmp, stats)
    return 0


def add_fit(sub: argparse._SubParsersAction) -> None:
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
