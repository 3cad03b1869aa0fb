"""CUDA-graph replay of batched callables (the denoiser, the reward) for small, launch-bound
networks on a GPU.

The embedded MNIST UNet does ~0.06 GFLOP per sample in ~420 kernels, so at the batch sizes a
search uses the GPU waits on Python and kernel launches, not arithmetic. :class:`CUDAGraphed`
captures ``fn(*args)`` once per row *bucket* (:func:`bucket_rows`: the next power of two at or
above the row count, in quarter-octave steps above 256 rows) and replays the graph: one launch
instead of hundreds. Rows are padded up to the bucket; the
padding rows are computed and discarded (every row's output depends on that row alone for the
denoisers and rewards here: no batch statistics), and counted in :attr:`CUDAGraphed.padded_rows`,
never as NFEs (the :class:`~adaptive_tts.nfe.Ledger` charges real rows only).

Inside a capture, host-side input checks that would synchronise the GPU are skipped
(:func:`capturing`); callers validate prompts before a search (``Task.prompts``).
"""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor


def capturing() -> bool:
    """True while the current CUDA stream is being captured into a graph."""
    return torch.cuda.is_available() and torch.cuda.is_current_stream_capturing()


def bucket_rows(m: int, min_bucket: int = 16, fine_from: int = 256) -> int:
    """Rows a call of ``m`` rows is padded to: the next power of two ``>= max(m, min_bucket)``
    up to ``fine_from``; above it, the next multiple of an eighth of that power of two (four
    buckets per octave: 2,560 rows run as 2,560, not 4,096), so padding stays under 25%."""
    if m < 1:
        raise ValueError(f"m must be >= 1, got {m}")
    b = max(m, min_bucket)
    p = 1 << (b - 1).bit_length()
    if p <= fine_from:
        return p
    step = p // 8
    return -(-b // step) * step


@dataclasses.dataclass
class _Graph:
    graph: Any  # torch.cuda.CUDAGraph, or None when the call runs eagerly
    inputs: list[Tensor | None]
    output: Tensor | None


class CUDAGraphed:
    """Replay ``fn(*args) -> (M, ...)`` from CUDA graphs, one per (bucket, argument layout).

    Args:
        fn: a batched callable; every tensor argument has the same leading row count ``M``
            and lives on the GPU; ``None`` arguments are passed through.
        min_bucket: smallest padded row count.
        warmup: eager calls on a side stream before each capture (cuDNN picks algorithms).
        name: shown in warnings; defaults to ``fn.name`` or the type name.

    A layout whose capture fails (``fn`` synchronises or leaves the GPU) runs eagerly from then
    on, with one warning. ``nfe_per_call`` and ``name`` of ``fn`` are forwarded.
    """

    def __init__(
        self, fn: Callable[..., Tensor], *, min_bucket: int = 16, warmup: int = 2, name: str = ""
    ) -> None:
        if not torch.cuda.is_available():
            raise RuntimeError("CUDAGraphed needs a CUDA GPU (torch.cuda.is_available() is False)")
        if min_bucket < 1:
            raise ValueError(f"min_bucket must be >= 1, got {min_bucket}")
        if warmup < 1:
            raise ValueError(f"warmup must be >= 1, got {warmup}")
        self.fn = fn
        self.min_bucket = min_bucket
        self.warmup = warmup
        self.name = name or str(getattr(fn, "name", type(fn).__name__))
        self.nfe_per_call = int(getattr(fn, "nfe_per_call", 1))
        self.graphs: dict[tuple[Any, ...], _Graph] = {}
        self.replays = 0
        self.padded_rows = 0

    def __getattr__(self, item: str) -> Any:  # forward e.g. ``sample_shape``, ``to_image``
        if item == "fn":
            raise AttributeError(item)
        return getattr(self.fn, item)

    def __call__(self, *args: Any) -> Tensor:
        rows = [a.shape[0] for a in args if isinstance(a, Tensor)]
        if not rows:
            raise ValueError(f"{self.name}: CUDAGraphed needs at least one tensor argument")
        m = rows[0]
        if any(r != m for r in rows):
            raise ValueError(f"{self.name}: tensor arguments disagree on rows: {rows}")
        for a in args:
            if isinstance(a, Tensor) and a.device.type != "cuda":
                raise ValueError(f"{self.name}: arguments must be on CUDA, got {a.device}")
            if a is not None and not isinstance(a, Tensor):
                raise TypeError(f"{self.name}: arguments must be tensors or None, got {type(a)}")
        if m == 0:
            return self.fn(*args)
        b = bucket_rows(m, self.min_bucket)
        key = (b,) + tuple(
            None if a is None else (tuple(a.shape[1:]), a.dtype, a.device) for a in args
        )
        g = self.graphs.get(key)
        if g is None:
            g = self._capture(key, args, b)
            self.graphs[key] = g
        if g.graph is None:
            return self.fn(*args)
        for buf, a in zip(g.inputs, args):
            if buf is not None:
                buf[:m].copy_(a)
        g.graph.replay()
        self.replays += 1
        self.padded_rows += b - m
        assert g.output is not None
        return g.output[:m].clone()

    def _capture(self, key: tuple[Any, ...], args: tuple[Any, ...], b: int) -> _Graph:
        """Static inputs padded with copies of the first row; warm up; capture."""
        inputs: list[Tensor | None] = []
        for a in args:
            if a is None:
                inputs.append(None)
                continue
            buf = a[:1].expand(b, *a.shape[1:]).clone()
            buf[: a.shape[0]].copy_(a)
            inputs.append(buf)
        try:
            with torch.no_grad():
                side = torch.cuda.Stream()
                side.wait_stream(torch.cuda.current_stream())
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self.fn(*inputs)
                torch.cuda.current_stream().wait_stream(side)
                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph):
                    out = self.fn(*inputs)
        except Exception as err:  # noqa: BLE001 - any capture failure falls back to eager
            warnings.warn(
                f"{self.name}: CUDA-graph capture failed for {b} rows ({err!r}); running eagerly",
                stacklevel=3,
            )
            torch.cuda.synchronize()
            return _Graph(None, [], None)
        if not isinstance(out, Tensor) or out.shape[0] != b:
            raise ValueError(f"{self.name}: fn must return a ({b}, ...) tensor under capture")
        return _Graph(graph, inputs, out)


def graph_task(task: Any, *, reward: bool = True, min_bucket: int = 16) -> Any:
    """A copy of ``task`` whose denoiser (and, when ``reward``, reward) replay CUDA graphs.

    The reward keeps running eagerly where it cannot be captured (JPEG compressibility runs on
    the CPU); its capture then fails once, with a warning."""
    changes: dict[str, Any] = {"denoiser": CUDAGraphed(task.denoiser, min_bucket=min_bucket)}
    if reward:
        changes["reward"] = CUDAGraphed(task.reward, min_bucket=min_bucket)
    return dataclasses.replace(task, **changes)
