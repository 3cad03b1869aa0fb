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
import math
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


Triple = tuple[int, int, int]  # (prompt, seed, noise seed)


def noise_seed(index: int, seed: int, num_prompts: int) -> int:
    """The generator seed of the pair ``(prompts[index], seed)`` when every pair has its own
    noise: ``seed * num_prompts + index``. For ``0 <= index < num_prompts`` this is one-to-one
    in (seed, index), so the pairs of a config never share noise, and two seed ranges that do
    not overlap (calibration, evaluation) give disjoint noise seeds. With seeds ``[0, count]``
    it equals the pair's position in the list (the older ``unique_seeds: true`` numbering)."""
    if not 0 <= index < num_prompts:
        raise ValueError(f"prompt index {index} outside [0, {num_prompts})")
    return seed * num_prompts + index


def make_pairs(
    prompts: list[int], first: int, count: int, noise: str = "independent"
) -> list[Triple]:
    """``(prompt, seed, noise seed)`` for seeds ``first..first+count-1`` and every prompt (seed
    major). ``noise="independent"``: the noise seed is :func:`noise_seed` (each pair its own
    starting noise and random stream, also on an unconditional task where the prompt only
    selects the reward); ``"shared"``: the prompts of a seed share noise seed ``seed``."""
    if noise not in ("independent", "shared"):
        raise ValueError(f"noise must be 'independent' or 'shared', got {noise!r}")
    n = len(prompts)
    return [
        (int(p), s, noise_seed(i, s, n) if noise == "independent" else s)
        for s in range(first, first + count)
        for i, p in enumerate(prompts)
    ]


def config_prompts(cfg: dict[str, Any], task: Any) -> list[int]:
    """``pairs.prompts``, or every class when it is null (``[-1]`` for a task without prompts)."""
    prompts = cfg["pairs"]["prompts"]
    if prompts is None:
        return list(range(task.num_classes)) if task.uses_prompt else [-1]
    return [int(p) for p in prompts]


def plan_pairs(cfg: dict[str, Any], prompts: list[int]) -> tuple[list[Triple], list[Triple]]:
    """The evaluation and calibration ``(prompt, seed, noise seed)`` triples of a config.

    Raises:
        ValueError: the calibration shares a noise seed with the evaluation (held-out pairs
            must be draws the calibration never saw), or, with independent noise, two pairs
            share one.
    """
    first, count = cfg["pairs"]["seeds"]
    noise = cfg["pairs"].get("noise", "independent")
    pairs = make_pairs(prompts, int(first), int(count), noise)
    cal: list[Triple] = []
    if cfg.get("calibration"):
        c_first, c_count = cfg["calibration"]["seeds"]
        cal = make_pairs(prompts, int(c_first), int(c_count), noise)
        both = {t[2] for t in pairs} & {t[2] for t in cal}
        if both:
            raise ValueError(
                f"calibration seeds {[c_first, c_count]} share {len(both)} noise seeds with the "
                f"evaluation seeds {[first, count]}: choose disjoint seed ranges"
            )
    if noise == "independent":
        for group in (pairs, cal):
            assert len({t[2] for t in group}) == len(group), "noise seeds must be unique"
    return pairs, cal


def trace_sets(cal: dict[str, Any], base: Path) -> dict[str, list[tuple[Path, dict[str, Any]]]]:
    """The calibration runs of a config's ``calibration`` section, by trace-set name: each a
    list of ``(directory, eps-greedy knobs)``.

    * plain ``{seeds, n, k, eps, lam}``: ``full`` = one run in ``base``;
    * budget-varied ``{seeds, budgets: [K...], n, eps, ..., reference: {n, k, eps, lam}}``:
      ``budgets`` = one run per K in ``base/kK`` (the knobs with ``k = K``; the layout of
      ``adaptive-tts calibrate --budgets``), ``full`` = the optional ``reference`` run (the full
      search whose reward a stopping target refers to) in ``base/reference``.
    """
    cal = {k: v for k, v in cal.items() if k not in ("seeds", "dir")}
    budgets = cal.pop("budgets", None)
    reference = cal.pop("reference", None)
    if budgets is None:
        return {"full": [(base, cal)]}
    sets = {"budgets": [(base / f"k{int(k)}", {**cal, "k": int(k)}) for k in budgets]}
    if reference:
        sets["full"] = [(base / "reference", dict(reference))]
    return sets


