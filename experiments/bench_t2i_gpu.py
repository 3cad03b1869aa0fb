"""GPU throughput of the text-to-image backends with random weights: NFE/s of plain sampling
(naive) vs eps-greedy noise search, on tiny SD / SD3-style pipelines and on an SD-1.5-sized
UNet2DConditionModel (config only, no weights) with 64x64 latents and an SD-sized VAE.

One NFE is one UNet/transformer row (classifier-free guidance counts 2). Search candidates are
scored on VAE-decoded images (brightness) or, to isolate the network, on the latents directly.

    python experiments/bench_t2i_gpu.py --out experiments/results/t2i_gpu.json
    python experiments/bench_t2i_gpu.py --smoke --out /tmp/t2i_smoke.json   # CPU dry run
"""

from __future__ import annotations

import argparse
import json
import platform
import time
import zlib
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.models.flow import FlowT2I
from adaptive_tts.models.latent_t2i import LatentT2I
from adaptive_tts.rewards import Brightness
from adaptive_tts.sampling import initial_noise, make_generators
from adaptive_tts.search import eps_greedy, naive

PROMPTS = ["a photo of a cat", "a red sports car", "a bowl of fruit", "a mountain lake"]


class HashTokenizer:
    """Stand-in CLIP tokenizer (no vocabulary files on the device): words -> hashed ids."""

    def __init__(self, model_max_length: int = 77, vocab: int = 49408) -> None:
        self.model_max_length, self.vocab = model_max_length, vocab

    def __call__(self, prompts: list[str], max_length: int, **_: Any) -> Any:
        ids = torch.full((len(prompts), max_length), self.vocab - 1, dtype=torch.long)
        for i, p in enumerate(prompts):
            words = [self.vocab - 2] + [
                zlib.crc32(w.encode()) % (self.vocab - 2) for w in p.split()
            ]
            ids[i, : min(len(words), max_length)] = torch.tensor(words[:max_length])
        return argparse.Namespace(input_ids=ids)


def text_encoder(hidden: int, max_len: int, layers: int = 2) -> Any:
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(
        vocab_size=49408,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=max(1, hidden // 64),
        max_position_embeddings=max_len,
        eos_token_id=49407,
        bos_token_id=49406,
    )
    return CLIPTextModel(cfg)


def vae(full: bool) -> Any:
    from diffusers import AutoencoderKL

    if full:  # SD 1.5's VAE architecture (83M parameters), 8x downsampling
        return AutoencoderKL(
            down_block_types=("DownEncoderBlock2D",) * 4,
            up_block_types=("UpDecoderBlock2D",) * 4,
            block_out_channels=(128, 256, 512, 512),
            layers_per_block=2,
            latent_channels=4,
            sample_size=512,
            scaling_factor=0.18215,
        )
    return AutoencoderKL(
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        block_out_channels=(8, 16),
        latent_channels=4,
        norm_num_groups=4,
        layers_per_block=1,
    )


def latent_model(kind: str, smoke: bool, guidance: float) -> LatentT2I:
    """``tiny-sd`` (8x8 latents) or ``sd15-unet`` (SD-1.5 UNet config, 64x64 latents)."""
    from diffusers import DDPMScheduler, UNet2DConditionModel

    torch.manual_seed(0)
    unet: Any
    if kind == "tiny-sd":
        unet = UNet2DConditionModel(
            sample_size=8,
            layers_per_block=1,
            block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=4,
            attention_head_dim=2,
        )
        enc, tok, dec = text_encoder(32, 16), HashTokenizer(16), vae(False)
    else:  # diffusers' defaults are SD 1.5's UNet; CLIP ViT-L text width 768
        narrow = {"block_out_channels": (32, 64, 64, 64)} if smoke else {}
        unet = UNet2DConditionModel(
            sample_size=8 if smoke else 64, cross_attention_dim=768, **narrow
        )
        enc, tok, dec = text_encoder(768, 77), HashTokenizer(77), vae(not smoke)
    sched: Any = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
    return LatentT2I(unet, dec, [enc], [tok], sched.alphas_cumprod, guidance_scale=guidance)


def flow_model(guidance: float) -> FlowT2I:
    """``tiny-sd3``: a tiny SD3Transformer2DModel (8x8 latents) with random prompt embeddings."""
    from diffusers import SD3Transformer2DModel

    torch.manual_seed(0)
    tr: Any = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=4,
        num_layers=2,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=16,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        out_channels=4,
        pos_embed_max_size=8,
    )
    m = FlowT2I(tr, vae(False), guidance_scale=guidance, height=16, width=16)
    return m


