"""Experiment configs: YAML files (read with ``yaml.safe_load``: nothing in them executes) with
dotted command-line overrides, checked against a strict schema and expanded into a list of
method runs (sweeps over one knob, controller fits).

Every key must be one the schema declares (:class:`Config` and its sections): an unknown key
anywhere (``batchsize``, ``sampler.stepz``, a method option ``K``) is an error naming the key
path and the closest valid key; types and ranges are checked with the key named; an override
``--set KEY=VALUE`` must name an existing key. The task is either ``task:`` (a registered task)
or ``model:`` with ``reward:`` / ``eval_reward:`` / ``prompts:`` / ``prompts_file:`` /
``guidance`` / ``height`` / ``width`` (:func:`adaptive_tts.specs.make_task`), never both.
"""

from __future__ import annotations

import copy
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from adaptive_tts.registry import SAMPLERS, check_method_options
from adaptive_tts.rewards.spec import parse_weighted
from adaptive_tts.seeds import check_seed
from experiments.config_runs import check_runs, expand_methods
from experiments.schema import ConfigError, check_section, rule, schema_path, unknown_value

__all__ = [
    "DEFAULTS",
    "Config",
    "ConfigError",
    "apply_override",
    "check_config",
    "check_name",
    "expand_methods",
    "load_config",
    "resolve_gpu",
]

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")
DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")
MODEL_ONLY = ("reward", "eval_reward", "prompts", "prompts_file", "prompt_column")
MODEL_ONLY += ("guidance", "height", "width")
EDM_OPTIONS = ("sigma_min", "rho", "s_churn", "s_min", "s_max", "s_noise")
SAMPLER_OPTIONS = {"heun": EDM_OPTIONS, "euler": EDM_OPTIONS}
SAMPLER_OPTIONS["ancestral"] = ("sigma_min", "rho", "eta")


@dataclass
class SamplerSection:
    """``sampler``: name and steps (``null``: the model's defaults) and sampler options."""

    name: str | None = None
    steps: int | None = field(default=None, metadata=rule(1, 1000))
    sigma_min: float | None = field(default=None, metadata=rule(1e-6, 1e3))
    rho: float | None = field(default=None, metadata=rule(0.1, 100.0))
    s_churn: float | None = field(default=None, metadata=rule(0.0, 1e3))
    s_min: float | None = field(default=None, metadata=rule(0.0, 1e6))
    s_max: float | None = field(default=None, metadata=rule(0.0, 1e6))
    s_noise: float | None = field(default=None, metadata=rule(0.0, 10.0))
    eta: float | None = field(default=None, metadata=rule(0.0, 1.0))


@dataclass
class PairsSection:
    """``pairs``: prompts/classes (``null``: all), seeds ``[first, count]`` per prompt, and
    ``noise``: ``independent`` (each pair its own noise seed, :func:`experiments.plan.
    noise_seed`) or ``shared`` (the prompts of a seed share its noise)."""

    prompts: list[int] | None = field(default=None, metadata=rule(0, 1_000_000))
    seeds: list[int] = field(default_factory=lambda: [0, 4])
    noise: Literal["independent", "shared"] = "independent"
    unique_seeds: bool | None = None  # the older spelling: true = independent, false = shared


@dataclass
class KnobsSection:
    """eps-greedy knobs of a calibration run (``calibration.reference``)."""

    n: int | None = None
    k: int | None = None
    eps: float | None = None
    lam: float | None = None
    max_batch: int | None = None


@dataclass
class CalibrationSection(KnobsSection):
    """``calibration``: full-budget eps-greedy runs ``{seeds, n, k, eps, lam}``, or
    budget-varied ``{seeds, budgets: [K...], n, eps, reference: {n, k, eps, lam}}``."""

    seeds: list[int] | None = None
    dir: str | None = None
    budgets: list[int] | None = field(
        default=None, metadata=rule(0, 10_000, "a non-empty list of integers K >= 0")
    )
    reference: KnobsSection | None = None


@dataclass
class WandbSection:
    """``wandb``: log to W&B (offline unless ``mode`` or ``WANDB_MODE`` says otherwise)."""

    enabled: bool = True
    project: str = "adaptive-tts"
    group: str | None = None
    mode: Literal["offline", "online", "disabled"] | None = None


@dataclass
class Config:
    """An experiment config (the schema every YAML config is checked against)."""

    name: str = "experiment"
    task: str | dict[str, Any] | None = None  # a registered task; default gmm-target
    model: str | None = None  # or a model spec (adaptive_tts.specs.MODEL_SPECS)
    reward: str | list[str] | None = None  # SPEC or [SPEC=W, ...]
    eval_reward: str | None = None
    prompts: list[str] | None = None
    prompts_file: str | None = None
    prompt_column: str | None = None
    guidance: float | None = field(default=None, metadata=rule(0.0, 100.0))
    height: int | None = field(default=None, metadata=rule(8, 8192))
    width: int | None = field(default=None, metadata=rule(8, 8192))
    sampler: SamplerSection = field(default_factory=SamplerSection)
    pairs: PairsSection = field(default_factory=PairsSection)
    batch: int = field(default=32, metadata=rule(1, 4096))
    device: str = "cpu"  # "cuda": process R of a launch uses cuda:LOCAL_RANK
    # where per-sample noise is drawn, CUDA-graph replay: null -> on for cuda, off on the CPU
    generator_device: Literal["cpu", "cuda"] | None = None
    cuda_graphs: bool | None = None
    flops: bool = False  # estimate every call's FLOPs (the compute ledger's flops fields)
    calibration: CalibrationSection | None = None
    methods: list[dict[str, Any]] = field(default_factory=list)
    sweeps: list[dict[str, Any]] = field(default_factory=list)
    wandb: WandbSection = field(default_factory=WandbSection)


