"""Rewards: batched scores of samples, higher is better.

Image rewards take images in [0, 1] of shape ``(B, C, H, W)``; :class:`OnImages` adapts them to
model-space samples through a backend's ``to_image``. Every reward output is checked: a NaN or
infinite value is a ``ValueError`` naming the reward.
"""

from adaptive_tts.rewards.base import (
    Composite,
    GaussianLogDensity,
    OnImages,
    check_finite,
)
from adaptive_tts.rewards.image import Brightness, ClassifierReward, Compressibility

__all__ = [
    "Brightness",
    "ClassifierReward",
    "Composite",
    "Compressibility",
    "GaussianLogDensity",
    "OnImages",
    "check_finite",
]
