"""Load any saved controller (schedule, Binomial, GP, budget) with compatibility checks."""

from __future__ import annotations

import os
from typing import Any

from controllers.budget import BudgetController
from controllers.schedule import ScheduleController, check_compatible, read_schedule_json


def load_controller(
    path: str | os.PathLike[str], sampler: Any | None = None, model: str | None = None
) -> ScheduleController | BudgetController:
    """Load a controller JSON; refuse one fitted for another sampler, step count or model.

    A budget controller needs ``sampler`` (it reserves the plain steps' calls)."""
    d = read_schedule_json(path)
    check_compatible(d["meta"], sampler, model, str(path))
    base = ScheduleController.from_dict(d)
    if "budget" in d:
        if sampler is None:
            raise ValueError(f"{path}: a budget controller needs the sampler to load")
        bud = d["budget"]
        base.kind = base.kind.removeprefix("budget(").removesuffix(")")
        return BudgetController(
            base,
            float(bud["per_sample"]),
            sampler,
            cap=float(bud["cap"]),
            floor=float(bud["floor"]),
        )
    return base
