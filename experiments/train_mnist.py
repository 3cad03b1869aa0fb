"""Train the embedded class-conditional EDM model for 32x32 MNIST (one command).

EDM preconditioning and loss (Karras et al. 2022): ``ln sigma ~ N(P_mean, P_std^2)``, loss weight
``(sigma^2 + sd^2) / (sigma sd)^2``; class labels dropped to the null label 10 with probability
``--p-uncond`` so one network samples conditionally and unconditionally; EMA weights with a
warm-up; Adam with linear warm-up and cosine decay over the step or time budget; bf16 autocast on
CUDA. Writes the EMA model in fp16 safetensors via ``EDMUNetDenoiser.save_pretrained`` and a JSON
log (loss curve, steps, wall seconds, parameter count, configuration), both atomically.

    python experiments/train_mnist.py --out runs/mnist --seconds 330          # GPU
    python experiments/train_mnist.py --tiny --out /tmp/mnist-tiny            # CPU smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adaptive_tts.models.edm_unet import EDMConfig, EDMUNetDenoiser
from adaptive_tts.models.mnist_data import load_split, to_model_space

MAX_FILE_BYTES = 16 * 1024 * 1024


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="MNIST idx directory or .safetensors")
    ap.add_argument("--out", required=True, help="output directory for the EMA model")
    ap.add_argument("--log", default=None, help="JSON log path (default: OUT/train_log.json)")
    ap.add_argument("--seconds", type=float, default=330.0, help="wall-clock training budget")
    ap.add_argument("--steps", type=int, default=None, help="step budget (whichever ends first)")
    ap.add_argument("--batch", type=int, default=512)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--lr-floor", type=float, default=0.05, help="final lr as a fraction")
    ap.add_argument("--warmup", type=int, default=500, help="lr warm-up steps")
    ap.add_argument("--ema", type=float, default=0.999, help="EMA decay (warm-up (1+t)/(10+t))")
    ap.add_argument("--p-uncond", type=float, default=0.15, help="label dropout to null label")
    ap.add_argument("--p-mean", type=float, default=-1.2)
    ap.add_argument("--p-std", type=float, default=1.2)
    ap.add_argument("--sigma-data", type=float, default=0.5)
    ap.add_argument("--grad-clip", type=float, default=1.0)
    ap.add_argument("--channels", default="8,16,32,64", help="UNet block_out_channels")
    ap.add_argument("--layers-per-block", type=int, default=1)
    ap.add_argument("--attn-levels", type=int, default=1, help="attention in the lowest N levels")
    ap.add_argument("--time-embedding-dim", type=int, default=128)
    ap.add_argument("--scale-shift", action="store_true", help="FiLM time/class conditioning")
    ap.add_argument("--norm-groups", type=int, default=8)
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--tiny", action="store_true", help="CPU smoke run: tiny UNet, few steps")
    args = ap.parse_args(argv)
    if args.tiny:
        args.channels, args.layers_per_block, args.attn_levels = "8,16", 1, 1
        args.time_embedding_dim, args.norm_groups, args.batch = 32, 4, 16
        args.steps = args.steps if args.steps is not None else 5
        args.seconds, args.warmup, args.log_every = min(args.seconds, 45.0), 2, 1
    return args


def unet_config(args: argparse.Namespace) -> dict[str, Any]:
    """The diffusers ``UNet2DModel`` configuration for these arguments."""
    ch = tuple(int(c) for c in args.channels.split(","))
    n, a = len(ch), min(args.attn_levels, len(ch))
    return {
        "sample_size": 32,
        "in_channels": 1,
        "out_channels": 1,
        "block_out_channels": ch,
        "layers_per_block": args.layers_per_block,
        "down_block_types": ("DownBlock2D",) * (n - a) + ("AttnDownBlock2D",) * a,
        "up_block_types": ("AttnUpBlock2D",) * a + ("UpBlock2D",) * (n - a),
        "attention_head_dim": min(32, ch[-1]),
        "norm_num_groups": args.norm_groups,
        "num_class_embeds": 11,  # digits 0..9 + null label 10
        "time_embedding_dim": args.time_embedding_dim,
        "resnet_time_scale_shift": "scale_shift" if args.scale_shift else "default",
    }


def edm_loss(
    net: EDMUNetDenoiser,
    x: Tensor,
    labels: Tensor,
    p_mean: float,
    p_std: float,
    gen: torch.Generator | None = None,
) -> Tensor:
    """EDM loss per sample ``(B,)`` for clean ``x`` ``(B, 1, 32, 32)`` and labels ``(B,)``."""
    b, sd = x.shape[0], net.config.sigma_data
    rnd = torch.randn(b, device=x.device, generator=gen)
    sigma = (rnd * p_std + p_mean).exp()
    noise = torch.randn(x.shape, device=x.device, generator=gen) * sigma.view(-1, 1, 1, 1)
    weight = (sigma**2 + sd**2) / (sigma * sd) ** 2
    d = net(x + noise, sigma, labels)
    return weight * (d.float() - x).pow(2).mean(dim=(1, 2, 3))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model`` over parameters; buffers copied."""
    e_params, m_params = list(ema.parameters()), list(model.parameters())
    torch._foreach_lerp_(e_params, m_params, 1.0 - decay)
    for eb, mb in zip(ema.buffers(), model.buffers()):
        eb.copy_(mb)