def measure(
    model: Any, method: str, batch: int, steps: int, k: int, reward_kind: str, repeats: int
) -> dict[str, Any]:
    dev = next(model.parameters()).device
    sampler = model.sampler("ancestral", steps)
    if reward_kind == "decoded":
        reward = model.image_reward(Brightness())
    else:  # on latents: no VAE in the loop
        reward = lambda x0, c: x0.float().mean(dim=(1, 2, 3))  # noqa: E731
    warm = model.sampler("ancestral", 2)  # same shapes, few steps: kernels and allocator warm
    gens = make_generators(list(range(batch)), device=dev)
    x = initial_noise(model.sample_shape, gens, warm.sigma(0), device=str(dev))
    cond = torch.arange(batch, device=dev) % len(PROMPTS)
    eps_greedy(model, warm, x, cond=cond, reward=reward, generator=gens, n=4, k=1)
    times, nfe, dec = [], 0, 0
    for r in range(1, repeats + 1):
        gens = make_generators(list(range(r * batch, (r + 1) * batch)), device=dev)
        x = initial_noise(model.sample_shape, gens, sampler.sigma(0), device=str(dev))
        cond = torch.arange(batch, device=dev) % len(PROMPTS)
        dec0 = model.vae_decodes
        if dev.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        if method == "naive":
            res = naive(model, sampler, x, cond=cond, reward=reward, generator=gens)
        else:
            res = eps_greedy(
                model, sampler, x, cond=cond, reward=reward, generator=gens, n=4, k=k, eps=0.4
            )
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        nfe, dec = int(res.nfe.sum()), model.vae_decodes - dec0
    sec = sorted(times)[len(times) // 2]
    return {
        "method": method if method == "naive" else f"eps-greedy(N=4,K={k})",
        "batch": batch,
        "steps": steps,
        "reward": reward_kind,
        "nfe_total": nfe,
        "nfe_per_sample": nfe // batch,
        "seconds_median": sec,
        "nfe_per_s": nfe / sec,
        "vae_decodes": dec,
        "decodes_per_s": dec / sec,
        "final_reward_mean": float(res.reward.mean()),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("experiments/results/t2i_gpu.json"))
    ap.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], default="bf16")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--budget-s", type=float, default=250.0, help="skip rows after this")
    ap.add_argument("--smoke", action="store_true", help="tiny sizes (CPU dry run)")
    ap.add_argument("--models", nargs="*", default=None, help="subset of the models to run")
    args = ap.parse_args(argv)
    t_start = time.perf_counter()
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[args.dtype]
    dtype = dtype if cuda else torch.float32
    big, steps = (2, 2) if args.smoke else (32, 10)
    small = 2 if args.smoke else 8
    # (batch, reward) per model, most important first: later ones are skipped past the budget
    plan: dict[str, list[tuple[int, str]]] = {
        "tiny-sd": [(small, "decoded"), (big, "decoded")],
        "tiny-sd3": [(small, "decoded"), (big, "decoded")],
        "sd15-unet": [(small, "latent"), (small, "decoded"), (big, "latent"), (big, "decoded")],
    }
    meta: dict[str, Any] = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if cuda else "cpu",
        "dtype": str(dtype),
        "python": platform.python_version(),
        "smoke": args.smoke,
        "guidance_scale": 7.5,
        "sampler": "ancestral (eta=1) on Karras sigmas; per-sample generators on the device",
        "note": "random weights; NFE = one network row, CFG counts 2",
        "rows": [],
    }
    try:
        import diffusers

        meta["diffusers"] = diffusers.__version__
    except ImportError:
        pass

    def save() -> None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(meta, indent=2))
        tmp.replace(args.out)

    for name, cases in plan.items():
        if args.models and name not in args.models:
            continue
        t0 = time.perf_counter()
        with torch.device(device):  # random init directly on the GPU
            model = flow_model(7.5) if name == "tiny-sd3" else latent_model(name, args.smoke, 7.5)
        model = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        if isinstance(model, FlowT2I):
            g = torch.Generator().manual_seed(1)
            emb = torch.randn(len(PROMPTS), 8, 16, generator=g)
            model.set_prompt_embeddings(emb, torch.randn(len(PROMPTS), 8, generator=g))
        else:
            model.set_prompts(PROMPTS)
        net = model.transformer if isinstance(model, FlowT2I) else model.unet
        params_m = round(sum(p.numel() for p in net.parameters()) / 1e6, 3)
        print(f"{name}: {params_m}M network parameters, built in {time.perf_counter() - t0:.1f}s")
        for batch, reward_kind in cases:
            for method in ("naive", "eps-greedy"):
                row: dict[str, Any] = {"model": name, "batch": batch, "reward": reward_kind}
                if time.perf_counter() - t_start > args.budget_s:
                    row["skipped"] = "time budget"
                else:
                    if cuda:
                        torch.cuda.reset_peak_memory_stats()
                    try:
                        row.update(
                            measure(model, method, batch, steps, 2, reward_kind, args.repeats)
                        )
                    except Exception as e:  # keep the other rows of the single device run
                        row.update(method=method, error=repr(e)[:300])
                    if cuda:
                        row["peak_mem_gb"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
                row["network_params_m"] = params_m
                meta["rows"].append(row)
                print(json.dumps(row), flush=True)
                save()
        del model, net
        if cuda:
            torch.cuda.empty_cache()
    meta["wall_s"] = time.perf_counter() - t_start
    save()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
