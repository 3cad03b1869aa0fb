"""Search controllers: decide eps_t, K_t (and N_t) per step.

Baselines: :class:`FixedController` (paper defaults), :class:`SigmaWindowController`. Learned,
fitted on calibration traces (:func:`controllers.stats.step_stats`): Binomial
(:mod:`controllers.binomial`), GP reliability (:mod:`controllers.gp`), gain
(:mod:`controllers.gain`) and adaptive per-prompt budgets (:mod:`controllers.budget`).
Fitted controllers deploy as a :class:`ScheduleController`, saved as versioned JSON
(:func:`controllers.io.load_controller`).
"""

from controllers.budget import BudgetController
from controllers.fixed import FixedController, SigmaWindowController
from controllers.schedule import ScheduleController

__all__ = ["BudgetController", "FixedController", "ScheduleController", "SigmaWindowController"]
