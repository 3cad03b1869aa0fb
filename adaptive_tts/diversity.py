"""Diversity of a set of outputs for one prompt: mean pairwise L2 distance between features.

EvoSearch's claim (seed 002) is higher reward without the diversity collapse of best-of-N; the
paper measures diversity as the L2 distance between outputs in a feature space (CLIP there). Here
the features are a classifier's penultimate layer (``features(x)``) when it has one, else its
logits, or raw samples for models without an image classifier.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


def pairwise_diversity(features: Tensor) -> float:
    """Mean L2 distance over all unordered pairs of rows of ``features`` ``(B_set, F)``.

    Rows beyond two dimensions are flattened (``(B_set, *F)``). Raises ``ValueError`` for fewer
    than two rows (diversity of a single output is undefined) or non-finite values.
    """
    if features.dim() < 2:
        raise ValueError(f"features must have shape (B_set, F), got {tuple(features.shape)}")
    n = features.shape[0]
    if n < 2:
        raise ValueError(f"features must hold at least 2 rows (outputs of one prompt), got {n}")
    f = features.reshape(n, -1).double()
    if not torch.isfinite(f).all():
        raise ValueError("features must be finite (no NaN/inf)")
    d = torch.cdist(f, f, compute_mode="donot_use_mm_for_euclid_dist")
    iu = torch.triu_indices(n, n, offset=1)
    return float(d[iu[0], iu[1]].mean())


def classifier_features(images: Tensor, classifier: Any) -> Tensor:
    """``(B, F)`` features of ``images`` ``(B, C, H, W)``: ``classifier.features(x)`` (the
    penultimate layer) when the classifier has that method, else its logits ``classifier(x)``."""
    with torch.no_grad():
        fn = getattr(classifier, "features", None)
        out = fn(images) if callable(fn) else classifier(images)
    return out.reshape(images.shape[0], -1).float()


def feature_diversity(images: Tensor, classifier: Any) -> float:
    """Diversity of a set of outputs of one prompt, ``images`` ``(B_set, C, H, W)`` in the
    classifier's input range: :func:`pairwise_diversity` of :func:`classifier_features`."""
    return pairwise_diversity(classifier_features(images, classifier))


def grouped_diversity(features: Tensor, groups: Tensor) -> float:
    """Mean over groups (prompts) of the within-group :func:`pairwise_diversity`.

    Args:
        features: ``(N, F)`` one row per output; groups: ``(N,)`` group id per row. Groups with
            fewer than two rows are skipped; raises ``ValueError`` if none has two.
    """
    if groups.shape != (features.shape[0],):
        raise ValueError(
            f"groups must have shape ({features.shape[0]},), got {tuple(groups.shape)}"
        )
    vals = [
        pairwise_diversity(features[groups == g])
        for g in torch.unique(groups).tolist()
        if int((groups == g).sum()) >= 2
    ]
    if not vals:
        raise ValueError("no group holds at least 2 outputs")
    return float(sum(vals) / len(vals))
