"""Rewards by spec string, from plug-ins, weighted composites, each output checked.

A spec is ``scheme`` or ``scheme:ARG``, optionally followed by ``=WEIGHT`` in a composite:

* built in (:data:`REWARD_SPECS`): ``target`` (the model's own class reward), ``brightness``,
  ``compress``, ``classifier:DIR`` (a classifier saved by
  :func:`~adaptive_tts.models.classifiers.save_classifier`; the sample's class is its ``cond``),
  ``clip:DIR`` (CLIP score against the task's prompts; DIR in open_clip's hub layout,
  ``open_clip_config.json`` + weights), ``aesthetic:DIR`` (DIR holds
  ``aesthetic_head.safetensors`` and the CLIP model, in DIR itself or in ``DIR/clip``);
* an installed plug-in: an entry point ``NAME`` (or ``NAME:ARG``) of the group
  :data:`ENTRY_POINT_GROUP`;
* ``package.module:attr``: any importable object.

A plug-in object (entry point or ``module:attr``) is a reward ``r(images, cond) -> (B,)`` on
images ``(B, C, H, W)`` in [0, 1], or a class that makes one (called with ``ARG`` when given).
Optional attributes: ``space = "samples"`` (score model-space samples instead of images) and
``set_prompts(list[str])`` (called with the task's prompt texts; ``cond`` then indexes them).
Every built reward is a :class:`CheckedReward`: an output that is not a tensor of shape
``(B,)`` or holds NaN/inf is a ``ValueError`` naming the spec.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.cuda_graphs import capturing
from adaptive_tts.registry import Registry
from adaptive_tts.rewards.base import Composite, OnImages
from adaptive_tts.rewards.image import Brightness, ClassifierReward, Compressibility
from adaptive_tts.types import Reward

ENTRY_POINT_GROUP = "adaptive_tts.rewards"
AESTHETIC_HEAD = "aesthetic_head.safetensors"

__all__ = [
    "AESTHETIC_HEAD",
    "ENTRY_POINT_GROUP",
    "REWARD_SPECS",
    "CheckedReward",
    "RewardContext",
    "build_reward",
    "build_rewards",
    "parse_weighted",
    "plugin_rewards",
]


@dataclass
class RewardContext:
    """What a reward builder may use: the model's image view, its prompts, its own target
    reward, the device, and objects shared between specs (a CLIP backbone per directory)."""

    to_image: Callable[[Tensor], Tensor]
    prompts: list[str] | None = None
    target: Reward | None = None
    device: str = "cpu"
    shared: dict[str, Any] = field(default_factory=dict)


RewardBuilder = Callable[[str | None, RewardContext], Reward]
REWARD_SPECS: Registry[RewardBuilder] = Registry("reward scheme")
"""Built-in schemes: ``builder(ARG or None, context) -> Reward`` on model-space samples."""


class CheckedReward:
    """``reward(x0, cond)`` whose output must be a finite float tensor of shape ``(B,)``."""

    def __init__(self, reward: Reward, name: str) -> None:
        self.reward, self.name = reward, name

    def __call__(self, x0: Tensor, cond: Tensor | None) -> Tensor:
        out = self.reward(x0, cond)
        b = x0.shape[0]
        if not isinstance(out, Tensor):
            raise ValueError(
                f"reward {self.name!r} must return a tensor of shape ({b},), "
                f"got {type(out).__name__}"
            )
        if out.shape != (b,):
            raise ValueError(
                f"reward {self.name!r} must return shape ({b},) (one score per sample), "
                f"got {tuple(out.shape)}"
            )
        if not capturing() and not torch.isfinite(out).all():
            bad = int((~torch.isfinite(out)).sum())
            raise ValueError(f"reward {self.name!r} returned {bad} non-finite value(s) (NaN/inf)")
        return out.float()


def _no_arg(scheme: str, arg: str | None) -> None:
    if arg is not None:
        raise ValueError(f"reward {scheme!r} takes no argument, got {scheme}:{arg}")


def _dir(scheme: str, arg: str | None) -> Path:
    if not arg:
        raise ValueError(f"reward {scheme!r} needs a directory: {scheme}:DIR")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"reward {scheme}:{arg}: directory not found: {root}")
    return root


@REWARD_SPECS.register("target")
def _target(arg: str | None, ctx: RewardContext) -> Reward:
    _no_arg("target", arg)
    if ctx.target is None:
        raise ValueError("reward 'target' needs a model with its own target reward (mnist, gmm)")
    return ctx.target


@REWARD_SPECS.register("brightness")
def _brightness(arg: str | None, ctx: RewardContext) -> Reward:
    _no_arg("brightness", arg)
    return OnImages(Brightness(), ctx.to_image)


@REWARD_SPECS.register("compress")
def _compress(arg: str | None, ctx: RewardContext) -> Reward:
    _no_arg("compress", arg)
    return OnImages(Compressibility(), ctx.to_image)


@REWARD_SPECS.register("classifier")
def _classifier(arg: str | None, ctx: RewardContext) -> Reward:
    from adaptive_tts.models.classifiers import load_classifier

    clf = load_classifier(_dir("classifier", arg), device=ctx.device)
    return OnImages(ClassifierReward(clf, target=None, name=f"classifier:{arg}"), ctx.to_image)


def _backbone(root: Path, ctx: RewardContext) -> Any:
    from adaptive_tts.rewards.clip import CLIPBackbone

    key = f"clip:{root.resolve()}"
    if key not in ctx.shared:
        ctx.shared[key] = CLIPBackbone.from_dir(root, device=ctx.device)
    return ctx.shared[key]


@REWARD_SPECS.register("clip")
def _clip(arg: str | None, ctx: RewardContext) -> Reward:
    from adaptive_tts.rewards.clip import CLIPScore

    root = _dir("clip", arg)
    if not ctx.prompts:
        raise ValueError(f"reward clip:{arg} scores images against prompts: give prompts")
    return OnImages(CLIPScore(ctx.prompts, backbone=_backbone(root, ctx)), ctx.to_image)


@REWARD_SPECS.register("aesthetic")
def _aesthetic(arg: str | None, ctx: RewardContext) -> Reward:
    from adaptive_tts.rewards.clip import AestheticScore

    root = _dir("aesthetic", arg)
    head = root / AESTHETIC_HEAD
    if not head.is_file():
        raise FileNotFoundError(f"reward aesthetic:{arg}: head not found: {head}")
    clip_dir = root if (root / "open_clip_config.json").is_file() else root / "clip"
    return OnImages(AestheticScore(head, backbone=_backbone(clip_dir, ctx)), ctx.to_image)


def plugin_rewards() -> dict[str, importlib.metadata.EntryPoint]:
    """Installed reward plug-ins: entry points of :data:`ENTRY_POINT_GROUP`, by name."""
    return {ep.name: ep for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)}


def _import(module: str, attr: str, spec: str) -> Any:
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as err:
        raise ValueError(
            f"unknown reward {spec!r}: not a built-in scheme {sorted(REWARD_SPECS)}, not an "
            f"installed plug-in {sorted(plugin_rewards())}, and module {module!r} does not "
            f"import ({err})"
        ) from err
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"reward {spec!r}: module {module!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return obj


def _from_object(obj: Any, arg: str | None, ctx: RewardContext, spec: str) -> Reward:
    """A reward from a plug-in object (see the module docstring for the protocol)."""
    if isinstance(obj, type):
        obj = obj(arg) if arg is not None else obj()
    elif arg is not None:
        raise ValueError(f"reward {spec!r}: {obj!r} is not a class, so it takes no argument")
    if not callable(obj):
        raise TypeError(f"reward {spec!r}: {obj!r} is not callable as r(images, cond)")
    if ctx.prompts and hasattr(obj, "set_prompts"):
        obj.set_prompts(list(ctx.prompts))
    space = getattr(obj, "space", "images")
    if space not in ("images", "samples"):
        raise ValueError(f"reward {spec!r}: space must be 'images' or 'samples', got {space!r}")
    if space == "samples":
        return obj
    on_images = OnImages(obj, ctx.to_image)
    on_images.name = spec  # its own finiteness check names the spec
    return on_images


def build_reward(spec: str, ctx: RewardContext) -> CheckedReward:
    """One reward (no weight) from ``spec``; see the module docstring for what it may be."""
    spec = str(spec).strip()
    if not spec:
        raise ValueError("reward spec must be non-empty")
    scheme, sep, rest = spec.partition(":")
    arg = rest if sep else None
    if scheme in REWARD_SPECS:
        return CheckedReward(REWARD_SPECS[scheme](arg, ctx), spec)
    plugins = plugin_rewards()
    if scheme in plugins:
        return CheckedReward(_from_object(plugins[scheme].load(), arg, ctx, spec), spec)
    if not arg:
        raise ValueError(
            f"unknown reward {spec!r}; built in: {', '.join(sorted(REWARD_SPECS))}; installed "
            f"plug-ins ({ENTRY_POINT_GROUP}): {', '.join(sorted(plugins)) or 'none'}; or "
            f"package.module:callable"
        )
    return CheckedReward(_from_object(_import(scheme, arg, spec), None, ctx, spec), spec)


def parse_weighted(spec: str) -> tuple[str, float]:
    """``"clip:DIR=0.5" -> ("clip:DIR", 0.5)``; no (numeric) ``=WEIGHT`` suffix: weight 1."""
    head, sep, tail = str(spec).rpartition("=")
    if not sep:
        return str(spec), 1.0
    try:
        weight = float(tail)
    except ValueError:
        return str(spec), 1.0  # '=' inside a path or argument
    if not math.isfinite(weight):
        raise ValueError(f"reward weight must be finite, got {spec!r}")
    return head, weight


def build_rewards(specs: str | Sequence[str], ctx: RewardContext) -> Reward:
    """One reward, or the weighted composite ``sum_k w_k r_k`` of several ``SPEC[=WEIGHT]``."""
    items = [specs] if isinstance(specs, str) else list(specs)
    if not items:
        raise ValueError("need at least one reward spec")
    terms = [(w, build_reward(s, ctx)) for s, w in map(parse_weighted, items)]
    if len(terms) == 1 and terms[0][0] == 1.0:
        return terms[0][1]
    return CheckedReward(Composite(terms), " + ".join(f"{w:g}*{r.name}" for w, r in terms))
