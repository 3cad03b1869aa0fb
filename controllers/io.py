"""Load any saved controller (schedule, Binomial, GP, budget, plug-ins) with compatibility
checks; the kind's registered ``load`` rebuilds it."""

from __future__ import annotations

import os
from typing import Any

from controllers.closed_loop import SCHEMA as STOPPING_SCHEMA
from controllers.closed_loop import load_stopping
from controllers.registry import CONTROLLERS, load_budget, load_schedule
from controllers.schedule import SCHEMA as SCHEDULE_SCHEMA
from controllers.schedule import check_compatible
from controllers.schema import check_schedule_dict, read_json_file


def saved_kind(d: dict[str, Any]) -> str:
    """The registered kind a saved controller belongs to (``binomial-ceil`` -> ``binomial``)."""
    if "budget" in d:
        return "budget"
    kind = str(d["kind"])
    return kind if kind in CONTROLLERS else kind.split("(")[0].split("-")[0]


def load_controller(
    path: str | os.PathLike[str], sampler: Any | None = None, model: str | None = None
) -> Any:
    """Load a controller JSON. Schedules and stopping controllers are functions of sigma: they
    deploy at any step count or sampler whose sigmas their fit covers (a step outside that
    range is a ``ValueError`` when it runs). A schedule fitted for another model is refused; a
    stopping controller also deploys on another model (its sigma range decides).

    A budget controller needs ``sampler`` (it reserves the plain steps' calls)."""
    raw = read_json_file(path, "controller")  # NaN / Infinity refused, the file named
    if isinstance(raw, dict) and raw.get("schema") == STOPPING_SCHEMA:
        try:
            return load_stopping(raw, sampler)
        except (ValueError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: {err}") from err
    d = check_schedule_dict(raw, str(path), SCHEDULE_SCHEMA)
    check_compatible(d["meta"], sampler, model, str(path))
    kind = saved_kind(d)
    entry = CONTROLLERS.get(kind) if kind in CONTROLLERS else None
    loader = entry.load if entry is not None and entry.load is not None else None
    if loader is None:
        loader = load_budget if kind == "budget" else load_schedule
    try:
        return loader(d, sampler)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
