"""Exact class-conditional Gaussian-mixture model: the closed-form posterior mean is the ideal
denoiser, so samplers and searches can be tested exactly and fast.

Data ``x0 ~ sum_j w_j N(mu_j, diag(v_j))``; component ``j`` carries class label ``y_j``. Under
``x = x0 + sigma n``: ``E[x0 | x] = sum_j r_j(x) (mu_j + v_j / (v_j + sigma^2) (x - mu_j))`` with
responsibilities ``r_j`` proportional to ``w_j N(x; mu_j, v_j + sigma^2)`` restricted to the
components of class ``cond`` (``cond = -1`` or ``None``: all components).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor


class GaussianMixture:
    """Diagonal Gaussian mixture in ``d = prod(shape)`` dimensions.

    Args:
        means: ``(M, d)``; variances: ``(M, d)`` positive; weights: ``(M,)`` positive.
        labels: ``(M,)`` long class label of each component.
        shape: sample shape, e.g. ``(d,)`` or ``(C, H, W)`` with ``C*H*W = d``.
        data_range: model-space interval mapped to [0, 1] by :meth:`to_image`.
    """

    nfe_per_call = 1

    def __init__(
        self,
        means: Tensor,
        variances: Tensor,
        weights: Tensor,
        labels: Tensor,
        shape: tuple[int, ...] | None = None,
        data_range: tuple[float, float] = (-1.0, 1.0),
    ) -> None:
        m, d = means.shape
        if variances.shape != (m, d) or (variances <= 0).any():
            raise ValueError(f"variances must be positive with shape ({m}, {d})")
        if weights.shape != (m,) or (weights <= 0).any():
            raise ValueError(f"weights must be positive with shape ({m},)")
        if labels.shape != (m,):
            raise ValueError(f"labels must have shape ({m},)")
        self.shape = tuple(shape) if shape is not None else (d,)
        if math.prod(self.shape) != d:
            raise ValueError(f"shape {self.shape} does not hold d = {d} values")
        self.means = means.double()
        self.variances = variances.double()
        self.log_w = (weights / weights.sum()).double().log()
        self.labels = labels.long()
        self.num_classes = int(self.labels.max()) + 1
        self.data_range = data_range

    @property
    def sample_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    def _mask(self, cond: Tensor | None, b: int) -> Tensor:
        """``(B, M)`` bool: components allowed for each sample."""
        if cond is None:
            return torch.ones(b, len(self.labels), dtype=torch.bool)
        if cond.shape != (b,):
            raise ValueError(f"cond must have shape ({b},), got {tuple(cond.shape)}")
        c = cond.long().cpu()
        if ((c < -1) | (c >= self.num_classes)).any():
            raise ValueError(f"cond labels must lie in [-1, {self.num_classes - 1}]")
        return (c[:, None] < 0) | (self.labels[None, :] == c[:, None])

    def log_prob(self, x: Tensor, sigma: float = 0.0, cond: Tensor | None = None) -> Tensor:
        """Log density of ``x`` ``(B, *shape)`` under the mixture noised to ``sigma``: ``(B,)``."""
        b = x.shape[0]
        comp = self.component_log_prob(x, sigma) + self.log_w
        comp = comp.masked_fill(~self._mask(cond, b), -math.inf)
        norm = torch.logsumexp(
            self.log_w.expand(b, -1).masked_fill(~self._mask(cond, b), -math.inf), 1
        )
        return (torch.logsumexp(comp, 1) - norm).to(x.dtype)

    def component_log_prob(self, x: Tensor, sigma: float | Tensor = 0.0) -> Tensor:
        """``log N(x; mu_j, v_j + sigma^2)`` for every component: ``(B, M)`` float64."""
        xf = x.reshape(x.shape[0], 1, -1).double().cpu()
        s2 = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1, 1, 1) ** 2
        var = self.variances[None] + s2
        return -0.5 * (
            ((xf - self.means[None]) ** 2) / var + var.log() + math.log(2 * math.pi)
        ).sum(-1)

    def __call__(self, x: Tensor, sigma: Tensor, cond: Tensor | None = None) -> Tensor:
        """Posterior mean ``E[x0 | x, sigma, cond]``: ``x`` ``(B, *shape)``, ``sigma`` ``(B,)``."""
        b = x.shape[0]
        if tuple(x.shape[1:]) != self.shape:
            raise ValueError(f"x must have shape (B, {self.shape}), got {tuple(x.shape)}")
        sig = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1).cpu()
        sig = sig.expand(b) if sig.numel() == 1 else sig
        logits = self.component_log_prob(x, sig) + self.log_w
        logits = logits.masked_fill(~self._mask(cond, b), -math.inf)
        resp = (logits - torch.logsumexp(logits, dim=1, keepdim=True)).exp()
        xf = x.reshape(b, 1, -1).double().cpu()
        shrink = self.variances[None] / (self.variances[None] + sig.reshape(-1, 1, 1) ** 2)
        post = self.means[None] + shrink * (xf - self.means[None])  # (B, M, d)
        out = (resp[:, :, None] * post).sum(1)
        return out.reshape(x.shape).to(device=x.device, dtype=x.dtype)

    def moments(self, cond: int | None = None) -> tuple[Tensor, Tensor]:
        """Exact mean ``(d,)`` and covariance ``(d, d)`` of the (class-conditional) mixture."""
        keep = (
            torch.ones_like(self.labels, dtype=torch.bool) if cond is None else self.labels == cond
        )
        w = self.log_w[keep].softmax(0)
        mu, v = self.means[keep], self.variances[keep]
        mean = (w[:, None] * mu).sum(0)
        second = (w[:, None, None] * (torch.diag_embed(v) + mu[:, :, None] * mu[:, None, :])).sum(0)
        return mean, second - mean[:, None] * mean[None, :]

    def to_image(self, x: Tensor) -> Tensor:
        """Model space -> [0, 1] (for image-shaped mixtures and the image rewards)."""
        lo, hi = self.data_range
        return ((x - lo) / (hi - lo)).clamp(0.0, 1.0)


def make_gmm(
    dim: int = 8,
    num_classes: int = 4,
    per_class: int = 2,
    spread: float = 2.0,
    std: float = 0.3,
    seed: int = 0,
    shape: tuple[int, ...] | None = None,
) -> GaussianMixture:
    """A random well-separated mixture: ``num_classes * per_class`` components in ``dim`` dims."""
    g = torch.Generator().manual_seed(seed)
    m = num_classes * per_class
    means = spread * torch.randn(m, dim, generator=g, dtype=torch.float64)
    variances = (std**2) * (0.5 + torch.rand(m, dim, generator=g, dtype=torch.float64))
    weights = 0.5 + torch.rand(m, generator=g, dtype=torch.float64)
    labels = torch.arange(num_classes).repeat_interleave(per_class)
    return GaussianMixture(means, variances, weights, labels, shape=shape)
