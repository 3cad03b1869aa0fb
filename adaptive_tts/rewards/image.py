"""Image rewards on ``(B, C, H, W)`` images in [0, 1]: brightness, JPEG compressibility and a
classifier's probability of a class (the paper's three EDM rewards)."""

from __future__ import annotations

import io
from typing import Literal

import torch
from torch import Tensor, nn

from adaptive_tts.cuda_graphs import capturing

LUMA = (0.2126, 0.7152, 0.0722)


def _check_images(images: Tensor, name: str) -> None:
    if images.dim() != 4 or images.shape[1] not in (1, 3):
        raise ValueError(
            f"{name}: images must have shape (B, 1|3, H, W), got {tuple(images.shape)}"
        )


class Brightness:
    """Mean luma ``0.2126 R + 0.7152 G + 0.0722 B`` (grey images: mean value), in [0, 1]."""

    name = "brightness"

    def __call__(self, images: Tensor, cond: Tensor | None = None) -> Tensor:
        _check_images(images, self.name)
        if images.shape[1] == 1:
            return images.float().mean(dim=(1, 2, 3))
        w = torch.tensor(LUMA, device=images.device).view(1, 3, 1, 1)
        return (images.float() * w).sum(1).mean(dim=(1, 2))


class Compressibility:
    """``1 - clip(jpeg_bytes / max_bytes, 0, 1)`` with Pillow's JPEG encoder.

    Args:
        quality: JPEG quality (the paper's public code used 80).
        max_bytes: normaliser; default ``C * H * W`` (the raw 8-bit size of the image).
    """

    name = "compressibility"

    def __init__(self, quality: int = 80, max_bytes: int | None = None):
        if not 1 <= quality <= 95:
            raise ValueError(f"quality must lie in [1, 95], got {quality}")
        if max_bytes is not None and max_bytes < 1:
            raise ValueError(f"max_bytes must be >= 1, got {max_bytes}")
        self.quality = quality
        self.max_bytes = max_bytes

    def jpeg_bytes(self, images: Tensor) -> Tensor:
        """Encoded size of each image in bytes, ``(B,)``."""
        from PIL import Image

        arr = (images.detach().float().clamp(0, 1) * 255).round().to(torch.uint8).cpu()
        sizes = []
        for img in arr:
            buf = io.BytesIO()
            mode = "L" if img.shape[0] == 1 else "RGB"
            data = img[0].numpy() if mode == "L" else img.permute(1, 2, 0).numpy()
            Image.fromarray(data, mode=mode).save(buf, format="JPEG", quality=self.quality)
            sizes.append(buf.tell())
        return torch.tensor(sizes, dtype=torch.float32)

    def __call__(self, images: Tensor, cond: Tensor | None = None) -> Tensor:
        _check_images(images, self.name)
        max_bytes = self.max_bytes or images[0].numel()
        return (1.0 - (self.jpeg_bytes(images) / max_bytes).clamp(0, 1)).to(images.device)


class ClassifierReward:
    """Probability (or log-probability) of a class under a torch classifier on clean images.

    Args:
        classifier: ``(B, C, H, W)`` images in [0, 1] -> logits ``(B, num_classes)``.
        target: fixed class; ``None`` uses each sample's ``cond`` as its class.
        output: ``"prob"`` or ``"logprob"``.
    """

    def __init__(
        self,
        classifier: nn.Module,
        target: int | None = None,
        output: Literal["prob", "logprob"] = "prob",
        name: str = "classifier",
    ):
        if output not in ("prob", "logprob"):
            raise ValueError(f"output must be 'prob' or 'logprob', got {output!r}")
        self.classifier = classifier
        self.target = target
        self.output = output
        self.name = name

    def __call__(self, images: Tensor, cond: Tensor | None = None) -> Tensor:
        _check_images(images, self.name)
        p = next(iter(self.classifier.parameters()), None)
        dev = p.device if p is not None else images.device
        with torch.no_grad():
            logp = torch.log_softmax(self.classifier(images.float().to(dev)).float(), dim=1)
        if self.target is not None:
            if not 0 <= self.target < logp.shape[1]:
                raise ValueError(f"target must lie in [0, {logp.shape[1] - 1}], got {self.target}")
            cls = torch.full((images.shape[0],), self.target, dtype=torch.long, device=dev)
        elif cond is None:
            raise ValueError(f"{self.name}: target is None, so cond (the class) is required")
        else:
            cls = cond.to(dev).long()
            if not capturing() and ((cls < 0) | (cls >= logp.shape[1])).any():
                raise ValueError(f"{self.name}: cond classes must lie in [0, {logp.shape[1] - 1}]")
        out = logp.gather(1, cls[:, None])[:, 0]
        return (out if self.output == "logprob" else out.exp()).to(images.device)
