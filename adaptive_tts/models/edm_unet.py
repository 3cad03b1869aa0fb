"""EDM-preconditioned denoiser around a diffusers ``UNet2DModel`` (Karras et al. 2022, Table 1).

``D(x, sigma, c) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma), c)`` with
``c_skip = sd^2 / (sigma^2 + sd^2)``, ``c_out = sigma sd / sqrt(sigma^2 + sd^2)``,
``c_in = 1 / sqrt(sigma^2 + sd^2)`` and ``c_noise = noise_scale * ln(sigma)`` (EDM uses
``ln(sigma) / 4``; diffusers' sinusoidal time embedding wants inputs of order 1000, hence the
default ``noise_scale = 250``).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adaptive_tts.cuda_graphs import capturing

EDM_CONFIG = "edm_config.json"


@dataclass
class EDMConfig:
    """Preconditioning settings stored next to the UNet's own ``config.json``."""

    sigma_data: float = 0.5
    noise_scale: float = 250.0
    num_classes: int = 10  # class labels 0..num_classes-1; label num_classes = unconditional
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    data_range: tuple[float, float] = (-1.0, 1.0)  # model space -> images in [0, 1]


def edm_scalings(sigma: Tensor, sigma_data: float) -> tuple[Tensor, Tensor, Tensor]:
    """Return ``(c_skip, c_out, c_in)`` for ``sigma`` of shape ``(B,)``."""
    s2 = sigma**2 + sigma_data**2
    return sigma_data**2 / s2, sigma * sigma_data / s2.sqrt(), 1.0 / s2.sqrt()


class EDMUNetDenoiser(nn.Module):
    """Wrap a class-conditional (or unconditional) ``UNet2DModel`` as ``D(x, sigma, cond)``.

    Args:
        unet: a diffusers ``UNet2DModel``; class-conditional when ``num_class_embeds`` is set.
        config: preconditioning settings.
    """

    def __init__(self, unet: nn.Module, config: EDMConfig | None = None) -> None:
        super().__init__()
        self.unet = unet
        self.config = config or EDMConfig()
        self.nfe_per_call = 1

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        cfg: Any = self.unet.config  # type: ignore[attr-defined]
        size = cfg.sample_size
        size = (size, size) if isinstance(size, int) else tuple(size)
        return (int(cfg.in_channels), int(size[0]), int(size[1]))

    @property
    def conditional(self) -> bool:
        return getattr(self.unet.config, "num_class_embeds", None) is not None  # type: ignore[attr-defined]

    def labels(self, cond: Tensor | None, batch: int, device: torch.device) -> Tensor | None:
        """Map ``cond`` (``(B,)`` long, ``-1`` or ``None`` = unconditional) to UNet labels."""
        if not self.conditional:
            return None
        null = self.config.num_classes
        if cond is None:
            return torch.full((batch,), null, dtype=torch.long, device=device)
        cond = cond.to(device=device, dtype=torch.long)
        if cond.shape != (batch,):
            raise ValueError(f"cond must have shape ({batch},), got {tuple(cond.shape)}")
        if not capturing() and ((cond < -1) | (cond > null)).any():
            raise ValueError(f"cond labels must lie in [-1, {null}] (-1 or {null} = unconditional)")
        return torch.where(cond < 0, torch.full_like(cond, null), cond)

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None = None) -> Tensor:
        """Denoise ``x`` of shape ``(B, C, H, W)`` at noise levels ``sigma`` ``(B,)`` or scalar."""
        if x.dim() != 4:
            raise ValueError(f"x must have shape (B, C, H, W), got {tuple(x.shape)}")
        b = x.shape[0]
        sigma = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sigma = sigma.expand(b) if sigma.numel() == 1 else sigma
        c_skip, c_out, c_in = (
            c.view(-1, 1, 1, 1) for c in edm_scalings(sigma, self.config.sigma_data)
        )
        c_noise = self.config.noise_scale * sigma.log()
        dtype = next(self.unet.parameters()).dtype
        f = self.unet(
            (c_in * x.float()).to(dtype),
            c_noise.to(dtype),
            class_labels=self.labels(cond, b, x.device),
        ).sample
        return (c_skip * x.float() + c_out * f.float()).to(x.dtype)

    def to_image(self, x: Tensor) -> Tensor:
        """Map model-space samples to images in [0, 1] (the rewards' domain)."""
        lo, hi = self.config.data_range
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)

    # ---------------------------------------------------------------- persistence
    def save_pretrained(self, directory: str | os.PathLike[str]) -> None:
        """Write ``config.json`` + safetensors weights (diffusers) and ``edm_config.json``."""
        directory = Path(directory)
        self.unet.save_pretrained(directory)  # type: ignore[operator]
        tmp = directory / (EDM_CONFIG + ".tmp")
        tmp.write_text(json.dumps(asdict(self.config), indent=2))
        tmp.replace(directory / EDM_CONFIG)

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], *, dtype: torch.dtype = torch.float32
    ) -> EDMUNetDenoiser:
        """Load from a local directory written by :meth:`save_pretrained` (never downloads)."""
        from diffusers import UNet2DModel

        from adaptive_tts.quiet import diffusers_kwargs

        directory = Path(directory)
        if not (directory / "config.json").is_file():
            raise FileNotFoundError(f"no UNet2DModel config.json in {directory}")
        unet = UNet2DModel.from_pretrained(directory, torch_dtype=dtype, **diffusers_kwargs())
        cfg_path = directory / EDM_CONFIG
        cfg = EDMConfig()
        if cfg_path.is_file():
            raw = json.loads(cfg_path.read_text())
            raw["data_range"] = tuple(raw.get("data_range", cfg.data_range))
            cfg = EDMConfig(**raw)
        model = cls(unet, cfg)
        model.eval().requires_grad_(False)
        return model
