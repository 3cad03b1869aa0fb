"""Flow-matching backend (SD3 / FLUX, diffusers' ``FlowMatchEulerDiscreteScheduler`` conventions)
in the package's VE / EDM form, so the stochastic EDM samplers apply.

Flow convention: ``x_t = (1 - t) x0 + t eps``, ``t`` in [0, 1]; the network predicts the
velocity ``v = eps - x0`` (the scheduler's Euler step is ``x_{t'} = x_t + (t' - t) v``).

Change of variables: ``x = x_t / (1 - t) = x0 + sigma eps`` with ``sigma = t / (1 - t)``, i.e.
``t = sigma / (1 + sigma)`` and ``x_t = x / (1 + sigma)``. Since ``x0 = x_t - t v``::

    D(x, sigma) = x_t - t v(x_t, t),   x_t = x / (1 + sigma),  t = sigma / (1 + sigma).

ODE -> SDE. The probability-flow ODE ``dx/dsigma = (x - D) / sigma`` is the flow ODE
``dx_t/dt = v``. Stochastic samplers add noise with these diffusion coefficients:

- ``AncestralSampler`` (``eta``): each step from ``sigma`` to ``sigma'`` injects variance
  ``sigma_up^2 = eta^2 sigma'^2 (sigma^2 - sigma'^2) / sigma^2``; the continuous limit is the
  reverse VE SDE with ``g_VE^2 = eta^2 d(sigma^2)/d tau``. In flow coordinates this is
  ``dx_t = [v + g^2 / (2 t) (x_t + (1 - t) v)] dt + g dW`` with ``g(t)^2 = 2 eta^2 t / (1 - t)``
  (the score is ``-(x_t + (1 - t) v) / t``), i.e. Flow-GRPO's ``sigma_t = a sqrt(t / (1 - t))``
  with ``a = sqrt(2) eta``. ``eta = 1`` is the DDPM-like posterior step.
- ``EDMSampler`` with churn: per step ``x`` gains ``N(0, sigma_hat^2 - sigma^2)``,
  ``sigma_hat = (1 + gamma_i) sigma``, then follows the ODE; in the continuous limit this is EDM's
  Langevin term (Karras et al. 2022, eq. 6) with ``beta dt = gamma_i`` per step.

Both keep the marginals ``p_t`` of the flow (verified on the exact Gaussian mixture, see
``tests/models/test_flow.py``). For searches, pick ``eta > 0`` or ``s_churn > 0``: a pure ODE has
no noise to search.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import torch
from torch import Tensor, nn

from adaptive_tts.models.latent_t2i import VAEDecoder
from adaptive_tts.rewards.base import OnImages
from adaptive_tts.sampling import AncestralSampler, EDMSampler, Sampler

Velocity = Callable[[Tensor, Tensor, Tensor | None], Tensor]
"""``v(x_t, t, cond)``: ``x_t`` ``(B, *S)``, ``t`` ``(B,)`` in (0, 1), ``cond`` ``(B,)``."""
Kind = Literal["sd3", "flux"]
GuidanceMode = Literal["cfg", "embedded"]


def flow_t(sigma: Tensor) -> Tensor:
    """Flow time ``t = sigma / (1 + sigma)`` of a VE noise level."""
    return sigma / (1 + sigma)


def ve_sigma(t: Tensor) -> Tensor:
    """VE noise level ``sigma = t / (1 - t)`` of a flow time ``t < 1``."""
    return t / (1 - t)


def flow_sigmas(
    steps: int, shift: float = 1.0, t_max: float = 0.999, t_min: float | None = None
) -> Tensor:
    """The flow scheduler's time grid as VE sigmas: ``(steps + 1,)`` float64, last entry 0.

    ``t_i = linspace(t_max, t_min, steps)`` (``t_min`` default ``1 / steps``, FLUX's grid; SD3's
    scheduler uses ``1 / 1000``), shifted by ``shift t / (1 + (shift - 1) t)`` (SD3: 3).
    ``t_max < 1`` because ``t = 1`` is ``sigma = inf``.
    """
    lo = 1.0 / steps if t_min is None else t_min
    if steps < 1 or not 0 < lo <= t_max < 1 or shift <= 0:
        raise ValueError(
            f"need steps >= 1, 0 < t_min <= t_max < 1, shift > 0: {steps}, {lo}, {t_max}, {shift}"
        )
    t = torch.linspace(t_max, lo, steps, dtype=torch.float64)
    t = shift * t / (1 + (shift - 1) * t)
    return torch.cat([ve_sigma(t), torch.zeros(1, dtype=torch.float64)])


def gmm_velocity(gmm: Any) -> Velocity:
    """Exact velocity of a :class:`~adaptive_tts.models.gmm.GaussianMixture` under the flow
    ``x_t = (1 - t) x0 + t eps``: ``v = E[eps - x0 | x_t] = (x_t - E[x0 | x_t]) / t``."""

    def velocity(x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        tt = t.double().reshape(-1, *([1] * (x_t.dim() - 1)))
        x0 = gmm(x_t.double() / (1 - tt), ve_sigma(t.double()), cond).double()
        return ((x_t.double() - x0) / tt).to(x_t.dtype)

    return velocity


class FlowDenoiser(nn.Module):
    """``D(x, sigma, cond)`` from a velocity model (module docstring: the change of variables).

    Args:
        velocity: ``v(x_t, t, cond)``; subclasses may override :meth:`velocity` instead.
        nfe_per_call: network calls per evaluated row (2 with classifier-free guidance).
    """

    def __init__(self, velocity: Velocity | None = None, nfe_per_call: int = 1) -> None:
        super().__init__()
        self._velocity = velocity
        self._nfe = nfe_per_call

    @property
    def nfe_per_call(self) -> int:
        return self._nfe

    def velocity(self, x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        if self._velocity is None:
            raise NotImplementedError("pass velocity= or override velocity()")
        return self._velocity(x_t, t, cond)

    def forward(self, x: Tensor, sigma: Tensor, cond: Tensor | None) -> Tensor:
        """``x`` ``(B, *S)`` VE state at ``sigma`` ``(B,)`` -> ``x0_hat`` ``(B, *S)``."""
        b = x.shape[0]
        sig = torch.as_tensor(sigma, device=x.device).reshape(-1).expand(b)
        sig = sig.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
        t = flow_t(sig)
        tt = t.reshape(-1, *([1] * (x.dim() - 1)))
        x_t = x.to(sig.dtype) / (1 + sig.reshape(tt.shape))
        return (x_t - tt * self.velocity(x_t, t, cond).to(sig.dtype)).to(x.dtype)


def pack_latents(x: Tensor) -> Tensor:
    """FLUX 2x2 patch packing: ``(B, C, H, W) -> (B, H W / 4, 4 C)``."""
    b, c, h, w = x.shape
    return x.view(b, c, h // 2, 2, w // 2, 2).permute(0, 2, 4, 1, 3, 5).reshape(b, -1, 4 * c)


def unpack_latents(x: Tensor, h: int, w: int) -> Tensor:
    """Inverse of :func:`pack_latents`: ``(B, H W / 4, 4 C) -> (B, C, H, W)``."""
    b, _, c4 = x.shape
    return x.view(b, h // 2, w // 2, c4 // 4, 2, 2).permute(0, 3, 1, 4, 2, 5).reshape(b, -1, h, w)


class FlowT2I(FlowDenoiser):
    """A diffusers SD3 / FLUX transformer (+ optional VAE) as ``D(x, sigma, cond)`` on latents.

    ``cond`` ``(B,)`` long indexes a table of prompt embeddings set once with
    :meth:`set_prompt_embeddings` (or :meth:`set_prompts` with an encoder).

    Args:
        transformer: ``SD3Transformer2DModel`` or ``FluxTransformer2DModel``.
        vae: ``AutoencoderKL`` for :meth:`to_image` (optional).
        guidance_scale: weight of classifier-free guidance (``"cfg"``: 2 NFEs per row when
            ``> 1``) or the value fed to FLUX-dev's guidance embedding (``"embedded"``: 1 NFE).
        height, width: image size in pixels (latents are 8x smaller with the usual VAE).
    """

    prompt_embeds: Tensor
    pooled_embeds: Tensor

    def __init__(
        self,
        transformer: nn.Module,
        vae: nn.Module | None = None,
        guidance_scale: float = 1.0,
        guidance: GuidanceMode = "cfg",
        height: int = 1024,
        width: int = 1024,
    ) -> None:
        if guidance not in ("cfg", "embedded"):
            raise ValueError(f"guidance must be 'cfg' or 'embedded', got {guidance!r}")
        name = type(transformer).__name__
        kind: Kind = "flux" if "Flux" in name else "sd3"
        cfg: Any = transformer.config  # type: ignore[attr-defined]
        if guidance == "embedded" and not getattr(cfg, "guidance_embeds", False):
            raise ValueError(f"guidance='embedded' needs a guidance-distilled model, not {name}")
        super().__init__(nfe_per_call=2 if guidance == "cfg" and guidance_scale > 1 else 1)
        self.transformer, self.vae, self.kind = transformer, vae, kind
        self.guidance_scale, self.guidance = float(guidance_scale), guidance
        vcfg: Any = None if vae is None else vae.config
        self.vae_scale = 8 if vcfg is None else 2 ** (len(vcfg.block_out_channels) - 1)
        self.height, self.width = height, width
        c = int(cfg.in_channels)
        self.channels = c // 4 if kind == "flux" else c
        self.decoder = None if vae is None else VAEDecoder(vae)
        self.register_buffer("prompt_embeds", None, persistent=False)
        self.register_buffer("pooled_embeds", None, persistent=False)
        self.num_prompts = 0

    @property
    def sample_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height // self.vae_scale, self.width // self.vae_scale)

    @property
    def vae_decodes(self) -> int:
        return 0 if self.decoder is None else self.decoder.decodes

    def set_prompt_embeddings(
        self, embeds: Tensor, pooled: Tensor, negative: tuple[Tensor, Tensor] | None = None
    ) -> None:
        """Store ``embeds`` ``(P, L, D)``, ``pooled`` ``(P, D_pool)`` and the null prompt's
        ``negative = (embeds (1, L, D), pooled (1, D_pool))`` (default: zeros)."""
        if embeds.dim() != 3 or pooled.shape[0] != embeds.shape[0]:
            raise ValueError("embeds must be (P, L, D) and pooled (P, D_pool) with the same P")
        neg = negative or (torch.zeros_like(embeds[:1]), torch.zeros_like(pooled[:1]))
        p = next(self.transformer.parameters())
        self.prompt_embeds = torch.cat([embeds, neg[0]]).to(p.device, p.dtype)
        self.pooled_embeds = torch.cat([pooled, neg[1]]).to(p.device, p.dtype)
        self.num_prompts = embeds.shape[0]

    def set_prompts(
        self,
        prompts: list[str],
        encode: Callable[[list[str]], tuple[Tensor, Tensor]],
        negative_prompt: str = "",
    ) -> None:
        """Encode ``prompts`` + ``negative_prompt`` once with ``encode(list) -> (embeds, pooled)``
        (e.g. :func:`pipeline_encoder`)."""
        emb, pooled = encode([*prompts, negative_prompt])
        self.set_prompt_embeddings(emb[:-1], pooled[:-1], (emb[-1:], pooled[-1:]))

    def _call(self, x_t: Tensor, t: Tensor, rows: Tensor) -> Tensor:
        p = next(self.transformer.parameters())
        emb, pooled = self.prompt_embeds[rows], self.pooled_embeds[rows]
        h = x_t.to(p.dtype)
        if self.kind == "sd3":
            return self.transformer(
                hidden_states=h,
                encoder_hidden_states=emb,
                pooled_projections=pooled,
                timestep=(t * 1000).to(p.dtype),
            ).sample
        hh, ww = x_t.shape[-2:]
        img_ids = torch.zeros(hh // 2, ww // 2, 3, device=p.device)
        img_ids[..., 1] += torch.arange(hh // 2, device=p.device)[:, None]
        img_ids[..., 2] += torch.arange(ww // 2, device=p.device)[None, :]
        g = None
        if self.guidance == "embedded":
            g = torch.full((x_t.shape[0],), self.guidance_scale, device=p.device, dtype=p.dtype)
        out = self.transformer(
            hidden_states=pack_latents(h),
            encoder_hidden_states=emb,
            pooled_projections=pooled,
            timestep=t.to(p.dtype),
            img_ids=img_ids.reshape(-1, 3).to(p.dtype),
            txt_ids=torch.zeros(emb.shape[1], 3, device=p.device, dtype=p.dtype),
            guidance=g,
        ).sample
        return unpack_latents(out, hh, ww)

    def velocity(self, x_t: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """Guided velocity ``(B, C, h, w)`` for ``x_t`` ``(B, C, h, w)``, ``t`` ``(B,)``."""
        if self.num_prompts == 0:
            raise ValueError("set prompt embeddings (set_prompt_embeddings / set_prompts) first")
        null = self.num_prompts
        b = x_t.shape[0]
        if cond is None:
            if self.nfe_per_call > 1:
                raise ValueError("cond (prompt indices, (B,)) is required with CFG")
            cond = torch.full((b,), null, dtype=torch.long)
        cond = cond.to(self.prompt_embeds.device, torch.long)
        if cond.shape != (b,) or ((cond < 0) | (cond > null)).any():
            raise ValueError(f"cond must be (B,) prompt indices in [0, {null - 1}]")
        if self.nfe_per_call == 1:
            return self._call(x_t, t, cond).float()
        rows = torch.cat([torch.full_like(cond, null), cond])
        v_u, v_c = self._call(torch.cat([x_t, x_t]), torch.cat([t, t]), rows).float().chunk(2)
        return v_u + self.guidance_scale * (v_c - v_u)

    def to_image(self, x: Tensor) -> Tensor:
        """Decode latents ``(B, C, h, w)`` to images in [0, 1] (counted in :attr:`vae_decodes`)."""
        if self.decoder is None:
            raise ValueError("this FlowT2I has no VAE; load a directory with vae/")
        return self.decoder(x)

    def image_reward(self, reward: Callable[[Tensor, Tensor | None], Tensor]) -> OnImages:
        """Adapt an image reward so searches score decoded one-step x0 predictions."""
        return OnImages(reward, self.to_image)

    def sampler(
        self,
        name: Literal["ancestral", "euler", "heun"] = "ancestral",
        steps: int = 28,
        shift: float = 3.0,
        **kwargs: Any,
    ) -> Sampler:
        """A stochastic sampler on the flow schedule (:func:`flow_sigmas`)."""
        sig = flow_sigmas(steps, shift)
        if name == "ancestral":
            return AncestralSampler(sigmas=sig, **kwargs)
        if name in ("euler", "heun"):
            return EDMSampler(sigmas=sig, method=name, **kwargs)
        raise ValueError(f"sampler must be 'ancestral', 'euler' or 'heun', got {name!r}")

    @classmethod
    def from_pretrained(
        cls,
        directory: str | os.PathLike[str],
        *,
        dtype: torch.dtype = torch.float32,
        device: str | torch.device = "cpu",
        **kwargs: Any,
    ) -> FlowT2I:
        """Load ``transformer/`` (and ``vae/`` when present) from a local pipeline directory, or
        a bare transformer directory; never downloads. ``kwargs`` go to the constructor."""
        from diffusers import AutoencoderKL, FluxTransformer2DModel, SD3Transformer2DModel

        root = Path(directory)
        if not root.is_dir():
            raise FileNotFoundError(f"flow model directory not found: {root}")
        tdir = root / "transformer" if (root / "transformer").is_dir() else root
        if not (tdir / "config.json").is_file():
            raise FileNotFoundError(
                f"{root} lacks component 'transformer' (expected {root}/transformer/config.json)"
            )
        name = json.loads((tdir / "config.json").read_text()).get("_class_name", "")
        classes: dict[str, Any] = {
            "SD3Transformer2DModel": SD3Transformer2DModel,
            "FluxTransformer2DModel": FluxTransformer2DModel,
        }
        if name not in classes:
            raise ValueError(
                f"{tdir}: transformer class must be one of {list(classes)}, got {name!r}"
            )
        from adaptive_tts.quiet import diffusers_kwargs

        kw: dict[str, Any] = {**diffusers_kwargs(), "torch_dtype": dtype}
        transformer = classes[name].from_pretrained(tdir, **kw)
        vae = None
        if (root / "vae" / "config.json").is_file():
            vae = AutoencoderKL.from_pretrained(root / "vae", **kw)
            if dtype == torch.float16 and getattr(vae.config, "force_upcast", False):
                vae = vae.to(torch.float32)  # decode in fp32 as diffusers does
        model = cls(transformer, vae, **kwargs)
        return model.to(device).eval().requires_grad_(False)


def pipeline_encoder(
    directory: str | os.PathLike[str],
    kind: Kind,
    device: str = "cpu",
    dtype: Any = None,
    transformer: Any = None,
) -> Callable[[list[str]], tuple[Tensor, Tensor]]:
    """``encode(prompts) -> (embeds, pooled)`` from a local SD3 / FLUX pipeline's own text
    encoders (loaded without the VAE; ``transformer``: an already loaded one, whose config SD3
    reads when it has no T5 encoder). Tested on a tiny SD3 pipeline without T5
    (tests/models/test_model_specs.py), not on real weights."""
    from diffusers import DiffusionPipeline

    root = Path(directory)
    if not (root / "model_index.json").is_file():
        raise FileNotFoundError(f"no model_index.json in {root} (needed for the text encoders)")
    index = json.loads((root / "model_index.json").read_text())
    absent = {  # components the pipeline saved as null (SD3 without T5: diffusers uses zeros)
        k: None for k, v in index.items() if isinstance(v, list) and (not v or v[0] is None)
    }
    for opt in ("text_encoder_3", "tokenizer_3") if kind == "sd3" else ():
        if opt not in index:
            absent[opt] = None
    kw: dict[str, Any] = {"dtype": dtype} if dtype is not None else {}
    pipe: Any = DiffusionPipeline.from_pretrained(
        root, transformer=transformer, vae=None, local_files_only=True, **absent, **kw
    ).to(device)

    @torch.no_grad()
    def encode(prompts: list[str]) -> tuple[Tensor, Tensor]:
        if kind == "sd3":
            emb, _, pooled, _ = pipe.encode_prompt(
                prompt=prompts,
                prompt_2=None,
                prompt_3=None,
                device=device,
                do_classifier_free_guidance=False,
            )
        else:
            emb, pooled, _ = pipe.encode_prompt(prompt=prompts, prompt_2=None, device=device)
        return emb, pooled

    return encode