def build_controller(
    spec: dict[str, Any] | None, traces_dir: Path | dict[str, list[Path]] | None, sampler: Any
) -> Any:
    """A controller from a config entry ``{kind: <registered kind>, **options}`` (fixed,
    window, binomial, gp, gain, budget, stopping or a plug-in; see
    :data:`controllers.registry.CONTROLLERS`).

    ``traces_dir``: the calibration's trace directories by name (``full``: the full-budget
    search; ``budgets``: the budget-varied runs, one directory per K; see :func:`trace_sets`).
    A fitted kind is fitted on ``spec["traces"]`` (default ``budgets`` for ``stopping``, else
    ``full``). ``reference: <name>`` passes those traces as the full search's (the stopping
    controller's success level); a stopping controller takes ``full`` by default when the
    calibration has it (``reference: null`` turns that off)."""
    if spec is None:
        return None
    from controllers.registry import CONTROLLERS, make_controller

    spec = dict(spec)
    kind = spec.pop("kind")
    dirs = {"full": [traces_dir]} if isinstance(traces_dir, Path) else (traces_dir or {})
    which = spec.pop("traces", "budgets" if kind == "stopping" else "full")
    if not CONTROLLERS[kind].fitted:
        return make_controller(kind, None, sampler, **spec)
    if which not in dirs:
        raise ValueError(
            f"controller {kind!r} needs calibration traces {which!r}: add a 'calibration' section"
            + (
                " with 'budgets'"
                if which == "budgets"
                else " with full-budget runs (or 'reference' beside 'budgets')"
            )
            + " to the config"
        )
    if kind == "stopping" and "reference" not in spec and "full" in dirs:
        spec["reference"] = "full"
    if spec.get("reference") is not None:
        if spec["reference"] not in dirs:
            raise ValueError(f"controller {kind!r}: no calibration traces {spec['reference']!r}")
        spec["reference"] = [t for d in dirs[spec["reference"]] for t in load_traces(d)]
    elif "reference" in spec:
        del spec["reference"]
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
    prompts = config_prompts(cfg, task)
    triples, cal_triples = plan_pairs(cfg, prompts)
    pairs = [(p, ns) for p, _, ns in triples]  # what the searches see: (prompt, noise seed)
    seed_of = {(p, ns): s for p, s, ns in triples}
    mine = pairs[dist.rank :: dist.world]
    out.mkdir(parents=True, exist_ok=True)
    traces_dir: dict[str, list[Path]] | None = None
    calibration: dict[str, Any] = {}
    if cfg["calibration"]:
        cal_pairs = [(p, ns) for p, _, ns in cal_triples]
        base = Path(cfg["calibration"].get("dir", out / "calibration"))
        sets = trace_sets(cfg["calibration"], base)
        for where, knobs in [run for runs in sets.values() for run in runs]:
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
        traces_dir = {name: [where for where, _ in runs] for name, runs in sets.items()}
        calibration = {
            "pairs": len(cal_pairs),
            "noise_seeds": [ns for _, ns in cal_pairs],
            "nfe": {  # counted NFEs of each trace set (a learned controller's calibration cost)
                name: sum(int(t["nfe"]["total"]) for d in dirs for t in load_traces(d))
                for name, dirs in traces_dir.items()
            },
        }
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
            for j, (p, ns) in enumerate(b.pairs):
                records.append(
                    {
                        "label": run["label"],
                        "group": run.get("group", ""),
                        "method": run["method"],
                        "prompt": p,
                        "seed": seed_of[(p, ns)],
                        "noise_seed": ns,
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
            order[(r["prompt"], r["noise_seed"])],
        )
    )
    rows = summarise(records, runs)
    result = {
        "config": cfg,
        "pairs": len(pairs),
        "noise": cfg["pairs"].get("noise", "independent"),
        "processes": dist.world,
        "calibration": calibration,
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


def cluster_mean_ci(
    values: list[float], clusters: list[int], z: float = 1.96
) -> tuple[float, float]:
    """Mean and 95% half-width with pairs that share a noise seed as one cluster (the ratio
    estimator's sandwich variance over clusters). With every pair its own cluster this is
    :func:`adaptive_tts.report.mean_ci`."""
    if len(set(clusters)) == len(clusters):
        return mean_ci(values)
    sums: dict[int, list[float]] = {}
    for v, c in zip(values, clusters):
        sums.setdefault(c, []).append(v)
    g, total = len(sums), len(values)
    m = sum(values) / total
    if g < 2:
        return m, 0.0
    dev = sum((sum(vs) - m * len(vs)) ** 2 for vs in sums.values())
    return m, z * math.sqrt(g / (g - 1) * dev) / total


def summarise(records: list[dict[str, Any]], runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per method: mean reward with a 95% interval clustered by noise seed (pairs that
    share noise count once), mean counted NFEs, evaluation rate and seconds per sample."""
    rows = []
    for run in runs:
        rs = [r for r in records if r["label"] == run["label"]]
        m, ci = cluster_mean_ci(
            [r["reward"] for r in rs], [r.get("noise_seed", r["seed"]) for r in rs]
        )
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
                "clusters": len({r.get("noise_seed", r["seed"]) for r in rs}),
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
