"""Checks of saved controller files: strict JSON, known keys, knobs in range.

Every problem is a ``ValueError`` naming the file and the key (``steps[3].k``), with the
allowed values; an unknown key names the closest valid one (:func:`difflib.get_close_matches`),
so a typo (``"k_maxx"``) is caught, never ignored. Numbers are not coerced: ``"k": 2.7`` is
refused, not truncated, and a ``NaN`` / ``Infinity`` knob is refused (metadata may hold
them: a sampler's ``s_max = inf``).
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from adaptive_tts.control import check_float, check_int
from adaptive_tts.traces import from_strict

SCHEDULE_KEYS = frozenset(
    ("schema", "kind", "mode", "n", "lam", "k_max", "k_min", "steps", "meta", "diagnostics")
)
"""Top-level keys of a schedule file (``budget`` too for a budget controller)."""
STEP_KEYS = frozenset(("i", "sigma", "k", "eps", "p", "value", "reliability"))
"""Keys of one step of a schedule's table."""
PRICE_KEYS = frozenset(("network", "reward", "nfe_per_call", "rows", "shape"))
BUDGET_KEYS = frozenset(("per_sample", "cap", "floor", "unit", "prices"))


def read_json_file(path: str | os.PathLike[str], what: str = "schedule") -> Any:
    """The JSON in ``path``, non-finite numbers as floats (bare ``NaN``/``Infinity`` of older
    files and the strings :func:`~adaptive_tts.traces.to_strict` writes): metadata such as a
    sampler's ``s_max = inf`` reads back as written, and every knob check below refuses a
    non-finite knob. A missing file is a ``FileNotFoundError``, invalid JSON a ``ValueError``
    naming the file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what} file not found: {path}")
    try:
        return from_strict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err}); the file is corrupt") from err


def check_keys(d: dict[str, Any], allowed: Iterable[str], where: str) -> None:
    """Refuse a key of ``d`` outside ``allowed``, naming it and the closest valid key."""
    allowed = sorted(allowed)
    for key in d:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(
                f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(allowed)}"
            )


def named(where: str, check: Any, value: Any, key: str, *args: Any, **kwargs: Any) -> Any:
    """``check(value, key, ...)`` with its ``ValueError`` prefixed by ``where`` (the file)."""
    try:
        return check(value, key, *args, **kwargs)
    except ValueError as err:
        raise ValueError(f"{where}: key {err}") from None


def check_schedule_dict(d: Any, where: str, schema: str) -> dict[str, Any]:
    """Check a saved schedule (and its budget section) in full; return it."""
    if not isinstance(d, dict):
        raise ValueError(f"{where}: expected a JSON object")
    if d.get("schema") != schema:
        raise ValueError(
            f"{where}: key 'schema' is {d.get('schema')!r}, allowed: {schema!r} (another "
            "version or another kind of file)"
        )
    check_keys(d, SCHEDULE_KEYS | {"budget"}, where)
    missing = [k for k in ("kind", "mode", "n", "lam", "k_max", "steps", "meta") if k not in d]
    if missing:
        raise ValueError(f"{where}: missing key(s) {missing}")
    if not isinstance(d["kind"], str):
        raise ValueError(f"{where}: key 'kind' must be a string, got {d['kind']!r}")
    if d["mode"] not in ("table", "draw"):
        raise ValueError(f"{where}: key 'mode' is {d['mode']!r}, allowed: 'table', 'draw'")
    named(where, check_int, d["n"], "n", 1)
    named(where, check_float, d["lam"], "lam", 0.0)
    k_max = named(where, check_int, d["k_max"], "k_max", 0)
    named(where, check_int, d.get("k_min", 0), "k_min", 0, k_max)
    for key in ("meta", "diagnostics"):
        if not isinstance(d.get(key, {}), dict):
            raise ValueError(f"{where}: key {key!r} must be an object")
    steps = d["steps"]
    if not isinstance(steps, list) or not steps:
        raise ValueError(f"{where}: key 'steps' must be a non-empty list of step objects")
    for j, st in enumerate(steps):
        at = f"steps[{j}]"
        if not isinstance(st, dict):
            raise ValueError(f"{where}: key {at} must be an object with i, sigma, k, eps")
        check_keys(st, STEP_KEYS, f"{where}: {at}")
        lost = [k for k in ("i", "sigma", "k", "eps") if k not in st]
        if lost:
            raise ValueError(f"{where}: {at} misses key(s) {lost}")
        named(where, check_int, st["i"], f"{at}.i", 0)
        named(where, check_float, st["sigma"], f"{at}.sigma", 0.0, lo_open=True)
        named(where, check_int, st["k"], f"{at}.k", 0)
        named(where, check_float, st["eps"], f"{at}.eps", 0.0, 1.0)
        if "p" in st or d["mode"] == "draw":
            named(where, check_float, st.get("p"), f"{at}.p", 0.0, 1.0)
    if "budget" in d:
        bud = d["budget"]
        if not isinstance(bud, dict):
            raise ValueError(f"{where}: key 'budget' must be an object")
        check_keys(bud, BUDGET_KEYS, f"{where}: budget")
        named(where, check_float, bud.get("per_sample"), "budget.per_sample", 0.0, lo_open=True)
        named(where, check_float, bud.get("cap", 3.0), "budget.cap", 1.0)
        named(where, check_float, bud.get("floor", 0.25), "budget.floor", 0.0)
        check_unit(bud, where, "budget.")
    return d


def check_unit(d: dict[str, Any], where: str, prefix: str = "") -> None:
    """A budget's ``unit`` (``nfe`` or ``flops``) and, for ``flops``, its ``prices``."""
    unit = d.get("unit", "nfe")
    if unit not in ("nfe", "flops"):
        raise ValueError(f"{where}: key '{prefix}unit' must be 'nfe' or 'flops', got {unit!r}")
    if unit == "flops":
        prices = d.get("prices")
        if not isinstance(prices, dict):
            raise ValueError(f"{where}: a budget in FLOPs needs key '{prefix}prices' (an object)")
        check_keys(prices, PRICE_KEYS, f"{where}: {prefix}prices")
        for key in ("network", "reward"):
            named(where, check_float, prices.get(key), f"{prefix}prices.{key}", 0.0)
        named(where, check_int, prices.get("nfe_per_call", 1), f"{prefix}prices.nfe_per_call", 1)
