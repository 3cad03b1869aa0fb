"""A config's ``budget_flops`` on a stopping controller: fitted on the calibration traces,
priced on the task once, deployed with its budget in FLOPs."""

from __future__ import annotations

from pathlib import Path

import pytest

from adaptive_tts.compute import FlopPrices
from adaptive_tts.tasks import build_task
from controllers.closed_loop import StoppingController
from experiments.calibration import calibrate
from experiments.run import build_controller


def test_budget_flops_prices_the_task(tmp_path: Path) -> None:
    gmm = build_task("gmm-target")
    sampler = gmm.make_sampler("heun", 8)
    pairs = [(j % 4, 100 + j) for j in range(16)]
    dirs = []
    for k in (0, 1, 3):
        calibrate(gmm, "eps-greedy", sampler, pairs, tmp_path / f"k{k}", batch=16,
                  progress=False, n=2, k=k, eps=1.0)  # fmt: skip
        dirs.append(tmp_path / f"k{k}")
    mnist = build_task("mnist-target")  # FLOPs torch can count: the UNet and the classifier
    spec = {"kind": "stopping", "target": 0.9, "budget_flops": "3x"}
    ctrl = build_controller(spec, {"budgets": dirs}, sampler, mnist)
    assert isinstance(ctrl, StoppingController) and isinstance(ctrl.prices, FlopPrices)
    assert ctrl.prices.reward > 0
    assert ctrl.budget == pytest.approx(3 * ctrl.prices.naive(sampler))
    with pytest.raises(ValueError, match="needs the task"):
        build_controller(spec, {"budgets": dirs}, sampler)
    with pytest.raises(ValueError, match="saw no FLOPs in the network"):
        build_controller(spec, {"budgets": dirs}, sampler, gmm)
