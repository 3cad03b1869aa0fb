"""The method entries of an experiment config: ``methods``, ``sweeps`` (expanded into one run
per value) and their controllers, each checked against the registries before anything runs."""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any

from adaptive_tts.registry import METHODS, RESERVED, accepted_options, check_method_options
from experiments.schema import ConfigError, UnknownOption, unknown_key, unknown_value

__all__ = ["RUN_KEYS", "calibration_sets", "check_controller", "check_runs", "expand_methods"]

RUN_KEYS = ("label", "method", "group", "controller")
"""Keys of a method entry that are not options of the search method."""


def _inner_fits() -> dict[str, Callable[[], tuple[Callable[..., Any], list[str]]]]:
    """Built-in fitted kinds whose registered fit takes ``**options``: the fitter those options
    reach and the fit's own named options."""
    from controllers.binomial import fit_binomial
    from controllers.gain import fit_gain
    from controllers.gp import fit_gp_controller

    return {
        "binomial": lambda: (fit_binomial, ["mapping"]),
        "gp": lambda: (fit_gp_controller, []),
        "gain": lambda: (fit_gain, []),
        "budget": lambda: (fit_gain, ["budget"]),
    }


def calibration_sets(cal: Mapping[str, Any] | None) -> set[str]:
    """The trace sets a ``calibration`` section makes: ``full`` and/or ``budgets``."""
    if not cal:
        return set()
    if cal.get("budgets") is None:
        return {"full"}
    return {"budgets", "full"} if cal.get("reference") else {"budgets"}


FLOPS_KINDS = ("stopping", "budget")
"""Controller kinds whose budget may be set in FLOPs (``budget_flops``)."""


def check_budget_flops(value: Any, where: str, kind: str) -> None:
    """``budget_flops``: a number of FLOPs > 0 or ``"Mx"`` (M > 0), on a budgeted kind."""
    import math

    if kind not in FLOPS_KINDS:
        raise ConfigError(
            f"config key {where!r}: controller {kind!r} has no budget; allowed on kinds "
            f"{', '.join(FLOPS_KINDS)}"
        )
    text = str(value).strip().lower()
    try:
        num = float(text[:-1] if text.endswith("x") and isinstance(value, str) else text)
    except ValueError:
        num = math.nan
    if isinstance(value, bool) or not (math.isfinite(num) and num > 0):
        raise ConfigError(
            f"config key {where!r}={value!r} is invalid, allowed: a number of FLOPs per sample "
            "> 0, or 'Mx' with M > 0 (M times plain sampling's FLOPs, the reward's included)"
        )


def check_controller(spec: Any, where: str, cal: Mapping[str, Any] | None) -> None:
    """A controller entry ``{kind, traces?, reference?, **options}``: a registered kind, the
    options it takes, and the calibration trace sets it needs."""
    from controllers.registry import CONTROLLERS

    if spec is None:
        return
    if not isinstance(spec, Mapping) or not isinstance(spec.get("kind"), str):
        raise ConfigError(f"config key {where!r} must be a mapping with 'kind: <controller kind>'")
    kind = spec["kind"]
    if kind not in CONTROLLERS:
        raise unknown_value(f"{where}.kind", kind, CONTROLLERS)
    entry = CONTROLLERS[kind]
    fn = entry.build if entry.build is not None else entry.fit
    allowed = accepted_options(fn, skip=0 if entry.build is not None else 2)  # type: ignore[arg-type]
    inner_fits = _inner_fits()
    if allowed is None and kind in inner_fits:  # a fit that passes **options to its fitter
        inner, extra = inner_fits[kind]()
        allowed = [*extra, *(accepted_options(inner, skip=1) or [])]
    if "budget_flops" in spec:
        check_budget_flops(spec["budget_flops"], f"{where}.budget_flops", kind)
    options = [k for k in spec if k not in ("kind", "traces", "reference", "budget_flops")]
    for key in options:
        if allowed is not None and key not in allowed:
            valid = ["kind", "traces", "reference", *allowed]
            valid += ["budget_flops"] if kind in FLOPS_KINDS else []
            raise UnknownOption(unknown_key(where, key, valid, f"controller kind {kind!r}"))
    if not entry.fitted:
        for key in ("traces", "reference"):
            if key in spec:
                raise ConfigError(f"config key '{where}.{key}': kind {kind!r} is not fitted")
        return
    have = calibration_sets(cal)
    which = spec.get("traces", "budgets" if kind == "stopping" else "full")
    if which not in ("full", "budgets"):
        raise ConfigError(
            f"config key '{where}.traces'={which!r} is invalid, allowed: 'full' or 'budgets'"
        )
    if which not in have:
        need = "with 'budgets'" if which == "budgets" else "with full-budget runs (or 'reference')"
        raise ConfigError(
            f"config key {where!r}: controller {kind!r} needs calibration traces {which!r}: add "
            f"a 'calibration' section {need} to the config"
        )
    ref = spec.get("reference")
    if ref is not None and ref not in have:
        raise ConfigError(
            f"config key '{where}.reference'={ref!r}: the calibration makes no such traces; "
            f"allowed: {', '.join(sorted(have))} or null"
        )


