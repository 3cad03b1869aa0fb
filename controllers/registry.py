"""Controller kinds by name: how to make one (fit on calibration traces, or build from options
alone), plot it and load it back. The configs, the command line, :func:`controllers.fitting.
fit_controller`, :func:`controllers.io.load_controller` and the evaluation scripts all go
through :data:`CONTROLLERS`, so a new kind is its own module plus one call::

    from controllers.registry import register_controller

    register_controller("my-kind", fit=fit_my_kind)   # fit(traces, sampler=None, **options)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from adaptive_tts.compute import FlopPrices
from adaptive_tts.control import FixedController, SigmaWindowController
from adaptive_tts.registry import Registry, accepted_options, check_options
from controllers.binomial import fit_binomial
from controllers.budget import BudgetController
from controllers.closed_loop import (
    StoppingController,
    fit_stopping,
    load_stopping,
    plot_stopping_fit,
)
from controllers.gain import fit_gain
from controllers.gp import fit_gp_controller
from controllers.plots import plot_controller
from controllers.schedule import ScheduleController
from controllers.stats import step_stats

Traces = list[dict[str, Any]]
Fit = Callable[..., Any]
"""``fit(traces, sampler=None, **options) -> controller``."""
Load = Callable[[dict[str, Any], Any], Any]
"""``load(saved JSON dict, sampler or None) -> controller``."""
Plot = Callable[[Any, "Traces | None", str], None]
"""``plot(controller, traces or None, png path)``."""


@dataclass(frozen=True)
class ControllerKind:
    """One controller kind. Exactly one of ``fit`` (needs calibration traces) and ``build``
    (``build(**options) -> controller``) is set; ``plot`` and ``load`` are optional."""

    name: str
    fit: Fit | None = None
    build: Callable[..., Any] | None = None
    plot: Plot | None = None
    load: Load | None = None
    options: tuple[str, ...] | None = None

    @property
    def fitted(self) -> bool:
        """Whether the kind is fitted on traces (its result is worth saving and plotting)."""
        return self.fit is not None

    def accepted(self) -> list[str] | None:
        """The options the kind takes (``None``: any): ``options`` when registered with
        them, else those of its ``fit`` (after traces and sampler) or ``build``."""
        if self.options is not None:
            return list(self.options)
        if self.fit is not None:
            return accepted_options(self.fit, 2)
        assert self.build is not None
        return accepted_options(self.build)


CONTROLLERS: Registry[ControllerKind] = Registry("controller kind")


def register_controller(
    name: str,
    *,
    fit: Fit | None = None,
    build: Callable[..., Any] | None = None,
    plot: Plot | None = None,
    load: Load | None = None,
    options: tuple[str, ...] | None = None,
) -> ControllerKind:
    """Register a controller kind (a duplicate name is a ``ValueError``); ``options``: the
    option names it takes when its ``fit`` hides them behind ``**options``."""
    if (fit is None) == (build is None):
        raise ValueError(f"controller kind {name!r}: give exactly one of fit= and build=")
    return CONTROLLERS.register(name, ControllerKind(name, fit, build, plot, load, options))


def make_controller(
    kind: str, traces: Traces | None = None, sampler: Any | None = None, **options: Any
) -> Any:
    """A controller of a registered ``kind``: built from ``options``, or fitted on ``traces``.

    Raises:
        ValueError: unknown kind (listing the registered ones), or a fitted kind without traces.
        TypeError: an option the kind does not take (naming the option and the kind).
    """
    entry = CONTROLLERS[kind]
    if entry.build is not None:
        check_options("controller kind", kind, entry.build, options)
        return entry.build(**options)
    assert entry.fit is not None
    if traces is None:
        raise ValueError(f"controller {kind!r} needs calibration traces (a 'calibration' section)")
    check_options("controller kind", kind, entry.fit, options, skip=2)
    return entry.fit(traces, sampler, **options)


def load_schedule(d: dict[str, Any], sampler: Any | None = None) -> ScheduleController:
    """A saved :class:`ScheduleController` (what binomial, GP and gain fits deploy)."""
    return ScheduleController.from_dict(d)


def load_budget(d: dict[str, Any], sampler: Any | None = None) -> BudgetController:
    """A saved :class:`BudgetController` (its base schedule plus the budget); needs the sampler."""
    if sampler is None:
        raise ValueError("a budget controller needs the sampler to load")
    base = ScheduleController.from_dict(d)
    base.kind = base.kind.removeprefix("budget(").removesuffix(")")
    bud = d["budget"]
    prices = FlopPrices.from_dict(bud["prices"]) if bud.get("unit") == "flops" else None
    return BudgetController(
        base,
        float(bud["per_sample"]),
        sampler,
        cap=float(bud["cap"]),
        floor=float(bud["floor"]),
        prices=prices,
    )


def _fit_binomial(
    traces: Traces, sampler: Any = None, mapping: str = "improve", **options: Any
) -> ScheduleController:
    check_options("controller kind", "binomial", fit_binomial, options, skip=2)
    return fit_binomial(step_stats(traces), mapping=mapping, **options)  # type: ignore[arg-type]


def _fit_gp(traces: Traces, sampler: Any = None, **options: Any) -> ScheduleController:
    check_options("controller kind", "gp", fit_gp_controller, options, skip=1)
    return fit_gp_controller(step_stats(traces), **options)


def _fit_gain(traces: Traces, sampler: Any = None, **options: Any) -> ScheduleController:
    check_options("controller kind", "gain", fit_gain, options, skip=1)
    return fit_gain(step_stats(traces), **options)


def _fit_budget(
    traces: Traces, sampler: Any = None, budget: float | None = None, **options: Any
) -> BudgetController:
    """The gain fit (``options`` go to it) deployed under ``budget`` NFEs per sample."""
    if budget is None or sampler is None:
        raise ValueError("kind='budget' needs budget (NFEs per sample) and the sampler")
    check_options("controller kind", "budget", fit_gain, options, skip=1)
    return BudgetController(fit_gain(step_stats(traces), **options), budget, sampler)


def _names(
    fn: Callable[..., Any], skip: int, *extra: str, less: tuple[str, ...] = ()
) -> tuple[str, ...]:
    """``extra`` and the options ``fn`` takes after ``skip`` parameters (less ``less``)."""
    return (*extra, *(accepted_options(fn, skip, less) or []))


_STOPPING = _names(StoppingController, 1, less=("sampler", "meta"))
register_controller("fixed", build=FixedController)
register_controller("window", build=SigmaWindowController)
for _name, _fit, _load, _opts in (
    ("binomial", _fit_binomial, load_schedule, _names(fit_binomial, 1)),
    ("gp", _fit_gp, load_schedule, _names(fit_gp_controller, 1)),
    ("gain", _fit_gain, load_schedule, _names(fit_gain, 1)),
    ("budget", _fit_budget, load_budget, _names(fit_gain, 1, "budget")),
):
    register_controller(_name, fit=_fit, plot=plot_controller, load=_load, options=_opts)
register_controller(
    "stopping",
    fit=fit_stopping,
    plot=plot_stopping_fit,
    load=load_stopping,
    options=("target", "model", "reference", *_STOPPING),  # fit_stopping's, then the controller's
)
