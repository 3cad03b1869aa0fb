"""Tasks: a registered model backend x a registered reward, plus an evaluation that the search
never sees (to detect reward hacking).

* :data:`MODELS`: ``name -> build(device) -> Backend`` (a denoiser with its sample shape, image
  view, class count, ``sigma_max``, evaluation and, optionally, its own ``target`` reward).
* :data:`REWARDS`: ``name -> build(backend, device) -> Reward`` on model-space samples.
* :data:`TASKS`: named combinations :class:`TaskSpec` (model, reward, whether the prompt also
  conditions the denoiser). :func:`build_task` takes a registered name, a ``"model-reward"``
  name of any registered model and reward, or a :class:`TaskSpec` / mapping from a config.

A task's *prompt* per sample is an integer: the class to generate (``mnist-cond``), the target
class to reward (``mnist-target``, ``gmm-target``), or ignored (``-1``) for brightness and
compressibility. Unconditional tasks wrap the denoiser so that it ignores the prompt.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.registry import Registry
from adaptive_tts.rewards import Brightness, ClassifierReward, Compressibility, OnImages
from adaptive_tts.sampling import Sampler
from adaptive_tts.types import Denoiser, Reward


class Unconditional:
    """Denoiser adaptor that drops the conditioning (prompts steer only the reward)."""

    def __init__(self, denoiser: Any):
        self.denoiser = denoiser
        self.nfe_per_call = int(getattr(denoiser, "nfe_per_call", 1))

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor | None = None) -> Tensor:
        return self.denoiser(x, sigma, None)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.denoiser, name)


Evaluate = Callable[[Tensor, Tensor | None], dict[str, Tensor]]
SamplerFactory = Callable[[str | None, int | None], Sampler]
"""``factory(name or None, steps or None) -> Sampler``: a model's own samplers and defaults."""


@dataclass
class Backend:
    """A built model backend.

    Attributes:
        name: the registered model name; ``denoiser``: ``D(x, sigma, cond)`` (conditional when
            the model takes a class, else it ignores ``cond``).
        target: the backend's own target-class reward ``r(x0, cond)`` (``None``: it has none).
        evaluate: held-out evaluation ``(x0, cond or None) -> {name: (B,)}``.
    """

    name: str
    denoiser: Any
    sample_shape: tuple[int, ...]
    to_image: Callable[[Tensor], Tensor]
    num_classes: int
    evaluate: Evaluate
    sigma_max: float = 80.0
    target: Reward | None = None
    prompts: list[str] | None = None
    sampler: SamplerFactory | None = None
    counters: Callable[[], dict[str, int]] | None = None


@dataclass
class Task:
    """Everything a search, a calibration run or a benchmark needs for one task."""

    name: str
    model: str
    denoiser: Denoiser
    reward: Callable[[Tensor, Tensor | None], Tensor]
    sample_shape: tuple[int, ...]
    to_image: Callable[[Tensor], Tensor]
    num_classes: int
    uses_prompt: bool
    evaluate: Evaluate = field(repr=False)
    sigma_max: float = 80.0
    prompt_texts: list[str] | None = None
    sampler_factory: SamplerFactory | None = field(default=None, repr=False)
    counters: Callable[[], dict[str, int]] | None = field(default=None, repr=False)

    def prompts(self, classes: list[int] | int | None, batch: int) -> Tensor:
        """Prompt tensor ``(batch,)``: given classes (cycled), or ``-1`` when unused. A text
        task (:attr:`prompt_texts` set) cycles over all its prompts when ``classes`` is None."""
        if classes is None and self.prompt_texts:
            classes = list(range(len(self.prompt_texts)))
        if not self.uses_prompt or classes is None:
            if self.uses_prompt:
                raise ValueError(f"task {self.name!r} needs a class (--class)")
            return torch.full((batch,), -1, dtype=torch.long)
        cl = [classes] if isinstance(classes, int) else list(classes)
        for c in cl:
            if not 0 <= c < self.num_classes:
                raise ValueError(f"class must lie in [0, {self.num_classes - 1}], got {c}")
        return torch.tensor([cl[i % len(cl)] for i in range(batch)], dtype=torch.long)

    def make_sampler(self, name: str | None = None, steps: int | None = None) -> Sampler:
        """The model's sampler ``name`` with ``steps`` (``None``: the model's defaults: EDM
        Heun with 18 steps for EDM models, DDIM eta=1 for SD-family, the flow SDE for SD3/FLUX)."""
        if self.sampler_factory is not None:
            return self.sampler_factory(name, steps)
        from adaptive_tts.registry import SAMPLERS

        return SAMPLERS[name or "heun"](steps or 18, sigma_max=self.sigma_max)

    def prompt_text(self, cond: Tensor | None) -> list[str] | None:
        """The prompt text of each sample (``None`` for tasks without text prompts)."""
        if cond is None or not self.prompt_texts:
            return None
        return [self.prompt_texts[int(c)] for c in cond.tolist()]

    def compute_counters(self) -> dict[str, int]:
        """Running counters of work outside the ledger (``vae_decodes``, ...), by name."""
        return dict(self.counters()) if self.counters is not None else {}


