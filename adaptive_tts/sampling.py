"""Sigma schedules and stochastic sampling steps with the injected noise as an argument.

A step ``x_next = f(x_t, t, cond, xi)`` is split in three phases so a search can score noise
candidates with the very network call the step then reuses:

1. ``pre(i, x, x0)`` -> ``(x_det, sigma_hat, scale)``: the deterministic part (no network call
   unless the sampler needs ``D(x, sigma_i)``, see :attr:`Sampler.needs_x0`);
2. the noised point ``x_hat = x_det + scale * xi`` at noise level ``sigma_hat``, whose network
   output ``x0_hat = D(x_hat, sigma_hat)`` is the one-step x0 prediction searches score;
3. ``post(i, x_hat, x0_hat, evaluate)`` -> ``(x_next, x0_next)``: finish the step (Heun's second
   call goes through ``evaluate``); ``x0_next`` is ``D(x_next, sigma_{i+1})`` when known for free.

A step with ``scale == 0`` is not searchable: every ``xi`` gives the same ``x_next``.
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor

from adaptive_tts.seeds import check_seed

Evaluate = Callable[[Tensor, float], Tensor]


def karras_sigmas(
    steps: int = 18, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0
) -> Tensor:
    """Karras et al. (2022) schedule: ``(steps + 1,)`` float64, decreasing, last entry 0."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got {sigma_min}, {sigma_max}")
    if rho <= 0:
        raise ValueError(f"rho must be > 0, got {rho}")
    i = torch.arange(steps, dtype=torch.float64)
    denom = max(steps - 1, 1)
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    s = (hi + i / denom * (lo - hi)) ** rho
    return torch.cat([s, torch.zeros(1, dtype=torch.float64)])


@dataclass
class Sampler:
    """Base: a sigma schedule plus the three step phases. Subclasses define the phases."""

    sigmas: Tensor
    name: str = "sampler"
    needs_x0: bool = False  # pre() needs D(x, sigma_i)

    @property
    def num_steps(self) -> int:
        return self.sigmas.numel() - 1

    def sigma(self, i: int) -> float:
        return float(self.sigmas[i])

    def pre(self, i: int, x: Tensor, x0: Tensor | None) -> tuple[Tensor, float, float]:
        raise NotImplementedError

    def post(
        self, i: int, x_hat: Tensor, x0_hat: Tensor | None, evaluate: Evaluate
    ) -> tuple[Tensor, Tensor | None]:
        raise NotImplementedError

    def noise_scale(self, i: int) -> float:
        """The injected noise's scale at step ``i`` (0: not searchable)."""
        raise NotImplementedError

    def searchable(self, i: int) -> bool:
        return self.noise_scale(i) > 0.0

    def corrector_calls(self, i: int) -> int:
        """Network calls of step ``i``'s second (corrector) stage: 1 for a Heun correction,
        else 0."""
        return 0

    def calls_per_step(self, i: int) -> int:
        """Network calls of plain step ``i`` in a trajectory from step 0 (without search).

        ``D`` at the noised point, plus the corrector; a sampler that needs ``D(x, sigma_i)``
        (:attr:`needs_x0`) gets it from the previous step's noised point, so its step 0 pays one
        call more and a step to ``sigma = 0`` needs none."""
        if self.needs_x0:
            return int(i == 0) + int(self.sigma(i + 1) > 0)
        return 1 + self.corrector_calls(i)

    def plain_cost(self) -> list[int]:
        """:meth:`calls_per_step` of every step, ``(T,)``."""
        return [self.calls_per_step(i) for i in range(self.num_steps)]

    def trajectory_calls(self, start: int = 0) -> int:
        """Network calls of one plain trajectory from step ``start`` with nothing known (times
        the denoiser's ``nfe_per_call`` = NFEs)."""
        calls = sum(self.calls_per_step(i) for i in range(start, self.num_steps))
        return calls + int(self.needs_x0 and 0 < start < self.num_steps)

    def describe(self) -> dict[str, object]:
        """JSON-ready identity of the sampler (schedules are only valid for the same one);
        :func:`sampler_from_description` rebuilds the sampler from it."""
        return {"name": self.name, "steps": self.num_steps, "sigmas": self.sigmas.tolist()}

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> Sampler:
        """Rebuild from :meth:`describe`: the schedule plus every dataclass field it holds."""
        skip = {"sigmas", "name", "needs_x0"}
        kw = {f.name: d[f.name] for f in fields(cls) if f.name not in skip and f.name in d}
        return cls(sigmas=torch.tensor(d["sigmas"], dtype=torch.float64), **kw)


