"""One entry point to fit any learned controller from calibration traces."""

from __future__ import annotations

from typing import Any, Literal

from controllers.binomial import fit_binomial
from controllers.budget import BudgetController
from controllers.gain import fit_gain
from controllers.gp import fit_gp_controller
from controllers.schedule import ScheduleController
from controllers.stats import step_stats

Kind = Literal["binomial", "gp", "gain", "budget"]


def fit_controller(
    kind: Kind,
    traces: list[dict[str, Any]],
    mapping: str = "improve",
    kernel: str = "warp",
    budget: float | None = None,
    sampler: Any | None = None,
    **opts: Any,
) -> ScheduleController | BudgetController:
    """Fit ``kind`` on eps-greedy calibration ``traces``.

    ``mapping`` applies to ``kind="binomial"``, ``kernel`` to ``kind="gp"``. ``budget`` (NFEs per
    sample) and ``sampler`` are needed for ``kind="budget"``, whose base profile is the gain fit
    (``opts`` go to it).
    """
    stats = step_stats(traces)
    if kind == "binomial":
        return fit_binomial(stats, mapping=mapping, **opts)  # type: ignore[arg-type]
    if kind == "gp":
        return fit_gp_controller(stats, kernel=kernel, **opts)  # type: ignore[arg-type]
    if kind == "gain":
        return fit_gain(stats, **opts)
    if kind == "budget":
        if budget is None or sampler is None:
            raise ValueError("kind='budget' needs budget (NFEs per sample) and the sampler")
        base = fit_gain(stats, **opts)
        return BudgetController(base, budget, sampler)
    raise ValueError(f"controller must be one of binomial, gp, budget; got {kind!r}")
