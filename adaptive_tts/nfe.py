"""The one NFE ledger: every network call of a search goes through :class:`Ledger`.

One NFE is one network call on one sample (a classifier-free-guided call counts
``denoiser.nfe_per_call`` = 2). Counts are kept per sample and split by purpose, so a result
reports what was really spent, never a formula.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor

from adaptive_tts.compute import active_meter

Purpose = Literal["step", "score", "rollout"]
PURPOSES: tuple[Purpose, ...] = ("step", "score", "rollout")


class Ledger:
    """Counts network calls per sample and purpose; also counts reward evaluations.

    Args:
        denoiser: ``D(x, sigma, cond) -> x0_hat``; its ``nfe_per_call`` (default 1) is honoured.
        batch_size: number of samples (prompts) whose calls are charged.
        max_batch: largest number of rows sent to the network in one call (``None``: all).
    """

    def __init__(
        self,
        denoiser: Callable[..., Tensor],
        batch_size: int,
        max_batch: int | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_batch is not None and max_batch < 1:
            raise ValueError(f"max_batch must be >= 1 or None, got {max_batch}")
        self.denoiser = denoiser
        self.batch_size = batch_size
        self.max_batch = max_batch
        self.nfe_per_call = int(getattr(denoiser, "nfe_per_call", 1))
        self.counts = {p: torch.zeros(batch_size, dtype=torch.long) for p in PURPOSES}
        self.reward_calls = torch.zeros(batch_size, dtype=torch.long)
        self.network_calls = 0  # batched invocations, for throughput accounting

    def __call__(
        self,
        x: Tensor,
        sigma: Tensor | float,
        cond: Tensor | None,
        owner: Tensor,
        purpose: Purpose,
    ) -> Tensor:
        """Evaluate ``D`` on rows ``x`` ``(M, ...)`` owned by samples ``owner`` ``(M,)``.

        ``sigma`` is a float or ``(M,)``; ``cond`` is ``(M,)`` or ``None``. Returns ``(M, ...)``.
        Rows go to the network in chunks of at most ``max_batch``; when a chunk raises
        ``torch.cuda.OutOfMemoryError`` the chunk size is halved (down to 1) and the chunk is
        retried, and the smaller size is kept for later calls. Each row's output is computed from
        that row alone, so the result does not depend on the chunking; only successful
        invocations count in :attr:`network_calls`, NFEs are charged once per row.
        """
        m = x.shape[0]
        if owner.shape != (m,):
            raise ValueError(f"owner must have shape ({m},), got {tuple(owner.shape)}")
        if m == 0:
            return x.clone()
        if isinstance(sigma, Tensor):
            sig = sigma.to(dtype=torch.float32, device=x.device).reshape(-1)
        else:  # a fill on the device, not a host-to-device copy (which would synchronise)
            sig = torch.full((1,), float(sigma), dtype=torch.float32, device=x.device)
        sig = sig.expand(m) if sig.numel() == 1 else sig
        meter = active_meter()  # the complete compute ledger, when one is active
        t0 = meter.clock(x) if meter is not None else 0.0
        calls0 = self.network_calls
        cap: int | None = getattr(self, "_oom_cap", None)  # learnt from an earlier OOM
        step = min(self.max_batch or m, cap or m)
        outs = []
        s = 0
        while s < m:
            c = None if cond is None else cond[s : s + step]
            try:
                with torch.no_grad():
                    if meter is None:
                        out = self.denoiser(x[s : s + step], sig[s : s + step], c)
                    else:
                        out = meter.call(self.denoiser, x[s : s + step], sig[s : s + step], c)
            except torch.cuda.OutOfMemoryError:
                if step == 1:
                    raise
                out = None
            if out is None:  # outside the handler, so the failed call's frames are freed
                step = max(1, min(step, m - s) // 2)
                self._oom_cap = step
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                continue
            outs.append(out)
            s += min(step, m - s)
            self.network_calls += 1
        self.counts[purpose].index_add_(
            0, owner.cpu(), torch.full((m,), self.nfe_per_call, dtype=torch.long)
        )
        if meter is not None:
            seconds = meter.clock(x) - t0
            calls = self.network_calls - calls0
            meter.network(m, m * self.nfe_per_call, purpose, sigma, seconds, calls)
        return outs[0] if len(outs) == 1 else torch.cat(outs)

    def charge_reward(self, owner: Tensor) -> None:
        """Record one reward evaluation for each row owned by ``owner`` ``(M,)``."""
        self.reward_calls.index_add_(0, owner.cpu(), torch.ones(owner.shape[0], dtype=torch.long))
        meter = active_meter()
        if meter is not None:
            meter.charge_reward(int(owner.shape[0]))

    @property
    def per_sample(self) -> Tensor:
        """Total NFEs per sample, ``(B,)``."""
        return sum(self.counts.values(), torch.zeros(self.batch_size, dtype=torch.long))

    def summary(self) -> dict[str, list[int]]:
        """JSON-ready per-sample counts by purpose, plus totals and reward calls."""
        out: dict[str, list[int]] = {p: c.tolist() for p, c in self.counts.items()}
        out["total"] = self.per_sample.tolist()
        out["reward_calls"] = self.reward_calls.tolist()
        return out
