"""One runner for every experiment config (Table 1, scaling curves, controller ablations,
EACPS / EvoSearch comparisons):

    python -m experiments.run experiments/configs/table1.yaml --set task=mnist-brightness
    adaptive-tts bench experiments/configs/table1.yaml --no-wandb
    accelerate launch --multi_gpu --num_processes 2 -m experiments.run CONFIG   # sharded
    torchrun --nproc_per_node 2 -m experiments.run CONFIG                      # the same

(accelerate 1.15's ``--cpu`` flag starts a single process; on a machine without GPUs the
``--multi_gpu`` launcher above runs the processes on the CPU over gloo.)

Results land in the run directory as ``results.json`` and ``results.csv`` whether or not W&B is
on; with W&B on (offline unless ``WANDB_MODE`` is set) the same go to one W&B group per config.
Sharded runs give the same per-pair results as a single process (per-sample generators).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.registry import SAMPLERS
from adaptive_tts.report import format_table, mean_ci
from adaptive_tts.traces import load_traces
from experiments.calibration import calibrate
from experiments.config import expand_methods, load_config
from experiments.pairs import Batch, eval_score, run_pairs
from experiments.runner import prepare_task


class Dist:
    """Process rank/world through accelerate when launched distributed, else single-process."""

    def __init__(self) -> None:
        self.state: Any = None
        self.rank, self.world = 0, 1
        if int(os.environ.get("WORLD_SIZE", "1")) > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=not torch.cuda.is_available())  # gloo on CPU
            self.rank, self.world = self.state.process_index, self.state.num_processes

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def close(self) -> None:
        """Leave the process group cleanly (every process waits for the others first)."""
        if self.state is not None:
            import torch.distributed as torch_dist

            self.state.wait_for_everyone()
            if torch_dist.is_initialized():
                torch_dist.destroy_process_group()

    def gather(self, items: list[Any]) -> list[Any]:
        if self.state is None:
            return items
        from accelerate.utils import gather_object

        return list(gather_object(items))


def make_pairs(prompts: list[int], first: int, count: int, unique: bool) -> list[tuple[int, int]]:
    """``count`` seeds per prompt: seeds ``first..first+count-1`` shared by every prompt, or with
    ``unique`` one distinct seed per pair (``first + j`` for pair ``j``), so that an
    unconditional task does not repeat the same sample for every target."""
    if unique:
        n = len(prompts)
        return [(int(prompts[j % n]), first + j) for j in range(count * n)]
    return [(int(p), int(s)) for s in range(first, first + count) for p in prompts]


def build_controller(
    spec: dict[str, Any] | None, traces_dir: Path | dict[str, list[Path]] | None, sampler: Any
) -> Any:
    """A controller from a config entry ``{kind: <registered kind>, **options}`` (fixed,
    window, binomial, gp, gain, budget, stopping or a plug-in; see
    :data:`controllers.registry.CONTROLLERS`).

    ``traces_dir``: the calibration's trace directories by name (``full``: the full-budget
    search; ``budgets``: the budget-varied runs, one directory per K). A fitted kind is fitted on
    ``spec["traces"]`` (default ``full``); ``reference: <name>`` passes those traces as the
    full search's (the stopping controller's success level)."""
    if spec is None:
        return None
    from controllers.registry import CONTROLLERS, make_controller

    spec = dict(spec)
    kind = spec.pop("kind")
    dirs = {"full": [traces_dir]} if isinstance(traces_dir, Path) else (traces_dir or {})
    which = spec.pop("traces", "full")
    if not CONTROLLERS[kind].fitted:
        return make_controller(kind, None, sampler, **spec)
    if which not in dirs:
        raise ValueError(
            f"controller {kind!r} needs calibration traces {which!r}: add a 'calibration' section"
            + (" with 'budgets'" if which == "budgets" else "")
            + " to the config"
        )
    if "reference" in spec:
        spec["reference"] = [t for d in dirs[spec["reference"]] for t in load_traces(d)]
    traces = [t for d in dirs[which] for t in load_traces(d)]
    return make_controller(kind, traces, sampler, **spec)


def make_sampler_from_config(sc: dict[str, Any], sigma_max: float) -> Any:
    """The config's ``sampler: {name, steps, **options}`` built by
    :data:`adaptive_tts.registry.SAMPLERS`."""
    sc = dict(sc)
    name, steps = sc.pop("name"), int(sc.pop("steps"))
    return SAMPLERS[name](steps, sigma_max=sigma_max, **sc)


def run_experiment(
    cfg: dict[str, Any], out: Path, wandb_on: bool = True, progress: bool = True
) -> dict[str, Any]:
    """Run every method of ``cfg`` on its (prompt, seed) pairs; write results into ``out``."""
    from tqdm.auto import tqdm

    dist = Dist()
    # cuda -> cuda:LOCAL_RANK under a launcher
    task, device = prepare_task(cfg["task"], cfg["device"], bool(cfg["cuda_graphs"]))
    gen_dev = cfg["generator_device"]
    sampler = make_sampler_from_config(cfg["sampler"], task.sigma_max)
    prompts = cfg["pairs"]["prompts"]
    if prompts is None:
        prompts = list(range(task.num_classes)) if task.uses_prompt else [-1]
    first, count = cfg["pairs"]["seeds"]
    unique = bool(cfg["pairs"].get("unique_seeds", False))
    pairs = make_pairs(prompts, first, count, unique)
    mine = pairs[dist.rank :: dist.world]
    out.mkdir(parents=True, exist_ok=True)
    traces_dir: dict[str, list[Path]] | None = None
    if cfg["calibration"]:
        cal = dict(cfg["calibration"])
        c_first, c_count = cal.pop("seeds")
        base = Path(cal.pop("dir", out / "calibration"))
        budgets = cal.pop("budgets", None)  # budget-varied runs (the stopping controller's)
        varied = {"n": cal.pop("budget_n", 2), "eps": cal.pop("budget_eps", 1.0)}
        cal_pairs = make_pairs(prompts, c_first, c_count, unique)
        if set(cal_pairs) & set(pairs):
            raise ValueError("calibration seeds overlap the evaluation seeds")
        runs_cal = [(base, cal)] + [
            (base.with_name(base.name + "-budgets") / f"k{k}", {**cal, **varied, "k": int(k)})
            for k in (budgets or [])
        ]
        for where, knobs in runs_cal:
            calibrate(  # every process runs its share of the pairs into its own shard
                task,
                "eps-greedy",
                sampler,
                cal_pairs,
                where,
                batch=cfg["batch"],
                device=device,
                progress=progress,
                shard=(dist.rank, dist.world),
                generator_device=gen_dev,
                **knobs,
            )
        dist.barrier()
        traces_dir = {"full": [base]}
        if budgets:
            traces_dir["budgets"] = [where for where, _ in runs_cal[1:]]
    records: list[dict[str, Any]] = []
    best_images: dict[str, torch.Tensor] = {}
    runs = expand_methods(cfg)
    for run in tqdm(runs, desc=cfg["name"], disable=not (progress and dist.main)):
        kw = {k: v for k, v in run.items() if k not in ("label", "method", "controller", "group")}
        kw["controller"] = build_controller(run.get("controller"), traces_dir, sampler)
        if dist.main and hasattr(kw["controller"], "save") and _fitted(run.get("controller")):
            save_schedule(kw["controller"], out, run["label"], run["controller"]["kind"])

        def record(b: Batch, run: dict[str, Any] = run) -> None:
            sec = b.seconds / len(b.pairs)
            hit = eval_score(b.eval, len(b.pairs))
            for j, (p, seed) in enumerate(b.pairs):
                records.append(
                    {
                        "label": run["label"],
                        "group": run.get("group", ""),
                        "method": run["method"],
                        "prompt": p,
                        "seed": seed,
                        "reward": float(b.result.reward[j]),
                        "nfe": int(b.result.nfe[j]),
                        "eval": float(hit[j]),
                        "seconds": sec,
                    }
                )
            top = b.result.reward.argsort(descending=True)[:8]
            best_images[run["label"]] = task.to_image(b.result.x0[top]).cpu()

        run_pairs(
            task,
            run["method"],
            sampler,
            mine,
            batch=cfg["batch"],
            device=device,
            generator_device=gen_dev,
            on_batch=record,
            **kw,
        )
    records = dist.gather(records)
    dist.close()
    if not dist.main:
        return {}
    order = {pair: i for i, pair in enumerate(pairs)}
    records.sort(
        key=lambda r: (
            [x["label"] for x in runs].index(r["label"]),
            order[(r["prompt"], r["seed"])],
        )
    )
    rows = summarise(records, runs)
    result = {
        "config": cfg,
        "pairs": len(pairs),
        "processes": dist.world,
        "rows": rows,
        "records": records,
    }
    write_results(result, out)
    from experiments.plots import plot_reward_vs_nfe

    plot_reward_vs_nfe(rows, out / "reward_vs_nfe.png", f"{cfg['name']}: {cfg['task']}")
    save_samples(best_images, out / "samples.png")
    if wandb_on and cfg["wandb"].get("enabled", True):
        from experiments.wandb_log import log_experiment

        log_experiment(cfg, result, out, best_images)
    return result


def _fitted(spec: dict[str, Any] | None) -> bool:
    """Whether a config's controller entry is fitted on traces (then its fit is saved)."""
    from controllers.registry import CONTROLLERS

    return spec is not None and CONTROLLERS[spec["kind"]].fitted


