"""Embedded models shipped inside the package, loaded by name with no network access.

* ``"mnist"``: a class-conditional EDM denoiser for 32x32 MNIST (label 10 = unconditional),
  :class:`~adaptive_tts.models.edm_unet.EDMUNetDenoiser`, float32.
* ``"mnist-reward-clf"``: the small CNN digit classifier used as the search reward.
* ``"mnist-eval-clf"``: an independent residual-net digit classifier for evaluation only.

Classifiers take images in [0, 1] of shape ``(B, 1, 32, 32)`` and return logits ``(B, 10)``.
diffusers is imported only when the diffusion model is loaded.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from torch import nn

from adaptive_tts.registry import Registry

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

__all__ = ["LOADERS", "WEIGHTS_DIR", "WEIGHTS", "available", "load", "weights_path"]


def _edm(directory: Path) -> nn.Module:
    from adaptive_tts.models.edm_unet import EDMUNetDenoiser

    return EDMUNetDenoiser.from_pretrained(directory)


def _classifier(directory: Path) -> nn.Module:
    from adaptive_tts.models.classifiers import load_classifier

    return load_classifier(directory)


LOADERS: Registry[Callable[[Path], nn.Module]] = Registry(
    "weights format", {"edm": _edm, "classifier": _classifier}
)
"""Weights format -> ``load(directory) -> nn.Module``."""

WEIGHTS: Registry[str] = Registry(
    "shipped model",
    {"mnist": "edm", "mnist-reward-clf": "classifier", "mnist-eval-clf": "classifier"},
)
"""Shipped weights (a folder under :data:`WEIGHTS_DIR`) -> their format in :data:`LOADERS`."""


def available() -> list[str]:
    """Names accepted by :func:`load`."""
    return sorted(WEIGHTS)


def weights_path(name: str) -> Path:
    """Directory holding the shipped weights of ``name``."""
    if name not in WEIGHTS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(available())}")
    return WEIGHTS_DIR / name


def load(name: str, device: str = "cpu") -> nn.Module:
    """Load shipped weights by name, in eval mode with gradients off, on ``device``.

    Raises:
        ValueError: unknown ``name`` (the message lists the available names).
        FileNotFoundError: the weights are missing from the installed package.
    """
    directory = weights_path(name)
    if not directory.is_dir():
        raise FileNotFoundError(f"weights for {name!r} not found: {directory}")
    model = LOADERS[WEIGHTS[name]](directory)
    return model.to(device).eval().requires_grad_(False)
