"""The CUDA path gives the CPU path's answers; these run only where a GPU is present.

Tolerances allow for TF32 convolutions and float16 autocast on the GPU, not for a wrong device
placement (which raises) or a wrong preprocessing path (which moves results far more).
"""

import pytest
import torch

from dldl_core.examples import example_photos, scene_photos
from dldl_core.images import load_image
from dldl_core.predict import AgePredictor, FacePipeline, MultiLabelPredictor, PosePredictor, SegPredictor
from train.age import AgeConfig, AgeTask
from train.engine import fit, parse_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine (the CPU path is tested everywhere)")


def test_face_pipeline_on_cuda_matches_cpu():
    photo = load_image(example_photos()["astronaut"])
    cpu, gpu = (FacePipeline(AgePredictor(device=d), PosePredictor(device=d)).analyze(photo) for d in ("cpu", "cuda"))
    assert len(cpu) == len(gpu) == 1
    assert max(abs(a - b) for a, b in zip(cpu[0]["box"], gpu[0]["box"])) < 2
    assert abs(cpu[0]["age"]["mean"] - gpu[0]["age"]["mean"]) < 0.5
    assert all(abs(cpu[0]["pose"][k] - gpu[0]["pose"][k]) < 1 for k in ("yaw", "pitch", "roll"))


def test_scene_models_on_cuda_match_cpu():
    photo = load_image(scene_photos()["motorcycle"])
    cpu, gpu = SegPredictor(device="cpu").probs(photo), SegPredictor(device="cuda").probs(photo)
    assert (cpu.argmax(0) == gpu.argmax(0)).float().mean() > 0.99
    scores = [MultiLabelPredictor(device=d).scores([photo]) for d in ("cpu", "cuda")]
    assert (scores[0] - scores[1]).abs().max() < 1e-2


def test_tiny_age_training_on_cuda_with_amp(tmp_path, utkface_test):
    args = ["--out", str(tmp_path / "run"), "--limit", "64", "--val-limit", "32", "--batch-size", "16", "--epochs", "1",
            "--image-size", "64", "--template-chips", "4", "--no-pretrained", "--skip-test", "--device", "cuda",
            "--cache-dir", str(tmp_path / "cache")]
    card = fit(AgeTask(parse_config(AgeConfig, args)))
    assert card.training["config"]["amp"] is True
    assert card.training["device"] == torch.cuda.get_device_name(0)
    assert torch.isfinite(torch.tensor(card.training["history"][0]["train_loss"]))
    assert 0 < card.metrics["val"]["mae"] < 100
