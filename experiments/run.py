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
import os
import sys
from pathlib import Path
from typing import Any

import torch

from adaptive_tts.compute import ComputeMeter
from adaptive_tts.registry import SAMPLERS
from adaptive_tts.search.loop import observe_steps
from adaptive_tts.tasks import Task, build_task
from adaptive_tts.traces import load_traces
from experiments.calibration import calibrate, check_out_dir
from experiments.cli.ledger import StepTotals, outside_steps, steps_list
from experiments.config import expand_methods, load_config
from experiments.pairs import Batch, eval_score, run_pairs
from experiments.plan import config_prompts, make_pairs, noise_seed, plan_pairs, trace_sets
from experiments.results import (
    cluster_mean_ci,
    merge_compute,
    save_samples,
    save_schedule,
    summarise,
    table,
    write_results,
)
from experiments.runner import prepare_task

__all__ = [
    "Dist",
    "build_controller",
    "cluster_mean_ci",
    "config_prompts",
    "config_task",
    "main",
    "make_pairs",
    "make_sampler_from_config",
    "noise_seed",
    "plan_pairs",
    "run_experiment",
    "summarise",
    "table",
    "trace_sets",
    "write_results",
]


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


def build_controller(
    spec: dict[str, Any] | None,
    traces_dir: Path | dict[str, list[Path]] | None,
    sampler: Any,
    task: Task | None = None,
) -> Any:
    """A controller from a config entry ``{kind: <registered kind>, **options}`` (fixed,
    window, binomial, gp, gain, budget, stopping or a plug-in; see
    :data:`controllers.registry.CONTROLLERS`).

    ``traces_dir``: the calibration's trace directories by name (``full``: the full-budget
    search; ``budgets``: the budget-varied runs, one directory per K; see :func:`trace_sets`).
    A fitted kind is fitted on ``spec["traces"]`` (default ``budgets`` for ``stopping``, else
    ``full``). ``reference: <name>`` passes those traces as the full search's (the stopping
    controller's success level); a stopping controller takes ``full`` by default when the
    calibration has it (``reference: null`` turns that off). ``budget_flops: F | "Mx"`` (stopping,
    budget) sets the deployed budget in FLOPs, priced on ``task`` once
    (:func:`adaptive_tts.compute.measure_prices`)."""
    if spec is None:
        return None
    if spec.get("budget_flops") is not None:
        from adaptive_tts.compute import measure_prices
        from controllers.budget import with_flops_budget

        if task is None:
            raise ValueError("a controller's budget_flops needs the task (to price it)")
        rest = {k: v for k, v in spec.items() if k != "budget_flops"}
        if rest.get("budget") is None:
            rest["budget"] = 1e30  # a placeholder NFE budget, replaced below
        base = build_controller(rest, traces_dir, sampler)
        return with_flops_budget(base, spec["budget_flops"], measure_prices(task, sampler), sampler)
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


def make_sampler_from_config(sc: dict[str, Any], task: Task) -> Any:
    """The config's ``sampler: {name, steps, **options}``: with no options, the model's own
    sampler (``null`` name/steps: its defaults, :meth:`Task.make_sampler`); with options, the
    sampler built by :data:`adaptive_tts.registry.SAMPLERS` on the task's ``sigma_max``."""
    sc = {k: v for k, v in sc.items() if v is not None}
    name, steps = sc.pop("name", None), sc.pop("steps", None)
    if not sc:
        return task.make_sampler(name, steps)
    if task.sampler_factory is not None:
        raise ValueError(
            f"config key 'sampler.{next(iter(sc))}': model {task.model!r} takes sampler name "
            "and steps only"
        )
    return SAMPLERS[name or "heun"](int(steps or 18), sigma_max=task.sigma_max, **sc)


def config_task(cfg: dict[str, Any], device: str = "cpu") -> Task:
    """The task of a checked config: ``task:`` (:func:`adaptive_tts.tasks.build_task`) or
    ``model:`` with its reward(s), judge and prompts (:func:`adaptive_tts.specs.make_task`)."""
    if cfg.get("model") is None:
        return build_task(cfg["task"], device=device)
    from adaptive_tts.prompts import resolve_prompts
    from adaptive_tts.specs import make_task

    prompts = resolve_prompts(cfg["prompts"], cfg["prompts_file"], cfg["prompt_column"])
    return make_task(
        cfg["model"],
        cfg["reward"],
        eval_reward=cfg["eval_reward"],
        prompts=prompts,
        guidance=cfg["guidance"],
        height=cfg["height"],
        width=cfg["width"],
        device=device,
    )


