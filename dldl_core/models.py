"""DLDL networks: a backbone followed by one distribution head per output, or (segmentation) a
feature pyramid and a decoder that outputs a class distribution per pixel."""

from __future__ import annotations

import itertools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from .backbones import build_backbone, build_pyramid

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


class EnsembleNet(nn.Module):
    """Several trained networks with the same heads read as one: each head's logits are the
    members' mean (log-linear pooling of their distributions; the card's temperature then applies
    to the pooled logits). Members may differ in backbone; they share the input size and
    normalisation. Networks of different architectures err differently, so the pooled reading is
    better than either (docs/models/age.md)."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        outs = [m(x) for m in self.members]
        return {k: torch.stack([o[k] for o in outs]).mean(0) for k in outs[0]}


def _conv_bn_relu(cin: int, cout: int, kernel: int = 1, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=kernel // 2, groups=groups, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class PyramidDecoder(nn.Module):
    """A light top-down decoder: the coarsest map, gated by its global context (as LR-ASPP does),
    is upsampled level by level, adding each finer level's 1x1 projection and smoothing with a
    depthwise-separable 3x3; a 1x1 classifier reads the finest (stride 4) level, where thin
    objects such as poles are still a pixel or two wide."""

    def __init__(self, channels: tuple[int, ...], classes: int, width: int, dropout: float):
        super().__init__()
        self.lateral = nn.ModuleList(_conv_bn_relu(c, width) for c in channels)
        self.context = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels[-1], width, 1), nn.Sigmoid())
        self.smooth = nn.ModuleList(
            nn.Sequential(*_conv_bn_relu(width, width, 3, groups=width), *_conv_bn_relu(width, width)) for _ in channels[:-1]
        )
        self.dropout = nn.Dropout(dropout)
        self.classify = nn.Conv2d(width, classes, 1)

    def forward(self, features: list[torch.Tensor]) -> torch.Tensor:
        x = self.lateral[-1](features[-1]) * self.context(features[-1])
        for i in range(len(features) - 2, -1, -1):
            x = F.interpolate(x, size=features[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.smooth[i](x + self.lateral[i](features[i]))
        return self.classify(self.dropout(x))


class SegmentationNet(nn.Module):
    """Feature pyramid + decoder; ``forward`` returns ``{"classes": logits (N, C, H, W)}`` at the
    input's resolution, one class distribution per pixel."""

    def __init__(self, backbone: str, classes: int, width: int = 96, dropout: float = 0.1, pretrained: bool = False):
        super().__init__()
        self.backbone = build_pyramid(backbone, pretrained)
        self.heads = nn.ModuleDict({"classes": PyramidDecoder(self.backbone.channels, classes, width, dropout)})

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.heads["classes"](self.backbone(x))
        return {"classes": F.interpolate(logits, size=x.shape[-2:], mode="bilinear", align_corners=False)}


def build_model(spec: dict, pretrained: bool = False) -> nn.Module:
    """The network a model card's ``model`` section describes.

    ``{"backbone", "heads", "dropout"}`` is a ``DistributionNet``; with ``"architecture":
    "segmentation"`` it is a ``SegmentationNet`` whose ``heads`` are ``{"classes": {"classes": C,
    "width": W}}``; with ``"architecture": "ensemble"`` it is an ``EnsembleNet`` of the networks
    its ``members`` (a list of such sections) describe, all with its ``heads``; ``"dlib_age"`` is
    dlib's age network read as an age ensemble's member (``dldl_core.dlib_age``).
    """
    architecture = spec.get("architecture", "distribution")
    if architecture == "dlib_age":
        from .dlib_age import DlibAgeNet

        return DlibAgeNet(int(spec["heads"]["age"]), spec["input_mean"], spec["input_std"], float(spec["sigma"]),
                          float(spec["weight"]), bool(spec.get("likelihood", False)))
    if architecture == "ensemble":
        if any(m.get("heads") != spec["heads"] for m in spec["members"]):
            raise ValueError("an ensemble's members must all have the ensemble's heads")
        return EnsembleNet([build_model(m, pretrained) for m in spec["members"]])
    if architecture == "segmentation":
        head = spec["heads"]["classes"]
        return SegmentationNet(spec["backbone"], int(head["classes"]), int(head["width"]), spec.get("dropout", 0.0), pretrained)
    if architecture != "distribution":
        raise ValueError(f"unknown architecture {architecture!r}")
    return DistributionNet(spec["backbone"], spec["heads"], spec.get("dropout", 0.0), pretrained)


def paired_outputs(model: nn.Module, a: torch.Tensor, b: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs for two views of one batch from one forward pass over both (in eval mode the two
    halves do not interact; one pass of 2N is cheaper than two of N on a CPU)."""
    out = model(torch.cat([a, b]))
    n = len(a)
    return {k: v[:n] for k, v in out.items()}, {k: v[n:] for k, v in out.items()}


def with_mirror(model: nn.Module, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """Outputs for a batch and for its mirror image, from one forward pass."""
    return paired_outputs(model, x, x.flip(3))


def output_distributions(out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A model's head outputs as probabilities: a softmax over the classes of each pixel for a
    (N, C, H, W) segmentation head, else over each head's whole (possibly 2-D) distribution."""
    return {
        k: torch.softmax(v.float(), dim=1) if v.ndim == 4 else torch.softmax(v.float().flatten(1), dim=1).view_as(v)
        for k, v in out.items()
    }


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """Fold every batch norm that directly follows a convolution into it, in place (eval mode only).

    Same outputs up to rounding, and faster on a CPU, where the separate normalisation passes over
    memory cost about as much as the depthwise convolutions.
    """
    if model.training:
        raise ValueError("fold batch norm only into a model in eval mode")
    for module in list(model.modules()):
        for parent, conv, bn in getattr(module, "conv_bn_pairs", list)():  # pairs applied outside a Sequential
            setattr(parent, conv, fuse_conv_bn_eval(getattr(parent, conv), getattr(parent, bn)))
            setattr(parent, bn, nn.Identity())
    for seq in model.modules():
        if isinstance(seq, nn.Sequential):
            for a, b in itertools.pairwise(seq._modules):
                conv, bn = seq._modules[a], seq._modules[b]
                if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
                    seq._modules[a] = fuse_conv_bn_eval(conv, bn)
                    seq._modules[b] = nn.Identity()
    return model
