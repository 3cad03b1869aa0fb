"""Latent text-to-image backend on tiny random SD / SDXL-style pipelines built offline.

Pipelines are written with ``save_pretrained`` (tokenizer from open_clip's bundled BPE vocabulary)
and loaded back through :meth:`LatentT2I.from_pretrained`.
"""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from adaptive_tts.models.latent_t2i import LatentT2I, ddim_sampler, sigma_to_t, vp_sigmas
from adaptive_tts.rewards import Brightness
from adaptive_tts.sampling import AncestralSampler, Sampler, initial_noise, make_generators
from adaptive_tts.search import METHODS

PROMPTS = ["a photo of a cat", "a red car", "a bowl of fruit"]
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


def write_clip_tokenizer(path: Path, max_length: int = 16) -> None:
    """A CLIP tokenizer directory (vocab.json + merges.txt) from open_clip's bundled BPE."""
    from open_clip.tokenizer import SimpleTokenizer

    st = SimpleTokenizer()
    rename = {"<start_of_text>": "<|startoftext|>", "<end_of_text>": "<|endoftext|>"}
    path.mkdir(parents=True, exist_ok=True)
    vocab = {rename.get(k, k): v for k, v in st.encoder.items()}
    (path / "vocab.json").write_text(json.dumps(vocab))
    merges = sorted(st.bpe_ranks, key=st.bpe_ranks.get)
    body = "\n".join(f"{a} {b}" for a, b in merges)
    (path / "merges.txt").write_text(f"#version: 0.2\n{body}\n")
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": max_length}))


def tiny_vae(latent_channels: int = 4, **kw):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=latent_channels,
        norm_num_groups=4,
        layers_per_block=1,
        sample_size=16,
        **kw,
    )


