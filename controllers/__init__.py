"""Search controllers: decide eps_t, K_t (and N_t) per step. Fixed and sigma-window baselines
live in :mod:`controllers.fixed`; learned controllers are fitted on calibration traces."""

from controllers.fixed import FixedController, SigmaWindowController

__all__ = ["FixedController", "SigmaWindowController"]
