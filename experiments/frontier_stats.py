"""Intervals, matched-budget comparisons and outputs of :mod:`experiments.frontier`.

Every interval is a cluster bootstrap over held-out pairs (pairs that share initial noise share a
cluster and are resampled together; with each pair its own noise every pair is a cluster), and
comparisons between arms are *paired*: the same resampled pairs enter both arms.
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from adaptive_tts.report import cluster_mean_ci, format_table, paired_diff, ratio_ci, verdict


def _named(d: dict[str, float]) -> dict[str, float]:
    return {"value": d["mean"], "lo": d["lo"], "hi": d["hi"]}


def paired(a: np.ndarray, b: np.ndarray, clusters: list[int]) -> dict[str, Any]:
    """Paired difference ``mean(a) - mean(b)`` with its interval and a verdict
    (:func:`adaptive_tts.report.paired_diff`)."""
    d = paired_diff(a, b, clusters)
    return {**_named(d), "verdict": verdict(d)}


def summarise(
    records: dict[str, dict[str, Any]],
    clusters: list[int],
    budgets: list[float],
    multiples: list[float],
    reference: str = "eps-greedy(4,20)",
) -> dict[str, Any]:
    """Per-arm summaries, ratios to ``reference`` and matched-budget comparisons."""
    n = len(clusters)
    ref = records[reference]
    ref_r, ref_e = np.asarray(ref["reward"]), np.asarray(ref["eval"])
    ref_nfe = float(np.mean(ref["nfe"]))
    rows = []
    for label, rec in records.items():
        r, e, f = (np.asarray(rec[k]) for k in ("reward", "eval", "nfe"))
        row: dict[str, Any] = {
            "arm": label,
            "family": rec["family"],
            "reward": _named(cluster_mean_ci(r, clusters)),
            "eval": _named(cluster_mean_ci(e, clusters)),
            "nfe": float(f.mean()),
            "nfe_max": float(f.max()),
            "reward_calls": float(np.mean(rec["reward_calls"])),
            "seconds_per_sample": rec["seconds"] / n,
            "reward_ratio": _named(ratio_ci(r, ref_r, clusters)),
            "eval_ratio": _named(ratio_ci(e, ref_e, clusters)),
            "nfe_ratio": float(f.mean()) / ref_nfe,
        }
        cal = rec.get("calibration_nfe")
        if cal is not None:
            saved = ref_nfe - float(f.mean())  # NFEs saved per sample vs the reference
            row["calibration_nfe"] = cal
            row["break_even_samples"] = cal / saved if saved > 0 else None
        rows.append(row)
    matched = _matched(rows, records, clusters, budgets, multiples, ("fixed", "baseline"))
    matched_k = _matched(rows, records, clusters, budgets, multiples, ("fixed",))
    return {
        "arms": rows,
        "matched": matched,
        "best_at_budget": _best(matched),
        "best_vs_fixed_k": _best(matched_k),
        "best_peer_at_budget": _best(matched, ("peer",)),
        "adaptive_vs_peer": _versus(records, clusters, _best(matched), _best(matched, ("peer",))),
        "table": _table(rows, _best(matched)),
    }


def _matched(
    rows: list[dict[str, Any]],
    records: dict[str, dict[str, Any]],
    clusters: list[int],
    budgets: list[float],
    multiples: list[float],
    fixed_families: tuple[str, ...],
) -> list[dict[str, Any]]:
    """Every adaptive/learned/peer arm within each budget, paired against the best arm of
    ``fixed_families`` within it (``("fixed",)``: fixed-K eps-greedy only; with ``"baseline"``:
    also naive, best-of-N, the sigma window and beam search)."""
    matched = []
    for b, m in zip(budgets, multiples):
        fixed = [x for x in rows if x["family"] in fixed_families and x["nfe"] <= b + 1e-9]
        if not fixed:
            continue
        best = max(fixed, key=lambda x: x["reward"]["value"])
        br, be = (np.asarray(records[best["arm"]][k]) for k in ("reward", "eval"))
        for x in rows:
            if x["family"] not in ("adaptive", "learned", "peer") or x["nfe"] > b + 1e-9:
                continue
            r, e = (np.asarray(records[x["arm"]][k]) for k in ("reward", "eval"))
            matched.append(
                {
                    "budget_multiple": m,
                    "budget_nfe": b,
                    "arm": x["arm"],
                    "family": x["family"],
                    "nfe": x["nfe"],
                    "best_fixed": best["arm"],
                    "best_fixed_nfe": best["nfe"],
                    "reward_diff": paired(r, br, clusters),
                    "eval_diff": paired(e, be, clusters),
                }
            )
    return matched


def load_records(res: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The per-arm records of a committed ``frontier_<task>.json`` (per-pair values + family,
    seconds, calibration NFEs), as :func:`summarise` takes them."""
    n = len(res["pairs"])
    return {
        row["arm"]: {
            **res["per_pair"][row["arm"]],
            "family": row["family"],
            "seconds": row["seconds_per_sample"] * n,
            **({"calibration_nfe": row["calibration_nfe"]} if "calibration_nfe" in row else {}),
        }
        for row in res["arms"]
    }


