"""Experiment configs: YAML files with dotted command-line overrides, expanded into a list of
method runs (sweeps over one knob, controller fits)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

DEFAULTS: dict[str, Any] = {
    "name": "experiment",
    "task": "gmm-target",
    "sampler": {"name": "heun", "steps": 18},
    # prompts None: all classes; seeds [first, count] per prompt; noise "independent": every
    # (prompt, seed) pair its own noise seed (experiments.run.noise_seed), "shared": the prompts
    # of a seed share its noise (on an unconditional task those pairs are one draw)
    "pairs": {"prompts": None, "seeds": [0, 4], "noise": "independent"},
    "batch": 32,
    "device": "cpu",  # "cuda": process R of a launch uses cuda:LOCAL_RANK
    "generator_device": None,  # where per-sample noise is drawn: None/"cpu" or "cuda"
    "cuda_graphs": False,  # replay the denoiser and reward from CUDA graphs (needs cuda)
    # {"seeds": [first, count], "n": 4, "k": 20, "eps": 0.4, "lam": 0.15}: full-budget runs, or
    # budget-varied: {"seeds", "budgets": [0, 1, 2, 4, 8], "n": 2, "eps": 1.0,
    # "reference": {"n": 4, "k": 20, "eps": 0.4, "lam": 0.15}} (see experiments.run)
    "calibration": None,
    "methods": [],
    "sweeps": [],
    "wandb": {"enabled": True, "project": "adaptive-tts", "group": None, "mode": None},
}


def _merge(base: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in new.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) in place."""
    if "=" not in item:
        raise ValueError(f"override must look like key.sub=value, got {item!r}")
    key, raw = item.split("=", 1)
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = yaml.safe_load(raw)


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML config over :data:`DEFAULTS`, then apply overrides; check the essentials."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: a config must be a YAML mapping")
    cfg = _merge(DEFAULTS, raw)
    for item in overrides or []:
        apply_override(cfg, item)
    if not cfg["methods"] and not cfg["sweeps"]:
        raise ValueError(f"{path}: config lists no methods and no sweeps")
    seeds = cfg["pairs"]["seeds"]
    if not (isinstance(seeds, list) and len(seeds) == 2 and seeds[1] >= 1):
        raise ValueError(f"pairs.seeds must be [first, count >= 1], got {seeds}")
    if "unique_seeds" in cfg["pairs"]:  # the older spelling: true = independent, false = shared
        unique = cfg["pairs"].pop("unique_seeds")
        cfg["pairs"]["noise"] = "independent" if unique else "shared"
    if cfg["pairs"]["noise"] not in ("independent", "shared"):
        raise ValueError(
            f"pairs.noise must be 'independent' or 'shared', got {cfg['pairs']['noise']!r}"
        )
    cal = cfg["calibration"]
    if cal is not None:
        if not isinstance(cal, dict) or "seeds" not in cal:
            raise ValueError("calibration must be a mapping with 'seeds: [first, count]'")
        if "reference" in cal and "budgets" not in cal:
            raise ValueError("calibration.reference goes with calibration.budgets")
        budgets = cal.get("budgets")
        if budgets is not None and (
            not isinstance(budgets, list)
            or not budgets
            or any(not isinstance(k, int) or k < 0 for k in budgets)
        ):
            raise ValueError(f"calibration.budgets must be integers K >= 0, got {budgets}")
        if budgets is not None and "k" in cal:
            raise ValueError("calibration.budgets sets K per run: drop calibration.k")
    return cfg


def expand_methods(cfg: dict[str, Any]) -> list[dict[str, Any]]:
    """The config's ``methods`` plus each sweep expanded: ``{base: {...}, param: k, values: [..]}``
    gives one run per value, labelled ``label(param=value)``."""
    runs = [dict(m) for m in cfg["methods"]]
    for sw in cfg["sweeps"]:
        base, param = dict(sw["base"]), sw["param"]
        for v in sw["values"]:
            run = copy.deepcopy(base)
            node = run
            parts = param.split(".")
            for p in parts[:-1]:
                node = node.setdefault(p, {})
            node[parts[-1]] = v
            run["label"] = f"{base.get('label', base['method'])}({param}={v})"
            run["group"] = sw.get("group", param)
            runs.append(run)
    for r in runs:
        if "method" not in r:
            raise ValueError(f"every method entry needs 'method': {r}")
        r.setdefault("label", r["method"])
    return runs