def slug(label: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in label).strip("_")


def save_schedule(ctrl: Any, out: Path, label: str, kind: str | None = None) -> None:
    """Keep a fitted controller's JSON and a plot of its fit (the kind's registered plot) in
    the run directory."""
    from controllers.plots import plot_controller
    from controllers.registry import CONTROLLERS

    ctrl.save(str(out / f"schedule_{slug(label)}.json"))
    plot = CONTROLLERS[kind].plot if kind is not None else plot_controller
    if plot is not None:
        plot(ctrl, None, str(out / f"fit_{slug(label)}.png"))


def save_samples(images: dict[str, torch.Tensor], path: Path) -> Path | None:
    """One row of best samples per method (image-shaped tasks only)."""
    from adaptive_tts.viz import save_grid

    rows = {k: v for k, v in images.items() if v.dim() == 4}
    if not rows:
        return None
    width = max(v.shape[0] for v in rows.values())
    imgs, labels = [], []
    for k, v in rows.items():
        for j in range(width):
            imgs.append(v[min(j, v.shape[0] - 1)])
            labels.append(k if j == 0 else "")
    return save_grid(torch.stack(imgs), path, labels=labels, ncol=width)


def summarise(records: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = []
    for run in runs:
        rs = [r for r in records if r["label"] == run["label"]]
        m, ci = mean_ci([r["reward"] for r in rs])
        rows.append(
            {
                "label": run["label"],
                "group": run.get("group", ""),
                "method": run["method"],
                "reward": m,
                "ci95": ci,
                "nfe": sum(r["nfe"] for r in rs) / len(rs),
                "eval_rate": sum(r["eval"] for r in rs) / len(rs),
                "seconds_per_sample": sum(r["seconds"] for r in rs) / len(rs),
                "n": len(rs),
            }
        )
    return rows


def write_results(result: dict[str, Any], out: Path) -> None:
    """``results.json`` and ``results.csv`` (per-pair records), each written atomically."""
    tmp = out / "results.json.tmp"
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, out / "results.json")
    tmp = out / "results.csv.tmp"
    with open(tmp, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["records"][0]))
        w.writeheader()
        w.writerows(result["records"])
    os.replace(tmp, out / "results.csv")


def table(rows: list[dict[str, Any]]) -> str:
    shown = [
        {
            "method": r["label"],
            "reward (95% CI)": f"{r['reward']:.4f} ± {r['ci95']:.4f}",
            "NFEs": f"{r['nfe']:.0f}",
            "eval": f"{r['eval_rate']:.3f}",
            "s/sample": f"{r['seconds_per_sample']:.3f}",
        }
        for r in rows
    ]
    return format_table(shown, list(shown[0]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default runs/NAME)")
    ap.add_argument("--no-wandb", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / cfg["name"]
    result = run_experiment(cfg, out, wandb_on=not args.no_wandb)
    if result:
        print(table(result["rows"]))
        print(f"results: {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
