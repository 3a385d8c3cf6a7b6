"""Losses for learning label distributions from logits."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _batch_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """The mean of ``values``, or their ``weight``-weighted mean (``weight`` of the same shape)."""
    if weight is None:
        return values.mean()
    weight = weight.to(values.device, values.dtype)
    return (values * weight).sum() / weight.sum().clamp_min(1e-12)


def kl_from_logits(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean over the batch (weighted by ``weight`` (N,) if given) of KL(target || softmax(logits)).

    Computed from ``log_softmax`` so that it stays finite for any logits, and
    with ``xlogy`` so that zero-probability target bins contribute exactly 0.
    ``logits`` and ``target`` have shape (N, ...) and the distribution runs
    over all trailing dimensions (a 2-D grid is flattened).
    """
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    logp = F.log_softmax(logits.flatten(1).to(dtype), dim=1)
    return _batch_mean(_kl_terms(target.flatten(1).to(dtype), logp).sum(dim=1), weight)


def _kl_terms(t: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
    """Elementwise t * (log t - log p), with 0 * log 0 counted as 0 (exactly, on both sides)."""
    return torch.xlogy(t, t) - torch.where(t > 0, t * logp, torch.zeros_like(logp))


def expectation_l1(logits: torch.Tensor, bins: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor | None = None) -> torch.Tensor:
    """DLDL-v2's expectation term: mean (weighted by ``weight`` if given) |E_p[bin] - label| with p = softmax(logits)."""
    p = torch.softmax(logits.to(torch.float64 if logits.dtype == torch.float64 else torch.float32), dim=1)
    mean = p @ bins.to(p.device, p.dtype)
    return _batch_mean((mean - labels.to(mean.dtype)).abs(), weight)


def dldl_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    bins: torch.Tensor,
    labels: torch.Tensor,
    lam: float = 0.0,
    weight: torch.Tensor | None = None,
) -> torch.Tensor:
    """KL to the label distribution plus ``lam`` times the expectation L1 (DLDL-v2 when lam > 0);
    ``weight`` (N,) weighs the examples of the batch (e.g. to balance a skewed label distribution)."""
    loss = kl_from_logits(logits, target, weight)
    if lam > 0:
        loss = loss + lam * expectation_l1(logits, bins, labels, weight)
    return loss


def js_consistency(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of the Jensen-Shannon divergence between softmax(a) and softmax(b)
    (N, K): small when two views of the same input get the same distribution (AugMix's term)."""
    la, lb = F.log_softmax(a.float(), dim=1), F.log_softmax(b.float(), dim=1)
    log_m = torch.logsumexp(torch.stack([la, lb]), 0) - torch.log(torch.tensor(2.0, device=a.device))
    kl = F.kl_div(log_m, la, log_target=True, reduction="batchmean") + F.kl_div(log_m, lb, log_target=True, reduction="batchmean")
    return kl / 2


def pixel_kl_from_logits(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Weighted mean over pixels of KL(target || softmax(logits)), the distribution running over
    dim 1 of (N, C, H, W). ``weight`` (N, H, W) is 0 where a pixel takes no part (void)."""
    kl = _kl_terms(target.float(), F.log_softmax(logits.float(), dim=1)).sum(1)
    return _batch_mean(kl, weight)
