"""The model card, typed: the contract between training, which writes it (``train.engine``), and
inference, which reads it only through :class:`ModelCard`.

A card is the JSON file beside a safetensors file. ``model`` says how to rebuild the network,
``input`` how to crop, size and normalise an image, ``bins`` the support of each distribution,
``classes``/``colours`` the names of a classifier's outputs, ``readout`` how to turn outputs into
answers (temperature, mirror averaging, interval level, naming threshold), and ``data``,
``training`` and ``metrics`` how the model was made. Keys this module does not know are kept in
``extra`` and written back unchanged, so an older or newer card survives a round trip.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import torch

from .distributions import bin_grid


def _split(cls: type, data: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``data`` -> (the keys ``cls`` declares, the others)."""
    if not isinstance(data, dict):
        raise TypeError(f"a card section must be a JSON object, not {type(data).__name__}")
    known = {f.name for f in dataclasses.fields(cls)} - {"extra"}
    return {k: v for k, v in data.items() if k in known}, {k: v for k, v in data.items() if k not in known}


def _plain(obj: Any) -> dict[str, Any]:
    """A section's JSON: its declared fields that are set (not None), then its extra keys."""
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name != "extra" and getattr(obj, f.name) is not None}
    return {**out, **obj.extra}


class _Section:
    """A card section: its declared fields, and any other keys kept in ``extra``."""

    extra: dict[str, Any]

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Any:
        known, extra = _split(cls, data)
        return cls(**known, extra=extra)


@dataclass
class Bins:
    """The support of a distribution: ``start``, ``start + step``, ... ``stop``."""

    start: float
    stop: float
    step: float

    def grid(self) -> torch.Tensor:
        return bin_grid(self.start, self.stop, self.step)


@dataclass
class Crop(_Section):
    """How the face or image is cut out before it is resized to the input size."""

    kind: str
    size: int | None = None  # aligned crops: the side they are cut at (the training chips' size)
    template: list[list[float]] | None = None  # aligned crops: 5 landmarks, fractions of the side
    from_detector: dict[str, float] | None = None  # square crops: dx, dy, side around a detector box
    from_box: dict[str, float] | None = None  # square crops: the same around an annotated box
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class InputSpec(_Section):
    """Network input: a square side (or width, height) and the per-channel normalisation."""

    size: int | list[int]
    mean: list[float]
    std: list[float]
    crop: Crop | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.mean) != 3 or len(self.std) != 3:
            raise ValueError("input mean and std need 3 values")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> InputSpec:
        known, extra = _split(cls, data)
        crop = known.pop("crop", None)
        return cls(**known, crop=Crop.from_json(crop) if crop is not None else None, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out = _plain(self)
        if self.crop is not None:
            out["crop"] = _plain(self.crop)
        return out


@dataclass
class Readout(_Section):
    """How outputs become answers. The defaults are what a card without the field means."""

    temperature: float = 1.0  # softmax temperature fitted on validation
    widening: float = 0.0  # age: each face's temperature grows by exp(widening x its novelty) (dldl_core.age.face_temperatures)
    tta_flip: bool = False  # average the distribution of the input and its mirror image
    tta_gray: bool = False  # age: the second view in grayscale (dldl_core.age.age_logits)
    blur: float = 0.0  # age: Gaussian blur of each face (sigma, input pixels) before the model (dldl_core.age.age_logits)
    level: float = 0.8  # mass of the credible intervals reported
    activation: str | None = None  # classifiers: softmax or sigmoid scores
    threshold: float | None = None  # classifiers: a class is named present at this score
    none_class: bool | None = None  # multi-label: the head has one more output after the classes, "none of these"
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelCard:
    """Everything a checkpoint knows about itself. Only ``task`` and ``model`` are required: a card
    that can rebuild the network; predictors check the sections they need when they load."""

    task: str
    model: dict[str, Any]
    input: InputSpec | None = None
    bins: dict[str, Bins] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    colours: list[list[int]] = field(default_factory=list)
    readout: Readout = field(default_factory=Readout)
    data: dict[str, Any] = field(default_factory=dict)
    training: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        """Raises KeyError, TypeError or ValueError for a card that does not fit the schema."""
        known, extra = _split(cls, data)
        if not isinstance(known.get("model"), dict):
            raise TypeError("the card has no model section (a JSON object)")
        if known.get("input") is not None:
            known["input"] = InputSpec.from_json(known["input"])
        if "bins" in known:
            known["bins"] = {name: Bins(**b) for name, b in known["bins"].items()}
        if "readout" in known:
            known["readout"] = Readout.from_json(known["readout"])
        return cls(**known, extra=extra)

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task, "model": self.model}
        if self.input is not None:
            out["input"] = self.input.to_json()
        if self.bins:
            out["bins"] = {name: dataclasses.asdict(b) for name, b in self.bins.items()}
        if self.classes:
            out["classes"] = self.classes
        if self.colours:
            out["colours"] = self.colours
        if self.readout != Readout():
            out["readout"] = _plain(self.readout)
        for name in ("data", "training", "metrics"):
            if getattr(self, name):
                out[name] = getattr(self, name)
        return {**out, **self.extra}

    def head(self, name: str) -> Any:
        """The model's head ``name`` as the card declares it (a size, or a dict with its shape)."""
        return self.model["heads"][name]