@torch.no_grad()
def fixed_noise_loss(
    net: EDMUNetDenoiser, x: Tensor, labels: Tensor, args: argparse.Namespace
) -> float:
    """Mean EDM loss of ``net`` on ``x`` with seeded noise (comparable across models)."""
    gen = torch.Generator(device=x.device).manual_seed(1234)
    losses = [
        edm_loss(net, x[i : i + 500], labels[i : i + 500], args.p_mean, args.p_std, gen)
        for i in range(0, x.shape[0], 500)
    ]
    return float(torch.cat(losses).mean())


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save_fp16(ema: EDMUNetDenoiser, out: Path) -> list[dict[str, Any]]:
    """Save an fp16 copy of the EMA model into ``out``; returns ``[{file, bytes}]``."""
    half = EDMUNetDenoiser(copy.deepcopy(ema.unet).to("cpu", torch.float16), ema.config)
    out.mkdir(parents=True, exist_ok=True)
    half.save_pretrained(out)
    for p in out.iterdir():
        p.chmod(0o644)
    files = [{"file": p.name, "bytes": p.stat().st_size} for p in sorted(out.iterdir())]
    for f in files:
        if f["bytes"] > MAX_FILE_BYTES:
            raise RuntimeError(f"{out / f['file']} is {f['bytes']} bytes (> 16 MB)")
    return files


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train, save the EMA model and the log; return the log."""
    from diffusers import UNet2DModel

    args = parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    cuda = device.type == "cuda"
    torch.backends.cudnn.benchmark = cuda
    torch.manual_seed(args.seed)
    out = Path(args.out)
    log_path = Path(args.log) if args.log else out / "train_log.json"

    (tr_x, tr_y), (ho_x, ho_y) = load_split(args.data)
    data, labels = to_model_space(tr_x).to(device), tr_y.to(device)
    n = data.shape[0]

    ucfg = unet_config(args)
    edm_cfg = EDMConfig(sigma_data=args.sigma_data)
    net = EDMUNetDenoiser(UNet2DModel(**ucfg), edm_cfg).to(device).train()
    ema = copy.deepcopy(net).eval().requires_grad_(False)
    n_params = sum(p.numel() for p in net.parameters())
    opt = torch.optim.Adam(net.parameters(), lr=args.lr, fused=cuda)
    gen = torch.Generator(device=device).manual_seed(args.seed)
    null = torch.full((args.batch,), 10, device=device, dtype=torch.long)

    curve: list[dict[str, float]] = []
    loss_sum = torch.zeros((), device=device)
    loss_count, step = 0, 0
    t0 = time.perf_counter()
    print(f"device={device} params={n_params} train={n} config={ucfg}", flush=True)
    while True:
        elapsed = time.perf_counter() - t0
        if (args.steps is not None and step >= args.steps) or elapsed >= args.seconds:
            break
        progress = min(1.0, elapsed / args.seconds)
        if args.steps:
            progress = max(progress, step / args.steps)
        cosine = args.lr_floor + (1 - args.lr_floor) * 0.5 * (1 + math.cos(math.pi * progress))
        lr = args.lr * min(1.0, (step + 1) / args.warmup) * cosine
        for group in opt.param_groups:
            group["lr"] = lr

        idx = torch.randint(n, (args.batch,), device=device, generator=gen)
        x, y = data[idx], labels[idx]
        drop = torch.rand(args.batch, device=device, generator=gen) < args.p_uncond
        y = torch.where(drop, null, y)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
            loss = edm_loss(net, x, y, args.p_mean, args.p_std, gen).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if args.grad_clip > 0:
            nn.utils.clip_grad_norm_(net.parameters(), args.grad_clip)
        opt.step()
        ema_update(ema, net, min(args.ema, (1 + step) / (10 + step)))
        loss_sum += loss.detach()
        loss_count += 1
        step += 1
        if step % args.log_every == 0:
            mean_loss = float(loss_sum) / loss_count
            curve.append({"step": step, "loss": mean_loss, "lr": lr, "seconds": elapsed})
            loss_sum.zero_()
            loss_count = 0
            if step % (args.log_every * 10) == 0:
                print(f"step {step} loss {mean_loss:.4f} lr {lr:.2e} t {elapsed:.0f}s", flush=True)
    if cuda:
        torch.cuda.synchronize()
    wall = time.perf_counter() - t0

    k = min(64 if args.tiny else 1000, ho_x.shape[0], n)
    ho = to_model_space(ho_x[:k]).to(device), ho_y[:k].to(device)
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=cuda):
        loss_train = fixed_noise_loss(ema, data[:k], labels[:k], args)
        loss_holdout = fixed_noise_loss(ema, ho[0], ho[1], args)
    files = save_fp16(ema, out)
    log = {
        "model": "mnist",
        "steps": step,
        "wall_seconds": wall,
        "samples_per_second": step * args.batch / max(wall, 1e-9),
        "params": n_params,
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if cuda else "cpu",
        "torch": torch.__version__,
        "train_digits": n,
        "ema_loss_train": loss_train,
        "ema_loss_holdout": loss_holdout,
        "ema_loss_digits": k,
        "unet_config": ucfg,
        "edm_config": edm_cfg.__dict__,
        "args": vars(args),
        "saved_files": files,
        "loss_curve": curve,
    }
    _write_json(log_path, log)
    print(
        f"done: {step} steps in {wall:.1f}s, ema loss train {loss_train:.4f} "
        f"holdout {loss_holdout:.4f}, saved {out}",
        flush=True,
    )
    return log


if __name__ == "__main__":
    main()