def check_run(run: Mapping[str, Any], where: str, cal: Mapping[str, Any] | None) -> None:
    """One method entry: ``method`` registered, every other key an option it takes (with the
    closest valid one named), option values in range, its controller valid."""
    method = run.get("method")
    if not isinstance(method, str):
        raise ConfigError(f"config key '{where}.method' is required (a registered search method)")
    if method not in METHODS:
        raise unknown_value(f"{where}.method", method, METHODS)
    for key in ("label", "group"):
        if key in run and (not isinstance(run[key], str) or not run[key].strip()):
            raise ConfigError(f"config key '{where}.{key}'={run[key]!r}: must be non-empty text")
    fn = METHODS[method]
    allowed = accepted_options(fn, exclude=RESERVED)
    options = {k: v for k, v in run.items() if k not in RUN_KEYS}
    for key in options:
        if not isinstance(key, str) or (allowed is not None and key not in allowed):
            valid = list(dict.fromkeys([*RUN_KEYS[:3], *(allowed or [])]))
            raise UnknownOption(unknown_key(where, str(key), valid, f"search method {method!r}"))
    if run.get("controller") is not None and allowed is not None and "controller" not in allowed:
        raise ConfigError(f"config key '{where}.controller': method {method!r} takes no controller")
    try:
        check_method_options(method, options, {k: f"{where}.{k}" for k in options})
    except (TypeError, ValueError) as err:
        raise ConfigError(str(err)) from None
    check_controller(run.get("controller"), f"{where}.controller", cal)


def expand_methods(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The config's ``methods`` plus each sweep expanded: ``{base: {...}, param: k, values: [..]}``
    gives one run per value, labelled ``label(param=value)``."""
    runs = [dict(m) for m in cfg["methods"]]
    for i, sw in enumerate(cfg["sweeps"]):
        where = f"sweeps[{i}]"
        if not isinstance(sw, Mapping):
            raise ConfigError(f"config key {where!r} must be a mapping {{base, param, values}}")
        for key in sw:
            if key not in ("base", "param", "values", "group"):
                raise ConfigError(
                    unknown_key(where, str(key), ["base", "param", "values", "group"])
                )
        base, param, values = sw.get("base"), sw.get("param"), sw.get("values")
        if not isinstance(base, Mapping) or "method" not in base:
            raise ConfigError(f"config key '{where}.base' must be a method entry with 'method'")
        if not isinstance(param, str) or not param:
            raise ConfigError(f"config key '{where}.param' must name the option swept (e.g. k)")
        if not isinstance(values, list) or not values:
            raise ConfigError(f"config key '{where}.values' must be a non-empty list")
        for v in values:
            run = copy.deepcopy(dict(base))
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
            raise ConfigError(f"every method entry needs 'method': {r}")
        r.setdefault("label", r["method"])
    return runs


def check_runs(cfg: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every run of ``cfg`` (methods and expanded sweeps) checked; labels must be unique."""
    if not isinstance(cfg["methods"], list) or not isinstance(cfg["sweeps"], list):
        raise ConfigError("config keys 'methods' and 'sweeps' must be lists")
    for i, m in enumerate(cfg["methods"]):
        if not isinstance(m, Mapping):
            raise ConfigError(f"config key 'methods[{i}]' must be a mapping with 'method'")
        check_run(m, f"methods[{i}]", cfg["calibration"])
    runs = expand_methods(cfg)
    n = len(cfg["methods"])
    seen: set[str] = set()
    for j, run in enumerate(runs):
        where = f"methods[{j}]" if j < n else f"sweeps (run {run['label']!r})"
        if j >= n:
            check_run(run, where, cfg["calibration"])
        if run["label"] in seen:
            raise ConfigError(f"config key '{where}.label'={run['label']!r} is used twice")
        seen.add(run["label"])
    if not runs:
        raise ConfigError("the config lists no methods and no sweeps")
    return runs
