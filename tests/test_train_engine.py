"""The shared training loop end to end on a tiny slice: train, select, resume, card."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from benchmarks.speed import training_throughput
from dldl_core.checkpoint import load_checkpoint
from dldl_core.data import decode_resized
from dldl_core.faces import FaceDetector, detect_padded
from dldl_core.paths import data_root, shipped_weights
from dldl_core.predict import AgePredictor, MultiLabelPredictor
from dldl_core.readouts import expectation, std
from dldl_core.seg import CAMVID_CLASSES
from train.age import AgeConfig, AgeTask, age_metrics
from train.engine import command, fit, parse_config
from train.multilabel import MultiLabelConfig, MultiLabelTask
from train.pose import PoseConfig, PoseTask
from train.seg import SegConfig, SegTask


def test_parse_config_from_dataclass():
    cfg = parse_config(AgeConfig, ["--epochs", "3", "--sigma", "2.5", "--no-tta-flip"])
    assert (cfg.epochs, cfg.sigma, cfg.tta_flip, cfg.lam) == (3, 2.5, False, 1.0)
    assert command("age", cfg) == "python -m train.age --epochs 3 --sigma 2.5 --no-tta-flip"


@pytest.mark.parametrize("config", [AgeConfig, PoseConfig, MultiLabelConfig, SegConfig])
def test_every_training_help_prints(config, capsys):
    """--help lists every option (a '%' in an option's text once broke train.age's)."""
    with pytest.raises(SystemExit) as stop:
        parse_config(config, ["--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and all("--" + f.replace("_", "-") in out for f in config.__dataclass_fields__)


class _Interrupted(AgeTask):
    """Stops like a killed run as soon as the second epoch starts."""

    calls = 0

    def train_batch(self, images, labels):
        _Interrupted.calls += 1
        if _Interrupted.calls > 4:  # 64 rows in batches of 16: epoch 2 starts at call 5
            raise KeyboardInterrupt
        return super().train_batch(images, labels)


def test_tiny_age_run_and_resume(tmp_path, utkface_test):
    common = ["--limit", "64", "--val-limit", "32", "--batch-size", "16", "--image-size", "64", "--template-chips", "4",
              "--no-pretrained", "--skip-test", "--cache-dir", str(tmp_path / "cache"), "--degrade", "1", "--keep", "last",
              "--epochs", "2"]
    run = ["--out", str(tmp_path / "run")]
    with pytest.raises(KeyboardInterrupt):
        fit(_Interrupted(parse_config(AgeConfig, common + run)))
    assert torch.load(tmp_path / "run" / "last.pt", weights_only=True)["epoch"] == 1
    (tmp_path / "epoch1").mkdir()
    for name in ("age.safetensors", "age.json"):
        shutil.copy(tmp_path / "run" / name, tmp_path / "epoch1" / name)
    # --resume continues after the first epoch instead of starting again, with the random state
    # of the interrupted run: the result equals an uninterrupted run's.
    card = fit(AgeTask(parse_config(AgeConfig, common + run + ["--resume"])))
    assert [h["epoch"] for h in card.training["history"]] == [1, 2]
    fit(AgeTask(parse_config(AgeConfig, common + ["--out", str(tmp_path / "straight")])))
    resumed, _ = load_checkpoint(tmp_path / "run" / "age.safetensors")
    straight, _ = load_checkpoint(tmp_path / "straight" / "age.safetensors")
    for (name, a), b in zip(resumed.state_dict().items(), straight.state_dict().values()):
        assert torch.equal(a, b), name
    _, saved = load_checkpoint(tmp_path / "run" / "age.safetensors")
    assert saved.input.size == 64 and len(saved.input.crop.template) == 5
    assert saved.training["config"]["sigma"] == 1.5 and "val" in saved.metrics
    assert json.loads((tmp_path / "run" / "age.json").read_text()) == saved.to_json()
    # --epochs 0 re-reads the trained model with another readout: same weights, calibrated anew
    again = fit(AgeTask(parse_config(AgeConfig, common[:-1] + ["0", "--init", str(tmp_path / "run" / "age.safetensors"),
                                                                "--tta-gray", "--out", str(tmp_path / "gray")])))
    assert again.readout.tta_gray and again.training["history"] == [] and "val" in again.metrics
    regray, _ = load_checkpoint(tmp_path / "gray" / "age.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(regray.state_dict().values(), resumed.state_dict().values()))
    # several --init files are averaged weight by weight, into the network their cards describe
    inits = f"{tmp_path / 'epoch1' / 'age.safetensors'},{tmp_path / 'run' / 'age.safetensors'}"
    soup = fit(AgeTask(parse_config(AgeConfig, common[:-1] + ["0", "--init", inits, "--backbone", "efficientnet_lite0",
                                                               "--out", str(tmp_path / "soup")])))
    assert len(soup.training["init"]["averaged"]) == 2 and soup.model == saved.model
    first, _ = load_checkpoint(tmp_path / "epoch1" / "age.safetensors")
    mixed, _ = load_checkpoint(tmp_path / "soup" / "age.safetensors")
    w = "heads.age.weight"
    assert torch.allclose(mixed.state_dict()[w], (first.state_dict()[w] + resumed.state_dict()[w]) / 2)
    # --ensemble keeps them whole: one network whose logits are the members' mean
    both = fit(AgeTask(parse_config(AgeConfig, common[:-1] + ["0", "--init", inits, "--ensemble", "--out", str(tmp_path / "ens")])))
    assert both.model["architecture"] == "ensemble" and len(both.training["init"]["ensemble"]) == 2
    ensemble, _ = load_checkpoint(tmp_path / "ens" / "age.safetensors")
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(ensemble(x)["age"], (first(x)["age"] + resumed(x)["age"]) / 2, atol=1e-5)
    # one ensemble re-read with a new readout stays that ensemble, and its card says where it came from
    blurred = fit(AgeTask(parse_config(AgeConfig, common[:-1] + ["0", "--init", str(tmp_path / "ens" / "age.safetensors"),
                                                                  "--blur", "0.5", "--out", str(tmp_path / "blur")])))
    assert blurred.model == both.model and blurred.readout.blur == 0.5
    assert len(blurred.training["init"]["init"]["ensemble"]) == 2
    reread, _ = load_checkpoint(tmp_path / "blur" / "age.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(reread.state_dict().values(), ensemble.state_dict().values()))
    # --init-member takes one member out of an ensemble, as it was built and trained
    second = fit(AgeTask(parse_config(AgeConfig, common[:-1] + ["0", "--init", str(tmp_path / "ens" / "age.safetensors"),
                                                                 "--init-member", "1", "--out", str(tmp_path / "member")])))
    assert second.model == both.model["members"][1] and second.training["init"]["member"] == 1
    member, _ = load_checkpoint(tmp_path / "member" / "age.safetensors")
    assert all(torch.equal(a, b) for a, b in zip(member.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(ValueError, match="ensemble of more than 1 members"):
        fit(AgeTask(parse_config(AgeConfig, common + ["--init", str(tmp_path / "run" / "age.safetensors"), "--init-member", "1"])))
    with pytest.raises(ValueError, match="must be one network"):
        fit(AgeTask(parse_config(AgeConfig, common[:-1] + ["0", "--init", f"{inits},{tmp_path / 'ens' / 'age.safetensors'}"])))
    with pytest.raises(ValueError, match="does not train"):
        fit(AgeTask(parse_config(AgeConfig, common + ["--init", inits, "--ensemble"])))
    with pytest.raises(ValueError, match="needs --init"):
        fit(AgeTask(parse_config(AgeConfig, common[:-1] + ["0"])))


def test_a_coverage_band_bounds_the_fitted_temperature(utkface_test):
    """--coverage-band keeps the lowest-NLL temperature among those whose interval covers within
    the band; the shipped model's NLL temperature covers more than 0.8 of these faces."""
    model, _ = load_checkpoint(shipped_weights("age"))
    images = np.stack([decode_resized(r.path, 128) for r in utkface_test[::2]])
    ages = torch.tensor([r.age for r in utkface_test[::2]], dtype=torch.float32)
    cpu = torch.device("cpu")
    readout = ["--tta-gray", "--blur", "0.5", "--calibrate-on", "val"]
    free, banded = (AgeTask(parse_config(AgeConfig, readout + extra)) for extra in ([], ["--coverage-band", "0.7,0.8"]))
    for task in (free, banded):
        task.calibrate(model, images, ages, cpu)
    logits = free.logits(model, images, cpu)
    covered = {t.temperature: age_metrics(logits, ages, t.temperature, 0.8)["coverage"] for t in (free, banded)}
    assert banded.temperature < free.temperature and covered[free.temperature] > 0.8
    assert 0.7 <= covered[banded.temperature] <= 0.8
    with pytest.raises(SystemExit, match="LO,HI"):
        AgeTask(parse_config(AgeConfig, ["--coverage-band", "0.8"]))


