"""Baseline controllers: paper defaults, the sigma window, and input checks."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.types import StepInfo
from controllers import FixedController, SigmaWindowController


def info(sigma: float, b: int = 2) -> StepInfo:
    return StepInfo(0, 18, sigma, sigma, torch.zeros(b), torch.zeros(b, dtype=torch.long))


def test_fixed_defaults_are_the_papers() -> None:
    k = FixedController().decide(info(5.0))
    assert (k.n, k.lam) == (4, 0.15)
    assert k.k.tolist() == [20, 20] and torch.allclose(k.eps, torch.tensor([0.4, 0.4]))


def test_sigma_window() -> None:
    c = SigmaWindowController()
    assert c.decide(info(0.5)).k.tolist() == [20, 20]
    assert c.decide(info(5.0)).k.tolist() == [1, 1]
    assert c.decide(info(0.005)).k.tolist() == [1, 1]


@pytest.mark.parametrize(
    "kw, name", [({"n": 0}, "n"), ({"k": -2}, "k"), ({"eps": 2.0}, "eps"), ({"lam": -1.0}, "lam")]
)
def test_fixed_bad_input(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        FixedController(**kw)


def test_window_bad_bounds() -> None:
    with pytest.raises(ValueError, match="lo"):
        SigmaWindowController(lo=2.0, hi=1.0)
