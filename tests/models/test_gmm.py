"""The exact mixture: posterior mean limits and moments."""

from __future__ import annotations

import pytest
import torch

from adaptive_tts.models.gmm import GaussianMixture, make_gmm


def test_posterior_mean_limits(gmm: GaussianMixture) -> None:
    x = torch.randn(5, 8)
    assert torch.allclose(gmm(x, torch.full((5,), 1e-6)), x, atol=1e-5)
    far = gmm(x * 0, torch.full((5,), 1e6))
    mean, _ = gmm.moments()
    assert torch.allclose(far[0].double(), mean, atol=1e-4)


def test_conditional_mean_uses_class_components(gmm: GaussianMixture) -> None:
    out = gmm(torch.zeros(2, 8), torch.full((2,), 1e6), torch.tensor([1, 1]))
    mean1, _ = gmm.moments(cond=1)
    assert torch.allclose(out[0].double(), mean1, atol=1e-4)
    with pytest.raises(ValueError, match="cond"):
        gmm(torch.zeros(2, 8), torch.ones(2), torch.tensor([9, 0]))


def test_image_shaped_mixture() -> None:
    g = make_gmm(dim=16, shape=(1, 4, 4))
    x = torch.randn(2, 1, 4, 4)
    assert g(x, torch.ones(2)).shape == (2, 1, 4, 4)
    assert ((g.to_image(x) >= 0) & (g.to_image(x) <= 1)).all()
    with pytest.raises(ValueError, match="shape"):
        make_gmm(dim=16, shape=(1, 3, 3))