def _record(
    run: dict[str, Any], b: Batch, task: Task, seed_of: dict[tuple[int, int], int]
) -> list[dict[str, Any]]:
    """The per-pair records of one batch of a method run."""
    sec = b.seconds / len(b.pairs)
    hit = eval_score(b.eval, len(b.pairs))
    texts = task.prompt_texts
    out = []
    for j, (p, ns) in enumerate(b.pairs):
        rec: dict[str, Any] = {
            "label": run["label"],
            "group": run.get("group", ""),
            "method": run["method"],
            "prompt": p,
        }
        if texts:
            rec["prompt_text"] = texts[p]
        rec.update(
            seed=seed_of[(p, ns)],
            noise_seed=ns,
            reward=float(b.result.reward[j]),
            nfe=int(b.result.nfe[j]),
            eval=float(hit[j]),
            seconds=sec,
        )
        if "eval_reward" in b.eval:
            rec["eval_reward"] = float(b.eval["eval_reward"][j])
        for purpose, counts in b.result.nfe_by_purpose.items():
            rec[f"nfe_{purpose}"] = int(counts[j])
        rec["reward_calls"] = int(b.result.reward_calls[j])
        out.append(rec)
    return out


def run_experiment(
    cfg: dict[str, Any], out: Path, wandb_on: bool = True, progress: bool = True
) -> dict[str, Any]:
    """Run every method of a checked config (:func:`experiments.config.load_config`) on its
    (prompt, seed) pairs; write results into ``out``. Everything is checked (the task built,
    the sampler, the pairs, ``out`` usable) before anything is written."""
    from tqdm.auto import tqdm

    check_out_dir(Path(out), "--out")
    dist = Dist()
    # cuda -> cuda:LOCAL_RANK under a launcher
    task, device = prepare_task(
        cfg.get("task") or "",
        cfg["device"],
        bool(cfg["cuda_graphs"]),
        build=lambda d: config_task(cfg, d),
    )
    gen_dev = cfg["generator_device"]
    sampler = make_sampler_from_config(cfg["sampler"], task)
    prompts = config_prompts(cfg, task)
    triples, cal_triples = plan_pairs(cfg, prompts)
    pairs = [(p, ns) for p, _, ns in triples]  # what the searches see: (prompt, noise seed)
    seed_of = {(p, ns): s for p, s, ns in triples}
    mine = pairs[dist.rank :: dist.world]
    runs = expand_methods(cfg)
    out.mkdir(parents=True, exist_ok=True)
    traces_dir: dict[str, list[Path]] | None = None
    calibration: dict[str, Any] = {}
    if cfg["calibration"]:
        cal_pairs = [(p, ns) for p, _, ns in cal_triples]
        base = Path(cfg["calibration"].get("dir") or out / "calibration")
        sets = trace_sets(cfg["calibration"], base)
        for where, knobs in [run for runs_ in sets.values() for run in runs_]:
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
        traces_dir = {name: [where for where, _ in runs_] for name, runs_ in sets.items()}
        calibration = {
            "pairs": len(cal_pairs),
            "noise_seeds": [ns for _, ns in cal_pairs],
            "nfe": {  # counted NFEs of each trace set (a learned controller's calibration cost)
                name: sum(int(t["nfe"]["total"]) for d in dirs for t in load_traces(d))
                for name, dirs in traces_dir.items()
            },
        }
    records: list[dict[str, Any]] = []
    compute: list[tuple[str, dict[str, Any]]] = []
    best_images: dict[str, torch.Tensor] = {}
    best_x0: dict[str, torch.Tensor] = {}
    for run in tqdm(runs, desc=cfg["name"], disable=not (progress and dist.main)):
        kw = {k: v for k, v in run.items() if k not in ("label", "method", "controller", "group")}
        kw["controller"] = build_controller(run.get("controller"), traces_dir, sampler, task)
        if dist.main and hasattr(kw["controller"], "save") and _fitted(run.get("controller")):
            save_schedule(kw["controller"], out, run["label"], run["controller"]["kind"])

        def record(b: Batch, run: dict[str, Any] = run) -> None:
            records.extend(_record(run, b, task, seed_of))
            top = b.result.reward.argsort(descending=True)[:8]
            best_x0[run["label"]] = b.result.x0[top]  # decoded outside the compute meter

        steps = StepTotals(task)
        with ComputeMeter(flops=bool(cfg["flops"])) as meter, observe_steps(steps):
            run_pairs(
                meter.instrument(task),
                run["method"],
                sampler,
                mine,
                batch=cfg["batch"],
                device=device,
                generator_device=gen_dev,
                on_batch=record,
                **kw,
            )
        compute.append((run["label"], {**meter.summary(), "steps": steps.totals()}))
        if run["label"] in best_x0:
            best_images[run["label"]] = task.to_image(best_x0.pop(run["label"])).cpu()
    records = dist.gather(records)
    compute = dist.gather(compute)
    dist.close()
    if not dist.main:
        return {}
    order = {pair: i for i, pair in enumerate(pairs)}
    labels = [x["label"] for x in runs]
    records.sort(key=lambda r: (labels.index(r["label"]), order[(r["prompt"], r["noise_seed"])]))
    by_label = {lab: merge_compute([c for k, c in compute if k == lab]) for lab in labels}
    for lab, c in by_label.items():  # the per-step ledger, in step order, and the rest
        mine_ = [r for r in records if r["label"] == lab]
        c["steps"] = steps_list(c.get("steps", {}), len(mine_))
        c["outside_steps"] = outside_steps(c["steps"], mine_)
    rows = summarise(records, runs, by_label)
    result = {
        "config": cfg,
        "task": task.name,
        "model": task.model,
        "prompts": task.prompt_texts,
        "pairs": len(pairs),
        "noise": cfg["pairs"].get("noise", "independent"),
        "processes": dist.world,
        "calibration": calibration,
        "compute": merge_compute([_no_steps(c) for _, c in compute]),
        "rows": rows,
        "records": records,
    }
    write_results(result, out)
    from experiments.plots import plot_nfe_per_step, plot_reward_vs_nfe

    plot_reward_vs_nfe(rows, out / "reward_vs_nfe.png", f"{cfg['name']}: {task.name}")
    plot_nfe_per_step(rows, out / "nfe_per_step.png", f"{cfg['name']}: {task.name}")
    save_samples(best_images, out / "samples.png")
    if wandb_on and cfg["wandb"].get("enabled", True):
        from experiments.wandb_log import log_experiment

        log_experiment(cfg, result, out, best_images)
    return result


