import torch
from PIL import Image

from dldl_core.shift import DomainClassifier, effective_size, weighted_mean


def test_the_weights_recover_a_known_density_ratio():
    """Source N(0, I) and target N(mu, I): the density ratio is exp(mu.x - |mu|^2 / 2), which a
    logistic classifier can represent; its weights must match it on source points and average 1."""
    g = torch.Generator().manual_seed(0)
    mu = torch.tensor([0.8, -0.5, 0.0, 0.3, 0.0])
    source, target = torch.randn(6000, 5, generator=g), torch.randn(3000, 5, generator=g) + mu
    w = DomainClassifier.fit(source, target, weight_decay=1e-4).weights(source[:2000])
    true = (source[:2000] @ mu - mu.square().sum() / 2).exp()
    assert torch.corrcoef(torch.stack([w.log(), true.log()]))[0, 1] > 0.98
    assert abs(float(w.mean()) - 1) < 0.1
    assert len(w) / 4 < effective_size(w) < len(w)
    assert weighted_mean(torch.tensor([1.0, 3.0]), torch.tensor([3.0, 1.0])) == 1.5


def test_faces_weighted_toward_aflw_are_harder(age_predictor, utkface_test, utkface_test_readouts, aflw_wild_photos):
    """UTKFace chips weighted toward AFLW's in-the-wild faces by the shipped model's features (a
    classifier of 300 train chips against 300 AFLW train photos' faces): it tells UTKFace's faces
    from AFLW's (AUC 0.87 here, 0.90 at the benchmark's 2,000 a side), finds few UTKFace faces like
    AFLW's (the 300 test chips weighted are worth 17), and those it finds are read with wider
    intervals and larger errors (MAE 5.09 against 4.63 here; val 5.43 against 4.61 in
    python -m benchmarks.age)."""
    from benchmarks.age import _features, _weighted, toward_wild

    chips = [Image.open(r.path).convert("RGB") for r in utkface_test]
    _, weights, note = toward_wild(age_predictor, _features(age_predictor, chips), aflw_wild_photos, None, 300)
    assert float(note.split("AUC ")[1].split()[0]) > 0.8
    assert effective_size(weights) < len(chips) / 4
    true = [float(r.age) for r in utkface_test]
    plain, toward = _weighted(utkface_test_readouts, true, torch.ones(len(true))), _weighted(utkface_test_readouts, true, weights)
    assert toward[0] > plain[0] + 0.2 and toward[2] > plain[2]
