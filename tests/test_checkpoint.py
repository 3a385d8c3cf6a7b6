import json

import pytest
import torch

from dldl_core.checkpoint import WeightsError, load_checkpoint, save_checkpoint
from dldl_core.models import DistributionNet

CARD = {"task": "age", "model": {"backbone": "mobilenet_v2", "heads": {"age": 11}, "dropout": 0.0}}


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
    bad.with_suffix(".json").write_text(json.dumps(CARD))
    with pytest.raises(WeightsError, match="corrupt"):
        load_checkpoint(bad)
    lone = tmp_path / "lone.safetensors"
    lone.write_bytes(b"x")
    with pytest.raises(WeightsError, match="model card"):
        load_checkpoint(lone)


def test_weights_that_do_not_match_the_card(tmp_path):
    save_checkpoint(tmp_path / "m.safetensors", DistributionNet("mobilenet_v2", {"age": 11}), CARD)
    card = dict(CARD, model={"backbone": "mobilenet_v2", "heads": {"age": 12}})
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
