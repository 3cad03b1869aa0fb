"""Flow-matching backend: the change of variables to VE form, the SDE's marginals on the exact
Gaussian mixture, diffusers' flow Euler step, and tiny SD3 / FLUX transformers loaded from disk."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from adaptive_tts.models.flow import (
    FlowDenoiser,
    FlowT2I,
    flow_sigmas,
    flow_t,
    gmm_velocity,
    pack_latents,
    unpack_latents,
    ve_sigma,
)
from adaptive_tts.models.gmm import GaussianMixture, make_gmm
from adaptive_tts.nfe import Ledger
from adaptive_tts.rewards import Brightness
from adaptive_tts.sampling import (
    AncestralSampler,
    EDMSampler,
    Sampler,
    initial_noise,
    karras_sigmas,
    make_generators,
)
from adaptive_tts.search import METHODS
from adaptive_tts.search.common import trajectory

# ---------------------------------------------------------------------- exact mixture


def test_change_of_variables_is_exact(gmm: GaussianMixture) -> None:
    """D built from the exact velocity is the mixture's posterior mean again."""
    d = FlowDenoiser(gmm_velocity(gmm))
    x = torch.randn(6, gmm.dim, dtype=torch.float64) * 3
    sigma = torch.tensor([0.01, 0.1, 1.0, 3.0, 20.0, 80.0], dtype=torch.float64)
    cond = torch.tensor([0, 1, 2, 3, -1, 0])
    torch.testing.assert_close(d(x, sigma, cond), gmm(x, sigma, cond), rtol=1e-10, atol=1e-10)
    t = torch.tensor([0.2, 0.5, 0.9], dtype=torch.float64)
    torch.testing.assert_close(flow_t(ve_sigma(t)), t)


def _sample_mixture(gmm: GaussianMixture, n: int, sigma: float, seed: int) -> torch.Tensor:
    """Exact draws of the mixture noised to ``sigma`` (VE form): ``(n, d)`` float64."""
    g = torch.Generator().manual_seed(seed)
    comp = torch.multinomial(gmm.log_w.exp(), n, replacement=True, generator=g)
    z = torch.randn(n, gmm.dim, generator=g, dtype=torch.float64)
    x0 = gmm.means[comp] + gmm.variances[comp].sqrt() * z
    return x0 + sigma * torch.randn(n, gmm.dim, generator=g, dtype=torch.float64)


def _moment_errors(gmm: GaussianMixture, denoiser, sampler: Sampler, n: int) -> tuple[float, float]:
    """Relative errors of the sampled mean and covariance against the exact moments."""
    x = _sample_mixture(gmm, n, sampler.sigma(0), seed=0)
    out = trajectory(
        Ledger(denoiser, 1),
        sampler,
        x,
        None,
        torch.zeros(n, dtype=torch.long),
        [torch.Generator().manual_seed(1)],
        per=n,
    )
    mean, cov = gmm.moments()
    scale = float(cov.trace().sqrt())
    err_mean = float((out.mean(0) - mean).norm()) / scale
    err_cov = float((torch.cov(out.T) - cov).norm() / cov.norm())
    return err_mean, err_cov


@dataclass
class TooNoisy(AncestralSampler):
    """Negative control: the ancestral noise scaled by 1.2 without changing the drift."""

    factor: float = 1.2

    def pre(self, i, x, x0):
        x_det, sh, scale = super().pre(i, x, x0)
        return x_det, sh, scale * self.factor


# Tolerances: the correct samplers reach <= 0.011 (mean) and <= 0.022 (cov) over several seeds;
# 20 % too much noise gives cov errors 0.074-0.093 and a wrong sigma <-> t map 0.36-0.6.
MEAN_TOL, COV_TOL = 0.035, 0.04


@pytest.mark.parametrize(
    "name, sampler, n",
    [
        (
            "ancestral on the flow grid",
            AncestralSampler(sigmas=flow_sigmas(256, 3.0, 80 / 81)),
            8192,
        ),
        (
            "EDM Heun with churn",
            EDMSampler(sigmas=karras_sigmas(64), method="heun", s_churn=64),
            16384,
        ),
    ],
)
def test_sde_keeps_mixture_marginals(name: str, sampler: Sampler, n: int) -> None:
    """SDE sampling of the velocity model reproduces the mixture's exact mean and covariance."""
    gmm = make_gmm(dim=2, num_classes=2, per_class=2, spread=2.0, std=0.4, seed=1)
    d = FlowDenoiser(gmm_velocity(gmm))
    err_mean, err_cov = _moment_errors(gmm, d, sampler, n)
    assert err_mean < MEAN_TOL and err_cov < COV_TOL, (name, err_mean, err_cov)


