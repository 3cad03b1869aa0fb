"""Pictures: sample grids (PNG), written atomically."""

from __future__ import annotations

import math
import os
from pathlib import Path

from torch import Tensor


def save_grid(
    images: Tensor,
    path: str | os.PathLike[str],
    labels: list[str] | None = None,
    ncol: int | None = None,
    title: str | None = None,
) -> Path:
    """Save ``(B, C, H, W)`` images in [0, 1] as a labelled grid PNG; returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if images.dim() != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    b = images.shape[0]
    ncol = ncol or min(b, 8)
    nrow = math.ceil(b / ncol)
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(1.3 * ncol, 1.45 * nrow + (0.3 if title else 0)), squeeze=False
    )
    imgs = images.detach().float().clamp(0, 1).cpu()
    for idx, ax in enumerate(axes.flat):
        ax.axis("off")
        if idx >= b:
            continue
        img = imgs[idx]
        if img.shape[0] == 1:
            ax.imshow(img[0].numpy(), cmap="gray", vmin=0, vmax=1)
        else:
            ax.imshow(img.permute(1, 2, 0).numpy())
        if labels is not None:
            ax.set_title(labels[idx], fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path)


def save_figure(fig: object, path: str | os.PathLike[str], dpi: int = 100) -> Path:
    """Save a matplotlib figure atomically (temp file, then rename) and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp" + path.suffix)
    fig.savefig(tmp, dpi=dpi)  # type: ignore[attr-defined]
    plt.close(fig)  # type: ignore[arg-type]
    os.replace(tmp, path)
    return path
