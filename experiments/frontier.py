"""One evaluation of every controller against every fixed schedule at matched counted NFEs.

    python -m experiments.frontier --task mnist-target --device cuda --generator-device cuda \
        --cuda-graphs --pairs 512 --cal-pairs 256 --out experiments/results/frontier

Per task: calibration pairs and held-out pairs, **each pair its own noise seed** (calibration
seeds from 1,000,000, held-out from 2,000,000; prompts cycle over the classes). Calibration:
eps-greedy(4,20) (the old controllers' full-budget traces and the success level's reference)
and budget-varied fresh-draw runs (K in 0, 1, 2, 4, 8; N = 2) for the stopping controller.
Arms: naive, best-of-N, beam search (N, W), fixed-K eps-greedy (N in 1, 2, 4; K in 1, 2, 3,
4, 8; eps 0.4, plus fresh-draw N in 1, 2 with K in 1, 2, 4), the sigma window, eps-greedy(4,20),
the Gaussian move ablation, the old learned controllers (Binomial-ceil, GP-warp, gain, budget)
and the stopping controller (unbudgeted, and with a hard per-batch budget at each matched
budget). Intervals are
cluster bootstraps over pairs (a cluster = a noise seed) and paired against eps-greedy(4,20)
and against the best fixed arm at each budget (:mod:`experiments.frontier_stats`).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from adaptive_tts.control import FixedController, SigmaWindowController
from adaptive_tts.sampling import make_sampler
from adaptive_tts.types import Knobs, StepInfo
from controllers.budget import BudgetController
from controllers.closed_loop import fit_stopping
from controllers.registry import make_controller
from experiments.frontier_stats import load_records, summarise, write_outputs
from experiments.pairs import run_pairs
from experiments.runner import prepare_task

CAL = {"n": 4, "k": 20, "eps": 0.4, "lam": 0.15}


class GaussianMove:
    """A fixed controller whose neighbours use the Gaussian-preserving move (the ablation)."""

    def __init__(self, ctrl: FixedController) -> None:
        self.ctrl = ctrl

    def decide(self, step: StepInfo) -> Knobs:
        knobs = self.ctrl.decide(step)
        knobs.move = "gaussian"
        return knobs


def hard_budget(nfe: float) -> dict[str, Any]:
    """Stopping-controller options for a hard per-batch budget of ``nfe`` per sample."""
    return {"budget": nfe, "budget_mode": "batch", "spread": "greedy"}


def make_pairs(task: Any, count: int, base: int) -> list[tuple[int, int]]:
    """``count`` (prompt, seed) pairs, each its own seed ``base + j``."""
    return [(j % task.num_classes if task.uses_prompt else -1, base + j) for j in range(count)]


def run_arm(
    task: Any, sampler: Any, pairs: list[tuple[int, int]], args: Any, method: str, **options: Any
) -> dict[str, Any]:
    """Per-pair records of one arm (reward, evaluation, counted NFEs, reward calls)."""
    calls: list[torch.Tensor] = []
    traces: list[dict[str, Any]] = []
    res = run_pairs(
        task,
        method,
        sampler,
        pairs,
        batch=args.batch,
        device=args.device,
        generator_device=args.generator_device,
        on_batch=lambda b: (
            calls.append(b.result.reward_calls.cpu()),
            traces.extend(b.result.traces),
        ),
        **options,
    )
    assert res.eval_score is not None
    return {
        "reward": res.reward.double().tolist(),
        "eval": res.eval_score.double().tolist(),
        "nfe": res.nfe.double().tolist(),
        "reward_calls": torch.cat(calls).double().tolist(),
        "seconds": res.seconds,
        "traces": traces,
    }


def calibrate(task: Any, sampler: Any, pairs: list[tuple[int, int]], args: Any) -> dict[str, Any]:
    """Full-budget and budget-varied calibration traces with their counted NFEs."""
    full = run_arm(task, sampler, pairs, args, "eps-greedy", **CAL)
    varied: list[dict[str, Any]] = []
    nfe_varied = 0.0
    for k in args.cal_k:
        rec = run_arm(
            task, sampler, pairs, args, "eps-greedy", controller=FixedController(n=2, k=k, eps=1.0)
        )
        varied += rec["traces"]
        nfe_varied += sum(rec["nfe"])
    return {
        "full": full["traces"],
        "nfe_full": sum(full["nfe"]),
        "varied": varied,
        "nfe_varied": nfe_varied,
    }


def arms(
    task: Any,
    sampler: Any,
    cal: dict[str, Any],
    cal_pairs: list[tuple[int, int]],
    args: Any,
    naive_nfe: float,
) -> list[dict[str, Any]]:
    """Every arm: label, family, method, options, calibration NFEs."""
    out: list[dict[str, Any]] = [
        {"label": "naive", "family": "baseline", "method": "naive", "options": {}},
        {
            "label": "eps-greedy(4,20)",
            "family": "reference",
            "method": "eps-greedy",
            "options": dict(CAL),
        },
        {
            "label": "eps-greedy(4,20) gaussian move",
            "family": "ablation",
            "method": "eps-greedy",
            "options": {"controller": GaussianMove(FixedController(**CAL))},
        },  # type: ignore[arg-type]
        {
            "label": "sigma window",
            "family": "fixed",
            "method": "eps-greedy",
            "options": {"controller": SigmaWindowController()},
        },
    ]
    for n, w in ((2, 1), (4, 1), (2, 2), (4, 2), (8, 2), (4, 4)):
        out.append(
            {
                "label": f"beam({n},{w})",
                "family": "baseline",
                "method": "beam",
                "options": {"n": n, "width": w},
            }
        )
    for n in (2, 4, 8, 16):
        out.append(
            {
                "label": f"best-of-{n}",
                "family": "baseline",
                "method": "best-of-n",
                "options": {"n": n},
            }
        )
    for n in (1, 2, 4):
        for k in (1, 2, 3, 4, 8):
            out.append(
                {
                    "label": f"fixed N={n} K={k}",
                    "family": "fixed",
                    "method": "eps-greedy",
                    "options": {"controller": FixedController(n=n, k=k)},
                }
            )
    for n in (1, 2):
        for k in (1, 2, 4):
            out.append(
                {
                    "label": f"fixed fresh N={n} K={k}",
                    "family": "fixed",
                    "method": "eps-greedy",
                    "options": {"controller": FixedController(n=n, k=k, eps=1.0)},
                }
            )
    out.append(
        {
            "label": "fixed N=4 K=4 gaussian move",
            "family": "ablation",
            "method": "eps-greedy",
            "options": {"controller": GaussianMove(FixedController(n=4, k=4))},
        }
    )
    # the adaptive peers at each matched budget; their reward temperature is 1 / the spread of
    # the calibration's final rewards, their verifier threshold the median full-search reward
    finals = np.array([t["final_reward"] for t in cal["full"] + cal["varied"]])
    lam = float(1.0 / max(finals.std(), 1e-6))
    level = float(np.median([t["final_reward"] for t in cal["full"]]))
    for m in args.budgets:
        b = int(m * naive_nfe)
        peers = [
            ("rollover", {"budget": b, "n": 4}),
            ("threshold", {"budget": b, "threshold": level, "n": 4}),
            ("fk", {"k": max(1, int(m)), "lam": lam, "potential": "max"}),
            ("dts", {"budget": b, "lam": lam}),
        ]
        for method, opts in peers:
            out.append({"label": f"{method} {m:g}x", "family": "peer", "method": method,
                        "options": opts, "budget": b})  # fmt: skip
    old = {
        "binomial-ceil": make_controller("binomial", cal["full"], sampler, mapping="ceil"),
        "gp-warp": make_controller("gp", cal["full"], sampler, kernel="warp"),
        "gain(k_mean=1.5)": make_controller("gain", cal["full"], sampler, k_mean=1.5),
    }
    old["budget(gain, 140)"] = BudgetController(old["gain(k_mean=1.5)"], 140.0, sampler)
    for label, ctrl in old.items():
        out.append(
            {
                "label": label,
                "family": "learned",
                "method": "eps-greedy",
                "options": {"controller": ctrl},
                "calibration_nfe": cal["nfe_full"],
            }
        )
    cal_nfe = cal["nfe_varied"] + cal["nfe_full"]  # the reference sets the success level
    fits: dict[tuple[str, float], Any] = {}
    skipped: list[dict[str, Any]] = cal.setdefault("skipped", [])

    def stopping(model: str, target: float, **opts: Any) -> Any:
        """The fitted controller, or ``None`` where the fit is impossible (recorded)."""
        if (model, target) not in fits:
            try:
                fits[(model, target)] = fit_stopping(
                    cal["varied"], sampler, target, model, reference=cal["full"]
                )
            except ValueError as err:  # e.g. no calibration run reaches the success level
                fits[(model, target)] = None
                skipped.append({"model": model, "target": target, "reason": str(err)})
        base = fits[(model, target)]
        if base is None:
            return None
        return type(base)(base.model, sampler=sampler, meta=base.meta, **opts)

    closed = [
        # low targets: on continuous rewards (brightness, compress) cheap calibration runs rarely
        # reach q at t >= 0.99, so those fits are refused; a lower bar keeps outcomes unsaturated
        ("stopping t=0.5 c=0.9", "logistic", 0.5, {"confidence": 0.9}),
        ("stopping t=0.7 c=0.9", "logistic", 0.7, {"confidence": 0.9}),
        ("stopping t=0.9 c=0.9", "logistic", 0.9, {"confidence": 0.9}),
        ("stopping t=0.9 c=0.95 K<=16", "logistic", 0.9, {"confidence": 0.95, "k_max": 16}),
        ("stopping t=0.5 c=0.9 K<=2", "logistic", 0.5, {"confidence": 0.9, "k_max": 2}),
        ("stopping t=0.9 c=0.9 K<=2", "logistic", 0.9, {"confidence": 0.9, "k_max": 2}),
        ("stopping t=0.99 c=0.9 K<=2", "logistic", 0.99, {"confidence": 0.9, "k_max": 2}),
        ("stopping t=0.99 c=0.9", "logistic", 0.99, {"confidence": 0.9}),
        ("stopping t=0.99 c=0.95", "logistic", 0.99, {"confidence": 0.95}),
        ("stopping t=0.999 c=0.95", "logistic", 0.999, {"confidence": 0.95}),
        ("stopping t=0.9999 c=0.9", "logistic", 0.9999, {"confidence": 0.9}),
        ("stopping t=0.9999 c=0.95", "logistic", 0.9999, {"confidence": 0.95}),
        ("stopping t=0.9999 c=0.95 K<=4", "logistic", 0.9999, {"confidence": 0.95, "k_max": 4}),
        ("stopping t=0.9999 c=0.99", "logistic", 0.9999, {"confidence": 0.99}),
        ("stopping t=0.9999 c=0.99 K<=16", "logistic", 0.9999, {"confidence": 0.99, "k_max": 16}),
        ("stopping t=0.9999 c=0.999 K<=16", "logistic", 0.9999, {"confidence": 0.999, "k_max": 16}),
        ("stopping GP t=0.99 c=0.95", "gp", 0.99, {"confidence": 0.95}),
    ]
    # hard budgets: the setting (fitted model, target, confidence, K cap) with the highest
    # calibration reward. ``--select unbudgeted``: among settings whose mean counted NFEs on the
    # calibration pairs fit the budget; ``budgeted``: every setting run on the calibration pairs
    # under the hard per-batch budget itself. The chosen one is deployed under that budget.
    tried = []
    settings = list(closed)  # the settings a hard-budget arm may pick from
    hard_budgets = args.hard_budgets or args.budgets
    for label, model, target, opts in list(closed):
        if args.settings and not re.search(args.settings, label):
            continue
        ctrl = stopping(model, target, **opts)
        if model != "logistic" or ctrl is None:
            continue
        for m in [None] if args.select == "unbudgeted" else hard_budgets:
            run_opts = opts if m is None else {**opts, **hard_budget(m * naive_nfe)}
            rec = run_arm(task, sampler, cal_pairs, args, "eps-greedy",
                          controller=stopping(model, target, **run_opts))  # fmt: skip
            nfe, reward = float(np.mean(rec["nfe"])), float(np.mean(rec["reward"]))
            tried.append((m, nfe, reward, label, target, opts))
            cal_nfe += float(np.sum(rec["nfe"]))
    for m in hard_budgets:
        fit_in = [t for t in tried if t[0] in (None, m) and t[1] <= m * naive_nfe + 1e-9]
        if not fit_in:
            continue
        _, _, _, chosen, target, opts = max(fit_in, key=lambda t: t[2])
        hard = {**opts, **hard_budget(m * naive_nfe)}
        closed.append((f"stopping budget {m:g}x ({chosen[9:]})", "logistic", target, hard))
    if args.flops_budgets:  # the same selection, each setting run under the budget in FLOPs
        from experiments.frontier_flops import flops_settings

        picked, spent = flops_settings(
            settings, args, lambda mo, t, **o: stopping(mo, t, **o),
            lambda c: run_arm(task, sampler, cal_pairs, args, "eps-greedy", controller=c),
        )  # fmt: skip
        closed += picked
        cal_nfe += spent
    for label, model, target, opts in closed:
        ctrl = stopping(model, target, **opts)
        if ctrl is None:
            continue
        out.append(
            {
                "label": label,
                "family": "adaptive",
                "method": "eps-greedy",
                "options": {"controller": ctrl},
                "calibration_nfe": cal_nfe,
                "budget": opts.get("budget"),
            }
        )
    return out


def evaluate_task(name: str, args: Any) -> dict[str, Any]:
    task, device = prepare_task(name, args.device, args.cuda_graphs)
    args.device = device
    sampler = make_sampler("heun", args.steps, sigma_max=task.sigma_max)
    cal_pairs = make_pairs(task, args.cal_pairs, 1_000_000)
    eval_pairs = make_pairs(task, args.pairs, 2_000_000)
    assert not {s for _, s in cal_pairs} & {s for _, s in eval_pairs}
    if args.flops_budgets:
        from adaptive_tts.compute import measure_prices

        args.prices = measure_prices(task, sampler)
    t0 = time.perf_counter()
    cal = calibrate(task, sampler, cal_pairs, args)
    t_cal = time.perf_counter() - t0
    naive_nfe = float(sum(sampler.plain_cost()))
    records: dict[str, dict[str, Any]] = {}
    failed: list[dict[str, str]] = []
    for arm in arms(task, sampler, cal, cal_pairs, args, naive_nfe):
        if args.only and not re.search(args.only, arm["label"]):
            continue
        try:
            rec = run_arm(task, sampler, eval_pairs, args, arm["method"], **arm["options"])
        except (RuntimeError, ValueError) as err:  # recorded and printed, the other arms go on
            failed.append({"label": arm["label"], "error": f"{type(err).__name__}: {err}"})
            print(f"{name} {arm['label']}: FAILED {failed[-1]['error']}", flush=True)
            continue
        rec.pop("traces")
        records[arm["label"]] = {**rec, **{k: v for k, v in arm.items() if k != "options"}}
        print(
            f"{name} {arm['label']}: reward {sum(rec['reward']) / len(rec['reward']):.4f}  "
            f"eval {sum(rec['eval']) / len(rec['eval']):.4f}  "
            f"NFEs {sum(rec['nfe']) / len(rec['nfe']):.1f}  ({rec['seconds']:.1f}s)",
            flush=True,
        )
    merged: list[dict[str, Any]] = []
    select = args.select
    # the prices the FLOPs budgets were enforced with (torch's FLOP counter counts the same
    # model differently on CUDA and on the CPU), so that the FLOPs view prices every arm alike
    prices = {"device": args.device, **args.prices.to_dict()} if args.flops_budgets else None
    if args.merge:  # add these arms to the committed run's (same pairs, same noise)
        prev = json.loads((args.out / f"frontier_{name}.json").read_text())
        if [tuple(p) for p in prev["pairs"]] != eval_pairs or prev["sampler"] != sampler.describe():
            raise ValueError(f"--merge: frontier_{name}.json has other pairs or another sampler")
        merged = prev.get("merged", []) + [
            {
                "only": args.only,
                "settings": args.settings,
                "hard_budgets": args.hard_budgets,
                "flops_budgets": args.flops_budgets,
                "select": args.select,
                "arms": sorted(records),
            }
        ]
        records = {**load_records(prev), **records}
        if prices and prev.get("prices") and prev["prices"] != prices:
            raise ValueError(
                f"--merge: frontier_{name}.json's FLOPs arms were priced {prev['prices']}, "
                f"this run prices {prices} (run them on the same device)"
            )
        prices = prices or prev.get("prices")
        failed = prev.get("failed_arms", []) + failed
        select = prev["select"]  # the committed run's; each merge records its own
    clusters = [s for _, s in eval_pairs]  # every pair its own noise: one cluster each
    result = summarise(records, clusters, [m * naive_nfe for m in args.budgets], args.budgets)
    result |= {
        "task": name,
        "sampler": sampler.describe(),
        "skipped_fits": cal.get("skipped", []),
        "failed_arms": failed,
        "calibration": {
            "pairs": len(cal_pairs),
            "full": CAL,
            "budgets": args.cal_k,
            "nfe_full": cal["nfe_full"],
            "nfe_varied": cal["nfe_varied"],
            "seconds": t_cal,
        },
        "heldout_pairs": len(eval_pairs),
        "pairs": eval_pairs,
        "naive_nfe": naive_nfe,
        "budgets_nfe": [m * naive_nfe for m in args.budgets],
        "budget_multiples": list(args.budgets),
        "select": select,
        "merged": merged,
    }
    if prices is not None:
        result["prices"] = prices
    write_outputs(result, records, args.out, name)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--task", action="append", default=None, help="repeatable (default mnist-target)"
    )
    ap.add_argument("--pairs", type=int, default=512)
    ap.add_argument("--cal-pairs", type=int, default=256)
    ap.add_argument("--cal-k", type=int, nargs="+", default=[0, 1, 2, 4, 8])
    ap.add_argument(
        "--budgets",
        type=float,
        nargs="+",
        default=[2, 4, 8, 16],
        help="matched budgets as multiples of plain sampling's counted NFEs",
    )
    ap.add_argument("--steps", type=int, default=18)
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--generator-device", default=None)
    ap.add_argument("--cuda-graphs", action="store_true")
    ap.add_argument(
        "--select",
        choices=["budgeted", "unbudgeted"],
        default="budgeted",
        help="how a hard-budget arm picks its setting on the calibration pairs",
    )
    ap.add_argument("--out", type=Path, default=Path("experiments/results/frontier"))
    ap.add_argument("--only", default=None, help="run only the arms whose label matches (regex)")
    ap.add_argument(
        "--settings",
        default=None,
        help="try only the stopping settings whose label matches (regex) for the hard-budget arms",
    )
    ap.add_argument(
        "--hard-budgets",
        type=float,
        nargs="+",
        default=None,
        help="budgets (multiples) that get a hard-budget stopping arm (default: --budgets)",
    )
    ap.add_argument(
        "--flops-budgets",
        type=float,
        nargs="+",
        default=None,
        help="budgets (multiples of plain sampling's FLOPs, the reward's included) that get a "
        "stopping arm with a hard budget in FLOPs",
    )
    ap.add_argument(
        "--merge", action="store_true", help="add the arms run to --out's frontier_<task>.json"
    )
    args = ap.parse_args(argv)
    device = args.device
    for name in args.task or ["mnist-target"]:
        args.device = device
        res = evaluate_task(name, args)
        print(res["table"])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
