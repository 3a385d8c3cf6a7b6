"""Readouts of a predicted distribution (1-D, or a joint 2-D grid): what a user is shown."""

from __future__ import annotations

import torch


def expectation(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """E[bin] for each row of ``probs`` (N, K)."""
    return probs @ bins.to(probs)


def mode(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """The most probable bin for each row."""
    return bins.to(probs)[probs.argmax(dim=1)]


def std(probs: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Standard deviation of the distribution for each row."""
    b = bins.to(probs)
    mean = probs @ b
    var = probs @ (b**2) - mean**2
    return var.clamp_min(0).sqrt()


def credible_interval(probs: torch.Tensor, bins: torch.Tensor, level: float = 0.8) -> torch.Tensor:
    """Central credible interval (N, 2) holding ``level`` of the mass.

    The lower end is the first bin whose cumulative mass reaches (1-level)/2,
    the upper end the first bin whose cumulative mass reaches (1+level)/2, so
    at least ``level`` of the mass lies in [lo, hi] (bins are discrete).
    """
    if not 0.0 < level < 1.0:
        raise ValueError("level must be in (0, 1)")
    b = bins.to(probs)
    cdf = probs.cumsum(dim=1)
    cdf = cdf / cdf[:, -1:]
    tail = (1.0 - level) / 2.0
    q = torch.tensor([tail, 1.0 - tail], dtype=probs.dtype, device=probs.device)
    # Guard against round-off: a cdf of 0.8999999 must still reach 0.9.
    idx = torch.searchsorted(cdf.contiguous(), (q - 1e-6).expand(len(cdf), 2).contiguous())
    return b[idx.clamp(max=len(b) - 1)]


def joint_moments(probs: torch.Tensor, bins_x: torch.Tensor, bins_y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (N, 2) and covariance (N, 2, 2) of joint distributions ``probs`` (N, len(bins_x), len(bins_y))."""
    bx, by = bins_x.to(probs), bins_y.to(probs)
    px, py = probs.sum(2), probs.sum(1)
    mx, my = px @ bx, py @ by
    dx, dy = bx[None, :] - mx[:, None], by[None, :] - my[:, None]
    vxx = (px * dx**2).sum(1)
    vyy = (py * dy**2).sum(1)
    vxy = torch.einsum("nij,ni,nj->n", probs, dx, dy)
    cov = torch.stack([torch.stack([vxx, vxy], 1), torch.stack([vxy, vyy], 1)], 1)
    return torch.stack([mx, my], 1), cov


def summarize(probs: torch.Tensor, bins: torch.Tensor, level: float = 0.8, with_probs: bool = True) -> list[dict]:
    """Per-row dict of mean, mode, std, interval and (``with_probs``) the probabilities (JSON-ready)."""
    mean, md, sd = expectation(probs, bins), mode(probs, bins), std(probs, bins)
    iv = credible_interval(probs, bins, level)
    rounded = torch.round(probs.double(), decimals=5) if with_probs else None
    out = []
    for i in range(len(probs)):
        row = {
            "mean": round(float(mean[i]), 2),
            "mode": round(float(md[i]), 2),
            "std": round(float(sd[i]), 2),
            "interval": [round(float(iv[i, 0]), 2), round(float(iv[i, 1]), 2)],
        }
        if rounded is not None:
            row["probs"] = rounded[i].tolist()
        out.append(row)
    return out