def _needs(path: str) -> None:
    if not (data_root() / path).exists():
        pytest.skip(f"{path} not found under {data_root()} (set DLDL_DATA to the data folder)")


def test_a_teachers_in_the_wild_faces_join_the_training_set(tmp_path, utkface_test):
    """--teacher adds AFLW faces, aligned like UTKFace's chips, each with the teacher's distribution."""
    _needs("pose/aflw/labels.csv")
    config_args = ["--limit", "24", "--image-size", "64", "--cache-dir", str(tmp_path), "--teacher", str(shipped_weights("age"))]
    config = parse_config(AgeConfig, config_args)
    task = AgeTask(config)
    images, labels = task.load_split("train", config.limit)
    wild = labels < 0
    assert int(wild.sum()) == len(task.taught) >= 20 and images.shape == (len(labels), 64, 64, 3)  # MTCNN finds nearly every face
    assert torch.equal(-1 - labels[wild], torch.arange(len(task.taught), dtype=torch.float32))
    assert torch.allclose(task.taught.sum(1), torch.ones(len(task.taught)), atol=1e-4)
    teacher = AgePredictor(shipped_weights("age"), "cpu")
    crops = [Image.fromarray(np.asarray(x)) for x in images[wild.numpy()][:6]]
    # the crops are framed like the chips: their landmarks land on the template
    found = [detect_padded(np.asarray(c.resize((200, 200))), FaceDetector(), 0.25) for c in crops]
    offsets = [np.abs(np.asarray(f.landmarks) / 200 - np.asarray(teacher.template)).mean() for f in found if f]
    assert len(offsets) >= 5 and np.median(offsets) < 0.03
    # and each is learned as the distribution the teacher reads from it (at 64 px here: roughly)
    assert (expectation(teacher.probs(crops), teacher.bins) - expectation(task.taught[:6], teacher.bins)).abs().max() < 6
    # --teacher-temperature 1 reads them untempered: wider than at the teacher's own temperature (below 1)
    untempered = AgeTask(parse_config(AgeConfig, config_args + ["--teacher-temperature", "1"]))
    untempered.load_split("train", config.limit)
    assert teacher.temperature < 1 and (std(untempered.taught, teacher.bins) > std(task.taught, teacher.bins)).all()


