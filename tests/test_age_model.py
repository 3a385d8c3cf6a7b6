import torch
from PIL import Image

from dldl_core.metrics import interval_coverage, mae


def test_shipped_age_model_on_utkface_test(utkface_test, age_predictor):
    """Regression guard on 300 test chips (the full-test figures are in benchmarks/age.py)."""
    chips = [Image.open(r.path) for r in utkface_test]
    out = age_predictor.predict_crops(chips)
    true = torch.tensor([float(r.age) for r in utkface_test])
    pred = torch.tensor([o["mean"] for o in out])
    assert mae(pred, true) < 6.0
    assert 0.7 <= interval_coverage(torch.tensor([o["interval"] for o in out]), true) <= 0.92
    assert all(abs(sum(o["probs"]) - 1) < 1e-3 and o["interval"][0] <= o["mean"] <= o["interval"][1] for o in out)


def test_card_describes_the_shipped_model(age_predictor):
    card = age_predictor.card
    assert card.task == "age" and len(card.input.crop.template) == 5
    assert card.metrics["test"]["mae"] <= 5.3
    assert {"command", "config", "date"} <= set(card.training)


def test_prediction_is_mirror_invariant(utkface_test, age_predictor):
    chip = Image.open(utkface_test[40].path)
    a, b = age_predictor.predict_crops([chip, chip.transpose(Image.FLIP_LEFT_RIGHT)])
    assert abs(a["mean"] - b["mean"]) < 0.05


def test_the_gray_test_time_view_changes_color_faces_only(utkface_test, age_predictor):
    from dldl_core.age import age_logits, gray_view

    color = next(age_predictor.batches([Image.open(r.path) for r in utkface_test[:8]], 8))
    gray = gray_view(color)
    assert torch.allclose(gray_view(gray), gray, atol=1e-5)
    model = age_predictor.model
    with torch.no_grad():
        assert torch.allclose(age_logits(model, gray, True, True), age_logits(model, gray, True, False), atol=1e-3)
        assert (age_logits(model, color, True, True) - age_logits(model, color, True, False)).abs().max() > 0.05
