"""Two independent MNIST digit classifiers on images in [0, 1] of shape ``(B, 1, 32, 32)``.

* :class:`RewardCNN` (the search's reward): a small plain CNN, max pooling, no normalisation,
  a dense head.
* :class:`EvalResNet` (held-out evaluation): a wider residual network with batch norm, strided
  convolutions instead of pooling, and global average pooling.

Both return logits ``(B, 10)``. Weights are saved as ``model.safetensors`` next to a
``config.json`` (architecture, constructor arguments, training metadata); each file is written
to a temporary name first and then moved into place, so nothing is ever half-written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"


class RewardCNN(nn.Module):
    """Small CNN: conv blocks with max pooling, then a dense head. ``(B,1,32,32) -> (B,10)``."""

    def __init__(self, width: int = 32, hidden: int = 128, dropout: float = 0.3) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),  # 4x4
        )
        self.head = nn.Sequential(
            nn.Flatten(),
            nn.Linear(2 * w * 16, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, 10),
        )

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 10)`` for images ``(B, 1, 32, 32)`` in [0, 1]."""
        return self.head(self.features(x * 2.0 - 1.0))


class _ResBlock(nn.Module):
    """Pre-activation residual block (BN-ReLU-conv twice); strided 1x1 shortcut when needed."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.skip: nn.Module = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Conv2d(cin, cout, 1, stride=stride, bias=False)
        )

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.bn1(x))
        shortcut = x if isinstance(self.skip, nn.Identity) else self.skip(h)
        return self.conv2(torch.relu(self.bn2(self.conv1(h)))) + shortcut


class EvalResNet(nn.Module):
    """Residual net: stem, 3 stages (32x32, 16x16, 8x8; strided downsampling), global average
    pooling, linear. ``(B, 1, 32, 32)`` in [0, 1] -> logits ``(B, 10)``."""

    def __init__(self, width: int = 32, blocks_per_stage: int = 2) -> None:
        super().__init__()
        w = width
        self.stem = nn.Conv2d(1, w, 3, padding=1, bias=False)
        layers: list[nn.Module] = []
        cin = w
        for stage, cout in enumerate((w, 2 * w, 4 * w)):
            for b in range(blocks_per_stage):
                layers.append(_ResBlock(cin, cout, 2 if (b == 0 and stage > 0) else 1))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.norm = nn.BatchNorm2d(cin)
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: Tensor) -> Tensor:
        """Logits ``(B, 10)`` for images ``(B, 1, 32, 32)`` in [0, 1]."""
        h = self.blocks(self.stem((x - 0.1307) / 0.3081))
        h = torch.relu(self.norm(h)).mean(dim=(2, 3))
        return self.fc(h)


ARCHITECTURES: dict[str, type[nn.Module]] = {"reward_cnn": RewardCNN, "eval_resnet": EvalResNet}


def build_classifier(arch: str, **kwargs: Any) -> nn.Module:
    """Construct a classifier by architecture name (see :data:`ARCHITECTURES`)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"arch must be one of {sorted(ARCHITECTURES)}, got {arch!r}")
    return ARCHITECTURES[arch](**kwargs)


def _atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def save_classifier(
    model: nn.Module,
    directory: str | os.PathLike[str],
    arch: str,
    kwargs: dict[str, Any] | None = None,
    meta: dict[str, Any] | None = None,
) -> None:
    """Write ``model.safetensors`` (float32 state dict) and ``config.json`` into ``directory``.

    Args:
        model: the classifier; its state dict must fit ``build_classifier(arch, **kwargs)``.
        arch: architecture name; kwargs: constructor arguments; meta: JSON-ready extras.
    """
    from safetensors.torch import save_file

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    tmp = d / (WEIGHTS_NAME + ".tmp")
    save_file(state, str(tmp), metadata={"arch": arch})
    os.chmod(tmp, 0o644)
    os.replace(tmp, d / WEIGHTS_NAME)
    config = {"arch": arch, "kwargs": kwargs or {}, "meta": meta or {}}
    _atomic_write_text(d / CONFIG_NAME, json.dumps(config, indent=2))


def load_classifier(directory: str | os.PathLike[str], device: str = "cpu") -> nn.Module:
    """Load a classifier written by :func:`save_classifier`, in eval mode without gradients."""
    from safetensors.torch import load_file

    d = Path(directory)
    cfg_path, w_path = d / CONFIG_NAME, d / WEIGHTS_NAME
    for p in (cfg_path, w_path):
        if not p.is_file():
            raise FileNotFoundError(f"classifier file missing: {p}")
    config = json.loads(cfg_path.read_text())
    model = build_classifier(config["arch"], **config.get("kwargs", {}))
    model.load_state_dict(load_file(str(w_path)))
    model.to(device).eval().requires_grad_(False)
    return model


def classifier_meta(directory: str | os.PathLike[str]) -> dict[str, Any]:
    """The ``meta`` block of a saved classifier's ``config.json``."""
    return dict(json.loads((Path(directory) / CONFIG_NAME).read_text()).get("meta", {}))