@dataclass
class EDMSampler(Sampler):
    """EDM stochastic Euler / Heun sampler (Karras et al. 2022, Algorithm 2).

    ``gamma_i = min(s_churn / steps, sqrt(2) - 1)`` where ``s_min <= sigma_i <= s_max``, else 0;
    ``sigma_hat = sigma_i (1 + gamma_i)``; noise scale ``s_noise sqrt(sigma_hat^2 - sigma_i^2)``.
    """

    method: Literal["euler", "heun"] = "heun"
    s_churn: float = 40.0
    s_min: float = 0.0
    s_max: float = float("inf")
    s_noise: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in ("euler", "heun"):
            raise ValueError(f"method must be 'euler' or 'heun', got {self.method!r}")
        if self.s_churn < 0:
            raise ValueError(f"s_churn must be >= 0, got {self.s_churn}")
        if self.s_noise < 0:
            raise ValueError(f"s_noise must be >= 0, got {self.s_noise}")
        self.name = f"edm-{self.method}"

    def gamma(self, i: int) -> float:
        s = self.sigma(i)
        if self.s_min <= s <= self.s_max and s > 0:
            return min(self.s_churn / self.num_steps, math.sqrt(2.0) - 1.0)
        return 0.0

    def sigma_hat(self, i: int) -> float:
        return self.sigma(i) * (1.0 + self.gamma(i))

    def noise_scale(self, i: int) -> float:
        s, sh = self.sigma(i), self.sigma_hat(i)
        return self.s_noise * math.sqrt(max(sh * sh - s * s, 0.0))

    def corrector_calls(self, i: int) -> int:
        return int(self.method == "heun" and self.sigma(i + 1) > 0)

    def pre(self, i: int, x: Tensor, x0: Tensor | None) -> tuple[Tensor, float, float]:
        return x, self.sigma_hat(i), self.noise_scale(i)

    def post(
        self, i: int, x_hat: Tensor, x0_hat: Tensor | None, evaluate: Evaluate
    ) -> tuple[Tensor, Tensor | None]:
        assert x0_hat is not None
        sh, sn = self.sigma_hat(i), self.sigma(i + 1)
        d = (x_hat - x0_hat) / sh
        x_next = x_hat + (sn - sh) * d
        if self.method == "heun" and sn > 0:
            d2 = (x_next - evaluate(x_next, sn)) / sn
            x_next = x_hat + (sn - sh) * 0.5 * (d + d2)
        return x_next, None

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out.update(s_churn=self.s_churn, s_min=self.s_min, s_max=self.s_max, s_noise=self.s_noise)
        return out

    @classmethod
    def from_description(cls, d: dict[str, Any]) -> Sampler:
        return cls(
            sigmas=torch.tensor(d["sigmas"], dtype=torch.float64),
            method=str(d["name"]).removeprefix("edm-"),  # type: ignore[arg-type]
            s_churn=float(d["s_churn"]),
            s_min=float(d["s_min"]),
            s_max=float(d["s_max"]),
            s_noise=float(d["s_noise"]),
        )


@dataclass
class AncestralSampler(Sampler):
    """Euler ancestral / Euler-Maruyama step (k-diffusion's ``sample_euler_ancestral``).

    ``x_next = x + (sigma_down - sigma) (x - D(x, sigma)) / sigma + sigma_up xi`` with
    ``sigma_up = min(sigma_next, eta sqrt(sigma_next^2 (sigma^2 - sigma_next^2) / sigma^2))``.
    The noised point is ``x_next`` itself at ``sigma_next``; its network output is reused as
    the next step's ``D(x, sigma)``.
    """

    eta: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.eta <= 1.0:
            raise ValueError(f"eta must lie in [0, 1], got {self.eta}")
        self.name = "ancestral"
        self.needs_x0 = True

    def _updown(self, i: int) -> tuple[float, float]:
        s, sn = self.sigma(i), self.sigma(i + 1)
        up = min(sn, self.eta * math.sqrt(max(sn**2 * (s**2 - sn**2) / s**2, 0.0)))
        return up, math.sqrt(max(sn**2 - up**2, 0.0))

    def noise_scale(self, i: int) -> float:
        return self._updown(i)[0]

    def pre(self, i: int, x: Tensor, x0: Tensor | None) -> tuple[Tensor, float, float]:
        if x0 is None:
            raise ValueError("AncestralSampler.pre needs x0 = D(x, sigma_i)")
        up, down = self._updown(i)
        s = self.sigma(i)
        return x + (down - s) * (x - x0) / s, self.sigma(i + 1), up

    def post(
        self, i: int, x_hat: Tensor, x0_hat: Tensor | None, evaluate: Evaluate
    ) -> tuple[Tensor, Tensor | None]:
        return x_hat, x0_hat

    def describe(self) -> dict[str, object]:
        out = super().describe()
        out.update(eta=self.eta)
        return out


