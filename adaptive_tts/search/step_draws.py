"""The random draws of one eps-greedy step for a whole batch, eagerly or replayed from one CUDA
graph.

Every sample draws from its own generator (its noise never depends on the rest of the batch), so
a step of ``B`` samples costs ``4 B`` small kernel launches on the host: at 1,024 samples that
host work, not the GPU, bounds the search. With CUDA generators, :class:`StepDraws` captures the
whole step's draws into one CUDA graph the second time it sees the same iteration caps, every
generator registered with the graph (PyTorch's graph-safe RNG states), and replays it after that:
a replay reads each generator's current offset and advances it by what the captured draws use,
so the numbers are the ones the eager calls would give. ``ADAPTIVE_TTS_GRAPH_DRAWS=0`` keeps the
eager path; a capture that fails warns once and stays eager.
"""

from __future__ import annotations

import os
import warnings

import torch
from torch import Tensor

Draws = tuple[Tensor, Tensor, Tensor, Tensor]

__all__ = ["Draws", "StepDraws", "draw_step", "stack_draws"]


def draw_step(k: int, n: int, g: torch.Generator, shape: tuple[int, ...]) -> Draws:
    """All random draws of one sample's ``k`` iterations at a step, in a fixed order, on the
    generator's device: exploration uniforms ``(k, n)``, fresh N(0, I) draws ``(k, n, *S)``,
    neighbour directions (unnormalised, ``(k, n, *S)``) and radius uniforms ``(k, n)``."""
    dev = g.device
    explore_u = torch.rand((k, n), generator=g, device=dev)
    fresh = torch.randn((k, n, *shape), generator=g, device=dev)
    direction = torch.randn((k * n, *shape), generator=g, device=dev)
    u = torch.rand(k * n, generator=g, device=dev)
    return explore_u, fresh, direction.view(k, n, *shape), u.view(k, n)


def stack_draws(draws: list[Draws], kmax: int) -> Draws:
    """Per-sample draws stacked sample-major, each padded with zeros to ``kmax`` iterations:
    ``(B, K, n)``, ``(B, K, n, *S)``, ``(B, K, n, *S)``, ``(B, K, n)``."""

    def stack(i: int) -> Tensor:
        parts = [d[i] for d in draws]
        if any(p.shape[0] != kmax for p in parts):
            parts = [torch.cat([p, p.new_zeros(kmax - p.shape[0], *p.shape[1:])]) for p in parts]
        return torch.stack(parts)

    e, f, d, u = (stack(i) for i in range(4))
    return e, f, d, u


class StepDraws:
    """``draws(ks, n, shape)``: :func:`draw_step` for every sample ``j`` with ``ks[j]``
    iterations, stacked (:func:`stack_draws`), on the generators' device.

    With CUDA generators (and ``ADAPTIVE_TTS_GRAPH_DRAWS`` not ``0``), the same ``(ks, n,
    shape)`` twice in a row is captured into a CUDA graph and replayed from then on. The returned
    tensors are then the graph's static outputs: valid until the next call, which is how the
    search uses them (one step at a time, on one stream)."""

    def __init__(self, gens: list[torch.Generator]) -> None:
        self.gens = gens
        self.enabled = (
            bool(gens)
            and all(g.device.type == "cuda" for g in gens)
            and os.environ.get("ADAPTIVE_TTS_GRAPH_DRAWS", "1") != "0"
        )
        self._seen: tuple[object, ...] | None = None
        self._key: tuple[object, ...] | None = None
        self._graph: torch.cuda.CUDAGraph | None = None
        self._out: Draws | None = None

    def eager(self, ks: list[int], n: int, shape: tuple[int, ...]) -> Draws:
        draws = [draw_step(k, n, g, shape) for k, g in zip(ks, self.gens)]
        return stack_draws(draws, max(ks))

    def __call__(self, ks: list[int], n: int, shape: tuple[int, ...]) -> Draws:
        if len(ks) != len(self.gens):
            raise ValueError(f"ks holds {len(ks)} caps for {len(self.gens)} generators")
        key = (tuple(ks), n, shape)
        if not self.enabled:
            return self.eager(ks, n, shape)
        if key == self._key and self._graph is not None and self._out is not None:
            self._graph.replay()
            return self._out
        if key != self._seen:  # first sight of these caps: eager (a closed loop varies them)
            self._seen = key
            return self.eager(ks, n, shape)
        return self._capture(key, ks, n, shape)

    def _capture(
        self, key: tuple[object, ...], ks: list[int], n: int, shape: tuple[int, ...]
    ) -> Draws:
        self._graph = self._out = self._key = None  # the old graph's memory goes first
        graph = torch.cuda.CUDAGraph()
        try:
            for g in self.gens:
                graph.register_generator_state(g)
            with torch.cuda.graph(graph):
                out = self.eager(ks, n, shape)
        except RuntimeError as err:  # capture is not for every build; eager stays correct
            warnings.warn(
                f"per-sample noise draws: CUDA-graph capture failed ({err!r}); drawing eagerly",
                stacklevel=3,
            )
            self.enabled = False
            return self.eager(ks, n, shape)
        self._graph, self._out, self._key = graph, out, key
        graph.replay()  # capture drew nothing: the first replay is this step's draws
        return out
