"""Reward-matched comparison of a committed frontier run: NFEs saved at equal reward.

The matched-budget tables (:mod:`experiments.frontier_stats`) ask "at this NFE budget, who has the
higher reward?". On continuous rewards (brightness, compressibility) the independent evaluation
rate falls as the search reward rises along *every* method's frontier (reward hacking), so an arm
that spends its budget to reach a higher reward also shows a lower evaluation rate. This module
asks the package's own question instead: for each matched-budget winner, which is the cheapest
fixed-K eps-greedy arm whose reward is not lower (paired interval not below it), how many NFEs does
the adaptive arm save against it, and is its evaluation rate lower *at that reward*?

    python -m experiments.frontier_reward experiments/results/frontier mnist-target mnist-compress
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from experiments.frontier_stats import diff_cell, load_records, paired


def reward_matched(res: dict[str, Any], key: str = "best_vs_fixed_k") -> list[dict[str, Any]]:
    """For each budget's best adaptive/learned arm in ``res[key]``: the cheapest fixed-K arm whose
    paired reward difference (fixed - adaptive) is not ``worse``, the NFE saving against it and the
    paired evaluation-rate difference (adaptive - fixed). ``fixed`` is ``None`` where no fixed-K
    arm reaches the adaptive arm's reward."""
    records = load_records(res)
    clusters = [s for _, s in res["pairs"]]
    fixed = sorted(
        (a for a in res["arms"] if a["family"] == "fixed"), key=lambda a: (a["nfe"], a["arm"])
    )
    out = []
    seen: set[str] = set()
    for best in res[key]:
        arm = best["arm"]
        if arm in seen:  # the same arm wins several budgets
            continue
        seen.add(arm)
        ra, ea = (np.asarray(records[arm][k]) for k in ("reward", "eval"))
        row: dict[str, Any] = {"arm": arm, "nfe": best["nfe"], "fixed": None}
        for f in fixed:
            rf, ef = (np.asarray(records[f["arm"]][k]) for k in ("reward", "eval"))
            reach = paired(rf, ra, clusters)
            if reach["verdict"] == "worse":
                continue
            row |= {
                "fixed": f["arm"],
                "fixed_nfe": f["nfe"],
                "nfe_saving": 1.0 - best["nfe"] / f["nfe"],
                "reward_diff": paired(ra, rf, clusters),
                "eval_diff": paired(ea, ef, clusters),
            }
            break
        out.append(row)
    return out


def markdown(results_dir: Path, tasks: list[str]) -> str:
    """One row per distinct matched-budget winner and task."""
    lines = [
        "| task | adaptive arm (NFEs) | cheapest fixed K reaching its reward (NFEs) | NFEs saved |"
        " reward diff | eval diff |",
        "|---|---|---|---|---|---|",
    ]

    for task in tasks:
        res = json.loads((results_dir / f"frontier_{task}.json").read_text())
        for x in reward_matched(res):
            head = f"| {task} | {x['arm']} ({x['nfe']:.1f}) |"
            if x["fixed"] is None:
                lines.append(f"{head} none reaches it | | | |")
                continue
            lines.append(
                f"{head} {x['fixed']} ({x['fixed_nfe']:.0f}) | {100 * x['nfe_saving']:.0f}% | "
                f"{diff_cell(x['reward_diff'])} | {diff_cell(x['eval_diff'])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("tasks", nargs="+")
    args = ap.parse_args(argv)
    print(markdown(args.results_dir, args.tasks))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