def build_pipeline(root: Path, xl: bool = False) -> Path:
    """Tiny random SD-1.5-style (or SDXL-style: two encoders, pooled + time ids) pipeline."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(0)
    tcfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=32,
        intermediate_size=37,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=16,
        projection_dim=32,
        bos_token_id=49406,
        eos_token_id=49407,
        pad_token_id=49407,
    )
    CLIPTextModel(tcfg).save_pretrained(root / "text_encoder")
    write_clip_tokenizer(root / "tokenizer")
    extra: dict = {}
    if xl:
        CLIPTextModelWithProjection(tcfg).save_pretrained(root / "text_encoder_2")
        write_clip_tokenizer(root / "tokenizer_2")
        extra = {
            "addition_embed_type": "text_time",
            "addition_time_embed_dim": 4,
            "projection_class_embeddings_input_dim": 32 + 6 * 4,
        }
    UNet2DConditionModel(
        sample_size=8,
        in_channels=4,
        out_channels=4,
        layers_per_block=1,
        block_out_channels=(8, 16),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=64 if xl else 32,
        norm_num_groups=4,
        attention_head_dim=2,
        **extra,
    ).save_pretrained(root / "unet")
    tiny_vae().save_pretrained(root / "vae")
    DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=False,
    ).save_pretrained(root / "scheduler")
    return root


@pytest.fixture(scope="module")
def sd_dir(tmp_path_factory) -> Path:
    return build_pipeline(tmp_path_factory.mktemp("sd"))


@pytest.fixture(scope="module")
def model(sd_dir: Path) -> LatentT2I:
    m = LatentT2I.from_pretrained(sd_dir, guidance_scale=4.0)
    m.set_prompts(PROMPTS)
    return m


# ---------------------------------------------------------------------- closed-form NFE counts
def traj(s: Sampler, start: int = 0) -> int:
    """Calls of a plain trajectory from ``start`` with nothing known (x0-reusing samplers)."""
    assert s.needs_x0
    return 1 + sum(s.sigma(i + 1) > 0 for i in range(start, s.num_steps))


def expected_calls(method: str, s: Sampler, kw: dict) -> int:
    """Network calls per sample for the ancestral / DDIM contract (times nfe_per_call = NFEs)."""
    srch = [i for i in range(s.num_steps) if s.searchable(i)]
    if method == "naive":
        return traj(s)
    if method == "best-of-n":
        return kw["n"] * traj(s)
    if method in ("eps-greedy", "zero-order"):
        return traj(s) + len(srch) * kw["n"] * kw["k"]
    if method == "beam":  # each path gets its x0 first; searched steps w*n; the last step free
        return kw["width"] * (1 + kw["n"] * len(srch))
    if method == "mcts":
        return 1 + sum(kw["n"] + kw["sims"] * (traj(s, i + 1) - 1) for i in srch)
    if method == "eacps":
        return (kw["k_global"] + kw["elites"] * kw["k_local"]) * traj(s)
    if method == "evosearch":
        sched, pop, m = kw["schedule"], kw["population"], kw["elites"]
        return pop[0] * traj(s) + sum((p - m) * traj(s, g) for g, p in zip(sched, pop))
    raise KeyError(method)


def run(model: LatentT2I, method: str, sampler: Sampler, seeds: list[int], reward=None, **kw):
    gens = make_generators(seeds)
    x = initial_noise(model.sample_shape, gens, sampler.sigma(0))
    cond = torch.arange(len(seeds)) % len(PROMPTS)
    reward = reward or model.image_reward(Brightness())
    return METHODS[method](
        model, sampler, x, cond=cond, reward=reward, generator=gens, **{**KW.get(method, {}), **kw}
    )


# ---------------------------------------------------------------------- loading
def test_loads_with_shapes_and_sigma_range(model: LatentT2I) -> None:
    assert model.sample_shape == (4, 8, 8) and (model.height, model.width) == (16, 16)
    assert model.nfe_per_call == 2 and not model.sdxl
    a = model.alphas_cumprod
    assert model.sigma_min == pytest.approx(math.sqrt((1 - a[0]) / a[0]), rel=1e-9)
    assert model.sigma_max == pytest.approx(math.sqrt((1 - a[-1]) / a[-1]), rel=1e-9)
    assert model.prompt_embeds.shape == (len(PROMPTS) + 1, 16, 32)
    assert model.to_image(torch.zeros(2, 4, 8, 8)).shape == (2, 3, 16, 16)


@pytest.mark.parametrize("missing", ["vae", "tokenizer", "scheduler"])
def test_missing_component_is_named(sd_dir: Path, tmp_path: Path, missing: str) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(sd_dir, broken, ignore=lambda d, names: [missing] if d == str(sd_dir) else [])
    with pytest.raises(FileNotFoundError, match=f"{broken}.*'{missing}'"):
        LatentT2I.from_pretrained(broken)
    with pytest.raises(FileNotFoundError, match="nowhere"):
        LatentT2I.from_pretrained(tmp_path / "nowhere")


def test_prompts_encoded_once_and_errors(sd_dir: Path) -> None:
    m = LatentT2I.from_pretrained(sd_dir, guidance_scale=3.0)
    calls = []
    m.text_encoders[0].register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    x = torch.randn(2, 4, 8, 8)
    with pytest.raises(ValueError, match="set_prompts"):
        m(x, torch.ones(2), torch.tensor([0, 1]))
    m.set_prompts(PROMPTS)
    assert calls == [len(PROMPTS) + 1]  # prompts + the null prompt, one batched pass
    run(m, "eps-greedy", m.sampler("ancestral", STEPS), [0, 1])
    assert calls == [len(PROMPTS) + 1]  # searches never re-encode
    with pytest.raises(ValueError, match="cond"):
        m(x, torch.ones(2), None)
    with pytest.raises(ValueError, match="prompt indices"):
        m(x, torch.ones(2), torch.tensor([0, 9]))


# ---------------------------------------------------------------------- the conversion
@pytest.mark.parametrize("pred", ["epsilon", "v_prediction"])
def test_x0_matches_diffusers_scheduler(model: LatentT2I, pred: str) -> None:
    """At the scheduler's integer timesteps D equals diffusers' ``pred_original_sample``."""
    from diffusers import DDIMScheduler

    m = LatentT2I(
        model.unet,
        model.vae,
        list(model.text_encoders),
        model.tokenizers,
        model.alphas_cumprod,
        prediction_type=pred,
        guidance_scale=1.0,
    )
    m.set_prompts(PROMPTS)
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        prediction_type=pred,
        clip_sample=False,
    )
    sched.set_timesteps(10)
    cond = torch.tensor([0, 2])
    x_vp = torch.randn(2, 4, 8, 8)
    for t in (999, 500, 20):
        out = m.unet(x_vp, t, encoder_hidden_states=m.prompt_embeds[cond]).sample
        want = sched.step(out, t, x_vp).pred_original_sample
        sigma = float(vp_sigmas(m.alphas_cumprod)[t])
        assert float(sigma_to_t(torch.tensor([sigma]), m.log_sigmas)[0]) == pytest.approx(
            t, abs=1e-6
        )
        got = m(x_vp * math.sqrt(1 + sigma**2), torch.full((2,), sigma), cond)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_classifier_free_guidance_combination(model: LatentT2I) -> None:
    x, sig, cond = torch.randn(2, 4, 8, 8), torch.tensor([3.0, 0.5]), torch.tensor([1, 2])
    g = model.guidance_scale
    model.guidance_scale = 1.0
    try:
        x0_c = model(x, sig, cond)
        x0_u = model(x, sig, torch.full((2,), len(PROMPTS)))  # the null prompt's row
    finally:
        model.guidance_scale = g
    torch.testing.assert_close(model(x, sig, cond), x0_u + g * (x0_c - x0_u), rtol=1e-4, atol=1e-4)


def test_ddim_step_matches_diffusers_and_ancestral(model: LatentT2I) -> None:
    """Our DDIM(eta=1) trajectory equals diffusers' DDIMScheduler with the same noise, and the
    step equals the Euler-ancestral step on the same sigmas."""
    from diffusers import DDIMScheduler

    g0 = model.guidance_scale
    model.guidance_scale = 1.0
    sched = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        clip_sample=False,
        set_alpha_to_one=True,
    )
    sched.set_timesteps(5)
    s = ddim_sampler(model.alphas_cumprod, 5)
    assert s.timesteps == sched.timesteps.tolist()
    gen = torch.Generator().manual_seed(0)
    xi = [torch.randn(1, 4, 8, 8, generator=gen) for _ in range(6)]
    cond = torch.tensor([1])
    try:
        x = xi[0].clone()
        for k, t in enumerate(sched.timesteps):
            eps = model.unet(x, t, encoder_hidden_states=model.prompt_embeds[cond]).sample
            x = sched.step(eps, t, x, eta=1.0, variance_noise=xi[k + 1]).prev_sample
        y, x0 = xi[0] * math.sqrt(1 + s.sigma(0) ** 2), None
        for i in range(s.num_steps):
            x0 = model(y, torch.tensor([s.sigma(i)]), cond) if x0 is None else x0
            x_det, sh, scale = s.pre(i, y, x0)
            y = x_det + scale * xi[i + 1]
            x0 = model(y, torch.tensor([sh]), cond) if sh > 0 else y
    finally:
        model.guidance_scale = g0
    torch.testing.assert_close(y, x, rtol=1e-4, atol=1e-4)
    anc = AncestralSampler(sigmas=s.sigmas)
    z, z0 = torch.randn(2, 4, 8, 8), torch.randn(2, 4, 8, 8)
    for i in range(s.num_steps):
        (a, sa, ka), (b, sb, kb) = s.pre(i, z, z0), anc.pre(i, z, z0)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
        assert sa == sb and ka == pytest.approx(kb, abs=1e-12)
    assert s.searchable(0) and not s.searchable(s.num_steps - 1)


# ---------------------------------------------------------------------- every search method
@pytest.mark.parametrize("method", sorted(METHODS))
def test_every_method_counts_and_determinism(model: LatentT2I, method: str) -> None:
    s = model.sampler("ddim" if method in ("beam", "mcts") else "ancestral", STEPS)
    rows0, dec0 = model.unet_rows, model.vae_decodes
    a = run(model, method, s, [5, 6])
    assert a.x0.shape == (2, *model.sample_shape) and a.reward.shape == (2,)
    # every row the ledger charged went through the UNet twice (guidance), and nothing else did
    assert model.unet_rows - rows0 == int(a.nfe.sum())
    # each reward evaluation decoded exactly one latent through the VAE
    assert model.vae_decodes - dec0 == int(a.reward_calls.sum())
    if method in KW:
        want = 2 * expected_calls(method, s, KW[method])
        assert a.nfe.tolist() == [want, want]
    b = run(model, method, s, [5, 6])
    assert torch.equal(a.x0, b.x0) and torch.equal(a.reward, b.reward)
    assert torch.equal(a.nfe, b.nfe)


def test_search_picks_higher_reward(model: LatentT2I) -> None:
    s = model.sampler("ancestral", 4)
    seeds = [11, 12, 13]
    naive = run(model, "naive", s, seeds)
    greedy = run(model, "eps-greedy", s, seeds, n=4, k=3)
    assert greedy.reward.mean() >= naive.reward.mean()
    best = run(model, "best-of-n", s, seeds, n=4)
    for j, tr in enumerate(best.traces):
        cands = torch.tensor(tr["candidate_rewards"])
        assert best.reward[j] == cands.max()
    # the returned x0 really has the reported reward
    again = model.image_reward(Brightness())(best.x0, None)
    torch.testing.assert_close(again, best.reward, rtol=1e-5, atol=1e-6)


def test_sdxl_style_pipeline(tmp_path: Path) -> None:
    m = LatentT2I.from_pretrained(build_pipeline(tmp_path / "xl", xl=True), guidance_scale=2.0)
    assert m.sdxl and m.force_zeros
    m.set_prompts(PROMPTS[:2])
    assert m.prompt_embeds.shape == (3, 16, 64) and m.pooled_embeds is not None
    assert m.pooled_embeds.shape == (3, 32) and float(m.pooled_embeds[-1].abs().sum()) == 0.0
    s = m.sampler("ancestral", STEPS)
    res = run(m, "eps-greedy", s, [0, 1])
    want = 2 * expected_calls("eps-greedy", s, KW["eps-greedy"])
    assert res.nfe.tolist() == [want, want] and torch.isfinite(res.x0).all()
    (tmp_path / "xl" / "tokenizer_2" / "vocab.json").unlink()
    shutil.rmtree(tmp_path / "xl" / "tokenizer_2")
    with pytest.raises(FileNotFoundError, match="tokenizer_2"):
        LatentT2I.from_pretrained(tmp_path / "xl")
