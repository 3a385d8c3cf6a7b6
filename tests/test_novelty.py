"""The novelty score: how unlike the training faces a face is (dldl_core.novelty)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest
import torch

from dldl_core.checkpoint import WeightsError
from dldl_core.models import build_model
from dldl_core.novelty import Novelty, captured_features, embed


def _cloud(n: int, seed: int, shift: float = 0.0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 32, generator=g) + shift


def test_novelty_is_in_units_of_val_and_grows_away_from_the_bank(tmp_path):
    bank, val = _cloud(400, 0), _cloud(300, 1)
    novelty = Novelty.fit(bank, val, dims=16, k=5)
    z = novelty(val)
    assert abs(float(z.median())) < 1e-5 and abs(float(torch.quantile(z, 0.9)) - 1) < 1e-5
    assert 0.005 <= float((z > novelty.flag).float().mean()) <= 0.015  # val's 99th percentile
    far = novelty(_cloud(300, 2, shift=1.5))
    assert float((far > novelty.flag).float().mean()) > 0.5
    novelty.save(tmp_path / "n.safetensors", {"command": "test"})
    again = Novelty.load(tmp_path / "n.safetensors")
    assert again.k == 5 and again.flag == pytest.approx(novelty.flag, abs=1e-4)
    assert (again(val) - z).abs().max() < 0.02  # the bank is kept in float16


def test_a_corrupt_novelty_file_is_a_clear_error(tmp_path):
    path = tmp_path / "age.novelty.safetensors"
    path.write_bytes(b"not a safetensors file")
    with pytest.raises(WeightsError, match="novelty file .* is corrupt"):
        Novelty.load(path)


def test_embed_averages_each_faces_views_and_weighs_backbones_alike():
    a = torch.tensor([[3.0, 0], [0, 2], [1.0, 0], [0, 4]])  # view 1 of faces 1 and 2, then view 2
    b = torch.tensor([[5.0], [1], [5], [1]])
    out = embed([a, b], views=2)
    expected = torch.tensor([[1.0, 0, 1], [0, 1, 1]]) / 2**0.5
    assert torch.allclose(out, expected)
    assert torch.allclose(out.norm(dim=1), torch.ones(2))


def test_captured_features_are_what_the_heads_read():
    model = build_model({"backbone": "mobilenet_v2", "heads": {"age": 7}, "dropout": 0.2}).eval()
    x = torch.rand(3, 3, 64, 64)
    with torch.inference_mode():
        with captured_features(model) as seen:
            logits = model(x)["age"]
        assert len(seen) == 1 and seen[0][0].shape == (3, 1280)
        assert torch.allclose(model.heads["age"](seen[0][0]), logits, atol=1e-5)
        model(x)
        with captured_features(model) as mine:
            other = threading.Thread(target=model, args=(x,))
            other.start()
            other.join()
    assert len(seen[0]) == 1  # the hooks are gone once the block is left
    assert mine == [[]]  # another thread's pass (a server's other request) is not captured


def test_faces_unlike_utkface_are_flagged_unusual(aflw_wild_readouts, utkface_test_readouts):
    """In-the-wild faces (AFLW, Flickr) are flagged far more often than UTKFace test chips (AFLW
    val 15.5%, test about 1%: python -m benchmarks.age), and read with a higher novelty."""
    wild = np.array([o["novelty"] for o in aflw_wild_readouts])
    chips = np.array([o["novelty"] for o in utkface_test_readouts])
    assert np.mean([o["unusual"] for o in aflw_wild_readouts]) > 0.08
    assert np.mean([o["unusual"] for o in utkface_test_readouts]) < 0.04
    assert np.median(wild) > np.median(chips) + 0.5


def test_more_novel_chips_err_more(utkface_test, utkface_test_readouts):
    """The score means something where ages are known: the most novel tenth of the test chips errs
    more than the rest (7.0 against 4.3 years; on all of val the flagged 1% err 11.8 against 4.5)."""
    z = np.array([o["novelty"] for o in utkface_test_readouts])
    err = np.abs(np.array([o["mean"] for o in utkface_test_readouts]) - np.array([r.age for r in utkface_test]))
    high = z > np.quantile(z, 0.9)
    assert err[high].mean() > 1.3 * err[~high].mean()


def test_the_predictor_reads_the_bank_beside_its_weights(tmp_path):
    from PIL import Image

    from dldl_core.predict import AgePredictor
    from tests.conftest import AGE_WEIGHTS

    for name in ("age.safetensors", "age.json"):
        shutil.copy(AGE_WEIGHTS.with_name(name), tmp_path / name)
    chip = Image.new("RGB", (200, 200), (150, 120, 100))
    with pytest.warns(UserWarning, match="age.novelty.safetensors is missing: .* none widened"):
        bare = AgePredictor(tmp_path / "age.safetensors", "cpu")
    assert bare.widening == 0 and "novelty" not in bare.predict_crops([chip])[0]
    shutil.copy(AGE_WEIGHTS.with_name("age.novelty.safetensors"), tmp_path)
    read = AgePredictor(tmp_path / "age.safetensors", "cpu").predict_crops([chip])[0]
    flag = Novelty.load(tmp_path / "age.novelty.safetensors").flag
    assert read["unusual"] is True and read["novelty"] > flag  # a flat patch of colour is no face
    (tmp_path / "age.novelty.safetensors").write_bytes(b"broken")
    with pytest.raises(WeightsError, match="novelty file"):
        AgePredictor(tmp_path / "age.safetensors", "cpu")


def test_an_unusual_faces_interval_widens_with_its_novelty(utkface_test, age_predictor):
    """The card's widening reads each face at the temperature times exp(widening x novelty): the
    same faces read at the card's temperature alone have narrower intervals where they are novel
    and wider ones where they are typical."""
    from PIL import Image

    from dldl_core.age import age_probs
    from dldl_core.readouts import credible_interval

    assert age_predictor.widening > 0
    chips = [Image.open(r.path) for r in utkface_test[::3]] + [Image.new("RGB", (200, 200), (150, 120, 100))]
    logits, feats = age_predictor.logits(chips, features=True)
    z = age_predictor.novelty(feats)
    t = age_predictor.temperatures(feats)[:, 0]
    assert torch.allclose(t, age_predictor.temperature * torch.exp(age_predictor.widening * z.clamp(-1, 3)))
    assert z[-1] > 3 and t[-1] == pytest.approx(age_predictor.temperature * np.exp(3 * age_predictor.widening))  # a flat patch
    width = {}
    for name, temperature in (("widened", t[:, None]), ("plain", age_predictor.temperature)):
        iv = credible_interval(age_probs(logits, temperature), age_predictor.bins)
        width[name] = iv[:, 1] - iv[:, 0]
    grown = width["widened"] - width["plain"]
    assert (grown[z > 0.5] >= 0).all() and grown[z > 0.5].mean() > 0
    assert (grown[z < -0.5] <= 0).all() and grown[z < -0.5].mean() < 0


def test_the_temperature_is_fitted_again_with_the_widening(utkface_test, age_predictor):
    """train.novelty refits the temperature with each face's widened: inside the coverage band on
    the faces and their degraded copies, and below the NLL's own choice, which covers more."""
    from PIL import Image

    from dldl_core.age import face_temperatures
    from dldl_core.degrade import degraded_copy
    from train.age import age_metrics
    from train.novelty import refit_temperature

    chips = [Image.open(r.path).convert("RGB") for r in utkface_test]
    ages = torch.tensor([r.age for r in utkface_test])
    rng = np.random.default_rng(0)
    sets = [age_predictor.logits(c, features=True) for c in (chips, [degraded_copy(c, rng) for c in chips])]
    banded = refit_temperature(age_predictor.novelty, sets, ages, 0.1, (0.78, 0.82), 0.8)
    free = refit_temperature(age_predictor.novelty, sets, ages, 0.1, None, 0.8)
    for logits, feats in sets:
        covered = age_metrics(logits, ages, face_temperatures(banded, 0.1, age_predictor.novelty(feats)), 0.8)["coverage"]
        assert 0.78 <= covered <= 0.82
    assert banded < free


