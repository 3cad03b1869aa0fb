"""Train the two MNIST classifiers (reward CNN, evaluation residual net) and log held-out accuracy.

They differ in architecture, seed and augmentation: the reward CNN trains on the plain 4,000
training digits; the evaluation net on the same digits under random rotations, shifts and
scalings. Neither sees the 1,000 held-out digits, on which both are scored.

    python experiments/train_classifiers.py --out runs/clf            # GPU or CPU
    python experiments/train_classifiers.py --tiny --out /tmp/clf     # smoke run
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adaptive_tts.models.classifiers import build_classifier, save_classifier
from adaptive_tts.models.mnist_data import load_split, to_unit_space

SPECS: dict[str, dict[str, Any]] = {
    "mnist-reward-clf": {
        "arch": "reward_cnn",
        "kwargs": {"width": 32, "hidden": 128, "dropout": 0.3},
        "seed": 1,
        "augment": False,
        "epochs": 20,
        "lr": 1e-3,
        "weight_decay": 0.0,
    },
    "mnist-eval-clf": {
        "arch": "eval_resnet",
        "kwargs": {"width": 32, "blocks_per_stage": 2},
        "seed": 2,
        "augment": True,
        "epochs": 40,
        "lr": 3e-3,
        "weight_decay": 5e-4,
    },
}


def augment(x: Tensor, gen: torch.Generator) -> Tensor:
    """Random affine per image: rotation +-12 deg, scale 0.9-1.1, shift +-2 px. ``(B,1,32,32)``."""
    b = x.shape[0]
    u = torch.rand(b, 4, device=x.device, generator=gen) * 2 - 1
    ang = u[:, 0] * math.radians(12.0)
    scale = 1.0 + 0.1 * u[:, 1]
    shift = u[:, 2:] * (2.0 / 16.0)  # 2 px in normalised [-1, 1] coordinates of 32 px
    cos, sin = ang.cos() / scale, ang.sin() / scale
    theta = torch.stack(
        [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1
    )
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="zeros", align_corners=False)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor, batch: int = 500) -> float:
    """Top-1 accuracy of ``model`` on images ``x`` ``(N,1,32,32)`` in [0, 1], labels ``(N,)``."""
    model.eval()
    hits = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, x.shape[0], batch)
    )
    return hits / max(x.shape[0], 1)


def train_one(
    spec: dict[str, Any],
    x: Tensor,
    y: Tensor,
    epochs: int,
    batch: int,
    device: torch.device,
) -> tuple[nn.Module, list[dict[str, float]]]:
    """Train one classifier with AdamW and a one-cycle schedule; return it and its curve."""
    torch.manual_seed(spec["seed"])
    gen = torch.Generator(device=device).manual_seed(spec["seed"])
    model = build_classifier(spec["arch"], **spec["kwargs"]).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec["lr"], weight_decay=spec["weight_decay"])
    steps_per_epoch = math.ceil(x.shape[0] / batch)
    sched = torch.optim.lr_scheduler.OneCycleLR(
        opt, max_lr=spec["lr"], total_steps=max(epochs * steps_per_epoch, 1), pct_start=0.2
    )
    curve = []
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(x.shape[0], device=device, generator=gen)
        total = torch.zeros((), device=device)
        for i in range(0, x.shape[0], batch):
            xb, yb = x[perm[i : i + batch]], y[perm[i : i + batch]]
            if spec["augment"]:
                xb = augment(xb, gen)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total += loss.detach() * xb.shape[0]
        curve.append({"epoch": epoch + 1, "loss": float(total) / x.shape[0]})
    return model.eval(), curve


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Train both classifiers, save them under ``--out``, write and return the JSON log."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default=None, help="MNIST idx directory or .safetensors")
    ap.add_argument("--out", required=True, help="writes OUT/mnist-reward-clf, OUT/mnist-eval-clf")
    ap.add_argument("--log", default=None, help="JSON log (default: OUT/classifiers_log.json)")
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--epochs-scale", type=float, default=1.0, help="multiply the epoch counts")
    ap.add_argument("--device", default=None, help="default: cuda if available, else cpu")
    ap.add_argument("--tiny", action="store_true", help="smoke run: 1 epoch on 256 digits")
    args = ap.parse_args(argv)
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    out = Path(args.out)

    (tr_x, tr_y), (ho_x, ho_y) = load_split(args.data)
    if args.tiny:
        tr_x, tr_y, ho_x, ho_y = tr_x[::16], tr_y[::16], ho_x[::8], ho_y[::8]
    x, y = to_unit_space(tr_x).to(device), tr_y.to(device)
    hx, hy = to_unit_space(ho_x).to(device), ho_y.to(device)

    log: dict[str, Any] = {"device": str(device), "train_digits": len(y), "holdout_digits": len(hy)}
    for name, spec in SPECS.items():
        epochs = 1 if args.tiny else max(1, round(spec["epochs"] * args.epochs_scale))
        t0 = time.perf_counter()
        model, curve = train_one(spec, x, y, epochs, args.batch, device)
        seconds = time.perf_counter() - t0
        meta = {
            "seed": spec["seed"],
            "augment": spec["augment"],
            "epochs": epochs,
            "train_seconds": seconds,
            "params": sum(p.numel() for p in model.parameters()),
            "train_accuracy": accuracy(model, x, y),
            "holdout_accuracy": accuracy(model, hx, hy),
            "holdout_digits": len(hy),
        }
        save_classifier(model, out / name, spec["arch"], spec["kwargs"], meta)
        log[name] = {**meta, "arch": spec["arch"], "kwargs": spec["kwargs"], "loss_curve": curve}
        print(f"{name}: held-out accuracy {meta['holdout_accuracy']:.4f} ({seconds:.1f}s)")
    log_path = Path(args.log) if args.log else out / "classifiers_log.json"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = log_path.with_name(log_path.name + ".tmp")
    tmp.write_text(json.dumps(log, indent=2))
    os.replace(tmp, log_path)
    return log


if __name__ == "__main__":
    main()
