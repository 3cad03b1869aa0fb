"""Model specs on tiny pipelines built offline and saved to temporary directories: ``sd:DIR``,
``sd3:DIR`` (its own text encoders through the pipeline), ``edm:DIR``; each searched through
:func:`adaptive_tts.specs.make_task` and the search API with its sampler defaults."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from adaptive_tts.models.latent_t2i import DDIMSampler
from adaptive_tts.sampling import AncestralSampler, EDMSampler
from adaptive_tts.specs import build_model, make_task
from experiments.runner import run_method
from tests.models.test_latent_t2i import tiny_vae, write_clip_tokenizer

PROMPTS = ["a photo of a cat", "a red car"]


def build_sd3(root: Path) -> Path:
    """Tiny SD3 pipeline: two CLIP text encoders with projection, no T5 (zeros, as diffusers)."""
    from diffusers import (
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, CLIPTokenizer

    torch.manual_seed(0)
    tcfg = CLIPTextConfig(
        vocab_size=49408, hidden_size=8, intermediate_size=16, num_hidden_layers=1,
        num_attention_heads=2, max_position_embeddings=16, projection_dim=4,
        bos_token_id=49406, eos_token_id=49407, pad_token_id=49407,
    )  # fmt: skip
    write_clip_tokenizer(root / "_tok")
    tok = CLIPTokenizer.from_pretrained(root / "_tok", local_files_only=True)
    transformer = SD3Transformer2DModel(
        sample_size=8, patch_size=2, in_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=16, caption_projection_dim=16,
        pooled_projection_dim=8, out_channels=4, pos_embed_max_size=8,
    )  # fmt: skip
    StableDiffusion3Pipeline(
        transformer=transformer,
        scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0),
        vae=tiny_vae(),
        text_encoder=CLIPTextModelWithProjection(tcfg),
        tokenizer=tok,
        text_encoder_2=CLIPTextModelWithProjection(tcfg),
        tokenizer_2=tok,
        text_encoder_3=None,
        tokenizer_3=None,
    ).save_pretrained(root)
    return root


def _search(task, steps: int = 3, method: str = "eps-greedy", **kw):
    sampler = task.make_sampler(None, steps)
    prompts = task.prompts(None, 2) if task.uses_prompt else torch.full((2,), -1)
    opts = {"n": 2, "k": 1, "eps": 0.5} if method == "eps-greedy" else {}
    return sampler, run_method(task, method, sampler, [0, 1], prompts, **{**opts, **kw})


def test_sd_spec_defaults_guidance_and_prompts(sd_dir: Path) -> None:
    task = make_task(f"sd:{sd_dir}", "brightness", prompts=PROMPTS, guidance=3.0)
    assert task.uses_prompt and task.prompt_texts == PROMPTS and task.num_classes == 2
    assert task.denoiser.nfe_per_call == 2  # CFG: null + prompt rows
    sampler, res = _search(task, method="naive")
    assert isinstance(sampler, DDIMSampler) and sampler.eta == 1.0
    assert res.nfe.tolist() == [2 * 3, 2 * 3]  # DDIM: one call per step, CFG counts 2
    assert task.compute_counters()["vae_decodes"] == 2  # the final reward decoded 2 latents
    assert task.prompt_text(task.prompts(None, 3)) == [*PROMPTS, PROMPTS[0]]
    plain = make_task(f"sd:{sd_dir}", "brightness", prompts=PROMPTS, guidance=1.0, height=32)
    assert plain.denoiser.nfe_per_call == 1 and plain.sample_shape == (4, 16, 8)


def test_sd3_spec_uses_the_pipeline_text_encoders(sd3_dir: Path) -> None:
    task = make_task(f"sd3:{sd3_dir}", ["brightness=1", "compress=0.5"], prompts=PROMPTS)
    assert task.sample_shape == (4, 8, 8)  # sample_size 8 x the tiny VAE's 2x
    assert task.denoiser.nfe_per_call == 2  # SD3 default guidance 7.0 (CFG)
    emb = task.denoiser.prompt_embeds
    assert emb.shape[0] == 3 and not torch.equal(emb[0], emb[1])  # two prompts + the null one
    sampler, res = _search(task)
    assert isinstance(sampler, AncestralSampler) and sampler.eta == 1.0
    assert torch.isfinite(res.reward).all() and res.x0.shape == (2, 4, 8, 8)
    assert task.reward.name == "1*brightness + 0.5*compress"


def test_edm_spec(edm_dir: Path) -> None:
    task = make_task(f"edm:{edm_dir}", "brightness", eval_reward="compress")
    assert task.sigma_max == 40.0 and not task.uses_prompt and task.num_classes == 2
    sampler, res = _search(task)
    assert isinstance(sampler, EDMSampler) and sampler.method == "heun"
    ev = task.evaluate(res.x0, None)
    assert ev["eval_reward"].shape == (2,)


def test_wrong_kind_of_directory_is_named(sd_dir: Path, sd3_dir: Path, edm_dir: Path, tmp_path):
    with pytest.raises(ValueError, match="UNet2DModel"):
        build_model(f"edm:{sd_dir}")
    with pytest.raises(ValueError, match="not a diffusers Stable Diffusion XL pipeline; use sd:"):
        build_model(f"sdxl:{sd_dir}")
    with pytest.raises(ValueError, match="transformer/ \\(use sd3: or flux:\\)"):
        build_model(f"sd:{sd3_dir}")
    with pytest.raises(ValueError, match="FluxTransformer2DModel"):
        build_model(f"flux:{sd3_dir}")
    with pytest.raises(ValueError, match="text-conditional: give prompts"):
        build_model(f"sd:{sd_dir}")
    with pytest.raises(FileNotFoundError, match="directory not found"):
        build_model(f"sd:{tmp_path / 'nope'}")
    with pytest.raises(ValueError, match="takes no guidance"):
        make_task(f"edm:{edm_dir}", "brightness", guidance=2.0)
    with pytest.raises(ValueError, match="needs a reward"):
        make_task(f"sd:{sd_dir}", prompts=PROMPTS)
    bad = tmp_path / "odd"
    bad.mkdir()
    (bad / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    with pytest.raises(ValueError, match="config.json names 'VQModel'"):
        build_model(f"edm:{bad}")
