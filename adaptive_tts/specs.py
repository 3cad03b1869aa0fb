"""Bring your own model: model spec strings -> backends, and model x reward -> :class:`Task`.

Model specs (:data:`MODEL_SPECS`), each with its sampler defaults (:meth:`Task.make_sampler`)::

    gmm | mnist          built-in models (EDM Heun, 18 steps)
    edm:DIR              an EDM-preconditioned diffusers UNet2DModel (config.json, weights,
                         optional edm_config.json; EDM Heun, 18 steps)
    sd:DIR | sdxl:DIR    a diffusers Stable Diffusion (XL) pipeline (DDIM eta=1, 50 steps;
                         guidance 7.5 / 5.0)
    sd3:DIR | flux:DIR   a diffusers SD3 / FLUX pipeline (the flow SDE: ancestral eta=1 on the
                         flow grid with the scheduler's shift, 28 steps; guidance 7.0 for SD3
                         (CFG), FLUX-dev's embedded guidance 3.5, none for FLUX-schnell)

Everything loads from local directories (never downloads). Text models take prompts (a sample's
``cond`` indexes them); ``--guidance`` is classifier-free guidance (2 NFEs per row, counted by
the ledger) except for FLUX-dev (its guidance embedding: 1 NFE).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.registry import Registry
from adaptive_tts.rewards.spec import RewardContext, build_reward, build_rewards, parse_weighted
from adaptive_tts.tasks import MODELS, TASKS, Backend, Task, TaskSpec, build_task, combine

__all__ = ["MODEL_SPECS", "ModelOptions", "build_model", "make_task", "parse_spec"]

TEXT_SCHEMES = ("sd", "sdxl", "sd3", "flux")


@dataclass(frozen=True)
class ModelOptions:
    """Options of a model spec. ``prompts``: for text models (required there);
    ``guidance``: CFG scale (``None``: the model's default); ``height``/``width``: pixels;
    ``encode``: text models of the flow family: ``encode(prompts) -> (embeds, pooled)``
    instead of the pipeline's own text encoders."""

    prompts: tuple[str, ...] | None = None
    guidance: float | None = None
    height: int | None = None
    width: int | None = None
    dtype: torch.dtype = torch.float32
    encode: Callable[[list[str]], tuple[Tensor, Tensor]] | None = None


ModelBuilder = Callable[[str | None, ModelOptions, str], Backend]
MODEL_SPECS: Registry[ModelBuilder] = Registry("model scheme")
"""Scheme -> ``build(ARG or None, options, device) -> Backend``."""


def parse_spec(spec: str, what: str = "model") -> tuple[str, str | None]:
    """``"sd:/models/sd15" -> ("sd", "/models/sd15")``; ``"mnist" -> ("mnist", None)``."""
    scheme, sep, arg = str(spec).strip().partition(":")
    if not scheme or (sep and not arg):
        raise ValueError(f"{what} spec must be SCHEME or SCHEME:ARG, got {spec!r}")
    return scheme, (arg if sep else None)


def _no_extras(spec: str, o: ModelOptions) -> None:
    if o.guidance is not None or o.height is not None or o.width is not None:
        raise ValueError(
            f"model {spec!r} takes no guidance/height/width (they apply to sd, sdxl, sd3, flux)"
        )


def _builtin(name: str) -> ModelBuilder:
    def build(arg: str | None, o: ModelOptions, device: str) -> Backend:
        if arg is not None:
            raise ValueError(f"model {name!r} takes no directory, got {name}:{arg}")
        _no_extras(name, o)
        return MODELS[name](device)

    return build


MODEL_SPECS.register("gmm", _builtin("gmm"))
MODEL_SPECS.register("mnist", _builtin("mnist"))


def _root(scheme: str, arg: str | None, expected: str) -> Path:
    if not arg:
        raise ValueError(f"model {scheme!r} needs a directory: {scheme}:DIR ({expected})")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"model {scheme}:{arg}: directory not found: {root}")
    return root


def _class_name(path: Path) -> str:
    try:
        return str(json.loads(path.read_text()).get("_class_name", ""))
    except (OSError, json.JSONDecodeError):
        return ""


def _no_eval(x0: Tensor, cond: Tensor | None) -> dict[str, Tensor]:
    return {}


