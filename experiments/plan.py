"""The (prompt, seed) pairs of an experiment config: their noise seeds, the held-out and
calibration sets (never sharing noise), and the calibration runs' trace sets."""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["Triple", "config_prompts", "make_pairs", "noise_seed", "plan_pairs", "trace_sets"]

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
    """``pairs.prompts`` (each a class or prompt index of ``task``), or every class / prompt
    when it is null (``[-1]`` for a task without prompts)."""
    prompts = cfg["pairs"]["prompts"]
    if prompts is None:
        return list(range(task.num_classes)) if task.uses_prompt else [-1]
    for p in prompts:  # on a task without prompts they only tell pairs apart
        if task.uses_prompt and not 0 <= int(p) < task.num_classes:
            raise ValueError(
                f"config key 'pairs.prompts' entry {p} is invalid, allowed: integers in "
                f"[0, {task.num_classes - 1}] (the classes or prompts of task {task.name!r})"
            )
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
