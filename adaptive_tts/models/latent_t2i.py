"""Latent text-to-image backend: diffusers Stable-Diffusion-family pipelines (SD 1.5 / 2.1, SDXL)
as a sigma-parameterised x0 denoiser ``D(x, sigma, cond)`` on latents.

The UNet is a discrete-time VP model: ``x_vp = sqrt(a_t) x0 + sqrt(1 - a_t) eps`` with
``a_t = alphas_cumprod[t]``, ``t = 0..999``. Dividing by ``sqrt(a_t)`` gives the VE form the
package's samplers use, ``x = x_vp / sqrt(a) = x0 + sigma eps`` with
``sigma = sqrt((1 - a) / a)`` (so ``a = 1 / (1 + sigma^2)``). For any ``sigma`` the (fractional)
timestep is found by interpolating ``log sigma`` over the scheduler's table, and

- epsilon prediction: ``x0 = x - sigma eps_hat``;
- v prediction: ``x0 = x / (1 + sigma^2) - sigma v_hat / sqrt(1 + sigma^2)``;
- sample prediction: ``x0 = model output``.

``cond`` is a long tensor ``(B,)`` of prompt indices into a table of prompt embeddings computed
once by :meth:`LatentT2I.set_prompts`. Classifier-free guidance evaluates the null prompt and
the prompt in one batched UNet call and counts 2 NFEs per row (``nfe_per_call``).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from adaptive_tts.rewards.base import OnImages
from adaptive_tts.sampling import Evaluate, Sampler, make_sampler

PredictionType = Literal["epsilon", "v_prediction", "sample"]
Spacing = Literal["leading", "trailing", "linspace"]
PathLike = str | os.PathLike[str]


def vp_sigmas(alphas_cumprod: Tensor) -> Tensor:
    """``sigma_t = sqrt((1 - a_t) / a_t)`` for ``a_t`` ``(T,)``: ``(T,)`` float64, increasing."""
    a = alphas_cumprod.double()
    return ((1 - a) / a).sqrt()


def sigma_to_t(sigma: Tensor, log_sigmas: Tensor) -> Tensor:
    """Fractional timestep ``(B,)`` float64 by linear interpolation of ``log sigma`` over the
    increasing table ``log_sigmas`` ``(T,)``; clamped to ``[0, T - 1]``."""
    log_sigmas = log_sigmas.to(sigma.device)
    ls = sigma.double().clamp_min(1e-12).log()
    hi = torch.searchsorted(log_sigmas, ls).clamp(1, log_sigmas.numel() - 1)
    lo = hi - 1
    w = ((ls - log_sigmas[lo]) / (log_sigmas[hi] - log_sigmas[lo])).clamp(0, 1)
    return lo.double() + w


class VAEDecoder:
    """Latents in the denoiser's space ``(B, C, h, w)`` -> images in [0, 1] ``(B, 3, H, W)``.

    Decodes ``x / scaling_factor + shift_factor`` in chunks of ``chunk`` rows; :attr:`decodes`
    counts decoded rows (report them next to NFEs: a searched candidate scored on images costs
    one decode on top of its NFEs).
    """

    def __init__(self, vae: nn.Module, chunk: int = 8) -> None:
        cfg: Any = vae.config
        self.vae = vae
        self.scaling = float(cfg.scaling_factor)
        self.shift = float(getattr(cfg, "shift_factor", None) or 0.0)
        self.chunk = chunk
        self.decodes = 0

    @torch.no_grad()
    def __call__(self, latents: Tensor) -> Tensor:
        p = next(self.vae.parameters())
        outs = []
        for s in range(0, latents.shape[0], self.chunk):
            z = latents[s : s + self.chunk].to(p.device, torch.float32) / self.scaling + self.shift
            img = self.vae.decode(z.to(p.dtype)).sample  # type: ignore[operator]
            outs.append(((img.float() + 1) / 2).clamp(0, 1))
            self.decodes += z.shape[0]
        return torch.cat(outs).to(latents.device)


@dataclass
class DDIMSampler(Sampler):
    """DDIM step (Song et al. 2021) with ``eta`` (1: the stochastic DDPM-like step), written in
    VP form and run on the VE state ``x = x_vp / sqrt(a)``, ``a = 1 / (1 + sigma^2)``.

    With ``a, a'`` the ``alpha_bar`` of steps ``i, i+1`` and ``eps = (x - x0) / sigma``:
    ``std = eta sqrt((1 - a') / (1 - a)) sqrt(1 - a / a')``,
    ``x'_vp = sqrt(a') x0 + sqrt(1 - a' - std^2) eps + std xi``, i.e. in VE form
    ``x' = x0 + sqrt(1 - a' - std^2) / sqrt(a') eps + std / sqrt(a') xi``. Same contract as
    :class:`~adaptive_tts.sampling.AncestralSampler`: the noised point is ``x'`` at ``sigma'`` and
    its network output is the next step's ``D(x, sigma)``. The last step goes to ``a' = 1``
    (``sigma = 0``, diffusers' ``set_alpha_to_one=True``).
    """

    eta: float = 1.0
    timesteps: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {self.eta}")
        self.name = "ddim"
        self.needs_x0 = True

    def _alphas(self, i: int) -> tuple[float, float]:
        s, sn = self.sigma(i), self.sigma(i + 1)
        return 1.0 / (1.0 + s * s), 1.0 / (1.0 + sn * sn)

    def noise_scale(self, i: int) -> float:
        a, a_next = self._alphas(i)
        std = self.eta * math.sqrt(max((1 - a_next) / (1 - a) * (1 - a / a_next), 0.0))
        return std / math.sqrt(a_next)

    def pre(self, i: int, x: Tensor, x0: Tensor | None) -> tuple[Tensor, float, float]:
        if x0 is None:
            raise ValueError("DDIMSampler.pre needs x0 = D(x, sigma_i)")
        a, a_next = self._alphas(i)
        eps = (x * math.sqrt(a) - math.sqrt(a) * x0) / math.sqrt(1 - a)
        std2 = (self.noise_scale(i) * math.sqrt(a_next)) ** 2
        dir_coef = math.sqrt(max(1 - a_next - std2, 0.0))
        x_next_vp = math.sqrt(a_next) * x0 + dir_coef * eps
        return x_next_vp / math.sqrt(a_next), self.sigma(i + 1), self.noise_scale(i)

    def post(
        self, i: int, x_hat: Tensor, x0_hat: Tensor | None, evaluate: Evaluate
    ) -> tuple[Tensor, Tensor | None]:
        return x_hat, x0_hat

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out.update(eta=self.eta, timesteps=self.timesteps)
        return out


def ddim_sampler(
    alphas_cumprod: Tensor,
    steps: int,
    eta: float = 1.0,
    spacing: Spacing = "leading",
    steps_offset: int = 1,
) -> DDIMSampler:
    """DDIM on the scheduler's discrete timesteps (diffusers' ``timestep_spacing`` rules).

    Args:
        alphas_cumprod: ``(T,)`` the training schedule. steps: number of DDIM steps.
        spacing: ``"leading"`` (SD 1.5 / 2.1 / XL default, plus ``steps_offset``), ``"trailing"``
            or ``"linspace"``.
    Returns:
        A :class:`DDIMSampler` whose sigmas are ``sigma(t_i)`` followed by 0.
    """
    n = alphas_cumprod.numel()
    if not 1 <= steps <= n:
        raise ValueError(f"steps must lie in [1, {n}], got {steps}")
    if spacing == "leading":
        ts = (torch.arange(steps) * (n // steps)).flip(0) + steps_offset
    elif spacing == "trailing":
        ts = torch.arange(n, 0, -n / steps).round().long() - 1
    elif spacing == "linspace":
        ts = torch.linspace(0, n - 1, steps).round().long().flip(0)
    else:
        raise ValueError(f"spacing must be 'leading', 'trailing' or 'linspace', got {spacing!r}")
    ts = ts.clamp(0, n - 1)
    sig = torch.cat([vp_sigmas(alphas_cumprod)[ts], torch.zeros(1, dtype=torch.float64)])
    return DDIMSampler(sigmas=sig, eta=eta, timesteps=ts.tolist())


class LatentT2I(nn.Module):
    """A Stable-Diffusion-family pipeline as ``D(x, sigma, cond) -> x0_hat`` on latents.

    Args:
        unet: ``UNet2DConditionModel``; vae: ``AutoencoderKL``.
        text_encoders / tokenizers: one CLIP text encoder (SD 1.5 / 2.1) or two (SDXL: the second
            a ``CLIPTextModelWithProjection`` giving the pooled embedding).
        alphas_cumprod: ``(T,)`` the scheduler's training schedule.
        prediction_type: what the UNet predicts.
        guidance_scale: classifier-free guidance weight (``> 1``: two NFEs per row).
        negative_prompt: the null prompt of guidance ("" by default; SDXL with
            ``force_zeros`` uses zero embeddings for "").
        height, width: image size in pixels (default: the UNet's sample size times the VAE's
            downsampling factor).
    """

    prompt_embeds: Tensor
    pooled_embeds: Tensor | None

    def __init__(
        self,
        unet: nn.Module,
        vae: nn.Module,
        text_encoders: list[nn.Module],
        tokenizers: list[Any],
        alphas_cumprod: Tensor,
        prediction_type: PredictionType = "epsilon",
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        force_zeros: bool = False,
    ) -> None:
        super().__init__()
        if prediction_type not in ("epsilon", "v_prediction", "sample"):
            msg = f"must be 'epsilon', 'v_prediction' or 'sample', got {prediction_type!r}"
            raise ValueError(f"prediction_type {msg}")
        if len(text_encoders) not in (1, 2) or len(tokenizers) != len(text_encoders):
            raise ValueError("need one or two text encoders with one tokenizer each")
        self.unet, self.vae = unet, vae
        self.text_encoders = nn.ModuleList(text_encoders)
        self.tokenizers = tokenizers
        self.prediction_type = prediction_type
        self.guidance_scale = float(guidance_scale)
        self.negative_prompt = negative_prompt
        self.force_zeros = force_zeros
        self.alphas_cumprod = alphas_cumprod.double().cpu()
        self.log_sigmas = vp_sigmas(self.alphas_cumprod).log()  # float64, kept off .to(dtype)
        self.register_buffer("prompt_embeds", None, persistent=False)
        self.register_buffer("pooled_embeds", None, persistent=False)
        ucfg: Any = unet.config
        vcfg: Any = vae.config
        self.vae_scale = 2 ** (len(vcfg.block_out_channels) - 1)
        size = ucfg.sample_size
        hw = (size, size) if isinstance(size, int) else tuple(size)
        self.height = height or int(hw[0]) * self.vae_scale
        self.width = width or int(hw[1]) * self.vae_scale
        self.sdxl = getattr(ucfg, "addition_embed_type", None) == "text_time"
        self.decoder = VAEDecoder(vae)
        self.prompts: list[str] = []
        self.unet_rows = 0  # rows actually sent through the UNet (checks the ledger's count)

    # ----------------------------------------------------------------- properties
    @property
    def nfe_per_call(self) -> int:
        """2 with classifier-free guidance (null + prompt), else 1."""
        return 2 if self.guidance_scale > 1.0 else 1

    @property
    def sigma_min(self) -> float:
        return float(self.log_sigmas[0].exp())

    @property
    def sigma_max(self) -> float:
        return float(self.log_sigmas[-1].exp())

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        cfg: Any = self.unet.config
        c = int(cfg.in_channels)
        return (c, self.height // self.vae_scale, self.width // self.vae_scale)

    @property
    def vae_decodes(self) -> int:
        """Rows decoded by :meth:`to_image` so far (not NFEs; report them separately)."""
        return self.decoder.decodes

    # ----------------------------------------------------------------- prompts
    @torch.no_grad()
    def encode(self, prompts: list[str]) -> tuple[Tensor, Tensor | None]:
        """Text embeddings ``(P, L, D)`` and (SDXL) pooled embeddings ``(P, D_pool)``."""
        hidden, pooled = [], None
        for enc, tok in zip(self.text_encoders, self.tokenizers):
            p = next(enc.parameters())
            pad = {"padding": "max_length", "truncation": True, "return_tensors": "pt"}
            ids = tok(prompts, max_length=tok.model_max_length, **pad).input_ids.to(p.device)
            out = enc(ids, output_hidden_states=self.sdxl)
            hidden.append(out.hidden_states[-2] if self.sdxl else out[0])
            if self.sdxl:
                pooled = out[0]
        return torch.cat(hidden, dim=-1), pooled

    def set_prompts(self, prompts: list[str]) -> None:
        """Encode ``prompts`` (and the null prompt) once; ``cond`` then indexes this list."""
        if not prompts:
            raise ValueError("prompts must hold at least one prompt")
        emb, pooled = self.encode([*prompts, self.negative_prompt])
        if self.force_zeros and self.negative_prompt == "":
            emb[-1].zero_()
            if pooled is not None:
                pooled[-1].zero_()
        dtype = next(self.unet.parameters()).dtype
        self.prompt_embeds = emb.to(dtype)
        self.pooled_embeds = None if pooled is None else pooled.to(dtype)
        self.prompts = list(prompts)

    # ----------------------------------------------------------------- denoiser
    def _unet(self, x_vp: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        """UNet output for inputs ``(M, C, h, w)`` at timesteps ``(M,)``, prompt rows ``(M,)``."""
        kwargs: dict[str, Any] = {}
        if self.sdxl:
            assert self.pooled_embeds is not None
            ids = [self.height, self.width, 0, 0, self.height, self.width]
            time_ids = torch.tensor(ids, device=x_vp.device, dtype=x_vp.dtype)
            kwargs["added_cond_kwargs"] = {
                "text_embeds": self.pooled_embeds[rows],
                "time_ids": time_ids.expand(x_vp.shape[0], -1),
            }
        self.unet_rows += x_vp.shape[0]
        return self.unet(x_vp, t, encoder_hidden_states=self.prompt_embeds[rows], **kwargs).sample

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        """Denoise latents ``x`` ``(B, C, h, w)`` at ``sigma`` ``(B,)``, prompts ``cond`` ``(B,)``.

        Returns ``x0_hat`` ``(B, C, h, w)`` in ``x``'s dtype.
        """
        if not self.prompts:
            raise ValueError("call set_prompts(list_of_prompts) before denoising")
        b = x.shape[0]
        null = len(self.prompts)
        if cond is None:
            if self.nfe_per_call > 1:
                raise ValueError("cond (prompt indices, (B,)) is required with guidance_scale > 1")
            cond = torch.full((b,), null, dtype=torch.long)
        cond = cond.to(self.prompt_embeds.device, torch.long)
        if cond.shape != (b,) or ((cond < 0) | (cond > null)).any():
            raise ValueError(f"cond must be (B,) prompt indices in [0, {null - 1}]")
        sig = torch.as_tensor(sigma, device=x.device).float().reshape(-1).expand(b)
        t = sigma_to_t(sig, self.log_sigmas).to(x.device, torch.float32)
        s4 = sig.view(-1, 1, 1, 1)
        dtype = next(self.unet.parameters()).dtype
        x_vp = (x.float() / (1 + s4**2).sqrt()).to(dtype)
        if self.nfe_per_call > 1:
            both = self._unet(
                torch.cat([x_vp, x_vp]),
                torch.cat([t, t]),
                torch.cat([torch.full_like(cond, null), cond]),
            ).float()
            out_u, out_c = both.chunk(2)
            out = out_u + self.guidance_scale * (out_c - out_u)
        else:
            out = self._unet(x_vp, t, cond).float()
        if self.prediction_type == "epsilon":
            x0 = x.float() - s4 * out
        elif self.prediction_type == "v_prediction":
            x0 = x.float() / (1 + s4**2) - s4 * out / (1 + s4**2).sqrt()
        else:
            x0 = out
        return x0.to(x.dtype)

    # ----------------------------------------------------------------- images, rewards, samplers
    def to_image(self, x: Tensor) -> Tensor:
        """Decode latents ``(B, C, h, w)`` to images ``(B, 3, H, W)`` in [0, 1] (counted)."""
        return self.decoder(x)

    def image_reward(self, reward: Callable[[Tensor, Tensor | None], Tensor]) -> OnImages:
        """Adapt an image reward ``r(images, cond)`` so searches score decoded latents."""
        return OnImages(reward, self.to_image)

    def sampler(self, name: str = "ancestral", steps: int = 30, **kwargs: Any) -> Sampler:
        """A sampler on this model's sigma range: ``"ddim"`` (discrete timesteps, eta=1 by
        default) or the package's ``"ancestral"``, ``"euler"``, ``"heun"`` (Karras schedule)."""
        if name == "ddim":
            return ddim_sampler(self.alphas_cumprod, steps, **kwargs)
        rho = kwargs.pop("rho", 7.0)
        if name in ("ancestral", "euler", "heun"):
            return make_sampler(name, steps, self.sigma_min, self.sigma_max, rho, **kwargs)  # type: ignore[arg-type]
        raise ValueError(f"sampler must be 'ddim', 'ancestral', 'euler' or 'heun', got {name!r}")

    # ----------------------------------------------------------------- loading
    @classmethod
    def from_pretrained(
        cls,
        directory: PathLike,
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        guidance_scale: float = 7.5,
        negative_prompt: str = "",
        height: int | None = None,
        width: int | None = None,
        variant: str | None = None,
    ) -> LatentT2I:
        """Load a diffusers SD-family pipeline directory (never downloads).

        Expects ``unet/``, ``vae/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/`` (and for
        SDXL ``text_encoder_2/``, ``tokenizer_2/``); a missing one is a ``FileNotFoundError``
        naming the directory and the component.
        """
        from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
        from transformers import CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"pipeline directory not found: {root}")
        sdxl = (root / "text_encoder_2").exists()
        need = ["unet/config.json", "vae/config.json", "text_encoder/config.json", "tokenizer"]
        need += ["scheduler/scheduler_config.json"]
        need += ["text_encoder_2/config.json", "tokenizer_2"] if sdxl else []
        for rel in need:
            if not (root / rel).exists():
                comp = rel.split("/")[0]
                raise FileNotFoundError(
                    f"pipeline directory {root} lacks component {comp!r} (expected {root / rel})"
                )
        from adaptive_tts.quiet import diffusers_kwargs

        kw: dict[str, Any] = {**diffusers_kwargs(), "torch_dtype": dtype, "variant": variant}
        unet = UNet2DConditionModel.from_pretrained(root, subfolder="unet", **kw)
        vae = AutoencoderKL.from_pretrained(root, subfolder="vae", **kw)
        if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
            vae = vae.to(torch.float32)  # SD-XL's VAE overflows in fp16
        parts: list[tuple[str, str, Any]] = [("text_encoder", "tokenizer", CLIPTextModel)]
        if sdxl:  # the second encoder gives the pooled embedding
            parts.append(("text_encoder_2", "tokenizer_2", CLIPTextModelWithProjection))
        tkw = {"local_files_only": True, "torch_dtype": dtype, "variant": variant}
        encoders = [enc_cls.from_pretrained(root / enc, **tkw) for enc, _, enc_cls in parts]
        tokenizers = [
            CLIPTokenizer.from_pretrained(root / tok, local_files_only=True) for _, tok, _ in parts
        ]
        sched_cfg = json.loads((root / "scheduler" / "scheduler_config.json").read_text())
        sched = DDPMScheduler.from_config(sched_cfg)
        index = root / "model_index.json"
        force_zeros = sdxl
        if sdxl and index.is_file():
            force_zeros = json.loads(index.read_text()).get("force_zeros_for_empty_prompt", True)
        model = cls(
            unet, vae, encoders, tokenizers, sched.alphas_cumprod,  # type: ignore[attr-defined]
            prediction_type=sched_cfg.get("prediction_type", "epsilon"),
            guidance_scale=guidance_scale, negative_prompt=negative_prompt,
            height=height, width=width, force_zeros=bool(force_zeros),
        )  # fmt: skip
        return model.to(device).eval().requires_grad_(False)


__all__ = ["DDIMSampler", "LatentT2I", "VAEDecoder", "ddim_sampler", "sigma_to_t", "vp_sigmas"]