def test_tiny_pose_run(tmp_path):
    _needs("pose/aflw/labels.csv")
    args = ["--out", str(tmp_path / "pose"), "--limit", "64", "--val-limit", "64", "--batch-size", "16", "--epochs", "1",
            "--image-size", "64", "--framing-chips", "16", "--no-pretrained", "--skip-test", "--cache-dir", str(tmp_path)]
    card = fit(PoseTask(parse_config(PoseConfig, args)))
    _, saved = load_checkpoint(tmp_path / "pose" / "pose.safetensors")
    assert saved.head("yaw_pitch")["shape"] == [61, 61]
    assert {"mae", "mae_consensus", "score"} <= set(card.metrics["val"])
    framing = saved.input.crop.from_detector
    assert framing["chips_detected"] > 8 and 1.0 < framing["side"] < 2.0  # crops are wider than MTCNN's box


@pytest.mark.parametrize("none_class", [False, True])
def test_tiny_multilabel_run(tmp_path, none_class):
    _needs("multilabel/coco_tiny/instances.json")
    args = ["--out", str(tmp_path / "ml"), "--limit", "32", "--val-limit", "32", "--batch-size", "16", "--epochs", "1",
            "--image-size", "64", "--no-pretrained", "--cache-dir", str(tmp_path)] + ["--none-class"] * none_class
    task = MultiLabelTask(parse_config(MultiLabelConfig, args))
    card = fit(task)
    assert 0 < card.metrics["val"]["map"] <= 1 and "test" not in card.metrics
    assert card.readout.activation == "softmax" and 0 < card.readout.threshold < 1
    assert card.readout.none_class is none_class and card.model["heads"]["classes"] == 20 + none_class
    empty = [r for r in task.records("train") if not (r.present or r.ambiguous)]
    assert bool(empty) is none_class  # the images without any VOC object are trained on only as "none"
    result = MultiLabelPredictor(tmp_path / "ml" / "multilabel.safetensors", "cpu").predict_images([Image.new("RGB", (80, 60), "red")])[0]
    assert len(result["scores"]) == 20 and ("none" in result) is none_class


def test_tiny_seg_run(tmp_path):
    _needs("seg/camvid/index.csv")
    args = ["--out", str(tmp_path / "seg"), "--limit", "16", "--val-limit", "4", "--batch-size", "8", "--epochs", "1",
            "--crop-height", "64", "--crop-width", "96", "--no-pretrained", "--skip-test", "--cache-dir", str(tmp_path)]
    card = fit(SegTask(parse_config(SegConfig, args)))
    model, saved = load_checkpoint(tmp_path / "seg" / "seg.safetensors")
    assert saved.model["architecture"] == "segmentation" and saved.input.size == [480, 360]
    assert model(torch.zeros(1, 3, 72, 100))["classes"].shape == (1, 11, 72, 100)  # any input size, maps at that size
    weights = saved.data["class_weights"]
    assert len(weights) == 11 and weights[CAMVID_CLASSES.index("Pole")] > weights[CAMVID_CLASSES.index("Road")]  # rare classes weigh more
    assert 0 <= card.metrics["val"]["miou"] <= 1 and "test" not in card.metrics


def test_speed_benchmark_trains_through_the_task_command(tmp_path):
    """benchmarks.speed's training throughput comes from the task's own command line and card."""
    _needs("seg/camvid/index.csv")
    what, device, batch, images_per_s = training_throughput("seg", "cpu", None, 1, tmp_path)
    assert what == "`train.seg` (mobilenet_v2, 320x240 px)"
    assert device.startswith("cpu (") and batch == 8 and images_per_s > 0
    assert (tmp_path / "seg" / "seg.safetensors").is_file()
