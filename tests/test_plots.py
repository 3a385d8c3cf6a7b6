import numpy as np
import torch
from PIL import Image

from dldl_core.distributions import bin_grid, gaussian_1d
from dldl_core.plots import age_chart, age_label, annotate_faces
from dldl_core.readouts import summarize


def _face(box, age):
    probs = gaussian_1d(torch.tensor([float(age)]), bin_grid(0, 100, 1), 4.0)
    return {"box": box, "score": 0.99, "age": summarize(probs, bin_grid(0, 100, 1))[0]}


def test_annotation_draws_boxes_and_downscales_huge_images():
    image = Image.new("RGB", (4000, 3000), (255, 255, 255))
    out = annotate_faces(image, [_face([1000, 1000, 1600, 1800], 30)])
    assert out.size == (1600, 1200)
    a = np.asarray(out)
    assert (a[400:720, 400] != 255).any()  # the box's left edge, scaled by 0.4
    assert (np.asarray(image) == 255).all()  # the input is left untouched


def test_age_chart_has_one_panel_per_face_up_to_the_limit():
    faces = [_face([0, 0, 10, 10], 20 + i) for i in range(8)]
    fig = age_chart(faces, max_faces=6)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len(visible) == 6
    assert visible[0].get_title() == f"face #1: {age_label(faces[0]['age'])}"
    assert age_label(faces[0]["age"]) == "20 y (15-25)"
    empty = age_chart([])
    assert any(t.get_text() == "no face found" for t in empty.axes[0].texts)
