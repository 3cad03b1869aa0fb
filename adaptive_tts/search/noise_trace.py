"""Per-step trace entries of the noise searches, written in step order as soon as a step's
history is on the host (a GPU search never waits for them)."""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import Tensor

from adaptive_tts.types import Knobs


class TraceQueue:
    """Write per-step trace entries in step order as soon as a step's history is on the host.

    On a GPU the history is copied with non-blocking copies and an event, so the host builds
    the entries of finished steps while the GPU runs later ones; on the CPU entries are built
    at once."""

    def __init__(self, traces: list[dict[str, Any]], device: torch.device) -> None:
        self.traces, self.cuda = traces, device.type == "cuda"
        self.queue: deque[tuple[tuple[Any, ...], Any]] = deque()

    def add(self, *args: Any) -> None:
        """``args`` as for :func:`trace_step` (after ``traces``)."""
        event = None
        if self.cuda and len(args) > 2:
            i, sigma, sh, knobs, start, final, hist, *done = args
            start, final = (t.to("cpu", non_blocking=True) for t in (start, final))
            hist = tuple(h.to("cpu", non_blocking=True) for h in hist)
            args = (i, sigma, sh, knobs, start, final, hist, *done)
            event = torch.cuda.Event()
            event.record()
        self.queue.append((args, event))
        self.drain(block=False)

    def drain(self, block: bool = True) -> None:
        while self.queue:
            args, event = self.queue[0]
            if event is not None and not event.query():
                if not block:
                    return
                event.synchronize()
            self.queue.popleft()
            trace_step(self.traces, *args)


def trace_step(
    traces: list[dict[str, Any]],
    i: int,
    sigma: float,
    sh: float | None = None,
    knobs: Knobs | None = None,
    start_scores: Tensor | None = None,
    pivot_score: Tensor | None = None,
    hist: tuple[Tensor, ...] = (),
    done: Tensor | None = None,
) -> None:
    """Append one step to each trace: a plain step (``sh is None``) or a searchable one (knobs,
    start score, per-iteration I/J/score); the history moves to the host here."""
    if sh is None or knobs is None or start_scores is None or pivot_score is None:
        for tr in traces:
            tr["steps"].append({"i": i, "sigma": sigma, "searchable": False})
        return
    hi, hj, hs, he = (h.T.tolist() for h in hist)  # (B, K_max) lists
    start, final = start_scores.tolist(), pivot_score.tolist()
    eps, ks = knobs.eps.tolist(), knobs.k.tolist()
    runs = ks if done is None else done.tolist()  # iterations run (below the cap if stopped)
    for j, tr in enumerate(traces):
        knob: dict[str, Any] = {
            "n": knobs.n,
            "k": int(ks[j]),
            "eps": float(eps[j]),
            "lam": knobs.lam,
        }
        if knobs.move != "additive":
            knob["move"] = knobs.move
        if done is not None:
            knob["k_done"] = int(runs[j])
        tr["steps"].append(
            {
                "i": i,
                "sigma": sigma,
                "sigma_hat": sh,
                "searchable": True,
                "knobs": knob,
                "initial_score": float(start[j]),
                "iters": [
                    {
                        "I": int(hi[j][t]),
                        "J": int(hj[j][t]),
                        "score": float(hs[j][t]),
                        "n_explore": int(he[j][t]),
                    }
                    for t in range(int(runs[j]))
                ],
                "one_step_reward": float(final[j]),
            }
        )
