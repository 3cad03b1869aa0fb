"""CLIP rewards on images in [0, 1]: CLIP score (image-text cosine similarity) and a LAION-style
aesthetic head on normalised CLIP image embeddings. Everything loads from local files.

Both share a :class:`CLIPBackbone` (an open_clip model, loaded with
``open_clip.create_model_and_transforms(name, pretrained=<local checkpoint>)``), run batched on
the GPU when there is one, and preprocess on tensors (shorter side resized with bicubic
antialiasing, centre crop, the model's mean/std), so images never leave the device. Text
embeddings are cached per prompt string; ``cond`` ``(B,)`` indexes the prompt list.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

PathLike = str | os.PathLike[str]
CHECKPOINT_NAMES = (
    "open_clip_model.safetensors",
    "open_clip_pytorch_model.safetensors",
    "open_clip_pytorch_model.bin",
)
"""Weights files of open_clip's hub layout, in the order looked for."""


def _existing(path: PathLike, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{what} not found: {p}")
    return p


class CLIPBackbone:
    """An open_clip model from a local checkpoint, with tensor preprocessing and a text cache.

    Args:
        model_name: open_clip architecture, e.g. ``"ViT-L-14"``.
        checkpoint: local weights file (``.safetensors``, ``.bin`` or ``.pt``).
        model_config: optional local JSON of a custom architecture (registered under its file
            stem, which must then be ``model_name``).
        device: default CUDA when available.
        batch_size: images per forward pass.
    """

    def __init__(
        self,
        model_name: str,
        checkpoint: PathLike,
        *,
        model_config: PathLike | None = None,
        device: str | torch.device | None = None,
        precision: str = "fp32",
        batch_size: int = 32,
    ) -> None:
        import open_clip

        ckpt = _existing(checkpoint, "CLIP checkpoint")
        if model_config is not None:
            open_clip.add_model_config(_existing(model_config, "open_clip model config"))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        model, _, _ = open_clip.create_model_and_transforms(
            model_name, pretrained=str(ckpt), device=self.device, precision=precision
        )
        self.model: Any = model.eval().requires_grad_(False)
        self.tokenizer = open_clip.get_tokenizer(model_name)
        cfg = open_clip.get_model_preprocess_cfg(model)
        size = cfg.get("size", 224)
        self.size: tuple[int, int] = (size, size) if isinstance(size, int) else tuple(size)
        self.mean = torch.tensor(cfg["mean"], device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(cfg["std"], device=self.device).view(1, 3, 1, 1)
        self.batch_size = batch_size
        self._text: dict[str, Tensor] = {}
        self.text_encodes = 0  # prompts actually encoded (cache misses)
        self.image_encodes = 0

    @classmethod
    def from_dir(cls, directory: PathLike, **kwargs: Any) -> CLIPBackbone:
        """An open_clip model saved in the hub layout (``open_clip_config.json`` and one of
        :data:`CHECKPOINT_NAMES`), loaded with open_clip's ``local-dir:`` schema."""
        root = Path(directory)
        if not (root / "open_clip_config.json").is_file():
            raise FileNotFoundError(
                f"{root} is not an open_clip model directory (expected open_clip_config.json)"
            )
        ckpt = next((root / n for n in CHECKPOINT_NAMES if (root / n).is_file()), None)
        if ckpt is None:
            names = ", ".join(CHECKPOINT_NAMES)
            raise FileNotFoundError(f"{root} holds no open_clip weights (one of {names})")
        return cls(f"local-dir:{root}", ckpt, **kwargs)

    def preprocess(self, images: Tensor) -> Tensor:
        """``(B, 3, H, W)`` in [0, 1] -> normalised ``(B, 3, h, w)`` at the model's size."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise ValueError(f"images must have shape (B, 3, H, W), got {tuple(images.shape)}")
        x = images.to(self.device, torch.float32).clamp(0, 1)
        h, w = x.shape[-2:]
        th, tw = self.size
        scale = max(th / h, tw / w)
        nh, nw = max(th, round(h * scale)), max(tw, round(w * scale))
        if (nh, nw) != (h, w):
            x = F.interpolate(x, size=(nh, nw), mode="bicubic", antialias=True, align_corners=False)
        top, left = (nh - th) // 2, (nw - tw) // 2
        x = x[..., top : top + th, left : left + tw].clamp(0, 1)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_features(self, images: Tensor) -> Tensor:
        """Unit-norm image embeddings ``(B, D)`` float32 on :attr:`device`."""
        outs = []
        dtype = next(self.model.parameters()).dtype
        for s in range(0, images.shape[0], self.batch_size):
            x = self.preprocess(images[s : s + self.batch_size]).to(dtype)
            outs.append(F.normalize(self.model.encode_image(x).float(), dim=-1))
            self.image_encodes += x.shape[0]
        return torch.cat(outs)

    @torch.no_grad()
    def text_features(self, prompts: list[str]) -> Tensor:
        """Unit-norm text embeddings ``(P, D)``; each distinct prompt is encoded once."""
        new = sorted({p for p in prompts if p not in self._text})
        if new:
            tokens = self.tokenizer(new).to(self.device)
            emb = F.normalize(self.model.encode_text(tokens).float(), dim=-1)
            self._text.update(zip(new, emb))
            self.text_encodes += len(new)
        return torch.stack([self._text[p] for p in prompts])


def _backbone(backbone: CLIPBackbone | None, kwargs: dict[str, Any]) -> CLIPBackbone:
    if backbone is not None:
        return backbone
    return CLIPBackbone(**kwargs)


class CLIPScore:
    """Cosine similarity between the image and its prompt, ``(B,)`` in [-1, 1] times ``scale``.

    Args:
        prompts: the prompt list that ``cond`` indexes (the backend's prompt table).
        backbone: a shared :class:`CLIPBackbone`; else ``model_name``/``checkpoint``/... build one.
        scale: multiplier (e.g. 100 for the usual "CLIP score" scale).
    """

    name = "clip-score"

    def __init__(
        self,
        prompts: list[str],
        backbone: CLIPBackbone | None = None,
        scale: float = 1.0,
        **backbone_kwargs: Any,
    ) -> None:
        self.backbone = _backbone(backbone, backbone_kwargs)
        self.scale = scale
        self.set_prompts(prompts)

    def set_prompts(self, prompts: list[str]) -> None:
        """Set the prompt list (and encode new prompts once)."""
        if not prompts:
            raise ValueError("prompts must hold at least one prompt")
        self.prompts = list(prompts)
        self.text = self.backbone.text_features(self.prompts)  # (P, D)

    def __call__(self, images: Tensor, cond: Tensor | None = None) -> Tensor:
        """Score images ``(B, 3, H, W)`` in [0, 1] against prompts ``cond`` ``(B,)``."""
        b = images.shape[0]
        if cond is None:
            if len(self.prompts) != 1:
                raise ValueError(f"{self.name}: cond (prompt indices) is required")
            cond = torch.zeros(b, dtype=torch.long)
        idx = cond.to(self.text.device, torch.long)
        if idx.shape != (b,) or ((idx < 0) | (idx >= len(self.prompts))).any():
            raise ValueError(f"{self.name}: cond must be (B,) indices in [0, {len(self.prompts)})")
        img = self.backbone.image_features(images)
        return ((img * self.text[idx]).sum(-1) * self.scale).to(images.device)


def _layer_index(key: str) -> tuple[int, ...]:
    """Numeric path of a parameter name (``"layers.4.weight" -> (4,)``), for ordering."""
    return tuple(int(n) for n in re.findall(r"\d+", key.rsplit(".", 1)[0]))


def load_aesthetic_head(path: PathLike) -> nn.Sequential:
    """A linear or MLP head from a safetensors file.

    The head is the chain of 2-D ``*.weight`` tensors (with matching ``*.bias``) ordered by
    their numeric layer index, applied without activations (LAION's improved aesthetic predictor
    is Linear(768, 1024) - Linear(1024, 128) - Linear(128, 64) - Linear(64, 16) - Linear(16, 1)
    with dropout only; its v1 predictor is a single Linear(768, 1)).
    """
    from safetensors.torch import load_file

    state = load_file(str(_existing(path, "aesthetic head")))
    keys = [k for k, v in state.items() if k.endswith("weight") and v.dim() == 2]
    keys.sort(key=_layer_index)
    if not keys:
        raise ValueError(f"{path}: no 2-D '*.weight' tensors (linear layers) found")
    layers: list[nn.Linear] = []
    for k in keys:
        w = state[k]
        if layers and w.shape[1] != layers[-1].out_features:
            raise ValueError(f"{path}: layer {k} {tuple(w.shape)} does not chain")
        bias = state.get(k[: -len("weight")] + "bias")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=bias is not None)
        lin.weight.data.copy_(w)
        if bias is not None:
            lin.bias.data.copy_(bias)
        layers.append(lin)
    if layers[-1].out_features != 1:
        raise ValueError(f"{path}: the head must end in one output, got {layers[-1]}")
    return nn.Sequential(*layers).eval().requires_grad_(False)


class AestheticScore:
    """LAION-style aesthetic score: a head on unit-norm CLIP image embeddings, ``(B,)``.

    Args:
        head: local safetensors file of the head (see :func:`load_aesthetic_head`).
        backbone: shared :class:`CLIPBackbone`; else ``model_name``/``checkpoint``/... build one.
    """

    name = "aesthetic"

    def __init__(
        self, head: PathLike, backbone: CLIPBackbone | None = None, **backbone_kwargs: Any
    ) -> None:
        self.head = load_aesthetic_head(head)
        self.backbone = _backbone(backbone, backbone_kwargs)
        self.head.to(self.backbone.device)
        first: Any = self.head[0]
        dim = first.in_features
        width = getattr(self.backbone.model.visual, "output_dim", dim)
        if dim != width:
            raise ValueError(f"aesthetic head expects {dim}-d embeddings, CLIP gives {width}")

    @torch.no_grad()
    def __call__(self, images: Tensor, cond: Tensor | None = None) -> Tensor:
        """Score images ``(B, 3, H, W)`` in [0, 1]; ``cond`` is ignored."""
        emb = self.backbone.image_features(images)
        return self.head(emb)[:, 0].to(images.device)


__all__ = ["AestheticScore", "CLIPBackbone", "CLIPScore", "load_aesthetic_head"]
