"""Closed-loop stopping controller: search a sample only until its pivot's one-step score says,
through the learned reliability model, that it will hold the target with the given confidence.

Per searchable step at ``sigma_hat`` (a function of sigma, not of the step index):

* ``tau(sigma_hat)`` = the smallest score with ``P(r_0 >= q | s, sigma_hat) >= level``
  (:meth:`~controllers.reliability.ReliabilityModel.threshold`), ``level = confidence`` times
  the best probability any score reaches at that sigma (``rule="relative"``: where the score
  says nothing, ``P`` is flat and nothing is searched) or ``confidence`` itself
  (``rule="absolute"``: a step where no score reaches it is *uncertifiable* and gets no search
  unless ``search_uncertifiable``).
* Before each iteration (the first one too) a sample keeps searching only while its pivot score
  is below ``tau``: the comparison runs on the device, the surviving rows are read back once
  per iteration (stopped samples leave the network calls and are charged nothing).
* Hard budgets with rollover (``budget`` NFEs per sample): every step reserves the calls that the
  rest of plain sampling needs, and the pool left (what earlier steps did not spend rolls over)
  is spread over the searchable steps still to come; ``budget_mode="batch"`` pools the whole
  batch and gives a step's share to the samples with the lowest predicted success first.
  ``"prompt"`` (the default) keeps each sample's decisions independent of the rest of the batch.
  With ``prices`` the budget is in FLOPs per sample, the reward's calls included
  (:func:`controllers.budget.budget_terms`).
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor

from adaptive_tts.compute import FlopPrices
from adaptive_tts.control import check_float, check_int
from adaptive_tts.types import IterInfo, Knobs, StepInfo
from controllers.budget import budget_terms, check_budget_value
from controllers.reliability import ReliabilityModel
from controllers.schedule import write_json
from controllers.schema import check_keys, check_unit

SCHEMA = "adaptive_tts.closed_loop/1"
STOPPING_KEYS = frozenset(
    ("schema", "kind", "confidence", "n", "k_max", "eps", "lam", "move", "budget")
    + ("budget_mode", "search_uncertifiable", "rule", "spread", "model", "meta", "data")
    + ("budget_unit", "prices")
)
"""Keys of a saved stopping controller."""
MODEL_KEYS = frozenset(
    ("kind", "q", "target", "levels", "transform", "log_sigma_range", "z_grid", "p_grid")
    + ("params", "metrics")
)
BudgetMode = Literal["prompt", "batch"]


@dataclass
class StoppingController:
    """Per-sample stopping from a :class:`ReliabilityModel` (see the module docstring).

    Args:
        model: the fitted reliability model.
        confidence: required ``P(r_0 >= q)`` to stop.
        n, k_max, eps, lam, move: candidates per iteration, iteration cap per step, exploration
            rate, neighbour radius and move (defaults: fresh draws only).
        budget: hard NFE budget per sample (``None``: only ``k_max`` caps the search); FLOPs
            per sample when ``prices`` are given.
        budget_mode: ``prompt`` (per sample) or ``batch`` (pooled over the batch).
        search_uncertifiable: also search (up to ``k_max``) where no score certifies success.
        rule: ``relative`` or ``absolute`` confidence (module docstring).
        spread: how a sample's budget pool is spent: ``even`` (the pool over the searchable
            steps ahead) or ``greedy`` (all of it may go to this step, up to ``k_max``).
        prices: FLOPs per NFE and per reward call (:func:`adaptive_tts.compute.measure_prices`)
            for a budget in FLOPs.
    """

    model: ReliabilityModel
    confidence: float = 0.95
    n: int = 1
    k_max: int = 8
    eps: float = 1.0
    lam: float = 0.15
    move: Literal["additive", "gaussian"] = "additive"
    budget: float | None = None
    budget_mode: BudgetMode = "prompt"
    search_uncertifiable: bool = False
    rule: Literal["relative", "absolute"] = "relative"
    spread: Literal["even", "greedy"] = "even"
    sampler: Any = None
    meta: dict[str, Any] = field(default_factory=dict)
    prices: FlopPrices | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.confidence < 1.0:
            raise ValueError(f"confidence must lie in (0, 1), got {self.confidence}")
        check_int(self.n, "n", 1)  # 2.7 and True refused, not truncated
        check_int(self.k_max, "k_max", 0)
        check_float(self.eps, "eps", 0.0, 1.0)  # NaN refused
        check_float(self.lam, "lam", 0.0)
        if self.rule not in ("relative", "absolute"):
            raise ValueError(f"rule must be 'relative' or 'absolute', got {self.rule!r}")
        if self.spread not in ("even", "greedy"):
            raise ValueError(f"spread must be 'even' or 'greedy', got {self.spread!r}")
        if self.budget_mode not in ("prompt", "batch"):
            raise ValueError(f"budget_mode must be 'prompt' or 'batch', got {self.budget_mode!r}")
        if self.prices is not None and self.budget is None:
            raise ValueError("prices (a budget in FLOPs) need a budget")
        if self.budget is not None:
            if self.sampler is None:
                raise ValueError("a budget needs the sampler (to reserve the plain steps' calls)")
            self.budget = check_budget_value(self.budget, self.sampler, self.prices)
        self._tau: dict[float, float] = {}

    def tau(self, sigma_hat: float) -> float:
        """Stopping threshold on the score at ``sigma_hat`` (``inf``: uncertifiable)."""
        if sigma_hat not in self._tau:
            if not self.model.covers(sigma_hat):
                lo, hi = math.exp(self.model.u_lo), math.exp(self.model.u_hi)
                raise ValueError(
                    f"sigma_hat {sigma_hat:.4g} lies outside the calibrated range "
                    f"[{lo:.4g}, {hi:.4g}] of this controller: calibrate on a sampler whose "
                    "sigmas cover it"
                )
            self._tau[sigma_hat] = self.model.threshold(
                math.log(sigma_hat), self.confidence, self.rule == "relative"
            )
        return self._tau[sigma_hat]

    def _searchable_ahead(self, step: StepInfo) -> int:
        """Searchable, certifiable steps from this one to the end (this one included)."""
        s = self.sampler
        count = 0
        for j in range(step.index, s.num_steps):
            if s.noise_scale(j) == 0.0:
                continue
            sh = s.sigma_hat(j) if hasattr(s, "sigma_hat") else s.sigma(j + 1)
            if self.search_uncertifiable or math.isfinite(self.tau(sh)):
                count += 1
        return max(count, 1)

    def decide(self, step: StepInfo) -> Knobs:
        b = step.batch
        tau = self.tau(step.sigma_hat)
        k_step = self.k_max if (math.isfinite(tau) or self.search_uncertifiable) else 0
        k = torch.full((b,), k_step, dtype=torch.long)
        if self.budget is not None and k_step > 0:
            k = torch.minimum(k, self._budget_caps(step))
        return Knobs(self.n, k, torch.full((b,), self.eps), self.lam, self.move)

    def _budget_caps(self, step: StepInfo) -> Tensor:
        """Iteration caps ``(B,)`` that keep every sample (or the batch) within the budget."""
        assert self.budget is not None
        spent, reserve, per = budget_terms(self.sampler, step, self.prices)
        ahead = self._searchable_ahead(step) if self.spread == "even" else 1
        if self.budget_mode == "prompt":
            pool = (self.budget - spent - reserve).clamp_min(0)
            return torch.floor(pool / ahead / (self.n * per)).long()
        total = max(self.budget * len(spent) - float(spent.sum()) - reserve * len(spent), 0.0)
        iters = int(total / ahead // (self.n * per))
        scores = step.scores.detach().double().cpu()  # batch mode reads the probe scores
        p = self.model.prob(scores, math.log(step.sigma_hat))
        needy = scores < self.tau(step.sigma_hat)
        caps = torch.zeros(len(spent), dtype=torch.long)
        for j in torch.argsort(p, stable=True).tolist():  # least likely to succeed first
            if not bool(needy[j]) or iters <= 0:
                continue
            give = min(self.k_max, iters)
            caps[j], iters = give, iters - give
        return caps

    def keep_searching(self, it: IterInfo) -> Tensor:
        """Keep the samples whose current pivot score is still below ``tau``."""
        return it.history[:, -1] < self.tau(it.step.sigma_hat)

    def summary(self) -> dict[str, Any]:
        """JSON-ready: the model, its success level and the threshold at a few sigmas."""
        m = self.model
        sig = [math.exp(m.u_lo + (m.u_hi - m.u_lo) * f) for f in (0.0, 0.25, 0.5, 0.75, 1.0)]
        return {
            "model": m.kind,
            "q": m.q,
            "target": m.target,
            "confidence": self.confidence,
            "metrics": m.metrics,
            "threshold": {f"{s:.4g}": self.tau(s) for s in sig},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "kind": "stopping",
            "confidence": self.confidence,
            "n": self.n,
            "k_max": self.k_max,
            "eps": self.eps,
            "lam": self.lam,
            "move": self.move,
            "budget": self.budget,
            "budget_mode": self.budget_mode,
            "search_uncertifiable": self.search_uncertifiable,
            "rule": self.rule,
            "spread": self.spread,
            **(
                {"budget_unit": "flops", "prices": self.prices.to_dict()}
                if self.prices is not None
                else {}
            ),
            "model": self.model.to_dict(),
            "meta": self.meta,
        }

    def save(self, path: str | os.PathLike[str], plot: bool = False) -> Path:
        """Versioned JSON (atomic), the model's calibration data beside it
        (``NAME.data.safetensors``) and with ``plot`` its figure (``NAME.png``)."""
        path = Path(path)
        d = self.to_dict()
        data = self.model.save_data(path.with_suffix(".data.safetensors"))
        if data is not None:
            d["data"] = data.name
        try:
            if plot:
                plot_stopping(self, path.with_suffix(".png"))
            return write_json(d, path)
        except BaseException:
            if data is not None:  # no data file beside a controller that was not written
                data.unlink(missing_ok=True)
            raise

    @classmethod
    def from_dict(
        cls, d: dict[str, Any], sampler: Any = None, **override: Any
    ) -> StoppingController:
        if d.get("schema") != SCHEMA:
            raise ValueError(f"schema {d.get('schema')!r}, expected {SCHEMA!r}")
        check_keys(d, STOPPING_KEYS, "stopping controller")
        if not isinstance(d.get("model"), dict):
            raise ValueError("key 'model' must be the reliability model's object")
        check_keys(d["model"], MODEL_KEYS, "stopping controller: model")
        keys = ("confidence", "n", "k_max", "eps", "lam", "move", "budget", "budget_mode")
        keys2 = (*keys, "rule", "spread")
        opts = {k: d[k] for k in keys2 if k in d}
        opts["search_uncertifiable"] = bool(d.get("search_uncertifiable", False))
        opts["meta"] = dict(d.get("meta", {}))
        check_unit({"unit": d.get("budget_unit", "nfe"), "prices": d.get("prices")}, "stopping")
        if d.get("budget_unit") == "flops":
            opts["prices"] = FlopPrices.from_dict(d["prices"])
        opts.update(override)
        return cls(ReliabilityModel.from_dict(d["model"]), sampler=sampler, **opts)


def fit_stopping(
    traces: list[dict[str, Any]],
    sampler: Any = None,
    target: float = 0.99,
    model: str = "logistic",
    reference: list[dict[str, Any]] | None = None,
    **options: Any,
) -> StoppingController:
    """Fit the reliability model on budget-varied ``traces`` and wrap it in a controller
    (``options``: :class:`StoppingController` settings such as ``confidence``, ``n``,
    ``k_max``, ``budget``)."""
    from controllers.reliability import fit_reliability

    rel = fit_reliability(traces, target, model, reference=reference)  # type: ignore[arg-type]
    first = traces[0]
    meta = {
        "model": first.get("model"),
        "task": first.get("task"),
        "calibration_sampler": first.get("sampler"),
        "calibration_traces": len(traces),
        "calibration_nfe": sum(int(t["nfe"]["total"]) for t in [*traces, *(reference or [])]),
    }
    return StoppingController(rel, sampler=sampler, meta=meta, **options)


def load_stopping(d: dict[str, Any], sampler: Any | None = None) -> StoppingController:
    """A saved :class:`StoppingController` (a budget needs ``sampler``)."""
    return StoppingController.from_dict(d, sampler=sampler)


def plot_stopping_fit(ctrl: Any, traces: Any, path: str) -> None:
    """Registry adaptor: the reliability surface and threshold (``traces`` unused)."""
    plot_stopping(ctrl, path)


def plot_stopping(ctrl: StoppingController, path: str | os.PathLike[str]) -> None:
    """``P(r_0 >= q | s, sigma)`` over (log sigma, score) with the stopping threshold, and the
    calibration observations' success rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from adaptive_tts.viz import save_figure

    m = ctrl.model
    ls = torch.linspace(m.u_lo, m.u_hi, 65)
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    zg = m.z_grid.numpy()
    im = ax.pcolormesh(ls.numpy(), zg, m.p_grid.numpy().T, shading="auto", vmin=0, vmax=1)
    fig.colorbar(im, ax=ax, label="P(final reward >= q)")
    tau = [ctrl.tau(math.exp(float(v))) for v in ls]
    tz = [float(m.transform(torch.tensor([t]))[0]) if math.isfinite(t) else math.nan for t in tau]
    ax.plot(ls.numpy(), tz, "w-", lw=2, label=f"stop threshold (confidence {ctrl.confidence})")
    ax.set_xlabel("log sigma_hat")
    ax.set_ylabel(f"score ({m.transform.kind})")
    ax.set_title(f"{m.kind} reliability, q = {m.q:.4g} (target {m.target})")
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=110)  # atomic
