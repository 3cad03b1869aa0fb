"""Diversity metrics: mean pairwise L2 distance, classifier features, grouping."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from adaptive_tts.diversity import (
    classifier_features,
    feature_diversity,
    grouped_diversity,
    pairwise_diversity,
)


def test_pairwise_matches_brute_force() -> None:
    f = torch.randn(7, 5, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    brute = [float((f[i] - f[j]).norm()) for i, j in itertools.combinations(range(7), 2)]
    assert pairwise_diversity(f) == pytest.approx(sum(brute) / len(brute), rel=1e-9)


def test_known_values_and_invariances() -> None:
    square = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    # 4 sides of length 1, 2 diagonals of sqrt(2)
    assert pairwise_diversity(square) == pytest.approx((4 + 2 * math.sqrt(2)) / 6)
    assert pairwise_diversity(torch.ones(5, 3)) == 0.0  # collapse -> 0
    assert pairwise_diversity(square + 3.0) == pytest.approx(pairwise_diversity(square))
    assert pairwise_diversity(2 * square) == pytest.approx(2 * pairwise_diversity(square))
    imgs = square.view(4, 1, 1, 2)  # extra dims are flattened
    assert pairwise_diversity(imgs) == pytest.approx(pairwise_diversity(square))


def test_gaussian_sets_have_the_expected_distance() -> None:
    """E|x - y| for x, y ~ N(0, I_d) is about sqrt(2d): wider sets are more diverse."""
    g = torch.Generator().manual_seed(1)
    d = 400
    f = torch.randn(32, d, generator=g, dtype=torch.float64)
    assert pairwise_diversity(f) == pytest.approx(math.sqrt(2 * d), rel=0.02)
    assert pairwise_diversity(0.1 * f) < pairwise_diversity(f)


class WithFeatures(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(16, 6), nn.ReLU())
        self.head = nn.Linear(6, 3)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


def test_classifier_features_prefer_penultimate_layer() -> None:
    torch.manual_seed(0)
    clf = WithFeatures()
    x = torch.rand(5, 1, 4, 4)
    assert classifier_features(x, clf).shape == (5, 6)
    logits_only = nn.Sequential(nn.Flatten(), nn.Linear(16, 3))
    assert classifier_features(x, logits_only).shape == (5, 3)
    want = pairwise_diversity(clf.features(x).detach())
    assert feature_diversity(x, clf) == pytest.approx(want)


def test_grouped_diversity_averages_within_groups() -> None:
    f = torch.tensor([[0.0], [2.0], [10.0], [10.0], [5.0]])
    groups = torch.tensor([0, 0, 1, 1, 2])  # group 2 has a single output: skipped
    assert grouped_diversity(f, groups) == pytest.approx((2.0 + 0.0) / 2)


@pytest.mark.parametrize(
    "features, match",
    [
        (torch.zeros(1, 3), "at least 2"),
        (torch.zeros(4), "shape"),
        (torch.tensor([[0.0], [float("nan")]]), "finite"),
    ],
)
def test_bad_input(features: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        pairwise_diversity(features)
    with pytest.raises(ValueError, match="groups"):
        grouped_diversity(torch.zeros(3, 2), torch.zeros(2))
    with pytest.raises(ValueError, match="at least 2"):
        grouped_diversity(torch.zeros(2, 2), torch.tensor([0, 1]))
