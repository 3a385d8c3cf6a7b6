"""Multi-label: label construction, the VOC reader, mAP, and the shipped model on COCO tiny val."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from dldl_core.data import VOC_CLASSES, data_root, read_coco_multilabel, read_voc
from dldl_core.distributions import multilabel_distribution
from dldl_core.metrics import average_precision, mean_average_precision
from dldl_core.paths import shipped_weights
from train.multilabel import IMAGENET_CLASSES, init_from_imagenet, label_masks, positives

WEIGHTS = shipped_weights("multilabel")


def test_label_distribution_present_ambiguous_absent():
    present = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0]])
    ambiguous = torch.tensor([[0, 0, 1, 0], [1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0]])
    d = multilabel_distribution(present, ambiguous, 0.5)
    assert d[0].tolist() == pytest.approx([0.4, 0.4, 0.2, 0.0])  # two present, one ambiguous at half weight
    assert d[1].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])  # present wins over ambiguous
    assert d[2].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])  # only an ambiguous object: it takes the mass
    assert d[3].tolist() == pytest.approx([1.0, 0.0, 0.0, 0.0])
    assert multilabel_distribution(present, ambiguous, 0.0)[0].tolist() == pytest.approx([0.5, 0.5, 0.0, 0.0])
    assert multilabel_distribution(torch.zeros(1, 4), torch.zeros(1, 4), 0.5).sum() == 0  # no label, no mass


def test_none_class_takes_the_mass_of_images_without_any_class():
    present = torch.tensor([[1, 0, 1], [0, 0, 0], [0, 0, 0]])
    ambiguous = torch.tensor([[0, 0, 0], [0, 0, 0], [0, 1, 0]])
    d = multilabel_distribution(present, ambiguous, 0.5, none_class=True)
    assert d.shape == (3, 4) and torch.allclose(d.sum(1), torch.ones(3))
    assert d[0].tolist() == pytest.approx([0.5, 0.0, 0.5, 0.0])  # objects: "none" gets nothing
    assert d[1].tolist() == pytest.approx([0.0, 0.0, 0.0, 1.0])  # nothing at all: all of it on "none"
    assert d[2].tolist() == pytest.approx([0.0, 1.0, 0.0, 0.0])  # an ambiguous object is still an object


def test_head_starts_from_the_matching_imagenet_classes():
    weight, bias = torch.randn(1000, 8), torch.randn(1000)
    head = torch.nn.Linear(8, 20)
    init_from_imagenet(head, weight, bias)
    cat = VOC_CLASSES.index("cat")
    assert torch.allclose(head.weight[cat], weight[281:286].mean(0))
    assert float(head.bias.detach()[cat]) == pytest.approx(float(bias[281:286].mean()) + math.log(5), abs=1e-5)
    person = VOC_CLASSES.index("person")
    assert "person" not in IMAGENET_CLASSES and head.weight[person].abs().sum() == 0
    assert set(IMAGENET_CLASSES) == set(VOC_CLASSES) - {"person"}
    assert len({i for idx in IMAGENET_CLASSES.values() for i in idx}) == sum(map(len, IMAGENET_CLASSES.values()))  # no overlaps


def _voc_object(name: str, difficult: int) -> str:
    return (f"<object><name>{name}</name><difficult>{difficult}</difficult>"
            "<bndbox><xmin>1</xmin><ymin>1</ymin><xmax>9</xmax><ymax>9</ymax></bndbox></object>")


def test_voc_reader(tmp_path):
    for sub in ("Annotations", "ImageSets/Main", "JPEGImages"):
        (tmp_path / sub).mkdir(parents=True)
    objects = {"a1": [("dog", 0), ("person", 1), ("person", 0)], "a2": [("chair", 1)], "a3": []}
    for i, objs in objects.items():
        xml = f"<annotation><filename>{i}.jpg</filename>" + "".join(_voc_object(n, d) for n, d in objs) + "</annotation>"
        (tmp_path / "Annotations" / f"{i}.xml").write_text(xml)
        Image.new("RGB", (10, 10)).save(tmp_path / "JPEGImages" / f"{i}.jpg")
    (tmp_path / "ImageSets" / "Main" / "train.txt").write_text("a1\na2\na3\n")
    rows = read_voc(tmp_path, "train")
    assert [r.path.name for r in rows] == ["a1.jpg", "a2.jpg"]  # a3 has no object
    assert rows[0].present == {"dog", "person"} and rows[0].ambiguous == set()
    assert rows[1].present == set() and rows[1].ambiguous == {"chair"}
    masks = label_masks(rows)
    assert masks.shape == (2, 2, 20) and masks[1, 1, VOC_CLASSES.index("chair")] == 1
    (tmp_path / "Annotations" / "a3.xml").write_text("<annotation>" + _voc_object("unicorn", 0) + "</annotation>")
    with pytest.raises(ValueError, match="unicorn"):
        read_voc(tmp_path, "train")


def test_average_precision_by_hand():
    assert average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6]), torch.tensor([1, 0, 1, 0])) == pytest.approx((1 + 2 / 3) / 2)
    scores = torch.tensor([[0.9, 0.1, 0.3], [0.2, 0.8, 0.1]])
    m, per = mean_average_precision(scores, torch.tensor([[1, 0, 0], [0, 1, 0]]))
    assert m == 1.0 and per[2] is None  # a class without positives is left out


@pytest.fixture(scope="module")
def coco_val():
    if not (data_root() / "multilabel" / "coco_tiny" / "instances.json").is_file():
        pytest.skip(f"COCO tiny not found under {data_root()} (set DLDL_DATA to the data folder)")
    return read_coco_multilabel(split="val")


def test_coco_reader_maps_names_and_marks_crowds(coco_val):
    assert len(coco_val) > 100 and all(r.present | r.ambiguous for r in coco_val)
    names = set().union(*(r.present | r.ambiguous for r in coco_val))
    assert names <= set(VOC_CLASSES) and {"diningtable", "tvmonitor", "person"} <= names
    everything_ambiguous = read_coco_multilabel(split="val", small_area=1e9)
    assert all(not r.present for r in everything_ambiguous)


def test_shipped_multilabel_model_on_val(coco_val):
    from dldl_core.predict import MultiLabelPredictor

    model = MultiLabelPredictor(WEIGHTS, "cpu")
    rows = coco_val[::2]
    images = [Image.open(r.path) for r in rows]
    m, _ = mean_average_precision(model.scores(images), positives(label_masks(rows)))
    assert m > 0.6  # 0.655 measured on this half; the full val figure is in benchmarks/multilabel.py
    out = model.predict_images(images[:5])
    assert all(set(o["scores"]) == set(VOC_CLASSES) and abs(sum(o["scores"].values()) - 1) < 1e-2 for o in out)
    person = [o for o, r in zip(out, rows[:5]) if r.present == {"person"}]
    assert all(o["labels"][:1] == ["person"] for o in person)


def test_cross_validation_folds_split_train_and_never_read_val():
    from train.multilabel import MultiLabelConfig, MultiLabelTask

    if not (data_root() / "multilabel" / "coco_tiny" / "instances.json").is_file():
        pytest.skip(f"COCO tiny not found under {data_root()} (set DLDL_DATA to the data folder)")
    train = {r.path for r in read_coco_multilabel(split="train")}
    seen = []
    for k in range(3):
        task = MultiLabelTask(MultiLabelConfig(folds=3, fold=k))
        fit_rows, held_out = {r.path for r in task.records("train")}, {r.path for r in task.records("val")}
        assert fit_rows | held_out == train and not fit_rows & held_out
        seen.append(held_out)
    assert set().union(*seen) == train and sum(map(len, seen)) == len(train)  # each row held out once



def test_blank_and_tiny_images_name_no_class(tmp_path):
    """The class distribution sums to one whatever the image: a blank or a 1x1 image must still get
    no class (through the command line, the way a user meets it)."""
    import json
    import subprocess
    import sys

    from PIL import Image

    from dldl_core.multilabel import has_detail

    blank, dot, photo = tmp_path / "black.png", tmp_path / "dot.png", tmp_path / "noise.png"
    Image.new("RGB", (300, 200), (0, 0, 0)).save(blank)
    Image.new("RGB", (1, 1), (200, 30, 30)).save(dot)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(photo)
    assert not has_detail(Image.open(blank)) and not has_detail(Image.open(dot)) and has_detail(Image.open(photo))
    run = subprocess.run([sys.executable, "-m", "dldl_core", "predict", "multilabel", str(blank), str(dot), "--quiet"],
                         check=False, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(line) for line in run.stdout.splitlines()]
    assert [r["labels"] for r in rows] == [[], []] and all("no detail" in r["note"] for r in rows)
    assert all(len(r["scores"]) == 20 for r in rows)
