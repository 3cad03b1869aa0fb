"""Baseline controllers, re-exported from the core (:mod:`adaptive_tts.control`), where the
searches find their default."""

from adaptive_tts.control import FixedController, SigmaWindowController, check_knobs

__all__ = ["FixedController", "SigmaWindowController", "check_knobs"]
