"""One entry point to fit any registered learned controller from calibration traces."""

from __future__ import annotations

from typing import Any

from controllers.registry import CONTROLLERS, make_controller


def fit_controller(
    kind: str, traces: list[dict[str, Any]], sampler: Any | None = None, **options: Any
) -> Any:
    """Fit a registered ``kind`` (``binomial``, ``gp``, ``gain``, ``budget``, or a plug-in) on
    eps-greedy calibration ``traces``.

    ``options`` go to the kind's fit (``mapping`` for binomial, ``kernel`` for gp, ``k_mean``
    for gain; ``budget`` NFEs per sample for budget, which also needs ``sampler``). An option
    the kind does not take is a ``TypeError``; a kind that is built, not fitted (``fixed``,
    ``window``), a ``ValueError``.
    """
    if not CONTROLLERS[kind].fitted:
        fitted = sorted(k for k, v in CONTROLLERS.items() if v.fitted)
        raise ValueError(f"controller kind {kind!r} is not fitted; fitted kinds: {fitted}")
    return make_controller(kind, traces, sampler, **options)