DEFAULTS: dict[str, Any] = asdict(Config())


def check_name(name: str) -> str:
    """A config ``name`` usable as ``runs/NAME``: letters, digits, ``.``, ``_``, ``-``, starting
    with a letter or digit (no slashes, ``..`` or absolute paths)."""
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(
            f"config key 'name'={name!r} is invalid, allowed: 1-100 letters, digits, '.', '_' "
            "or '-', starting with a letter or digit (it names the run directory runs/NAME; "
            "no slashes or '..')"
        )
    return name


def _parse_override(item: str) -> tuple[str, Any]:
    if "=" not in item:
        raise ConfigError(f"override must look like key.sub=value, got {item!r}")
    key, raw = item.split("=", 1)
    key = key.strip()
    schema_path(Config, key)
    try:
        return key, yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({err})") from None


def apply_override(cfg: dict[str, Any], item: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML, never executed) in place; the key must be
    one the schema declares."""
    key, value = _parse_override(item)
    node = cfg
    parts = key.split(".")
    for p in parts[:-1]:
        if not isinstance(node.get(p), dict):
            node[p] = {}
        node = node[p]
    node[parts[-1]] = value


def _check_seeds(seeds: Any, key: str) -> None:
    if not (isinstance(seeds, list) and len(seeds) == 2):
        raise ConfigError(f"{key} must be [first, count >= 1], got {seeds}")
    first, count = seeds
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 1_000_000:
        raise ConfigError(f"{key} must be [first, count >= 1], got {seeds}")
    try:
        check_seed(first, f"{key}[0]", count)
    except ValueError as err:
        raise ConfigError(f"config key {err}") from None


def _check_sampler(sc: dict[str, Any], text_model: bool) -> dict[str, Any]:
    name = sc["name"]
    opts = [k for k, v in sc.items() if k not in ("name", "steps") and v is not None]
    names = sorted({*SAMPLERS, "ddim"})
    if name is not None and name not in names:
        raise unknown_value("sampler.name", name, names)
    if opts and text_model:
        raise ConfigError(
            f"config key 'sampler.{opts[0]}': a text model's own samplers take name and steps only"
        )
    allowed = SAMPLER_OPTIONS.get(name or "heun")
    for key in opts:
        if allowed is not None and key not in allowed:
            raise ConfigError(
                f"config key 'sampler.{key}' does not apply to sampler {name or 'heun'!r}; "
                f"its options: {', '.join(allowed)}"
            )
    return {k: v for k, v in sc.items() if k in ("name", "steps") or v is not None}


def _check_task(cfg: dict[str, Any], raw: dict[str, Any]) -> None:
    from adaptive_tts.specs import MODEL_SPECS, TEXT_SCHEMES, parse_spec
    from adaptive_tts.tasks import task_spec

    if raw.get("task") is not None and raw.get("model") is not None:
        raise ConfigError(
            "config gives both 'task' and 'model': use one ('task' a registered task name; "
            "'model' a model spec with 'reward', 'prompts', ...; --set task=null clears one)"
        )
    if cfg["model"] is None:
        for key in MODEL_ONLY:
            if cfg[key] is not None:
                raise ConfigError(
                    f"config key {key!r} goes with 'model' (a model spec), not with 'task'"
                )
        cfg["task"] = cfg["task"] if cfg["task"] is not None else "gmm-target"
        task = cfg["task"]
        if isinstance(task, dict) and not {"model", "reward"} <= set(task):
            raise ConfigError(
                f"config key 'task'={task!r}: a task mapping needs 'model' and 'reward' "
                "(and optionally 'conditional', 'name')"
            )
        try:
            task_spec(task)
        except (TypeError, ValueError) as err:
            raise ConfigError(f"config key 'task': {err}") from None
        return
    try:
        scheme, _ = parse_spec(cfg["model"])
    except ValueError as err:
        raise ConfigError(f"config key 'model': {err}") from None
    if scheme not in MODEL_SPECS:
        raise ConfigError(
            f"config key 'model'={cfg['model']!r} is unknown; allowed: "
            f"{' | '.join(MODEL_SPECS)} (with :DIR where needed)"
        )
    text = scheme in TEXT_SCHEMES
    has_prompts = bool(cfg["prompts"]) or cfg["prompts_file"] is not None
    if text and not has_prompts:
        raise ConfigError(
            f"model {cfg['model']!r} is text-conditional: give 'prompts' or 'prompts_file'"
        )
    if not text and has_prompts:
        raise ConfigError(f"config key 'prompts': model {cfg['model']!r} takes classes, not text")
    if not text:
        for key in ("guidance", "height", "width"):
            if cfg[key] is not None:
                raise ConfigError(
                    f"config key {key!r} applies to text models (sd, sdxl, sd3, flux)"
                )
    for key in ("height", "width"):
        if cfg[key] is not None and cfg[key] % 8:
            raise ConfigError(f"config key {key!r}={cfg[key]} is invalid, allowed: a multiple of 8")
    if cfg["prompts_file"] is not None and not Path(cfg["prompts_file"]).is_file():
        raise FileNotFoundError(f"config key 'prompts_file': file not found: {cfg['prompts_file']}")
    rewards = [cfg["reward"]] if isinstance(cfg["reward"], str) else list(cfg["reward"] or [])
    if not rewards and scheme not in ("gmm", "mnist"):
        raise ConfigError(f"config key 'reward' is required for model {cfg['model']!r}")
    for spec in [*rewards, *([cfg["eval_reward"]] if cfg["eval_reward"] else [])]:
        try:
            parse_weighted(spec)
        except ValueError as err:
            raise ConfigError(f"config key 'reward': {err}") from None
        if not spec.strip():
            raise ConfigError("config key 'reward': a reward spec must be non-empty")
    cfg["sampler"] = _check_sampler(cfg["sampler"], text)


def _check_calibration(cal: dict[str, Any] | None) -> None:
    if cal is None:
        return
    if cal["seeds"] is None:
        raise ConfigError("calibration must be a mapping with 'seeds: [first, count]'")
    _check_seeds(cal["seeds"], "calibration.seeds")
    if cal["reference"] is not None and cal["budgets"] is None:
        raise ConfigError("calibration.reference goes with calibration.budgets")
    if cal["budgets"] is not None:
        if not cal["budgets"]:
            raise ConfigError("calibration.budgets must be integers K >= 0, got []")
        if cal["k"] is not None:
            raise ConfigError("calibration.budgets sets K per run: drop calibration.k")
    for where, knobs in [("calibration", cal), ("calibration.reference", cal["reference"])]:
        if knobs:
            opts = {k: knobs[k] for k in ("n", "k", "eps", "lam", "max_batch")}
            check_method_options("eps-greedy", opts, {k: f"{where}.{k}" for k in opts})
    for key in [k for k, v in cal.items() if v is None]:  # keep the section as written
        del cal[key]
    if isinstance(cal.get("reference"), dict):
        cal["reference"] = {k: v for k, v in cal["reference"].items() if v is not None}


def resolve_gpu(cfg: dict[str, Any]) -> tuple[str, bool]:
    """``(generator_device, cuda_graphs)`` of a config: on a CUDA device, device-side
    generators and CUDA graphs unless the config opts out (``generator_device: cpu``,
    ``cuda_graphs: false``); on the CPU, CPU generators and no graphs (asking for either
    there is an error naming the key)."""
    cuda = str(cfg["device"]).startswith("cuda")
    gen, graphs = cfg["generator_device"], cfg["cuda_graphs"]
    if not cuda:
        if gen == "cuda":
            raise ConfigError(
                f"config key 'generator_device'='cuda' needs device cuda, not {cfg['device']!r}"
            )
        if graphs:
            raise ConfigError(
                f"cuda_graphs needs a CUDA device, got config key 'device'={cfg['device']!r}"
            )
        return "cpu", False
    return gen or "cuda", True if graphs is None else bool(graphs)


def check_config(raw: dict[str, Any]) -> dict[str, Any]:
    """A raw config mapping checked against :class:`Config` and filled with its defaults."""
    cfg = check_section(Config, raw)
    check_name(cfg["name"])
    if not DEVICE.fullmatch(str(cfg["device"])):
        raise ConfigError(
            f"config key 'device'={cfg['device']!r} is invalid, allowed: cpu, cuda, cuda:N, mps"
        )
    _check_task(cfg, raw)
    if cfg["model"] is None:
        cfg["sampler"] = _check_sampler(cfg["sampler"], False)
    pairs = cfg["pairs"]
    _check_seeds(pairs["seeds"], "pairs.seeds")
    unique = pairs.pop("unique_seeds")
    if unique is not None:
        pairs["noise"] = "independent" if unique else "shared"
    _check_calibration(cfg["calibration"])
    cfg["generator_device"], cfg["cuda_graphs"] = resolve_gpu(cfg)
    check_runs(cfg)
    return cfg


def load_config(path: str | Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Read a YAML config (safe_load), apply overrides, check it against :class:`Config`.

    Raises:
        FileNotFoundError: no config file. ConfigError (a ``ValueError``): bad YAML, an
            unknown key or override (naming it and the closest valid key), a bad value.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({' '.join(str(err).split())})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    raw = copy.deepcopy(raw)
    for item in overrides or []:
        apply_override(raw, item)
    try:
        return check_config(raw)
    except ConfigError as err:
        raise type(err)(f"{path}: {err}") from None
