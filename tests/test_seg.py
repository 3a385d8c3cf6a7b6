"""Segmentation: boundary label distributions, the void-ignoring loss, joint augmentation, IoU,
the shipped model on a slice of CamVid test, the predictor on odd images and the command line."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from dldl_core.cli import main as cli_main
from dldl_core.data import data_root, read_camvid
from dldl_core.distributions import boundary_distribution
from dldl_core.losses import pixel_kl_from_logits
from dldl_core.metrics import confusion_matrix, iou_per_class
from dldl_core.paths import shipped_weights
from dldl_core.seg import CAMVID_COLOURS, CAMVID_VOID, class_fractions, uncertainty
from dldl_core.transforms import random_scale_crop

WEIGHTS = shipped_weights("seg")
VOID = 9


def _two_halves() -> torch.Tensor:
    """A 12 x 12 map: class 1 left, class 4 right, a void block at the bottom left."""
    m = torch.full((1, 12, 12), 1)
    m[:, :, 6:] = 4
    m[:, 9:, :3] = VOID
    return m


def test_interior_pixels_stay_one_hot_and_boundary_pixels_mix_the_two_classes():
    q = boundary_distribution(_two_halves(), 5, window=5, sigma=1.0)[0]
    assert torch.allclose(q[:, :9].sum(0), torch.ones(9, 12))  # each labelled pixel's distribution sums to 1
    assert q[1, :9, :4].eq(1).all() and q[4, :, 8:].eq(1).all()  # two or more pixels from the boundary: one-hot
    band = q[:, :9, 4:8]  # within the window's reach of the boundary
    assert (band[1] > 0).all() and (band[4] > 0).all() and band[[0, 2, 3]].eq(0).all()  # exactly the two classes
    assert q[4, 0, 5] < 0.5 < q[4, 0, 6]  # each side keeps most of its own class
    assert torch.allclose(q[4, 0, 5], q[1, 0, 6])  # and the mixing is symmetric across the boundary


def test_void_never_leaks_into_the_distribution():
    q = boundary_distribution(_two_halves(), 5, window=5, sigma=1.0)[0]
    assert q[:, 9:, :3].eq(0).all()  # void pixels carry no distribution at all
    assert q[1, 7:9, :3].eq(1).all() and q[1, 9:, 3].eq(1).all()  # their neighbours stay one-hot: void adds no mass
    assert torch.equal(boundary_distribution(_two_halves(), 5, window=1), boundary_distribution(_two_halves(), 5, sigma=0))


def test_the_loss_ignores_void_and_equals_cross_entropy_on_one_hot_targets():
    labels = _two_halves()
    logits = torch.randn(1, 5, 12, 12)
    weight = (labels != VOID).float()
    one_hot = boundary_distribution(labels, 5, window=1)
    ce = F.cross_entropy(logits, labels, ignore_index=VOID)
    assert pixel_kl_from_logits(logits, one_hot, weight).item() == pytest.approx(ce.item(), rel=1e-5)
    soft = boundary_distribution(labels, 5)
    other = logits.clone()
    other[:, :, 9:, :3] = torch.randn(1, 5, 3, 3) * 10  # change only the void pixels' predictions
    assert pixel_kl_from_logits(other, soft, weight).item() == pytest.approx(pixel_kl_from_logits(logits, soft, weight).item(), rel=1e-6)


def test_augmentation_moves_images_and_labels_together():
    torch.manual_seed(0)
    labels = torch.zeros(4, 60, 80, dtype=torch.long)
    labels[:, :, 40:] = 1
    labels[:, 30:, :] += 2  # four quadrants, classes 0..3
    colours = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [1.0, 1.0, 0]])
    images = colours[labels].permute(0, 3, 1, 2)
    x, y = random_scale_crop(images, labels, (48, 64), (0.6, 1.6), fill=CAMVID_VOID)
    assert x.shape == (4, 3, 48, 64) and y.shape == (4, 48, 64)
    seen = y != CAMVID_VOID
    nearest = torch.cdist(x.permute(0, 2, 3, 1).reshape(-1, 3), colours).argmin(1).view(4, 48, 64)
    assert (nearest[seen] == y[seen]).float().mean() > 0.97  # bilinear blur only at the quadrant edges
    assert set(y.unique().tolist()) <= {0, 1, 2, 3, CAMVID_VOID}  # nearest sampling invents no class


def test_iou_from_a_confusion_matrix():
    target = torch.tensor([[0, 0, 1, 1, CAMVID_VOID]])
    pred = torch.tensor([[0, 1, 1, 1, 0]])
    conf = confusion_matrix(pred, target, 3)
    assert conf.sum() == 4  # void left out
    assert iou_per_class(conf) == [pytest.approx(0.5), pytest.approx(2 / 3), None]


def test_readouts():
    p = torch.tensor([[1.0, 0, 0], [1 / 3, 1 / 3, 1 / 3]]).T.reshape(1, 3, 1, 2)
    assert uncertainty(p)[0, 0].tolist() == pytest.approx([0.0, 1.0])
    assert class_fractions(np.array([[0, 0, 2, 1]]), ["a", "b", "c"]) == {"a": 0.5, "b": 0.25, "c": 0.25}


@pytest.fixture(scope="module")
def camvid_test():
    if not (data_root() / "seg" / "camvid" / "index.csv").is_file():
        pytest.skip(f"CamVid not found under {data_root()} (set DLDL_DATA to the data folder)")
    return read_camvid(split="test")[::6]  # 39 frames spread over the test sequences


def test_shipped_model_on_a_slice_of_camvid_test(camvid_test):
    """Regression guard: the shipped weights on 39 test frames, through the training code's evaluation."""
    from dldl_core.checkpoint import load_checkpoint
    from train.seg import SegConfig, SegTask

    model, _ = load_checkpoint(WEIGHTS)
    task = SegTask(SegConfig())
    images, labels = task.load_split("test")
    images, labels = images[::6], labels[::6]  # the camvid_test frames
    assert len(images) == len(camvid_test)
    metrics = task.evaluate(model.to(memory_format=torch.channels_last), images, labels, torch.device("cpu"))
    assert metrics["miou"] > 0.60 and metrics["pixel_accuracy"] > 0.88  # 0.639 and 0.902 when shipped
    assert metrics["iou_Road"] > 0.9 and metrics["iou_Sky"] > 0.9


