"""CPU cost of candidate UNet2DModel configurations for the embedded MNIST model.

Times forward passes at batch 64 (float32, ``torch.no_grad``) and scales by 35, the network calls
of one naive 18-step Heun sample; also counts parameters and FLOPs. On a shared machine wall time
is noisy, so each candidate is timed in several interleaved rounds and the median and minimum are
reported. Writes ``experiments/results/unet_cpu_benchmark.json``.

    python experiments/bench_unet_cpu.py
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

RESULTS = Path(__file__).resolve().parent / "results"
# (block_out_channels, layers_per_block, attention levels)
CANDIDATES: list[tuple[tuple[int, ...], int, int]] = [
    ((32, 64, 64), 1, 1),
    ((16, 32, 64), 1, 1),
    ((16, 32, 32), 1, 1),
    ((8, 16, 32, 64), 2, 1),
    ((8, 16, 48, 96), 1, 1),
    ((8, 16, 32, 64), 1, 1),
]


def build(ch: tuple[int, ...], lpb: int, attn: int) -> torch.nn.Module:
    from diffusers import UNet2DModel

    n = len(ch)
    return UNet2DModel(
        sample_size=32,
        in_channels=1,
        out_channels=1,
        block_out_channels=ch,
        layers_per_block=lpb,
        down_block_types=("DownBlock2D",) * (n - attn) + ("AttnDownBlock2D",) * attn,
        up_block_types=("AttnUpBlock2D",) * attn + ("UpBlock2D",) * (n - attn),
        attention_head_dim=min(32, ch[-1]),
        norm_num_groups=8,
        num_class_embeds=11,
        time_embedding_dim=128,
    ).eval()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--calls", type=int, default=3, help="forward passes per timed round")
    ap.add_argument("--out", default=str(RESULTS / "unet_cpu_benchmark.json"))
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    nets = [build(*c) for c in CANDIDATES]
    x, t = torch.randn(64, 1, 32, 32), torch.full((64,), 100.0)
    y = torch.arange(64) % 11
    times: list[list[float]] = [[] for _ in nets]
    with torch.no_grad():
        flops = []
        for net in nets:
            with FlopCounterMode(display=False) as fc:
                net(x, t, class_labels=y)
            flops.append(fc.get_total_flops())
            net(x, t, class_labels=y)  # warm-up
        for _ in range(args.rounds):
            for k, net in enumerate(nets):
                t0 = time.perf_counter()
                for _ in range(args.calls):
                    net(x, t, class_labels=y)
                times[k].append((time.perf_counter() - t0) / args.calls)
    rows = []
    for (ch, lpb, attn), net, ts, fl in zip(CANDIDATES, nets, times, flops):
        med = statistics.median(ts)
        rows.append(
            {
                "block_out_channels": list(ch),
                "layers_per_block": lpb,
                "attention_levels": attn,
                "params": sum(p.numel() for p in net.parameters()),
                "gflop_per_forward_batch64": fl / 1e9,
                "forward_ms_median": med * 1e3,
                "forward_ms_min": min(ts) * 1e3,
                "heun18_seconds_median": 35 * med,
                "heun18_seconds_min": 35 * min(ts),
            }
        )
        print(
            f"{ch} lpb={lpb} attn={attn}: {rows[-1]['params'] / 1e6:.2f}M params, "
            f"{fl / 1e9:.1f} GFLOP, 35 calls: median {35 * med:.2f}s min {35 * min(ts):.2f}s"
        )
    res = {
        "command": "python experiments/bench_unet_cpu.py",
        "batch": 64,
        "network_calls_per_sample": 35,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "loadavg_after": list(os.getloadavg()),
        "candidates": rows,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(res, indent=2))
    os.replace(tmp, out)
    return res


if __name__ == "__main__":
    main()
