"""Load any saved controller (schedule, Binomial, GP, budget, plug-ins) with compatibility
checks; the kind's registered ``load`` rebuilds it."""

from __future__ import annotations

import os
from typing import Any

from controllers.registry import CONTROLLERS, load_budget, load_schedule
from controllers.schedule import check_compatible, read_schedule_json


def saved_kind(d: dict[str, Any]) -> str:
    """The registered kind a saved controller belongs to (``binomial-ceil`` -> ``binomial``)."""
    if "budget" in d:
        return "budget"
    kind = str(d["kind"])
    return kind if kind in CONTROLLERS else kind.split("(")[0].split("-")[0]


def load_controller(
    path: str | os.PathLike[str], sampler: Any | None = None, model: str | None = None
) -> Any:
    """Load a controller JSON; refuse one fitted for another sampler, step count or model.

    A budget controller needs ``sampler`` (it reserves the plain steps' calls)."""
    d = read_schedule_json(path)
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
