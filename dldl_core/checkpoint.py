"""Shipped checkpoints: weights as safetensors plus a JSON model card beside them.

Nothing is ever unpickled from a weights file. The card (``dldl_core.card``)
holds what is needed to rebuild the model, to feed it and to read it, and how
it was made.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from .card import ModelCard
from .models import build_model


class WeightsError(RuntimeError):
    """A weights file or its model card is missing or unreadable."""


def card_path(weights: str | Path) -> Path:
    return Path(weights).with_suffix(".json")


def save_checkpoint(weights: str | Path, model: torch.nn.Module, card: ModelCard) -> None:
    """Write ``weights`` (safetensors) and its model card ``weights`` with .json."""
    weights = Path(weights)
    weights.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    # Written under temporary names and renamed, so an interrupted save never leaves a truncated
    # file where a good one was; both files readable by all, like any other file the project writes.
    tmp = weights.with_name(f".{weights.name}.tmp")
    save_file(state, str(tmp), metadata={"format": "pt", "task": card.task})
    tmp_card = tmp.with_suffix(".json.tmp")
    tmp_card.write_text(json.dumps(card.to_json(), indent=2) + "\n")
    for path in (tmp, tmp_card):
        path.chmod(0o644)
    tmp.replace(weights)
    tmp_card.replace(card_path(weights))


def read_card(weights: str | Path) -> ModelCard:
    path = card_path(weights)
    if not path.is_file():
        raise WeightsError(f"model card {path} is missing (it must sit beside {Path(weights).name})")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise WeightsError(f"model card {path} is not valid JSON: {exc}") from exc
    try:
        return ModelCard.from_json(data)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"model card {path} does not describe a model: {exc}") from exc


def load_checkpoint(weights: str | Path, device: str | torch.device = "cpu") -> tuple[torch.nn.Module, ModelCard]:
    """Rebuild the model described by the card, load its weights strictly, set eval mode."""
    weights = Path(weights)
    if weights.is_dir():
        raise WeightsError(f"{weights} is a folder; give the .safetensors file inside it")
    if not weights.is_file():
        raise WeightsError(f"weights file {weights} is missing")
    card = read_card(weights)
    try:
        model = build_model(card.model)
    except (KeyError, TypeError, ValueError) as exc:
        raise WeightsError(f"model card {card_path(weights)} does not describe a model: {exc}") from exc
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as exc:
        raise WeightsError(f"weights file {weights} is corrupt or not a safetensors file: {exc}") from exc
    bad = [k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise WeightsError(f"weights file {weights} holds NaN or infinite values (in {bad[0]} and {len(bad) - 1} more tensors)")
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"weights file {weights} does not match its model card: {exc}") from exc
    return model.to(device).eval(), card
