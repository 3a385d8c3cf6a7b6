"""ONNX export: onnxruntime gives the same distributions as PyTorch (max abs difference below 1e-4)."""

import numpy as np
import pytest
import torch
from PIL import Image

from dldl_core.cli import main as cli_main
from dldl_core.export import OnnxModel
from dldl_core.paths import shipped_weights
from dldl_core.predict import AgePredictor, MultiLabelPredictor, PosePredictor, SegPredictor

pytest.importorskip("onnxruntime", reason="onnxruntime is in requirements.txt; install it to test the ONNX export")


@pytest.mark.parametrize("task, predictor", [("age", AgePredictor), ("pose", PosePredictor), ("multilabel", MultiLabelPredictor)])
def test_crop_models_match_pytorch(tmp_path, task, predictor):
    out = tmp_path / f"{task}.onnx"
    assert cli_main(["export", "onnx", task, "--out", str(out)]) == 0
    assert out.with_suffix(".json").is_file()  # the card travels with the model
    model = predictor(shipped_weights(task), "cpu")
    if task == "age":  # its intervals widen with each face's novelty: the bank and the features travel too
        assert (tmp_path / "age.novelty.safetensors").is_file() and len(OnnxModel(out).backbones) == 2
    rng = np.random.default_rng(0)
    crops = [Image.fromarray(rng.integers(0, 255, (150, 150, 3), dtype=np.uint8)) for _ in range(3)]
    x = next(model.batches(crops, 8)).contiguous()
    got = OnnxModel(out)(x)
    with torch.inference_mode():
        logits = model.model(x)
    assert set(got) == set(logits)
    for name, z in logits.items():
        want = torch.softmax(z.flatten(1), 1).view_as(z)
        assert got[name].shape == want.shape and (got[name] - want).abs().max() < 1e-4


def test_segmentation_model_matches_pytorch_at_any_size(tmp_path):
    out = tmp_path / "seg.onnx"
    assert cli_main(["export", "onnx", "seg", "--out", str(out)]) == 0
    model = SegPredictor(shipped_weights("seg"), "cpu")
    x = torch.randn(1, 3, 200, 330)  # not the export size
    got = OnnxModel(out)(x)["classes"]
    with torch.inference_mode():
        want = torch.softmax(model.model(x)["classes"], 1)
    assert got.shape == (1, 11, 200, 330) and (got - want).abs().max() < 1e-4


def test_missing_weights(tmp_path, capsys):
    assert cli_main(["export", "onnx", "age", "--weights", str(tmp_path / "none.safetensors")]) == 2
    assert "missing" in capsys.readouterr().err


@pytest.mark.parametrize("predictor", [AgePredictor, PosePredictor])
def test_onnx_backend_gives_the_same_readouts(predictor):
    rng = np.random.default_rng(1)
    crops = [Image.fromarray(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)) for _ in range(3)]
    torch_out = predictor(device="cpu").predict_crops(crops)
    onnx_model = predictor(device="cpu", backend="onnx")
    assert type(onnx_model.model).__name__ == "OnnxModel"
    for a, b in zip(torch_out, onnx_model.predict_crops(crops)):
        assert np.abs(np.array(a["probs"]) - np.array(b["probs"])).max() < 1e-4
        if predictor is AgePredictor:  # the novelty, from the backbones' features the export also returns
            assert abs(a["novelty"] - b["novelty"]) <= 0.01 and a["unusual"] == b["unusual"]
    if predictor is AgePredictor:
        assert all(not tap._forward_hooks for tap in onnx_model.model.backbones)  # let go after each reading
    with pytest.raises(ValueError, match="unknown backend"):
        predictor(device="cpu", backend="tensorrt")


def test_onnx_backend_is_for_the_cpu(tmp_path):
    with pytest.raises(SystemExit):  # a usage error, not a traceback
        cli_main(["predict", "age", str(tmp_path), "--backend", "onnx", "--device", "cuda"])
    assert AgePredictor(backend="onnx").device.type == "cpu"  # auto means the CPU for onnxruntime


def test_auto_backend_is_onnx_on_the_cpu_and_falls_back_to_pytorch(monkeypatch):
    """``auto`` (the command line's and the app's default) runs onnxruntime on a CPU; where the
    export fails it warns and reads the same faces in PyTorch, where ``onnx`` itself raises."""
    from dldl_core import predict

    rng = np.random.default_rng(2)
    crops = [Image.fromarray(rng.integers(0, 255, (120, 120, 3), dtype=np.uint8)) for _ in range(2)]
    auto = PosePredictor(device="cpu", backend="auto")
    assert auto.backend == "onnx" and type(auto.model).__name__ == "OnnxModel"

    def broken(weights):
        raise RuntimeError("no exporter here")

    monkeypatch.setattr(predict, "cached_export", broken)
    with pytest.warns(UserWarning, match="pose model runs in PyTorch: its ONNX export failed"):
        fallback = PosePredictor(device="cpu", backend="auto")
    assert fallback.backend == "torch"
    for a, b in zip(auto.predict_crops(crops), fallback.predict_crops(crops)):
        assert np.abs(np.array(a["probs"]) - np.array(b["probs"])).max() < 1e-4
    with pytest.raises(RuntimeError, match="no exporter here"):
        PosePredictor(device="cpu", backend="onnx")


def test_cached_export_says_when_it_exports(tmp_path, capsys):
    """The first use exports (seconds, so it says so, on stderr); later uses read the cached file."""
    from dldl_core.export import cached_export

    first = cached_export(shipped_weights("pose"), tmp_path)
    assert "exporting pose.safetensors for onnxruntime, once" in capsys.readouterr().err
    assert cached_export(shipped_weights("pose"), tmp_path) == first and first.is_file()
    assert capsys.readouterr().err == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.name]  # no temporary file or card left
