"""Search controllers: decide eps_t, K_t (and N_t) per step.

Baselines (in the core, :mod:`adaptive_tts.control`, re-exported here): :class:`FixedController`
(paper defaults), :class:`SigmaWindowController`. Learned, fitted on calibration traces
(:func:`controllers.stats.step_stats`): Binomial (:mod:`controllers.binomial`), GP reliability
(:mod:`controllers.gp`), gain (:mod:`controllers.gain`) and adaptive per-prompt budgets
(:mod:`controllers.budget`). Fitted controllers deploy as a :class:`ScheduleController`, saved as
versioned JSON (:func:`controllers.io.load_controller`). Every kind is registered in
:data:`controllers.registry.CONTROLLERS` (``register_controller(name, fit=..., plot=...,
load=...)``).
"""

from adaptive_tts.control import FixedController, SigmaWindowController
from controllers.budget import BudgetController
from controllers.registry import CONTROLLERS, make_controller, register_controller
from controllers.schedule import ScheduleController

__all__ = [
    "CONTROLLERS",
    "BudgetController",
    "FixedController",
    "ScheduleController",
    "SigmaWindowController",
    "make_controller",
    "register_controller",
]
