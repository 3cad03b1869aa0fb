"""Shared fixtures: a small exact Gaussian mixture and a closed-form target reward; tiny model
directories (SD, SD3, EDM) built offline and saved as diffusers saves them; an installed reward
plug-in's entry point."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

import pytest
import torch

from adaptive_tts.models.gmm import GaussianMixture, make_gmm
from adaptive_tts.rewards import GaussianLogDensity
from adaptive_tts.rewards.spec import ENTRY_POINT_GROUP

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def gmm() -> GaussianMixture:
    return make_gmm(dim=8, num_classes=4, per_class=2, seed=0)


@pytest.fixture(scope="session")
def target_reward(gmm: GaussianMixture) -> GaussianLogDensity:
    """Log-density of component 0 (class 0): high only near that component."""
    return GaussianLogDensity(gmm.means[0], gmm.variances[0])


@pytest.fixture(scope="session")
def sd_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny Stable Diffusion pipeline directory."""
    from tests.models.test_latent_t2i import build_pipeline

    return build_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="session")
def sd3_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny SD3 pipeline directory."""
    from tests.models.test_model_specs import build_sd3

    return build_sd3(tmp_path_factory.mktemp("sd3"))


@pytest.fixture(scope="session")
def edm_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny EDM-preconditioned UNet directory (2 classes)."""
    from adaptive_tts.models.edm_unet import EDMConfig, EDMUNetDenoiser
    from tests.models.test_edm_unet import tiny_unet

    root = tmp_path_factory.mktemp("edm")
    torch.manual_seed(0)
    EDMUNetDenoiser(tiny_unet(), EDMConfig(num_classes=2, sigma_max=40.0)).save_pretrained(root)
    return root


@pytest.fixture
def contrast_plugin(monkeypatch) -> None:
    """An installed distribution's entry point ``contrast`` in the reward group."""
    real = importlib.metadata.entry_points
    ep = importlib.metadata.EntryPoint(
        "contrast", "tests.fixtures.reward_plugin:Contrast", ENTRY_POINT_GROUP
    )

    def entry_points(**kw: Any) -> Any:
        return [ep] if kw.get("group") == ENTRY_POINT_GROUP else real(**kw)

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
