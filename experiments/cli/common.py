"""Options shared by several subcommands."""

from __future__ import annotations

import argparse


def _add_gpu_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--generator-device",
        choices=["cpu", "cuda"],
        default=None,
        help="where per-sample noise is drawn (cpu: bit-reproducible anywhere; cuda: faster)",
    )
    p.add_argument(
        "--cuda-graphs", action="store_true", help="replay the denoiser and reward from CUDA graphs"
    )
