"""The frontier evaluation with a pluggable arm list: fixed, baseline and learned arms, plus any
adaptive arms that builders registered in :data:`ADAPTIVE_ARM_BUILDERS` add.

    python -m experiments.eval_frontier --task mnist-target [--task ...] --pairs 512 \
        --cal-pairs 128 --budgets 2 4 8 16 --device cuda --generator-device cuda --batch 256 \
        --out runs/eval_frontier

Per task:

* Pairs are ``(prompt, seed)`` with **each pair its own noise**: pair ``j`` of the held-out set
  has seed ``2,000,000 + j``, of the calibration set ``1,000,000 + j`` (the sets are disjoint,
  checked); prompts cycle over the task's classes (``-1`` where the task has none). Each pair's
  cluster id is its noise seed, and every interval is a cluster bootstrap over pairs
  (:func:`adaptive_tts.report.paired_diff` and friends; the same numbers as
  :mod:`experiments.frontier_stats`, which writes the outputs).
* Calibration: full-budget eps-greedy(4,20) on the calibration pairs through
  :func:`experiments.calibration.calibrate` into ``--cal-dir/<task>`` (resumable), read back
  with ``load_traces`` (only this run's pairs). Its counted NFEs (the traces' ``nfe``) are each
  learned arm's calibration cost.
* Arms (:class:`Arm`): naive; best-of-N (N in 2, 4, 8, 16); eps-greedy(4,20) (the reference);
  fixed-K eps-greedy (N in 1, 2, 4; K in 1, 2, 3, 4, 8); the sigma window; the learned
  Binomial-ceil, GP-warp and gain(k_mean=1.5) schedules and the budget controller (on gain) at
  each matched budget; and whatever each builder in :data:`ADAPTIVE_ARM_BUILDERS` returns.
* Per arm and pair: final reward, counted NFEs, reward calls and the independent evaluation
  classifier's verdict (its hit on target tasks, else its confidence); seconds per arm.
* Summaries (mean reward and evaluation rate with clustered intervals, NFEs, paired ratios to
  eps-greedy(4,20)), matched budgets ``B = m * naive's NFEs`` (every learned/adaptive arm with
  mean NFEs <= B against the best fixed or baseline arm within B, paired; verdict better /
  worse / tie), calibration cost and break-even samples. An arm with a ``budget`` is checked
  against it (``budget_check`` in the JSON; a violation is printed).
* Outputs in ``--out``: ``frontier_<task>.json``, ``.csv``, ``.png`` (written atomically by
  :func:`experiments.frontier_stats.write_outputs`) and a printed table.

``experiments.frontier`` is the full evaluation whose results are committed under
``experiments/results/frontier`` (with its stopping-controller arms built in); this script's
default ``--out`` is elsewhere so that it never overwrites them.

Adding an adaptive arm::

    from experiments.eval_frontier import ADAPTIVE_ARM_BUILDERS, Arm

    def my_arms(task, sampler, cal_pairs, budgets_nfe, ctx):
        ctrl = fit_my_controller(ctx.traces, sampler)           # calibration traces
        arms = [Arm("mine", "adaptive", "eps-greedy", {"controller": ctrl},
                    calibration_nfe=ctx.calibration_nfe)]
        for b in budgets_nfe:                                    # budget-specific variants
            arms.append(Arm(f"mine {b:.0f}", "adaptive", "eps-greedy",
                            {"controller": ctrl.with_budget(b)}, budget=b))
        return arms

    ADAPTIVE_ARM_BUILDERS.append(my_arms)
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch

from adaptive_tts.control import FixedController, SigmaWindowController
from adaptive_tts.report import format_table
from adaptive_tts.sampling import Sampler, make_sampler
from adaptive_tts.tasks import Task
from controllers.budget import BudgetController
from controllers.registry import make_controller
from experiments.calibration import calibrate, load_traces
from experiments.frontier_stats import summarise, write_outputs
from experiments.pairs import Batch, Pair, run_pairs
from experiments.runner import prepare_task

Family = Literal["baseline", "fixed", "learned", "adaptive", "reference"]
FAMILIES = ("baseline", "fixed", "learned", "adaptive", "reference")
REFERENCE = "eps-greedy(4,20)"
CAL = {"n": 4, "k": 20, "eps": 0.4, "lam": 0.15}
CAL_BASE, HELDOUT_BASE = 1_000_000, 2_000_000


@dataclass
class Arm:
    """One arm of the evaluation.

    Attributes:
        label: unique name in the tables.
        family: ``baseline`` / ``fixed`` (the frontier to beat at a matched budget),
            ``learned`` / ``adaptive`` (compared against it), ``reference`` (eps-greedy(4,20)).
        method: a registered search method (``naive``, ``best-of-n``, ``eps-greedy`` ...).
        options: its options for :func:`~experiments.runner.run_method` (``controller=``...).
        budget: the NFEs per sample this arm promises not to exceed, or ``None``.
        budget_mode: ``"sample"``: every sample within ``budget``; ``"batch"``: each batch's
            mean within ``budget`` (a per-batch pool such as :class:`BudgetController`'s).
        calibration_nfe: counted NFEs spent calibrating it (learned/adaptive arms).
    """

    label: str
    family: Family
    method: str
    options: dict[str, Any] = field(default_factory=dict)
    budget: float | None = None
    budget_mode: Literal["sample", "batch"] = "sample"
    calibration_nfe: float | None = None

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.budget_mode not in ("sample", "batch"):
            raise ValueError(f"budget_mode must be 'sample' or 'batch', got {self.budget_mode!r}")


@dataclass
class Context:
    """What a builder may use besides the task, sampler, calibration pairs and budgets."""

    args: argparse.Namespace
    naive_nfe: float  # counted NFEs of one plain trajectory
    traces: list[dict[str, Any]]  # full-budget eps-greedy(4,20) calibration traces
    calibration_nfe: float  # their counted NFEs in total
    cal_dir: Path
    run: Callable[..., dict[str, Any]]  # run(arm, pairs) -> per-pair records (see run_arm)


ArmBuilder = Callable[[Task, Sampler, list[Pair], list[float], Context], list[Arm]]
ADAPTIVE_ARM_BUILDERS: list[ArmBuilder] = []
"""Builders of adaptive arms, called once per task after calibration (append to add arms)."""


def make_pairs(task: Task, count: int, base: int) -> list[Pair]:
    """``count`` (prompt, seed) pairs; pair ``j`` has its own seed ``base + j`` and prompt
    ``j mod num_classes`` (``-1`` where the task has no prompt)."""
    return [(j % task.num_classes if task.uses_prompt else -1, base + j) for j in range(count)]


def fixed_arms(quick: bool = False) -> list[Arm]:
    """Naive, best-of-N, the reference, fixed-K eps-greedy and the sigma window."""
    arms = [
        Arm("naive", "baseline", "naive"),
        Arm(REFERENCE, "reference", "eps-greedy", dict(CAL)),
        Arm("sigma window", "fixed", "eps-greedy", {"controller": SigmaWindowController()}),
    ]
    arms += [Arm(f"best-of-{n}", "baseline", "best-of-n", {"n": n}) for n in (2, 4, 8, 16)]
    for n in (1, 2, 4):
        for k in (1, 2) if quick else (1, 2, 3, 4, 8):
            ctrl = FixedController(n=n, k=k)
            arms.append(Arm(f"fixed N={n} K={k}", "fixed", "eps-greedy", {"controller": ctrl}))
    return arms


def learned_arms(
    sampler: Sampler,
    traces: list[dict[str, Any]],
    cal_nfe: float,
    budgets: list[float],
    quick: bool = False,
) -> list[Arm]:
    """The old open-loop schedules fitted on the full-budget calibration traces, and the budget
    controller on the gain schedule at every matched budget. ``quick``: no GP (its BoTorch fit
    takes 7-20 s on a CPU) and no bootstrap bands for the Binomial fit."""
    gain = make_controller("gain", traces, sampler, k_mean=1.5)
    ctrls = {
        "binomial-ceil": make_controller(
            "binomial", traces, sampler, mapping="ceil", **({"bootstrap": 0} if quick else {})
        ),
        "gain(k_mean=1.5)": gain,
    }
    if not quick:
        ctrls["gp-warp"] = make_controller("gp", traces, sampler, kernel="warp")
    arms = [
        Arm(label, "learned", "eps-greedy", {"controller": c}, calibration_nfe=cal_nfe)
        for label, c in ctrls.items()
    ]
    for b in budgets:
        if b >= sum(sampler.plain_cost()):
            arms.append(
                Arm(
                    f"budget(gain, {b:g})",
                    "learned",
                    "eps-greedy",
                    {"controller": BudgetController(gain, b, sampler)},
                    budget=b,
                    budget_mode="batch",
                    calibration_nfe=cal_nfe,
                )
            )
    return arms


def run_arm(
    task: Task, sampler: Sampler, arm: Arm, pairs: list[Pair], args: Any, bar: Any = None
) -> dict[str, Any]:
    """Per-pair records of ``arm`` on ``pairs``: ``reward``, ``eval``, ``nfe``,
    ``reward_calls`` (lists in pair order), ``seconds`` and ``budget_check``."""
    calls: list[torch.Tensor] = []
    batch_mean: list[float] = []

    def on_batch(b: Batch) -> None:
        calls.append(b.result.reward_calls.detach().cpu().double())
        batch_mean.append(float(b.result.nfe.double().mean()))
        if bar is not None:
            bar.update(len(b.pairs))

    res = run_pairs(
        task,
        arm.method,
        sampler,
        pairs,
        batch=args.batch,
        device=args.device,
        generator_device=args.generator_device,
        on_batch=on_batch,
        **arm.options,
    )
    assert res.eval_score is not None
    nfe = res.nfe.double()
    rec: dict[str, Any] = {
        "reward": res.reward.double().tolist(),
        "eval": res.eval_score.double().tolist(),
        "nfe": nfe.tolist(),
        "reward_calls": torch.cat(calls).tolist(),
        "seconds": res.seconds,
    }
    if arm.budget is not None:
        worst = float(nfe.max()) if arm.budget_mode == "sample" else max(batch_mean)
        rec["budget_check"] = {
            "budget": arm.budget,
            "mode": arm.budget_mode,
            "worst": worst,
            "ok": worst <= arm.budget + 1e-9,
        }
    return rec


def calibration(
    task: Task, sampler: Sampler, pairs: list[Pair], args: Any
) -> tuple[list[dict[str, Any]], float, Path]:
    """Full-budget eps-greedy(4,20) traces of ``pairs`` (run or resumed) and their NFEs."""
    cal_dir = Path(args.cal_dir) / task.name
    options: dict[str, Any] = {**CAL, "generator_device": args.generator_device}
    calibrate(
        task,
        "eps-greedy",
        sampler,
        pairs,
        cal_dir,
        batch=args.batch,
        device=args.device,
        progress=not args.no_progress,
        **options,
    )
    want = {(int(p), int(s)) for p, s in pairs}
    traces = [t for t in load_traces(cal_dir) if (int(t["prompt"]), int(t["seed"])) in want]
    if len(traces) != len(pairs):
        raise RuntimeError(f"{cal_dir} holds {len(traces)} of the {len(pairs)} calibration pairs")
    return traces, float(sum(t["nfe"]["total"] for t in traces)), cal_dir


def build_arms(
    task: Task, sampler: Sampler, cal_pairs: list[Pair], budgets: list[float], ctx: Context
) -> list[Arm]:
    """Fixed and baseline arms, learned arms, then every registered builder's arms."""
    arms = fixed_arms(ctx.args.quick)
    arms += learned_arms(sampler, ctx.traces, ctx.calibration_nfe, budgets, ctx.args.quick)
    for builder in ADAPTIVE_ARM_BUILDERS:
        arms += builder(task, sampler, cal_pairs, budgets, ctx)
    seen: set[str] = set()
    for arm in arms:
        if arm.label in seen:
            raise ValueError(f"two arms are labelled {arm.label!r}")
        seen.add(arm.label)
    return arms


def evaluate_task(name: str, args: Any) -> dict[str, Any]:
    """Calibrate, build and run every arm on the held-out pairs, summarise and write outputs."""
    from tqdm.auto import tqdm

    task, device = prepare_task(name, args.device, args.cuda_graphs)
    args.device = device
    sampler = make_sampler("heun", args.steps, sigma_max=task.sigma_max)
    cal_pairs = make_pairs(task, args.cal_pairs, CAL_BASE)
    eval_pairs = make_pairs(task, args.pairs, HELDOUT_BASE)
    cal_seeds, eval_seeds = {s for _, s in cal_pairs}, {s for _, s in eval_pairs}
    assert len(eval_seeds) == len(eval_pairs) and len(cal_seeds) == len(cal_pairs)
    assert not cal_seeds & eval_seeds, "calibration and held-out seeds overlap"
    naive_nfe = float(sum(sampler.plain_cost()))
    budgets = [m * naive_nfe for m in args.budgets]
    t0 = time.perf_counter()
    traces, cal_nfe, cal_dir = calibration(task, sampler, cal_pairs, args)
    t_cal = time.perf_counter() - t0

    def run(arm: Arm, pairs: list[Pair]) -> dict[str, Any]:
        return run_arm(task, sampler, arm, pairs, args)

    ctx = Context(args, naive_nfe, traces, cal_nfe, cal_dir, run)
    arms = build_arms(task, sampler, cal_pairs, budgets, ctx)
    records: dict[str, dict[str, Any]] = {}
    bar = tqdm(
        total=len(arms) * len(eval_pairs), desc=f"arms {name}", unit="pair",
        disable=args.no_progress,
    )  # fmt: skip
    for arm in arms:
        bar.set_postfix_str(arm.label)
        rec = run_arm(task, sampler, arm, eval_pairs, args, bar)
        check = rec.get("budget_check")
        if check is not None and not check["ok"]:
            tqdm.write(f"{name} {arm.label}: BUDGET EXCEEDED {check}")
        records[arm.label] = {
            **rec,
            "family": arm.family,
            "method": arm.method,
            "options": _describe(arm.options),
            "budget": arm.budget,
            "budget_mode": arm.budget_mode,
            "calibration_nfe": arm.calibration_nfe,
        }
    bar.close()
    clusters = [s for _, s in eval_pairs]  # the noise seed: every pair its own cluster here
    result = summarise(records, clusters, budgets, list(args.budgets), reference=REFERENCE)
    result |= {
        "task": name,
        "script": "experiments.eval_frontier",
        "sampler": sampler.describe(),
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "calibration": {
            "pairs": len(cal_pairs),
            "seed_range": [CAL_BASE, CAL_BASE + len(cal_pairs)],
            "full": CAL,
            "nfe": cal_nfe,
            "seconds": t_cal,
            "dir": str(cal_dir),
        },
        "heldout_pairs": len(eval_pairs),
        "heldout_seed_range": [HELDOUT_BASE, HELDOUT_BASE + len(eval_pairs)],
        "pairs": eval_pairs,
        "clusters": clusters,
        "naive_nfe": naive_nfe,
        "budgets_nfe": budgets,
        "budget_multiples": list(args.budgets),
        "arm_specs": {
            k: {f: v[f] for f in ("family", "method", "options", "budget", "budget_mode")}
            for k, v in records.items()
        },
        "budget_checks": {k: v["budget_check"] for k, v in records.items() if "budget_check" in v},
        "seconds": {k: v["seconds"] for k, v in records.items()},
    }
    write_outputs(result, records, Path(args.out), name)
    return result


def _describe(options: dict[str, Any]) -> dict[str, Any]:
    """JSON-ready arm options (a controller by its ``to_dict`` type or class name)."""
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, (int, float, str, bool)) or v is None:
            out[k] = v
        else:
            d = v.to_dict() if hasattr(v, "to_dict") else {}
            out[k] = {"class": type(v).__name__, **({"type": d["type"]} if "type" in d else {})}
    return out