def test_marginal_check_rejects_wrong_sdes() -> None:
    """The same check fails for a wrong diffusion coefficient and a wrong change of variables."""
    gmm = make_gmm(dim=2, num_classes=2, per_class=2, spread=2.0, std=0.4, seed=1)
    sig = karras_sigmas(256)
    exact = gmm_velocity(gmm)
    _, noisy_cov = _moment_errors(gmm, FlowDenoiser(exact), TooNoisy(sigmas=sig), 8192)
    assert noisy_cov > 1.5 * COV_TOL
    # plausible bug: feeding t = sigma (not sigma / (1 + sigma)) to the velocity
    wrong = FlowDenoiser(lambda x, t, c: exact(x, ve_sigma(t).clamp(max=0.999), c))
    err_mean, err_cov = _moment_errors(gmm, wrong, AncestralSampler(sigmas=sig), 4096)
    assert err_cov > 3 * COV_TOL or err_mean > 3 * MEAN_TOL


def test_flow_sigmas_grid() -> None:
    s = flow_sigmas(4, shift=3.0, t_max=0.99, t_min=1e-3)
    t = torch.linspace(0.99, 1e-3, 4, dtype=torch.float64)
    torch.testing.assert_close(flow_t(s[:-1]), 3 * t / (1 + 2 * t))
    assert s[-1] == 0 and (s[:-1].diff() < 0).all()
    with pytest.raises(ValueError, match="t_max"):
        flow_sigmas(4, t_max=1.0)


# ---------------------------------------------------------------------- tiny transformers
PROMPTS = 3
STEPS = 3
KW: dict[str, dict] = {
    "naive": {},
    "best-of-n": {"n": 2},
    "beam": {"n": 2, "width": 2},
    "mcts": {"n": 2, "sims": 2},
    "zero-order": {"n": 2, "k": 2},
    "eps-greedy": {"n": 2, "k": 2, "eps": 0.5},
    "eacps": {"k_global": 2, "elites": 1, "k_local": 1},
    "evosearch": {"schedule": (0, 1), "population": (3, 2), "elites": 1},
}


def expected_calls(method: str, s: Sampler, kw: dict) -> int:
    """Network calls per sample with the ancestral contract (x0 reused from the noised point)."""

    def traj(start: int = 0) -> int:
        return 1 + sum(s.sigma(i + 1) > 0 for i in range(start, s.num_steps))

    srch = [i for i in range(s.num_steps) if s.searchable(i)]
    return {
        "naive": lambda: traj(),
        "best-of-n": lambda: kw["n"] * traj(),
        "beam": lambda: kw["width"] * (1 + kw["n"] * len(srch)),
        "mcts": lambda: 1 + sum(kw["n"] + kw["sims"] * (traj(i + 1) - 1) for i in srch),
        "zero-order": lambda: traj() + len(srch) * kw["n"] * kw["k"],
        "eps-greedy": lambda: traj() + len(srch) * kw["n"] * kw["k"],
        "eacps": lambda: (kw["k_global"] + kw["elites"] * kw["k_local"]) * traj(),
        "evosearch": lambda: (
            kw["population"][0] * traj()
            + sum((p - kw["elites"]) * traj(g) for g, p in zip(kw["schedule"], kw["population"]))
        ),
    }[method]()


def tiny_vae():
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
        scaling_factor=1.5,
        shift_factor=0.1,
    )


@pytest.fixture(scope="module")
def sd3_dir(tmp_path_factory) -> Path:
    from diffusers import SD3Transformer2DModel

    root = tmp_path_factory.mktemp("sd3")
    torch.manual_seed(0)
    SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        out_channels=4,
        pos_embed_max_size=8,
    ).save_pretrained(root / "transformer")
    tiny_vae().save_pretrained(root / "vae")
    return root


