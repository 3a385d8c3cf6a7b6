"""DLDL networks: a backbone followed by one distribution head per output."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .backbones import build_backbone

HeadSpec = int | dict


def build_head(features: int, spec: HeadSpec) -> nn.Module:
    """A head from its card entry: ``n`` bins (one linear layer) or ``{"shape": [a, b], "hidden": h}``.

    A joint grid (e.g. 61 x 61 yaw x pitch bins) from a 1280-d feature would
    need millions of weights in one layer; the ``hidden`` bottleneck keeps the
    head small while it still outputs the full joint distribution.
    """
    if isinstance(spec, int):
        return nn.Linear(features, spec)
    shape = [int(v) for v in spec["shape"]]
    hidden = int(spec.get("hidden", 0))
    n = math.prod(shape)
    layers = [nn.Linear(features, hidden), nn.Hardswish(), nn.Linear(hidden, n)] if hidden else [nn.Linear(features, n)]
    return nn.Sequential(*layers, nn.Unflatten(1, shape))


class DistributionNet(nn.Module):
    """Backbone + named heads; ``forward`` returns a dict of logits, one per head.

    ``heads`` maps a head name to its spec (see ``build_head``), e.g.
    ``{"age": 101}`` or ``{"yaw_pitch": {"shape": [61, 61], "hidden": 256}, "roll": 61}``.
    """

    def __init__(self, backbone: str, heads: dict[str, HeadSpec], dropout: float = 0.2, pretrained: bool = False):
        super().__init__()
        self.backbone, features = build_backbone(backbone, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: build_head(features, spec) for name, spec in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.dropout(self.backbone(x))
        return {name: head(f) for name, head in self.heads.items()}


def with_mirror(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs for a batch and for its mirror image, from one forward pass over both (in eval mode
    the two halves do not interact; one pass of 2N is cheaper than two of N on a CPU)."""
    out = model(torch.cat([x, x.flip(3)]))
    n = len(x)
    return {k: v[:n] for k, v in out.items()}, {k: v[n:] for k, v in out.items()}


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution into it, in place (eval mode only).

    Same outputs up to rounding, and faster on a CPU, where the separate normalisation passes over
    memory cost about as much as the depthwise convolutions.
    """
    if model.training:
        raise ValueError("fold batch norm only into a model in eval mode")
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            names = list(seq._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = seq._modules[a], seq._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                    seq._modules[b] = nn.Identity()
    return model
