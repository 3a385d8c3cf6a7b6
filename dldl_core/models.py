"""DLDL networks: a backbone followed by one linear distribution head per output."""

from __future__ import annotations

import torch
from torch import nn

from .backbones import build_backbone


class DistributionNet(nn.Module):
    """Backbone + named heads; ``forward`` returns a dict of logits, one per head.

    ``heads`` maps a head name to its number of bins (e.g. ``{"age": 101}``).
    """

    def __init__(self, backbone: str, heads: dict[str, int], dropout: float = 0.2, pretrained: bool = False):
        super().__init__()
        self.backbone, features = build_backbone(backbone, pretrained)
        self.dropout = nn.Dropout(dropout)
        self.heads = nn.ModuleDict({name: nn.Linear(features, n) for name, n in heads.items()})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        f = self.dropout(self.backbone(x))
        return {name: head(f) for name, head in self.heads.items()}