def test_predictor_on_odd_images():
    from dldl_core.predict import SegPredictor

    model = SegPredictor(WEIGHTS, "cpu")
    for size in [(1000, 150), (20, 20), (360, 480)]:
        result = model.predict(Image.new("RGB", size, (120, 120, 120)))
        assert result["classes"].shape == size[::-1] and result["classes"].dtype == np.uint8
        assert result["uncertainty"].shape == size[::-1] and 0 <= result["uncertainty"].min() <= result["uncertainty"].max() <= 1
        assert sum(result["fractions"].values()) == pytest.approx(1, abs=1e-3)


def test_command_line_writes_class_maps_at_the_input_size(camvid_test, tmp_path, capsys):
    frame = Image.open(camvid_test[0].image)
    frame.convert("L").resize((240, 180)).save(tmp_path / "gray.png")  # grayscale, another size
    frame.save(tmp_path / "street.jpg")
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    out = tmp_path / "maps"
    code = cli_main(["predict", "seg", str(tmp_path), "--out-dir", str(out), "--uncertainty", "--device", "cpu"])
    rows = {json.loads(line)["path"].rsplit("/", 1)[-1]: json.loads(line) for line in capsys.readouterr().out.splitlines()}
    assert code == 1 and "error" in rows["broken.jpg"]  # one unreadable input: reported, the others still written
    for name, size in (("street.jpg", (480, 360)), ("gray.png", (240, 180))):
        row = rows[name]
        mask = Image.open(row["mask"])
        assert mask.mode == "L" and mask.size == size and np.asarray(mask).max() < len(CAMVID_COLOURS)
        assert Image.open(row["uncertainty"]).size == size
        assert sum(row["fractions"].values()) == pytest.approx(1, abs=1e-3) and 0 <= row["mean_uncertainty"] <= 1
    truth = np.asarray(Image.open(camvid_test[0].mask))
    pred = np.asarray(Image.open(rows["street.jpg"]["mask"]))
    labelled = truth != CAMVID_VOID
    assert (pred[labelled] == truth[labelled]).mean() > 0.8  # the written map is the frame's, pixel for pixel


def test_weights_of_another_task_are_refused(tmp_path, capsys):
    from dldl_core.checkpoint import WeightsError
    from dldl_core.predict import SegPredictor

    with pytest.raises(WeightsError, match="'age' model, not a 'seg' one"):
        SegPredictor(shipped_weights("age"), "cpu")
    Image.new("RGB", (64, 48)).save(tmp_path / "a.png")
    assert cli_main(["predict", "seg", str(tmp_path / "a.png"), "--seg-weights", str(shipped_weights("age"))]) == 2
    assert "not a 'seg' one" in capsys.readouterr().err