def _embeddings(p: int, length: int, dim: int, pooled: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return torch.randn(p, length, dim, generator=g), torch.randn(p, pooled, generator=g)


@pytest.fixture(scope="module")
def sd3(sd3_dir: Path) -> FlowT2I:
    m = FlowT2I.from_pretrained(sd3_dir, guidance_scale=3.0, height=16, width=16)
    m.set_prompt_embeddings(*_embeddings(PROMPTS, 5, 16, 8))
    rows = []
    m.transformer.register_forward_hook(lambda mod, inp, out: rows.append(out.sample.shape[0]))
    m.rows = rows  # type: ignore[assignment]
    return m


def _run(m: FlowT2I, method: str, s: Sampler, seeds: list[int], **kw):
    gens = make_generators(seeds)
    x = initial_noise(m.sample_shape, gens, s.sigma(0))
    cond = torch.arange(len(seeds)) % PROMPTS
    return METHODS[method](
        m,
        s,
        x,
        cond=cond,
        reward=m.image_reward(Brightness()),
        generator=gens,
        **{**KW.get(method, {}), **kw},
    )


def test_sd3_loads_and_euler_matches_diffusers(sd3: FlowT2I) -> None:
    """The package's EDM Euler step (no churn) on VE sigmas is diffusers' flow Euler step."""
    from diffusers import FlowMatchEulerDiscreteScheduler

    assert sd3.kind == "sd3" and sd3.nfe_per_call == 2 and sd3.sample_shape == (4, 8, 8)
    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    x_t, cond = torch.randn(2, 4, 8, 8), torch.tensor([0, 2])
    for k in (1, 2, 3):  # step 0 starts at t = 1 (sigma = inf)
        sched.set_timesteps(4)
        t, t_next = float(sched.sigmas[k]), float(sched.sigmas[k + 1])
        v = sd3.velocity(x_t, torch.full((2,), t), cond)
        want = sched.step(v, sched.timesteps[k], x_t).prev_sample
        s, s_next = t / (1 - t), t_next / (1 - t_next)
        euler = EDMSampler(
            sigmas=torch.tensor([s, s_next], dtype=torch.float64), method="euler", s_churn=0
        )
        x = x_t / (1 - t)
        x_next, _ = euler.post(0, x, sd3(x, torch.full((2,), s), cond), lambda *_: None)
        torch.testing.assert_close(x_next * (1 - t_next), want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_on_sd3(sd3: FlowT2I, method: str) -> None:
    s = sd3.sampler("ancestral", STEPS)
    n_rows, dec0 = len(sd3.rows), sd3.vae_decodes  # type: ignore[attr-defined]
    a = _run(sd3, method, s, [3, 4])
    assert a.x0.shape == (2, 4, 8, 8) and torch.isfinite(a.x0).all()
    assert sum(sd3.rows[n_rows:]) == int(a.nfe.sum())  # type: ignore[attr-defined]
    assert sd3.vae_decodes - dec0 == int(a.reward_calls.sum())
    if method in KW:
        want = 2 * expected_calls(method, s, KW[method])  # classifier-free guidance doubles
        assert a.nfe.tolist() == [want, want]
    b = _run(sd3, method, s, [3, 4])
    assert torch.equal(a.x0, b.x0) and torch.equal(a.reward, b.reward)


def test_sd3_search_beats_naive(sd3: FlowT2I) -> None:
    s = sd3.sampler("ancestral", 4)
    naive = _run(sd3, "naive", s, [1, 2, 3])
    greedy = _run(sd3, "eps-greedy", s, [1, 2, 3], n=4, k=3)
    assert greedy.reward.mean() >= naive.reward.mean()


def test_flux_tiny_transformer(tmp_path: Path) -> None:
    from diffusers import FluxTransformer2DModel

    torch.manual_seed(0)
    FluxTransformer2DModel(
        patch_size=1,
        in_channels=16,
        num_layers=1,
        num_single_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        pooled_projection_dim=8,
        guidance_embeds=True,
        axes_dims_rope=(2, 2, 4),
    ).save_pretrained(tmp_path / "flux")  # a bare transformer directory
    m = FlowT2I.from_pretrained(
        tmp_path / "flux", guidance="embedded", guidance_scale=3.5, height=32, width=32
    )
    assert m.kind == "flux" and m.nfe_per_call == 1 and m.sample_shape == (4, 4, 4)
    m.set_prompt_embeddings(*_embeddings(2, 5, 16, 8))
    x = torch.arange(2 * 4 * 4 * 4, dtype=torch.float32).view(2, 4, 4, 4)
    packed = pack_latents(x)  # token (r, c) holds channel-major 2x2 patches
    assert packed.shape == (2, 4, 16)
    assert packed[1, 1 * 2 + 0, 3 * 4 + 1 * 2 + 0] == x[1, 3, 2 * 1 + 1, 2 * 0 + 0]
    assert torch.equal(unpack_latents(packed, 4, 4), x)
    s = m.sampler("ancestral", STEPS)
    res = _run_no_vae(m, s)
    want = expected_calls("eps-greedy", s, KW["eps-greedy"])  # guidance-distilled: one call
    assert res.nfe.tolist() == [want, want] and res.x0.shape == (2, 4, 4, 4)
    with pytest.raises(ValueError, match="no VAE"):
        m.to_image(res.x0)
    with pytest.raises(ValueError, match="guidance-distilled"):
        plain = FluxTransformer2DModel.from_config(
            {**m.transformer.config, "guidance_embeds": False}
        )
        FlowT2I(plain, guidance="embedded")


def _run_no_vae(m: FlowT2I, s: Sampler):
    gens = make_generators([0, 1])
    x = initial_noise(m.sample_shape, gens, s.sigma(0))
    return METHODS["eps-greedy"](
        m,
        s,
        x,
        cond=torch.tensor([0, 1]),
        reward=lambda x0, c: x0.mean(dim=(1, 2, 3)),
        generator=gens,
        **KW["eps-greedy"],
    )


def test_missing_or_unknown_transformer(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nowhere"):
        FlowT2I.from_pretrained(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="'transformer'"):
        FlowT2I.from_pretrained(tmp_path / "empty")
    (tmp_path / "odd" / "transformer").mkdir(parents=True)
    (tmp_path / "odd" / "transformer" / "config.json").write_text(json.dumps({"_class_name": "X"}))
    with pytest.raises(ValueError, match="transformer class"):
        FlowT2I.from_pretrained(tmp_path / "odd")
    assert math.isclose(float(ve_sigma(torch.tensor(0.5))), 1.0)