def short_table(result: dict[str, Any]) -> str:
    """The matched-budget comparisons, one line per (budget, arm)."""
    rows = [
        {
            "budget": f"{x['budget_multiple']:g}x ({x['budget_nfe']:.0f})",
            "arm": x["arm"],
            "NFEs": f"{x['nfe']:.1f}",
            "best fixed": f"{x['best_fixed']} ({x['best_fixed_nfe']:.0f})",
            "reward diff": f"{x['reward_diff']['value']:+.4f} {x['reward_diff']['verdict']}",
            "eval diff": f"{x['eval_diff']['value']:+.4f} {x['eval_diff']['verdict']}",
        }
        for x in result["matched"]
    ]
    return format_table(rows, list(rows[0])) if rows else "(no arm within a matched budget)"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--task", action="append", default=None, help="repeatable (mnist-target)")
    ap.add_argument("--pairs", type=int, default=None, help="held-out pairs (512; quick 8)")
    ap.add_argument("--cal-pairs", type=int, default=None, help="calibration pairs (128; quick 8)")
    ap.add_argument("--budgets", type=float, nargs="+", default=[2, 4, 8, 16],
                    help="matched budgets as multiples of naive's counted NFEs")  # fmt: skip
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--generator-device", default=None)
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument("--out", type=Path, default=Path("runs/eval_frontier"))
    ap.add_argument("--cal-dir", type=Path, default=None, help="default OUT/calibration")
    ap.add_argument("--quick", action="store_true", help="8 pairs, K in 1, 2, no GP arm: CPU tests")
    ap.add_argument("--no-progress", action="store_true")
    args = ap.parse_args(argv)
    if args.pairs is None:
        args.pairs = 8 if args.quick else 512
    if args.cal_pairs is None:
        args.cal_pairs = 8 if args.quick else 128
    if args.pairs < 1 or args.cal_pairs < 1:
        ap.error("--pairs and --cal-pairs must be >= 1")
    if args.cal_dir is None:
        args.cal_dir = args.out / "calibration"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = args.device
    for name in args.task or ["mnist-target"]:
        args.device = device
        res = evaluate_task(name, args)
        print(f"\n== {name}: {res['heldout_pairs']} held-out pairs, each its own noise ==")
        print(res["table"])
        print()
        print(short_table(res))
        bad = [k for k, v in res["budget_checks"].items() if not v["ok"]]
        if bad:
            print(f"budget exceeded by: {', '.join(bad)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
