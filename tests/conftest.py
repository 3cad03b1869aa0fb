"""Shared fixtures: a small exact Gaussian mixture and a closed-form target reward."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.models.gmm import GaussianMixture, make_gmm
from adaptive_tts.rewards import GaussianLogDensity

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gmm() -> GaussianMixture:
    return make_gmm(dim=8, num_classes=4, per_class=2, seed=0)


@pytest.fixture(scope="session")
def target_reward(gmm: GaussianMixture) -> GaussianLogDensity:
    """Log-density of component 0 (class 0): high only near that component."""
    return GaussianLogDensity(gmm.means[0], gmm.variances[0])