def test_a_held_out_group_stays_out_of_the_rows_a_held_out_run_reads(utkface_test):
    """A run trained without a UTKFace race group never sees it: training, its novelty bank and its
    in-domain val all read UTKFace through ``read_utkface(..., without_race=R)``."""
    from dldl_core.data import read_utkface

    val = read_utkface(split="val")
    kept = read_utkface(split="val", without_race=1)
    assert 0 < len(kept) < len(val) and kept == [r for r in val if r.race != 1]
    assert read_utkface(split="val", without_race=-1) == val  # -1, train.age's "none", leaves every group in


def test_the_cards_metrics_are_read_as_the_predictor_reads(utkface_test, age_predictor):
    """train.novelty restates the card's metrics at the readout it writes: the MAE and coverage it
    gives for these chips are those of the predictor's own readouts, intervals widened by novelty."""
    from PIL import Image

    from train.novelty import read_metrics

    chips = [Image.open(r.path).convert("RGB") for r in utkface_test]
    ages = np.array([r.age for r in utkface_test])
    got = read_metrics(age_predictor, *age_predictor.logits(chips, features=True), torch.from_numpy(ages))
    out = age_predictor.predict_crops(chips)
    lo, hi = np.array([o["interval"] for o in out]).T
    assert got["mae"] == pytest.approx(np.abs(np.array([o["mean"] for o in out]) - ages).mean(), abs=1e-3)
    assert got["coverage"] == pytest.approx(((ages >= lo) & (ages <= hi)).mean())
    assert age_predictor.widening > 0  # the shipped readout widens, so a read at one temperature would differ