@dataclass(frozen=True)
class TaskSpec:
    """A model x reward combination; ``conditional``: the prompt also conditions the denoiser
    (else the denoiser runs unconditionally and the prompt, if any, steers only the reward)."""

    model: str
    reward: str
    conditional: bool = False


MODELS: Registry[Callable[[str], Backend]] = Registry("model")
REWARDS: Registry[Callable[[Backend, str], Reward]] = Registry("reward")
TASKS: Registry[TaskSpec] = Registry("task")
PROMPTED_REWARDS = {"target"}  # rewards that read a target class per sample


@MODELS.register("gmm")
def gmm_backend(device: str = "cpu") -> Backend:
    """The exact 8-d Gaussian mixture (4 classes, 2 components each); CPU only."""
    from adaptive_tts.models.gmm import make_gmm

    gmm = make_gmm(dim=8, num_classes=4, per_class=2, seed=0)

    def target(x0: Tensor, cond: Tensor | None) -> Tensor:
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

    return Backend(
        "gmm", gmm, gmm.sample_shape, gmm.to_image, gmm.num_classes, evaluate, 80.0, target
    )


@MODELS.register("mnist")
def mnist_backend(device: str = "cpu") -> Backend:
    """The embedded class-conditional MNIST EDM model with its reward and evaluation CNNs."""
    from adaptive_tts import models

    net: Any = models.load("mnist", device=device)
    reward_clf = models.load("mnist-reward-clf", device=device)
    eval_clf = models.load("mnist-eval-clf", device=device)
    to_image = net.to_image

    def evaluate(x0: Tensor, cond: Tensor | None) -> dict[str, Tensor]:
        with torch.no_grad():
            p = torch.softmax(eval_clf(to_image(x0).to(device)).float(), 1).cpu()
        label = p.argmax(1)
        out = {"eval_label": label, "eval_confidence": p.max(1).values}
        if cond is not None:
            out["eval_hit"] = (label == cond.cpu()).float()
            out["eval_prob"] = p[torch.arange(len(label)), cond.cpu().clamp_min(0)]
        return out

    target = OnImages(ClassifierReward(reward_clf, target=None, name="reward-classifier"), to_image)
    return Backend(
        "mnist", net, net.sample_shape, to_image, 10, evaluate, net.config.sigma_max, target
    )


@REWARDS.register("target")
def target_reward(backend: Backend, device: str = "cpu") -> Reward:
    """The backend's own target-class reward (a class per sample as the prompt)."""
    if backend.target is None:
        raise ValueError(f"model {backend.name!r} has no target reward")
    return backend.target