SamplerName = Literal["heun", "euler", "ancestral"]


def make_sampler(
    name: SamplerName = "heun",
    steps: int = 18,
    sigma_min: float = 0.002,
    sigma_max: float = 80.0,
    rho: float = 7.0,
    **kwargs: Any,
) -> Sampler:
    """Build a sampler by name on a Karras schedule."""
    sig = karras_sigmas(steps, sigma_min, sigma_max, rho)
    if name in ("heun", "euler"):
        return EDMSampler(sigmas=sig, method=name, **kwargs)  # type: ignore[arg-type]
    if name == "ancestral":
        return AncestralSampler(sigmas=sig, **kwargs)
    raise ValueError(f"sampler must be one of 'heun', 'euler', 'ancestral', got {name!r}")


def randn_like_rows(template: Tensor, gens: list[torch.Generator], per: int = 1) -> Tensor:
    """Draw ``(len(gens) * per, *template.shape[1:])`` standard normals, row block ``b`` from
    ``gens[b]`` on that generator's device (a sample's noise never depends on the rest of the
    batch)."""
    shape = (per, *template.shape[1:])
    out = torch.stack([torch.randn(shape, generator=g, device=g.device) for g in gens])
    return out.reshape(-1, *template.shape[1:]).to(device=template.device, dtype=template.dtype)


def make_generators(
    seeds: list[int] | int, device: str | torch.device = "cpu"
) -> list[torch.Generator]:
    """One seeded generator per sample (CPU by default: bit-reproducible across machines; a
    CUDA generator keeps the draws on the GPU). Every seed must lie in
    ``[0, adaptive_tts.seeds.SEED_MAX]`` (:func:`~adaptive_tts.seeds.check_seed`): torch keeps
    only the low 32 bits, so a larger or negative seed would alias another one."""
    seeds = [seeds] if isinstance(seeds, int) else list(seeds)
    checked = [check_seed(s, "seed") for s in seeds]
    return [torch.Generator(device=device).manual_seed(s) for s in checked]


def initial_noise(
    shape: tuple[int, ...], gens: list[torch.Generator], sigma_max: float, device: str = "cpu"
) -> Tensor:
    """``x_T = sigma_max * xi`` of shape ``(len(gens), *shape)``, one generator per sample."""
    xi = torch.stack([torch.randn(shape, generator=g, device=g.device) for g in gens])
    return (xi * sigma_max).to(device)


SAMPLER_KINDS: dict[str, type[Sampler] | str] = {
    "edm-heun": EDMSampler,
    "edm-euler": EDMSampler,
    "ancestral": AncestralSampler,
    "ddim": "adaptive_tts.models.latent_t2i:DDIMSampler",  # imported on first use
}
"""``describe()["name"]`` -> sampler class (or ``"module:Class"``, imported when needed)."""


def register_sampler(name: str, cls: type[Sampler] | str) -> None:
    """Make :func:`sampler_from_description` rebuild samplers named ``name`` with ``cls``."""
    SAMPLER_KINDS[name] = cls


def sampler_from_description(d: dict[str, Any]) -> Sampler:
    """Rebuild a sampler from :meth:`Sampler.describe` output (traces and schedules store it)."""
    name = str(d.get("name", ""))
    kind = SAMPLER_KINDS.get(name)
    if kind is None:
        raise ValueError(f"unknown sampler description {name!r}; known: {sorted(SAMPLER_KINDS)}")
    if isinstance(kind, str):
        module, _, attr = kind.partition(":")
        kind = getattr(importlib.import_module(module), attr)
        assert isinstance(kind, type) and issubclass(kind, Sampler)
    return kind.from_description(d)