def _no_steps(summary: dict[str, Any]) -> dict[str, Any]:
    """A method's compute summary without its per-step ledger (the run's totals have none)."""
    return {k: v for k, v in summary.items() if k != "steps"}


def _fitted(spec: dict[str, Any] | None) -> bool:
    """Whether a config's controller entry is fitted on traces (then its fit is saved)."""
    from controllers.registry import CONTROLLERS

    return spec is not None and CONTROLLERS[spec["kind"]].fitted


def main(argv: list[str] | None = None) -> int:
    """``python -m experiments.run CONFIG [--set KEY=VALUE ...] [--out DIR] [--no-wandb]``;
    a bad config, override or ``--out`` is one line on stderr and exit code 2."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("config", type=Path)
    ap.add_argument("--set", dest="overrides", nargs="*", default=[], metavar="KEY=VALUE")
    ap.add_argument("--out", type=Path, default=None, help="run directory (default runs/NAME)")
    ap.add_argument("--no-wandb", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_config(args.config, args.overrides)
    out = args.out or Path("runs") / cfg["name"]
    check_out_dir(out, "--out")
    result = run_experiment(cfg, out, wandb_on=not args.no_wandb)
    if result:
        print(table(result["rows"]))
        print(f"results: {out / 'results.json'}")
    return 0


def _script(argv: list[str] | None = None) -> int:
    """:func:`main` with the command line's one-line errors (exit code 2)."""
    from experiments.cli.errors import one_line

    try:
        return main(argv)
    except (ValueError, TypeError, FileNotFoundError) as err:
        if os.environ.get("ADAPTIVE_TTS_DEBUG", "") not in ("", "0"):
            raise
        print(one_line(err), file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(_script())