@MODEL_SPECS.register("edm")
def edm_backend(arg: str | None, o: ModelOptions, device: str) -> Backend:
    """``edm:DIR``: :class:`~adaptive_tts.models.edm_unet.EDMUNetDenoiser` from DIR."""
    from adaptive_tts.models.edm_unet import EDMUNetDenoiser

    expected = "a diffusers UNet2DModel directory with edm_config.json"
    root = _root("edm", arg, expected)
    name = _class_name(root / "config.json")
    if name != "UNet2DModel":
        got = f"config.json names {name!r}" if name else "no config.json"
        raise ValueError(f"model edm:{arg}: expected {expected}, but {root} has {got}")
    _no_extras(f"edm:{arg}", o)
    net = EDMUNetDenoiser.from_pretrained(root, dtype=o.dtype).to(device)
    classes = net.config.num_classes if net.conditional else 0
    return Backend(
        f"edm:{arg}", net, net.sample_shape, net.to_image, classes, _no_eval, net.config.sigma_max
    )


def _prompts(spec: str, o: ModelOptions) -> list[str]:
    if not o.prompts:
        raise ValueError(f"model {spec!r} is text-conditional: give prompts (--prompt/--prompts)")
    return list(o.prompts)


def _counters(model: Any) -> Callable[[], dict[str, int]]:
    return lambda: {"vae_decodes": int(model.vae_decodes)}


def _latent(scheme: str) -> ModelBuilder:
    xl = scheme == "sdxl"

    def build(arg: str | None, o: ModelOptions, device: str) -> Backend:
        from adaptive_tts.models.latent_t2i import LatentT2I

        spec = f"{scheme}:{arg}"
        kind = "a diffusers Stable Diffusion XL pipeline" if xl else "a diffusers SD pipeline"
        root = _root(scheme, arg, kind)
        if not (root / "unet" / "config.json").is_file():
            has = "transformer/ (use sd3: or flux:)" if (root / "transformer").is_dir() else "none"
            raise ValueError(f"model {spec}: expected {kind} with unet/, {root} has {has}")
        if (root / "text_encoder_2").is_dir() != xl:
            other = "sd" if xl else "sdxl"
            raise ValueError(f"model {spec}: {root} is not {kind}; use {other}:{arg}")
        prompts = _prompts(spec, o)
        model = LatentT2I.from_pretrained(
            root, dtype=o.dtype, device=device, guidance_scale=o.guidance or (5.0 if xl else 7.5),
            height=o.height, width=o.width,
        )  # fmt: skip
        model.set_prompts(prompts)

        def sampler(name: str | None, steps: int | None) -> Any:
            return model.sampler(name or "ddim", steps or 50)

        return Backend(
            spec, model, model.sample_shape, model.to_image, len(prompts), _no_eval,
            model.sigma_max, prompts=prompts, sampler=sampler, counters=_counters(model),
        )  # fmt: skip

    return build


def _flow(scheme: str) -> ModelBuilder:
    classes = {"sd3": "SD3Transformer2DModel", "flux": "FluxTransformer2DModel"}

    def build(arg: str | None, o: ModelOptions, device: str) -> Backend:
        from adaptive_tts.models.flow import FlowT2I, pipeline_encoder

        spec = f"{scheme}:{arg}"
        want = classes[scheme]
        root = _root(scheme, arg, f"a diffusers pipeline with a {want} transformer/")
        tdir = root / "transformer" if (root / "transformer").is_dir() else root
        name = _class_name(tdir / "config.json")
        if name != want:
            got = f"{name!r}" if name else "no transformer config.json"
            raise ValueError(f"model {spec}: expected a {want} in {tdir}, got {got}")
        cfg = json.loads((tdir / "config.json").read_text())
        prompts = _prompts(spec, o)
        embedded = scheme == "flux" and bool(cfg.get("guidance_embeds"))
        default_g = {"sd3": 7.0, "flux": 3.5 if embedded else 1.0}[scheme]
        vae_scale = 8
        if (root / "vae" / "config.json").is_file():
            vcfg = json.loads((root / "vae" / "config.json").read_text())
            vae_scale = 2 ** (len(vcfg.get("block_out_channels", [0] * 4)) - 1)
        size = int(cfg.get("sample_size", 128)) * vae_scale if scheme == "sd3" else 1024
        model = FlowT2I.from_pretrained(
            root, dtype=o.dtype, device=device, guidance_scale=o.guidance or default_g,
            guidance="embedded" if embedded else "cfg", height=o.height or size,
            width=o.width or size,
        )  # fmt: skip
        encode = o.encode or pipeline_encoder(
            root,
            scheme,  # type: ignore[arg-type]
            device,
            o.dtype,
            transformer=model.transformer,
        )
        model.set_prompts(prompts, encode)
        sched = root / "scheduler" / "scheduler_config.json"
        shift = json.loads(sched.read_text()).get("shift", 3.0) if sched.is_file() else 3.0

        def sampler(name: str | None, steps: int | None) -> Any:
            return model.sampler(name or "ancestral", steps or 28, shift=float(shift))  # type: ignore[arg-type]

        return Backend(
            spec, model, model.sample_shape, model.to_image, len(prompts), _no_eval,
            float(model.sampler("ancestral", 28, shift=float(shift)).sigma(0)),
            prompts=prompts, sampler=sampler, counters=_counters(model),
        )  # fmt: skip

    return build


