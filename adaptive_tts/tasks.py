"""Tasks registered by name: a denoiser, a reward on model-space samples, and an evaluation that
the search never sees (to detect reward hacking).

A task's *prompt* per sample is an integer: the class to generate (``mnist-cond``), the target
class to reward (``mnist-target``, ``gmm-target``), or ignored (``-1``) for brightness and
compressibility. Unconditional tasks wrap the denoiser so that it ignores the prompt.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.rewards import Brightness, ClassifierReward, Compressibility, OnImages


class Unconditional:
    """Denoiser adaptor that drops the conditioning (prompts steer only the reward)."""

    def __init__(self, denoiser: Any):
        self.denoiser = denoiser
        self.nfe_per_call = int(getattr(denoiser, "nfe_per_call", 1))

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.denoiser(x, sigma, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.denoiser, name)


@dataclass
class Task:
    """Everything a search, a calibration run or a benchmark needs for one task."""

    name: str
    model: str
    denoiser: Any
    reward: Callable[[Tensor, Tensor | None], Tensor]
    sample_shape: tuple[int, ...]
    to_image: Callable[[Tensor], Tensor]
    num_classes: int
    uses_prompt: bool
    evaluate: Callable[[Tensor, Tensor | None], dict[str, Tensor]] = field(repr=False)
    sigma_max: float = 80.0

    def prompts(self, classes: list[int] | int | None, batch: int) -> Tensor:
        """Prompt tensor ``(batch,)``: given classes (cycled), or ``-1`` when unused."""
        if not self.uses_prompt or classes is None:
            if self.uses_prompt:
                raise ValueError(f"task {self.name!r} needs a class (--class)")
            return torch.full((batch,), -1, dtype=torch.long)
        cl = [classes] if isinstance(classes, int) else list(classes)
        for c in cl:
            if not 0 <= c < self.num_classes:
                raise ValueError(f"class must lie in [0, {self.num_classes - 1}], got {c}")
        return torch.tensor([cl[i % len(cl)] for i in range(batch)], dtype=torch.long)


def _gmm_task(name: str, device: str) -> Task:
    from adaptive_tts.models.gmm import make_gmm

    gmm = make_gmm(dim=8, num_classes=4, per_class=2, seed=0)

    def reward(x0: Tensor, cond: Tensor | None) -> Tensor:
        if cond is None or (cond < 0).any():
            raise ValueError("gmm-target needs a target class per sample (cond >= 0)")
        comps = gmm.component_log_prob(x0)  # (B, M)
        first = torch.tensor([int((gmm.labels == c).nonzero()[0]) for c in cond.tolist()])
        return (comps[torch.arange(x0.shape[0]), first] / gmm.dim).float()

    def evaluate(x0: Tensor, cond: Tensor | None) -> dict[str, Tensor]:
        comp = gmm.component_log_prob(x0).argmax(1)
        label = gmm.labels[comp]
        return {
            "eval_label": label,
            "eval_hit": (label == cond).float() if cond is not None else torch.zeros(len(label)),
        }

    return Task(
        name,
        "gmm",
        Unconditional(gmm),
        reward,
        gmm.sample_shape,
        gmm.to_image,
        gmm.num_classes,
        True,
        evaluate,
        sigma_max=80.0,
    )


def _mnist_task(name: str, device: str) -> Task:
    from adaptive_tts import models

    net: Any = models.load("mnist", device=device)
    reward_clf = models.load("mnist-reward-clf", device=device)
    eval_clf = models.load("mnist-eval-clf", device=device)
    to_image = net.to_image
    uses_prompt = name in ("mnist-cond", "mnist-target")
    denoiser = net if name == "mnist-cond" else Unconditional(net)
    image_reward: Callable[[Tensor, Tensor | None], Tensor]
    if name in ("mnist-cond", "mnist-target"):
        image_reward = ClassifierReward(reward_clf, target=None, name="reward-classifier")
    elif name == "mnist-brightness":
        image_reward = Brightness()
    else:
        image_reward = Compressibility()

    def evaluate(x0: Tensor, cond: Tensor | None) -> dict[str, Tensor]:
        with torch.no_grad():
            p = torch.softmax(eval_clf(to_image(x0).to(device)).float(), 1).cpu()
        label = p.argmax(1)
        out = {"eval_label": label, "eval_confidence": p.max(1).values}
        if uses_prompt and cond is not None:
            out["eval_hit"] = (label == cond.cpu()).float()
            out["eval_prob"] = p[torch.arange(len(label)), cond.cpu().clamp_min(0)]
        return out

    return Task(
        name,
        "mnist",
        denoiser,
        OnImages(image_reward, to_image),
        net.sample_shape,
        to_image,
        10,
        uses_prompt,
        evaluate,
        sigma_max=net.config.sigma_max,
    )


TASKS: dict[str, Callable[[str, str], Task]] = {
    "gmm-target": _gmm_task,
    "mnist-cond": _mnist_task,
    "mnist-target": _mnist_task,
    "mnist-brightness": _mnist_task,
    "mnist-compress": _mnist_task,
}


def build_task(name: str, device: str = "cpu") -> Task:
    """Build a registered task by name (see :data:`TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"task must be one of {sorted(TASKS)}, got {name!r}")
    return TASKS[name](name, device)