def resummarise(path: Path) -> dict[str, Any]:
    """Recompute a committed ``frontier_<task>.json``'s summaries from its per-pair records
    (after a change to the statistics; no arm is re-run) and rewrite it atomically."""
    res = json.loads(path.read_text())
    clusters = [s for _, s in res["pairs"]]
    multiples = res.get("budget_multiples") or [b / res["naive_nfe"] for b in res["budgets_nfe"]]
    res |= summarise(load_records(res), clusters, res["budgets_nfe"], multiples)
    _atomic(path, json.dumps(res, indent=1))
    return res


def _versus(
    records: dict[str, dict[str, Any]],
    clusters: list[int],
    ours: list[dict[str, Any]],
    peers: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """At each budget: the best adaptive/learned arm against the best peer, paired."""
    by_budget = {x["budget_multiple"]: x for x in peers}
    out = []
    for x in ours:
        y = by_budget.get(x["budget_multiple"])
        if y is None:
            continue
        a, b = records[x["arm"]], records[y["arm"]]
        out.append({
            "budget_multiple": x["budget_multiple"], "budget_nfe": x["budget_nfe"],
            "arm": x["arm"], "nfe": x["nfe"], "peer": y["arm"], "peer_nfe": y["nfe"],
            "reward_diff": paired(np.asarray(a["reward"]), np.asarray(b["reward"]), clusters),
            "eval_diff": paired(np.asarray(a["eval"]), np.asarray(b["eval"]), clusters),
        })  # fmt: skip
    return out


def _best(
    matched: list[dict[str, Any]], families: tuple[str, ...] = ("adaptive", "learned")
) -> list[dict[str, Any]]:
    """The best arm of ``families`` at each budget: by reward verdict, then evaluation
    verdict, then the reward difference."""
    rank = {"better": 2, "tie": 1, "worse": 0}

    def key(y: dict[str, Any]) -> tuple[int, int, float]:
        r, e = y["reward_diff"], y["eval_diff"]
        return (rank[r["verdict"]], rank[e["verdict"]], r["value"])

    best: dict[float, dict[str, Any]] = {}
    for x in matched:
        if x["family"] not in families:
            continue
        cur = best.get(x["budget_multiple"])
        if cur is None or key(x) > key(cur):
            best[x["budget_multiple"]] = x
    return [best[m] for m in sorted(best)]


def _table(rows: list[dict[str, Any]], best: list[dict[str, Any]]) -> str:
    def ci(d: dict[str, float]) -> str:
        return f"{d['value']:.4f} [{d['lo']:.4f}, {d['hi']:.4f}]"

    t1 = [
        {
            "arm": r["arm"],
            "family": r["family"],
            "reward [95% CI]": ci(r["reward"]),
            "eval [95% CI]": ci(r["eval"]),
            "NFEs": f"{r['nfe']:.1f}",
            "NFE ratio": f"{r['nfe_ratio']:.3f}",
        }
        for r in rows
    ]
    t2 = [
        {
            "budget": f"{x['budget_multiple']:g}x ({x['budget_nfe']:.0f})",
            "best adaptive": x["arm"],
            "NFEs": f"{x['nfe']:.1f}",
            "best fixed": f"{x['best_fixed']} ({x['best_fixed_nfe']:.0f})",
            "reward diff": ci(x["reward_diff"]) + " " + x["reward_diff"]["verdict"],
            "eval diff": ci(x["eval_diff"]) + " " + x["eval_diff"]["verdict"],
        }
        for x in best
    ]
    out = format_table(t1, list(t1[0]))
    return out + ("\n\n" + format_table(t2, list(t2[0])) if t2 else "")


def _atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_outputs(
    result: dict[str, Any], records: dict[str, dict[str, Any]], out: Path, name: str
) -> None:
    """``frontier_<task>.json`` (summaries + per-pair records), ``.csv`` and ``.png``."""
    out.mkdir(parents=True, exist_ok=True)
    per_pair = {
        k: {f: v[f] for f in ("reward", "eval", "nfe", "reward_calls")} for k, v in records.items()
    }
    _atomic(out / f"frontier_{name}.json", json.dumps({**result, "per_pair": per_pair}, indent=1))
    buf = io.StringIO()
    cols = [
        "arm",
        "family",
        "reward",
        "reward_lo",
        "reward_hi",
        "eval",
        "eval_lo",
        "eval_hi",
        "nfe",
        "nfe_max",
        "nfe_ratio",
        "reward_ratio",
        "eval_ratio",
        "seconds_per_sample",
        "calibration_nfe",
        "break_even_samples",
    ]
    w = csv.DictWriter(buf, cols)
    w.writeheader()
    for r in result["arms"]:
        w.writerow(
            {
                "arm": r["arm"],
                "family": r["family"],
                "reward": r["reward"]["value"],
                "reward_lo": r["reward"]["lo"],
                "reward_hi": r["reward"]["hi"],
                "eval": r["eval"]["value"],
                "eval_lo": r["eval"]["lo"],
                "eval_hi": r["eval"]["hi"],
                "nfe": r["nfe"],
                "nfe_max": r["nfe_max"],
                "nfe_ratio": r["nfe_ratio"],
                "reward_ratio": r["reward_ratio"]["value"],
                "eval_ratio": r["eval_ratio"]["value"],
                "seconds_per_sample": r["seconds_per_sample"],
                "calibration_nfe": r.get("calibration_nfe"),
                "break_even_samples": r.get("break_even_samples"),
            }
        )
    _atomic(out / f"frontier_{name}.csv", buf.getvalue())
    plot_frontier(result, out / f"frontier_{name}.png", name)


def plot_frontier(result: dict[str, Any], path: Path, name: str) -> None:
    """Reward and evaluation rate vs counted NFEs (log x), fixed arms as the frontier to beat."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.8))
    style = {
        "fixed": ("o", "tab:gray"),
        "baseline": ("s", "tab:brown"),
        "reference": ("*", "black"),
        "ablation": ("x", "tab:purple"),
        "learned": ("^", "tab:blue"),
        "adaptive": ("D", "tab:red"),
        "peer": ("v", "tab:orange"),
    }
    for ax, key in zip(axes, ("reward", "eval")):
        for fam, (marker, color) in style.items():
            pts = [r for r in result["arms"] if r["family"] == fam]
            if not pts:
                continue
            x = [r["nfe"] for r in pts]
            y = [r[key]["value"] for r in pts]
            err = [
                [r[key]["value"] - r[key]["lo"] for r in pts],
                [r[key]["hi"] - r[key]["value"] for r in pts],
            ]
            ax.errorbar(x, y, yerr=err, fmt=marker, color=color, label=fam, ms=6, capsize=2)
        fixed = sorted(
            (r["nfe"], r[key]["value"])
            for r in result["arms"]
            if r["family"] in ("fixed", "baseline")
        )
        front, best = [], -np.inf
        for x, y in fixed:  # the fixed arms' Pareto frontier
            if y > best:
                front.append((x, y))
                best = y
        ax.step(*zip(*front), where="post", color="tab:gray", lw=1, alpha=0.7)
        for x in result.get("budgets_nfe", []):
            ax.axvline(x, color="tab:green", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("counted NFEs per sample")
        ax.set_ylabel("mean reward" if key == "reward" else "independent evaluation rate")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{name}: {result['heldout_pairs']} held-out pairs, each its own noise")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def diff_cell(d: dict[str, Any]) -> str:
    """A paired difference as a table cell: ``+0.0123 [+0.0100, +0.0150] better``."""
    return f"{d['value']:+.4f} [{d['lo']:+.4f}, {d['hi']:+.4f}] {d['verdict']}"


def markdown(results_dir: Path, tasks: list[str], key: str = "best_at_budget") -> str:
    """The README's matched-budget table from committed ``frontier_<task>.json`` files
    (``key="best_vs_fixed_k"``: against the best fixed-K eps-greedy arm only)."""
    lines = [
        "| task | budget | best adaptive (NFEs) | best fixed (NFEs) | reward diff | eval diff |",
        "|---|---|---|---|---|---|",
    ]

    for task in tasks:
        res = json.loads((results_dir / f"frontier_{task}.json").read_text())
        best = {x["budget_multiple"]: x for x in res[key]}
        multiples = res.get("budget_multiples") or [
            b / res["naive_nfe"] for b in res["budgets_nfe"]
        ]
        for m, b in zip(multiples, res["budgets_nfe"]):
            x = best.get(m)
            if x is None:
                lines.append(f"| {task} | {m:g}x ({b:.0f}) | none under the budget | | | |")
                continue
            lines.append(
                f"| {task} | {m:g}x ({b:.0f}) | {x['arm']} ({x['nfe']:.1f}) | "
                f"{x['best_fixed']} ({x['best_fixed_nfe']:.0f}) | {diff_cell(x['reward_diff'])} | "
                f"{diff_cell(x['eval_diff'])} |"
            )
    return "\n".join(lines)


def markdown_peers(results_dir: Path, tasks: list[str]) -> str:
    """The best stopping/learned arm against the best adaptive peer at each budget."""
    lines = [
        "| task | budget | best of ours (NFEs) | best peer (NFEs) | reward diff | eval diff |",
        "|---|---|---|---|---|---|",
    ]
    for task in tasks:
        res = json.loads((results_dir / f"frontier_{task}.json").read_text())
        for x in res.get("adaptive_vs_peer", []):
            lines.append(
                f"| {task} | {x['budget_multiple']:g}x ({x['budget_nfe']:.0f}) | {x['arm']} "
                f"({x['nfe']:.1f}) | {x['peer']} ({x['peer_nfe']:.1f}) | "
                f"{diff_cell(x['reward_diff'])} | {diff_cell(x['eval_diff'])} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import argparse

    ap = argparse.ArgumentParser(description="Markdown tables from frontier_<task>.json files.")
    ap.add_argument("results_dir", type=Path)
    ap.add_argument("tasks", nargs="+")
    ap.add_argument("--peers", action="store_true", help="ours vs the best adaptive peer")
    ap.add_argument("--fixed-k", action="store_true", help="vs the best fixed-K arm only")
    ap.add_argument("--resummarise", action="store_true", help="recompute summaries first")
    args = ap.parse_args(argv)
    if args.resummarise:
        for task in args.tasks:
            resummarise(args.results_dir / f"frontier_{task}.json")
    if args.peers:
        print(markdown_peers(args.results_dir, args.tasks))
    else:
        key = "best_vs_fixed_k" if args.fixed_k else "best_at_budget"
        print(markdown(args.results_dir, args.tasks, key))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