for _s in ("sd", "sdxl"):
    MODEL_SPECS.register(_s, _latent(_s))
for _s in ("sd3", "flux"):
    MODEL_SPECS.register(_s, _flow(_s))


def build_model(spec: str, options: ModelOptions | None = None, device: str = "cpu") -> Backend:
    """The backend of model ``spec`` (see the module docstring) on ``device``."""
    scheme, arg = parse_spec(spec)
    if scheme not in MODEL_SPECS:
        raise ValueError(
            f"unknown model {spec!r}; allowed: {' | '.join(MODEL_SPECS)} (with :DIR where needed)"
        )
    return MODEL_SPECS[scheme](arg, options or ModelOptions(), device)


def make_task(
    model: str,
    reward: str | Sequence[str] | None = None,
    *,
    eval_reward: str | None = None,
    prompts: Sequence[str] | None = None,
    guidance: float | None = None,
    height: int | None = None,
    width: int | None = None,
    conditional: bool | None = None,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    encode: Callable[[list[str]], tuple[Tensor, Tensor]] | None = None,
) -> Task:
    """Any model spec x any reward spec(s) -> a :class:`Task`.

    Args:
        model: a model spec (:data:`MODEL_SPECS`). reward: one ``SPEC`` or several
            ``SPEC[=WEIGHT]`` (a weighted composite; see :mod:`adaptive_tts.rewards.spec`);
            ``None``: ``target`` for gmm/mnist, else required.
        eval_reward: a held-out judge spec; :attr:`Task.evaluate` reports it as ``eval_reward``.
        prompts: text prompts (text models; clip rewards score against them).
        conditional: the prompt/class conditions the denoiser. ``None``: yes for text models
            and for mnist with the ``target`` reward (``mnist-cond``), else no (``gmm-target``,
            ``mnist-brightness``, ``edm:DIR``).
    Returns:
        The task; with a built-in model and reward it is the registered task of that name
        (``make_task("mnist")`` is ``build_task("mnist-cond")``).
    """
    scheme, _ = parse_spec(model)
    text = scheme in TEXT_SCHEMES
    if prompts is not None and not text and list(prompts):
        raise ValueError(f"model {model!r} takes classes, not text prompts (--class)")
    if reward is None:
        if scheme not in MODELS:
            raise ValueError(f"model {model!r} needs a reward (e.g. brightness, clip:DIR)")
        reward = "target"
    specs = [reward] if isinstance(reward, str) else list(reward)
    default = text or (scheme == "mnist" and specs == ["target"])  # mnist-cond; gmm-target
    cond = conditional if conditional is not None else default
    if scheme in MODELS and len(specs) == 1 and specs[0] in ("target", "brightness", "compress"):
        if eval_reward is None:  # the registered task itself (golden outputs stay as they are)
            spec = TaskSpec(scheme, specs[0], cond)
            return build_task(next((n for n, s in TASKS.items() if s == spec), spec), device)
    options = ModelOptions(
        tuple(prompts) if prompts else None, guidance, height, width, dtype, encode
    )
    backend = build_model(model, options, device)
    ctx = RewardContext(backend.to_image, backend.prompts, backend.target, device)
    built = build_rewards(specs, ctx)
    judge = None if eval_reward is None else build_reward(eval_reward, ctx)
    names = [parse_spec(parse_weighted(s)[0], "reward")[0] for s in specs]
    judged = [] if eval_reward is None else [parse_spec(eval_reward, "eval_reward")[0]]
    uses_prompt = cond or text or "target" in [*names, *judged]  # target=1.0 too
    name = f"{scheme}-{'+'.join(names)}"
    return combine(name, backend, built, cond, uses_prompt, judge)
