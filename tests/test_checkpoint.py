import json

import pytest
import torch

from dldl_core.card import ModelCard
from dldl_core.checkpoint import WeightsError, load_checkpoint, save_checkpoint
from dldl_core.models import DistributionNet

CARD = ModelCard("age", {"backbone": "mobilenet_v2", "heads": {"age": 11}, "dropout": 0.0})


def test_round_trip(tmp_path):
    torch.manual_seed(0)
    model = DistributionNet("mobilenet_v2", {"age": 11}, 0.0).eval()
    save_checkpoint(tmp_path / "m.safetensors", model, CARD)
    loaded, card = load_checkpoint(tmp_path / "m.safetensors")
    assert card == CARD
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x)["age"], loaded(x)["age"])


def test_missing_and_corrupt_files(tmp_path):
    with pytest.raises(WeightsError, match="missing"):
        load_checkpoint(tmp_path / "absent.safetensors")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00garbage" * 100)
    bad.with_suffix(".json").write_text(json.dumps(CARD.to_json()))
    with pytest.raises(WeightsError, match="corrupt"):
        load_checkpoint(bad)
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(b"x")
    with pytest.raises(WeightsError, match="model card"):
        load_checkpoint(lone)


def test_weights_that_do_not_match_the_card(tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", DistributionNet("mobilenet_v2", {"age": 11}), CARD)
    card = dict(CARD.to_json(), model={"backbone": "mobilenet_v2", "heads": {"age": 12}})
    (tmp_path / "m.json").write_text(json.dumps(card))
    with pytest.raises(WeightsError, match="does not match"):
        load_checkpoint(tmp_path / "m.safetensors")


def test_folding_batch_norm_keeps_the_outputs():
    from torch import nn

    from dldl_core.models import fold_batchnorm

    torch.manual_seed(0)
    model = DistributionNet("mobilenet_v2", {"age": 11, "joint": {"shape": [5, 5], "hidden": 8}}, 0.0)
    for m in model.modules():  # non-trivial statistics, as a trained model has
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
    model.eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        before = model(x)
        fold_batchnorm(model)
        after = model(x)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    assert all(torch.allclose(before[k], after[k], atol=1e-4) for k in before)
    with pytest.raises(ValueError):
        fold_batchnorm(DistributionNet("mobilenet_v2", {"age": 11}).train())


@pytest.mark.parametrize("task", ["age", "pose", "multilabel", "seg"])
def test_shipped_cards_survive_a_round_trip_through_the_typed_card(task):
    from dldl_core.checkpoint import card_path, read_card
    from dldl_core.paths import shipped_weights

    on_disk = json.loads(card_path(shipped_weights(task)).read_text())
    card = read_card(shipped_weights(task))
    assert card.task == task and card.input is not None
    again = card.to_json()
    # a default readout is written out; everything on disk comes back as it was
    assert {k: v for k, v in again.items() if k != "readout"} == {k: v for k, v in on_disk.items() if k != "readout"}
    assert {**again.get("readout", {}), **on_disk.get("readout", {})} == again.get("readout", {})


def test_a_card_with_another_level_labels_its_intervals_with_it(tmp_path):
    import shutil

    from dldl_core.checkpoint import card_path, read_card
    from dldl_core.novelty import novelty_path
    from dldl_core.paths import shipped_weights
    from dldl_core.predict import AgePredictor

    card = read_card(shipped_weights("age"))
    card.readout.level = 0.9
    model, _ = load_checkpoint(shipped_weights("age"))
    save_checkpoint(tmp_path / "age.safetensors", model, card)
    shutil.copy(novelty_path(shipped_weights("age")), tmp_path)  # the same temperature for the face as the shipped model's
    assert read_card(tmp_path / "age.safetensors").readout.level == 0.9
    age = AgePredictor(tmp_path / "age.safetensors")
    wide, narrow = age.predict_crops([_chip()])[0], AgePredictor().predict_crops([_chip()])[0]
    assert wide["interval"][1] - wide["interval"][0] > narrow["interval"][1] - narrow["interval"][0]
    assert card_path(tmp_path / "age.safetensors").is_file()


def test_a_card_that_is_not_a_model_card_is_a_weights_error(tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", DistributionNet("mobilenet_v2", {"age": 11}), CARD)
    (tmp_path / "m.json").write_text(json.dumps({"task": "age", "model": "mobilenet"}))
    with pytest.raises(WeightsError, match="does not describe a model"):
        load_checkpoint(tmp_path / "m.safetensors")


def _chip():
    from PIL import Image

    from dldl_core.examples import example_photos

    return Image.open(example_photos()["astronaut"]).convert("RGB").resize((200, 200))
