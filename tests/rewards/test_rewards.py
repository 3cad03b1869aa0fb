"""Rewards: values, ranges, batching, composite weights and non-finite errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from adaptive_tts.rewards import (
    Brightness,
    ClassifierReward,
    Composite,
    Compressibility,
    GaussianLogDensity,
    OnImages,
    check_finite,
)


def test_brightness_grey_and_rgb() -> None:
    grey = torch.full((2, 1, 8, 8), 0.25)
    assert torch.allclose(Brightness()(grey), torch.tensor([0.25, 0.25]))
    rgb = torch.zeros(1, 3, 4, 4)
    rgb[:, 1] = 1.0  # pure green: luma 0.7152
    assert Brightness()(rgb).item() == pytest.approx(0.7152)


def test_compressibility_prefers_flat_images() -> None:
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 1, 32, 32), 0.5)
    noise = torch.rand(1, 1, 32, 32, generator=g)
    r = Compressibility(quality=80)
    vals = r(torch.cat([flat, noise]))
    assert vals.shape == (2,) and vals[0] > vals[1]
    assert ((vals >= 0) & (vals <= 1)).all()
    with pytest.raises(ValueError, match="quality"):
        Compressibility(quality=0)


class Linear(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.flatten(1))


def test_classifier_reward_prob_and_logprob() -> None:
    torch.manual_seed(0)
    clf = Linear()
    x = torch.rand(4, 1, 4, 4)
    p = ClassifierReward(clf, target=1)(x)
    lp = ClassifierReward(clf, target=1, output="logprob")(x)
    assert torch.allclose(p.log(), lp, atol=1e-6)
    by_cond = ClassifierReward(clf)(x, torch.tensor([1, 1, 1, 1]))
    assert torch.allclose(by_cond, p)
    with pytest.raises(ValueError, match="cond"):
        ClassifierReward(clf)(x, None)
    with pytest.raises(ValueError, match="target"):
        ClassifierReward(clf, target=7)(x)


def test_composite_is_weighted_sum() -> None:
    x = torch.rand(3, 1, 8, 8)
    b, c = Brightness(), Compressibility()
    u = Composite([(2.0, b), (0.5, c)])
    assert torch.allclose(u(x, None), 2.0 * b(x) + 0.5 * c(x))
    assert set(u.components(x, None)) == {"brightness", "compressibility"}
    with pytest.raises(ValueError, match="terms"):
        Composite([])


def test_non_finite_reward_is_named() -> None:
    with pytest.raises(ValueError, match="my-reward"):
        check_finite(torch.tensor([1.0, float("inf")]), "my-reward")

    class Bad:
        name = "bad"

        def __call__(self, x, cond=None):
            return torch.tensor([float("nan")] * x.shape[0])

    with pytest.raises(ValueError, match="bad"):
        OnImages(Bad(), lambda x: x)(torch.zeros(1, 1, 2, 2), None)


def test_gaussian_log_density_peaks_at_mean() -> None:
    r = GaussianLogDensity(torch.zeros(4), 1.0)
    v = r(torch.stack([torch.zeros(4), torch.ones(4)]))
    assert v[0] > v[1]
    assert v[0].item() == pytest.approx(
        -0.5 * torch.log(torch.tensor(2 * torch.pi)).item(), rel=1e-5
    )
