"""What an experiment run writes: per-method summary rows (clustered intervals, counted NFEs,
the compute ledger), ``results.json`` (strict JSON) and ``results.csv``, each written
atomically (:mod:`adaptive_tts.fileio`), the sample grid and saved controller fits."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.fileio import atomic_write_json, atomic_write_text
from adaptive_tts.report import format_table, mean_ci

__all__ = [
    "cluster_mean_ci",
    "merge_compute",
    "save_samples",
    "save_schedule",
    "slug",
    "summarise",
    "table",
    "write_results",
]


def slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_")


def save_schedule(ctrl: Any, out: Path, label: str, kind: str | None = None) -> None:
    """Keep a fitted controller's JSON and a plot of its fit (the kind's registered plot) in
    the run directory."""
    from controllers.plots import plot_controller
    from controllers.registry import CONTROLLERS

    ctrl.save(str(out / f"schedule_{slug(label)}.json"))
    plot = CONTROLLERS[kind].plot if kind is not None else plot_controller
    if plot is not None:
        plot(ctrl, None, str(out / f"fit_{slug(label)}.png"))


def save_samples(images: dict[str, torch.Tensor], path: Path) -> Path | None:
    """One row of best samples per method (image-shaped tasks only)."""
    from adaptive_tts.viz import save_grid

    rows = {k: v for k, v in images.items() if v.dim() == 4}
    if not rows:
        return None
    width = max(v.shape[0] for v in rows.values())
    imgs, labels = [], []
    for k, v in rows.items():
        for j in range(width):
            imgs.append(v[min(j, v.shape[0] - 1)])
            labels.append(k if j == 0 else "")
    return save_grid(torch.stack(imgs), path, labels=labels, ncol=width)


def cluster_mean_ci(
    values: list[float], clusters: list[int], z: float = 1.96
) -> tuple[float, float]:
    """Mean and 95% half-width with pairs that share a noise seed as one cluster (the ratio
    estimator's sandwich variance over clusters). With every pair its own cluster this is
    :func:`adaptive_tts.report.mean_ci`."""
    if len(set(clusters)) == len(clusters):
        return mean_ci(values)
    sums: dict[int, list[float]] = {}
    for v, c in zip(values, clusters):
        sums.setdefault(c, []).append(v)
    g, total = len(sums), len(values)
    m = sum(values) / total
    if g < 2:
        return m, 0.0
    dev = sum((sum(vs) - m * len(vs)) ** 2 for vs in sums.values())
    return m, z * math.sqrt(g / (g - 1) * dev) / total


def summarise(
    records: list[dict[str, Any]],
    runs: list[dict[str, Any]],
    compute: dict[str, dict[str, Any]] | None = None,
) -> list[dict[str, Any]]:
    """One row per method: mean reward with a 95% interval clustered by noise seed (pairs that
    share noise count once), mean counted NFEs, evaluation rate, seconds per sample, the
    held-out judge's mean (``eval_reward``, when the task has one) and the method's compute
    ledger (``compute[label]``, :meth:`adaptive_tts.compute.ComputeMeter.summary`)."""
    rows = []
    for run in runs:
        rs = [r for r in records if r["label"] == run["label"]]
        m, ci = cluster_mean_ci(
            [r["reward"] for r in rs], [r.get("noise_seed", r["seed"]) for r in rs]
        )
        row = {
            "label": run["label"],
            "group": run.get("group", ""),
            "method": run["method"],
            "reward": m,
            "ci95": ci,
            "nfe": sum(r["nfe"] for r in rs) / len(rs),
            "eval_rate": sum(r["eval"] for r in rs) / len(rs),
            "seconds_per_sample": sum(r["seconds"] for r in rs) / len(rs),
            "n": len(rs),
            "clusters": len({r.get("noise_seed", r["seed"]) for r in rs}),
        }
        if all("eval_reward" in r for r in rs):
            row["eval_reward"] = sum(r["eval_reward"] for r in rs) / len(rs)
        if compute is not None and run["label"] in compute:
            row["compute"] = compute[run["label"]]
            if "flops_total" in row["compute"]:  # network + reward FLOPs, estimated
                row["flops_per_sample"] = row["compute"]["flops_total"] / len(rs)
        rows.append(row)
    return rows


def write_results(result: dict[str, Any], out: Path) -> None:
    """``results.json`` (strict JSON: NaN or infinity is an error) and ``results.csv`` (the
    per-pair records), each written atomically."""
    atomic_write_json(out / "results.json", result)
    buf = io.StringIO(newline="")
    records = result["records"]
    fields = list(dict.fromkeys(k for r in records for k in r))
    w = csv.DictWriter(buf, fieldnames=fields)
    w.writeheader()
    w.writerows(records)
    atomic_write_text(out / "results.csv", buf.getvalue())


def merge_compute(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """The compute summaries of several processes (:meth:`ComputeMeter.summary`) as one:
    counts and seconds summed, NFEs by noise level merged by level."""
    if not summaries:
        return {}
    out: dict[str, Any] = {}
    for summ in summaries:
        for key, value in summ.items():
            if key == "by_level":
                levels = {lv["sigma"]: dict(lv) for lv in out.get("by_level", [])}
                for lv in value:
                    have = levels.setdefault(lv["sigma"], {"sigma": lv["sigma"]})
                    for k, v in lv.items():
                        if k != "sigma":
                            have[k] = have.get(k, 0) + v
                out["by_level"] = sorted(levels.values(), key=lambda lv: -lv["sigma"])
            elif isinstance(value, dict):
                out[key] = merge_compute([out.get(key, {}), value])
            elif isinstance(value, (int, float)):
                out[key] = out.get(key, 0) + value
            else:
                out[key] = value
    return out


def table(rows: list[dict[str, Any]]) -> str:
    shown = [
        {
            "method": r["label"],
            "reward (95% CI)": f"{r['reward']:.4f} ± {r['ci95']:.4f}",
            "NFEs": f"{r['nfe']:.0f}",
            "eval": f"{r['eval_rate']:.3f}",
            "s/sample": f"{r['seconds_per_sample']:.3f}",
        }
        for r in rows
    ]
    return format_table(shown, list(shown[0]))