@REWARDS.register("brightness")
def brightness_reward(backend: Backend, device: str = "cpu") -> Reward:
    """Mean image brightness of ``backend.to_image(x0)``."""
    return OnImages(Brightness(), backend.to_image)


@REWARDS.register("compress")
def compress_reward(backend: Backend, device: str = "cpu") -> Reward:
    """JPEG compressibility of ``backend.to_image(x0)``."""
    return OnImages(Compressibility(), backend.to_image)


TASKS.register("gmm-target", TaskSpec("gmm", "target"))
TASKS.register("mnist-cond", TaskSpec("mnist", "target", conditional=True))
TASKS.register("mnist-target", TaskSpec("mnist", "target"))
TASKS.register("mnist-brightness", TaskSpec("mnist", "brightness"))
TASKS.register("mnist-compress", TaskSpec("mnist", "compress"))


def task_spec(task: str | TaskSpec | Mapping[str, Any]) -> tuple[str, TaskSpec]:
    """``(name, spec)`` of a registered task name, a ``"model-reward"`` combination of any
    registered model and reward, a spec, or a config mapping ``{model, reward, conditional}``."""
    if isinstance(task, TaskSpec):
        return f"{task.model}-{task.reward}", task
    if isinstance(task, Mapping):
        unknown = set(task) - {"model", "reward", "conditional", "name"}
        if unknown:
            raise TypeError(f"task config takes no option(s) {sorted(unknown)}")
        spec = TaskSpec(str(task["model"]), str(task["reward"]), bool(task.get("conditional")))
        return str(task.get("name", f"{spec.model}-{spec.reward}")), spec
    if task in TASKS:
        return task, TASKS[task]
    parts = str(task).split("-")
    for cut in range(1, len(parts)):
        model, reward = "-".join(parts[:cut]), "-".join(parts[cut:])
        if model in MODELS and reward in REWARDS:
            return str(task), TaskSpec(model, reward)
    raise ValueError(
        f"unknown task {task!r}; registered: {', '.join(sorted(TASKS))}; or MODEL-REWARD with "
        f"a model in {sorted(MODELS)} and a reward in {sorted(REWARDS)}"
    )


def build_task(name: str | TaskSpec | Mapping[str, Any], device: str = "cpu") -> Task:
    """Build a task (see :func:`task_spec` for what ``name`` may be) on ``device``."""
    task_name, spec = task_spec(name)
    build_model, build_reward = MODELS[spec.model], REWARDS[spec.reward]
    backend = build_model(device)
    reward = build_reward(backend, device)
    uses_prompt = spec.conditional or spec.reward in PROMPTED_REWARDS
    return combine(task_name, backend, reward, spec.conditional, uses_prompt)


def combine(
    task_name: str,
    backend: Backend,
    reward: Reward,
    conditional: bool,
    uses_prompt: bool,
    eval_reward: Reward | None = None,
) -> Task:
    """A :class:`Task` from a built backend and reward. ``conditional``: the prompt conditions
    the denoiser; ``uses_prompt``: samples carry a prompt (class or prompt index);
    ``eval_reward``: a held-out judge reported by :attr:`Task.evaluate` as ``eval_reward``."""
    denoiser = backend.denoiser if conditional else Unconditional(backend.denoiser)

    def evaluate(x0: Tensor, cond: Tensor | None) -> dict[str, Tensor]:
        c = cond if uses_prompt else None
        out = backend.evaluate(x0, c)
        if eval_reward is not None:
            with torch.no_grad():
                out["eval_reward"] = eval_reward(x0, c).float().cpu()
        return out

    return Task(
        task_name,
        backend.name,
        denoiser,
        reward,
        backend.sample_shape,
        backend.to_image,
        backend.num_classes,
        uses_prompt,
        evaluate,
        sigma_max=backend.sigma_max,
        prompt_texts=backend.prompts,
        sampler_factory=backend.sampler,
        counters=backend.counters,
    )
